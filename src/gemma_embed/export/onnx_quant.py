"""A quantized checkpoint's own codes in an exported ONNX graph: ONNX Runtime's block-quantized contrib ops.

`gemma-embed export onnx` of an int8 / int4 / mixed checkpoint exports the function its codes compute (the
dequantized float model), then rewrites each weight product of the graph to read the codes directly:

* `MatMul(x, W^T)` and `Gemm(x, W, transB=1)` -> `com.microsoft.MatMulNBits(x, codes, scales)`
  (bits 8 or 4, block 32, K = in, N = out, `accuracy_level` ACCURACY_LEVEL: activations are quantized to
  int8 per block and the products run in integers, as llama.cpp's q8_0 / q4_0 dot products do);
* `Gather(table, ids)` -> `com.microsoft.GatherBlockQuantized(codes, ids, scales)` (quantize_axis 1).

The layouts are gemma-embed's (`gemma_embed.quant.weights`) as they are: codes of one output row,
consecutive inputs in blocks of 32, int4 as offset-by-8 nibbles with the even input in the low nibble, int8
as two's complement. ONNX Runtime's unsigned codes with its default zero point (8 for 4 bits, 128 for 8)
are the same numbers: int4 bytes are copied, int8 bytes get their top bit flipped (c + 128). Scales become
float32 (bfloat16 -> float32 is exact). Outlier columns, stored beside the blocks as values, become a small
float product added to the block product (a one-hot matrix spreads the table's outlier values back to their
columns). Weights are matched to graph constants by value (the exporter folds the transposes and renames the
constants), and every quantized weight must be found exactly once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gemma_embed.errors import ExportError
from gemma_embed.quant.weights import BLOCK, QuantizedTensor

ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations and integer products (0 would dequantize to float32)
CONTRIB = "com.microsoft"


def _digest(values: np.ndarray) -> tuple[tuple[int, ...], str]:
    contiguous = np.ascontiguousarray(values, dtype=np.float32)
    return contiguous.shape, hashlib.blake2b(contiguous.tobytes(), digest_size=16).hexdigest()


def _codes(q: QuantizedTensor) -> np.ndarray:
    """uint8 codes [out, in // 32, bytes per block]: ONNX Runtime's layout with its default zero points."""
    codes = q.codes.contiguous().numpy()
    if q.bits == 8:
        codes = codes.view(np.uint8) ^ np.uint8(0x80)
    return codes.reshape(q.shape[0], q.shape[1] // BLOCK, -1)


def _scales(q: QuantizedTensor) -> np.ndarray:
    return q.scales.float().contiguous().numpy()


class _Rewriter:
    """Builds replacement nodes and initializers for one graph (names made unique by a counter)."""

    def __init__(self, onnx: Any, graph: Any) -> None:
        self.onnx, self.graph, self.count = onnx, graph, 0
        self.initializers: list[Any] = []

    def constant(self, name: str, values: np.ndarray) -> str:
        self.count += 1
        unique = f"{name}_{self.count}"
        self.initializers.append(self.onnx.numpy_helper.from_array(values, unique))
        return unique

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> Any:
        self.count += 1
        outputs = outputs or [f"{op}_{self.count}_out"]
        domain = CONTRIB if op in ("MatMulNBits", "GatherBlockQuantized") else ""
        return self.onnx.helper.make_node(
            op, inputs, outputs, name=f"gemma_embed_{op}_{self.count}", domain=domain, **attrs
        )

    def matmul(self, x: str, out: str, name: str, q: QuantizedTensor) -> list[Any]:
        n, k = q.shape
        product = self.node(
            "MatMulNBits",
            [x, self.constant(f"{name}.codes", _codes(q)), self.constant(f"{name}.scales", _scales(q))],
            [out] if q.outlier_columns is None else None,
            K=k,
            N=n,
            bits=q.bits,
            block_size=BLOCK,
            accuracy_level=ACCURACY_LEVEL,
        )
        if q.outlier_columns is None or q.outlier_values is None:
            return [product]
        columns = self.constant(f"{name}.outlier_columns", q.outlier_columns.numpy().astype(np.int64))
        picked = self.node("Gather", [x, columns], axis=-1)
        values = self.constant(f"{name}.outlier_values", q.outlier_values.float().t().contiguous().numpy())
        outliers = self.node("MatMul", [picked.output[0], values])
        return [product, picked, outliers, self.node("Add", [product.output[0], outliers.output[0]], [out])]

    def gather(self, ids: str, out: str, name: str, q: QuantizedTensor, axis: int) -> list[Any]:
        lookup = self.node(
            "GatherBlockQuantized",
            [
                self.constant(f"{name}.codes", _codes(q).reshape(q.shape[0], -1)),
                ids,
                self.constant(f"{name}.scales", _scales(q)),
            ],
            [out] if q.outlier_columns is None else None,
            gather_axis=axis,
            quantize_axis=1,
            block_size=BLOCK,
            bits=q.bits,
        )
        if q.outlier_columns is None or q.outlier_values is None:
            return [lookup]
        spread = np.zeros((q.outlier_columns.numel(), q.shape[1]), dtype=np.float32)
        spread[np.arange(spread.shape[0]), q.outlier_columns.numpy()] = 1.0
        values = self.constant(f"{name}.outlier_values", q.outlier_values.float().contiguous().numpy())
        rows = self.node("Gather", [values, ids], axis=axis)
        placed = self.node("MatMul", [rows.output[0], self.constant(f"{name}.outlier_spread", spread)])
        return [lookup, rows, placed, self.node("Add", [lookup.output[0], placed.output[0]], [out])]


def quantize_graph(model: Any, quantized: dict[str, tuple[torch.Tensor, QuantizedTensor]]) -> dict[str, int]:
    """Rewrite, in place, the products of an exported float `model` (an onnx ModelProto with its weights
    loaded) whose constant weight is one of `quantized` ({name: (dequantized float weight [out, in], codes)})
    into block-quantized ops (see the module docstring). Returns {op type written: count}."""
    import onnx

    by_value = {_digest(weight.numpy()): name for name, (weight, _) in quantized.items()}
    if len(by_value) != len(quantized):
        raise ExportError(
            "two quantized weights hold the same values; they cannot be told apart in the graph"
        )
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    rewriter = _Rewriter(onnx, graph)
    found: dict[str, int] = {}
    used: set[str] = set()
    nodes: list[Any] = []
    written: dict[str, int] = {}
    for node in graph.node:
        replacement = None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in constants:
            plain = node.op_type == "MatMul" or (
                attrs.get("transB") == 1 and not attrs.get("transA") and len(node.input) == 2
            )
            if plain:
                values = onnx.numpy_helper.to_array(constants[node.input[1]])
                name = by_value.get(_digest(values.T if node.op_type == "MatMul" else values))
                if name is not None:
                    replacement = rewriter.matmul(node.input[0], node.output[0], name, quantized[name][1])
        elif node.op_type == "Gather" and node.input[0] in constants:
            name = by_value.get(_digest(onnx.numpy_helper.to_array(constants[node.input[0]])))
            if name is not None:
                axis = int(attrs.get("axis", 0))
                replacement = rewriter.gather(node.input[1], node.output[0], name, quantized[name][1], axis)
        if replacement is None:
            nodes.append(node)
            continue
        found[name] = found.get(name, 0) + 1
        used.add(node.input[0] if node.op_type == "Gather" else node.input[1])
        nodes.extend(replacement)
        key = replacement[0].op_type
        written[key] = written.get(key, 0) + 1
    missing = sorted(set(quantized) - set(found))
    if missing:
        raise ExportError(f"quantized weight {missing[0]!r} is not a constant of the exported graph")
    still_read = {i for node in nodes for i in node.input}
    kept = [init for init in graph.initializer if init.name not in used or init.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept + rewriter.initializers)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
    return written


def quantize_onnx_file(
    path: Path, model: torch.nn.Module, codes: dict[str, QuantizedTensor]
) -> dict[str, int]:
    """Rewrite the exported graph file `path` (with its external data `path.data`) of the dequantized `model`
    to read `codes` ({parameter name of `model`: its codes}, from `dequantize_model`); returns what
    `quantize_graph` wrote."""
    import onnx

    graph = onnx.load(str(path))  # with its external data
    quantized = {name: (model.get_parameter(name).detach(), q) for name, q in codes.items()}
    written = quantize_graph(graph, quantized)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(graph, str(path), save_as_external_data=True, location=data.name)
    return written
