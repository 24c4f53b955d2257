"""Per-block weight quantization (int8, int4, mixed) for CPU inference and small checkpoints.

Scheme (symmetric, per block): a weight matrix [out, in] is cut into blocks of `BLOCK = 32` consecutive
inputs of one output row; each block has one scale `s = max|w| / qmax` (qmax 127 for int8, 7 for int4),
rounded to bfloat16 *before* the codes are computed (for int4, the scale is the one among
`max|w| * c / 7`, c in CLIP_SEARCH, with the least squared error in the block), and codes `q = clamp(round(w / s), -qmax - 1, qmax)`.
int4 codes are stored offset by 8 as unsigned nibbles, two per byte (even input column in the low nibble).
The dequantized weight is `q * s`. An outlier input column (mean |w| above OUTLIER_RATIO x the median
column's; at most 1/64 of the columns) is stored in bfloat16 beside the blocks and zeroed inside them, so it
does not set its block's scale (LLM.int8()-style outlier decomposition, applied to the weights). The
token-embedding table [vocab, hidden] is quantized the same way along hidden, so one row dequantizes on its
own at lookup.

Schemes, after the quantization-aware-training variants released with EmbeddingGemma (Schechter Vera et
al., 2025, "EmbeddingGemma: Powerful and Lightweight Text Representations", quantization section: int4
per-block, int8 per-block, and mixed precision with int4 for embeddings, feed-forward and projection
layers and int8 for attention). Tensors (names as in the checkpoint):

    ==========================================  =====  =====  =====
    tensor                                       int8   int4   mixed
    ==========================================  =====  =====  =====
    embed_tokens.weight                           8      4      4
    layers.*.self_attn.{q,k,v,o}_proj.weight      8      4      8
    layers.*.mlp.{gate,up,down}_proj.weight       8      4      4
    head dense.{i}.weight (2_Dense, 3_Dense)      8      4      4   (in their folders, see below)
    every *norm.weight                            float  float  float
    ==========================================  =====  =====  =====

A matrix whose input dim is not a multiple of BLOCK stays float (none in EmbeddingGemma). Note: the
released QAT checkpoints were *trained* for these formats; quantizing float weights after training (what
this module does) is post-training quantization and loses more quality than QAT.

On disk: the usual checkpoint layout, where `model.safetensors` holds the float tensors plus, for each
quantized tensor NAME, `NAME.qcodes` (int8, or uint8 packed int4) and `NAME.qscales` (bfloat16) (and, when it
has outlier columns, `NAME.qoutlier_columns` (int64 [k]) and `NAME.qoutlier_values` (bfloat16 [out, k])), and
`quantization.json` is the manifest (format, scheme, block size, bits per tensor). The head's Dense layers
(1.5% of EmbeddingGemma's weights) are stored the same way in their folders (`2_Dense/model.safetensors`:
`linear.weight.qcodes`, ...), listed under the manifest's `head_tensors`, so a load makes no float copy of
any quantized matrix (version 3; before it, the head was stored float and is quantized at load).
Only safetensors and JSON are written or read; never pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.quant.linear import ChannelInt8Weight, channel_int8, int8_linear, int8_product_max_rows

BLOCK = 32
SCHEMES: tuple[str, ...] = ("int8", "int4", "mixed")
MANIFEST = "quantization.json"
FORMAT = "gemma-embed-blockwise"
FORMAT_VERSION = 3  # v2 added outlier columns, v3 the quantized head; v1 and v2 checkpoints still load
READABLE_VERSIONS = (1, 2, 3)
CODES, SCALES = ".qcodes", ".qscales"
OUTLIER_COLUMNS, OUTLIER_VALUES = ".qoutlier_columns", ".qoutlier_values"
QUANT_SUFFIXES = (CODES, SCALES, OUTLIER_COLUMNS, OUTLIER_VALUES)
SCALE_DTYPE = torch.bfloat16
_QMAX = {8: 127, 4: 7}
# int4 scales are searched among absmax * c / 7 for these c (the one with the least squared error per block
# wins); int8 uses c = 1 (its rounding error is already far below the clipping trade-off).
CLIP_SEARCH: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
# An input column whose mean |w| exceeds OUTLIER_RATIO x the median column's is kept in bfloat16 beside the
# blocks (and zeroed in them), at most 1/OUTLIER_SHARE of the columns. Such a column would set the scale of
# its block and round the block's other 31 values to zero: gemma-embed-mini's token table has one (the
# static warm start's norm-completing coordinate, mean |w| 0.94 against 0.01-0.03), which alone took int4's
# mean cosine from 0.993 to 0.969. Gaussian (random) weights have none: their column ratio stays near 1.
OUTLIER_RATIO = 8.0
OUTLIER_SHARE = 64


# ---- the numerics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedTensor:
    """Codes and per-block scales of a 2-D weight [out, in]; `bits` is 8 or 4; optional outlier columns."""

    codes: Tensor  # int8 [out, in] (8 bits) or uint8 [out, in // 2] (4 bits)
    scales: Tensor  # SCALE_DTYPE [out, in // block]
    bits: int
    shape: tuple[int, int]
    block: int = BLOCK
    outlier_columns: Tensor | None = None  # int64 [k]: input columns stored as values, not codes
    outlier_values: Tensor | None = None  # SCALE_DTYPE [out, k]

    def dequantize(self, dtype: torch.dtype = torch.float32, rows: Tensor | None = None) -> Tensor:
        """The float weight (or only `rows` of it), `codes * scale`, in `dtype`.

        Computed in `dtype` itself: a code (|q| <= 128) and a bfloat16 scale are exact in bfloat16 and
        float32, and their product is rounded once, so this equals the float32 product rounded to `dtype`
        and costs one pass (it runs on every forward pass, layer by layer)."""
        codes = self.codes if rows is None else self.codes[rows]
        scales = self.scales if rows is None else self.scales[rows]
        values = unpack_int4(codes, dtype) if self.bits == 4 else codes.to(dtype)
        blocks = values.view(*values.shape[:-1], -1, self.block)
        weight = (blocks * scales.to(dtype).unsqueeze(-1)).view(values.shape)
        if self.outlier_columns is not None and self.outlier_values is not None:
            outliers = self.outlier_values if rows is None else self.outlier_values[rows]
            weight[..., self.outlier_columns] = outliers.to(dtype)
        return weight


def check_bits(bits: int) -> int:
    if bits not in _QMAX:
        raise ConfigError(f"bits={bits!r} is not supported; use 8 or 4")
    return bits


def outlier_columns(weight: Tensor) -> Tensor | None:
    """Input columns of a 2-D weight kept out of the blocks (see OUTLIER_RATIO), or None."""
    magnitude = weight.detach().float().abs().mean(0)
    limit = OUTLIER_RATIO * magnitude.median()
    count = min(int((magnitude > limit).sum()), weight.shape[1] // OUTLIER_SHARE)
    if count == 0 or not bool(limit > 0):
        return None
    return torch.topk(magnitude, count).indices.sort().values


def quantize_tensor(
    weight: Tensor, bits: int, block: int = BLOCK, columns: Tensor | None = None
) -> QuantizedTensor:
    """Symmetric per-block quantization of a 2-D weight along its last (input) dim, outlier columns aside
    (`columns`: those found in the whole matrix when `weight` holds some of its rows; default: found here)."""
    qmax = _QMAX[check_bits(bits)]
    if weight.ndim != 2 or weight.shape[1] % block:
        raise ConfigError(f"cannot quantize shape {tuple(weight.shape)} in blocks of {block} along dim 1")
    if columns is None:
        columns = outlier_columns(weight)
    w = weight.detach().float()
    outliers = None
    if columns is not None:
        outliers = w[:, columns].to(SCALE_DTYPE).contiguous()
        w = w.index_fill(1, columns, 0.0)
    w = w.reshape(weight.shape[0], -1, block)
    absmax = w.abs().amax(-1, keepdim=True)
    best_scale, best_err = None, None
    for shrink in CLIP_SEARCH if bits == 4 else (1.0,):  # MSE-optimal clipping (int4 only)
        scale = (absmax * shrink / qmax).to(SCALE_DTYPE).float()
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        err = (
            (torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale - w).square().sum(-1, keepdim=True)
        )
        if best_scale is None:
            best_scale, best_err = scale, err
        else:
            better = err < best_err
            best_scale, best_err = torch.where(better, scale, best_scale), torch.minimum(err, best_err)
    codes = torch.clamp(torch.round(w / best_scale), -qmax - 1, qmax).to(torch.int8).reshape(weight.shape)
    scales = torch.where(absmax == 0, torch.zeros_like(best_scale), best_scale).squeeze(-1).to(SCALE_DTYPE)
    if bits == 4:
        codes = pack_int4(codes)
    shape = (weight.shape[0], weight.shape[1])
    return QuantizedTensor(codes.contiguous(), scales.contiguous(), bits, shape, block, columns, outliers)


def pack_int4(codes: Tensor) -> Tensor:
    """int8 codes in [-8, 7] [..., n] -> uint8 [..., n // 2], two offset-by-8 nibbles per byte."""
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: Tensor, dtype: torch.dtype = torch.int8) -> Tensor:
    """The inverse of `pack_int4`: uint8 [..., n // 2] -> codes [..., n] (as int8, or as `dtype` values)."""
    low = (packed & 0x0F).to(dtype) - 8
    high = (packed >> 4).to(dtype) - 8
    return torch.stack((low, high), dim=-1).view(*packed.shape[:-1], -1)


# ---- run-time modules --------------------------------------------------------------------------------


class _Quantized(nn.Module):
    """Holds codes and scales as buffers; `weight` is an empty tensor that only carries the compute dtype.

    (The model reads `.weight.dtype` of its embedding and head layers; an empty marker keeps that working
    without materializing the float weight. `model.to(dtype)` converts the marker and the scales.)
    """

    def __init__(self, q: QuantizedTensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.bits, self.block, self.shape = q.bits, q.block, q.shape
        self.register_buffer("codes", q.codes)
        self.register_buffer("scales", q.scales)
        self.register_buffer("outlier_columns", q.outlier_columns)
        self.register_buffer("outlier_values", q.outlier_values)
        self.register_buffer("weight", torch.empty(0, dtype=dtype, device=q.codes.device), persistent=False)

    def quantized(self) -> QuantizedTensor:
        return QuantizedTensor(
            self.codes,
            self.scales,
            self.bits,
            self.shape,
            self.block,
            self.outlier_columns,
            self.outlier_values,
        )

    def extra_repr(self) -> str:
        return f"shape={self.shape}, bits={self.bits}, block={self.block}"


def holds_quantized(model: nn.Module) -> bool:
    """Whether any layer of `model` holds quantized codes (such a model is saved by `save_quantized` only)."""
    return any(isinstance(module, _Quantized) for module in model.modules())


class QuantLinear(_Quantized):
    """`nn.Linear` without bias whose weight stays quantized and is dequantized just in time per call."""

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def out_features(self) -> int:
        return self.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        # Few rows (single queries): an int8 x int8 product; many: dequantize once, then one matmul.
        if x.numel() // x.shape[-1] <= int8_product_max_rows(x.device):
            return int8_linear(x, self.channel_int8(), self.outlier_columns, self.outlier_values)
        return F.linear(x, self.quantized().dequantize(x.dtype))

    @staticmethod
    def project_together(x: Tensor, layers: tuple[QuantLinear, ...]) -> tuple[Tensor, ...]:
        """`layer(x)` for layers that share the input x (q/k/v, gate/up): at small batches x is quantized once
        and one int8 product runs against the layers' codes side by side (built once, kept on the first
        layer); layers with outlier columns, and large batches, run one by one."""
        small = x.numel() // x.shape[-1] <= int8_product_max_rows(x.device)
        if not small or any(layer.outlier_columns is not None for layer in layers):
            return tuple(layer(x) for layer in layers)
        first = layers[0]
        key = tuple(id(layer) for layer in layers)
        cached = getattr(first, "_together", None)
        if cached is None or cached[0] != key or cached[1].device != first.codes.device:
            parts = [channel_int8(layer.quantized().dequantize(torch.float32)) for layer in layers]
            joined = ChannelInt8Weight(
                torch.cat([part.codes_t for part in parts], 1), torch.cat([part.scales for part in parts])
            )
            cached = first._together = (key, joined)
        out = int8_linear(x, cached[1], None, None)
        return out.split([layer.out_features for layer in layers], dim=-1)

    def channel_int8(self) -> ChannelInt8Weight:
        """The per-channel int8 codes of the int8 product, built from the blocks (outlier columns are zero
        codes there) at the first small call: a plain attribute, not state (never saved, rebuilt after a move)."""
        weight = getattr(self, "_channel_int8", None)
        if weight is None or weight.device != self.codes.device:
            blocks = QuantizedTensor(self.codes, self.scales, self.bits, self.shape, self.block)
            weight = self._channel_int8 = channel_int8(blocks.dequantize(torch.float32))
        return weight


class QuantEmbedding(_Quantized):
    """`nn.Embedding` whose table stays quantized; only the looked-up rows are dequantized."""

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.quantized().dequantize(self.weight.dtype, rows=input_ids)


# ---- which tensor gets which format --------------------------------------------------------------------


def bits_for(name: str, scheme: str) -> int | None:
    """Bits for a weight of the scheme (see the module table), or None to keep it float."""
    if scheme not in SCHEMES:
        raise ConfigError(f"scheme={scheme!r} is not supported; use one of {', '.join(SCHEMES)}")
    if not name.endswith(".weight") or name.endswith("norm.weight"):
        return None
    if scheme != "mixed":
        return int(scheme.removeprefix("int"))
    return 8 if ".self_attn." in name else 4


def _quantizable(module: nn.Module) -> bool:
    return (isinstance(module, nn.Linear) and module.bias is None) or isinstance(module, nn.Embedding)


def quantization_targets(model: nn.Module, scheme: str) -> list[tuple[str, nn.Module, int]]:
    """(module name, module, bits) of every bias-free Linear / Embedding that `scheme` quantizes: the
    module table above, minus matrices whose input dim is not a multiple of BLOCK. Shared by post-training
    quantization (`quantize_model`) and quantization-aware training (`gemma_embed.quant.qat`)."""
    return [
        (name, module, bits)
        for name, module in model.named_modules()
        if _quantizable(module)
        and (bits := bits_for(f"{name}.weight", scheme)) is not None
        and module.weight.shape[1] % BLOCK == 0
    ]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` (dotted path from `model`) is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_model(
    model: nn.Module, scheme: str, quantized: dict[str, QuantizedTensor] | None = None
) -> dict:
    """Replace the model's Linear/Embedding layers in place by QuantLinear/QuantEmbedding per `scheme`.

    `quantized` supplies already-quantized tensors by parameter name (from a checkpoint); others are
    quantized from the module's float weight. Returns {parameter name: bits} of what was replaced.
    """
    replaced: dict[str, int] = {}
    quantized = quantized or {}
    for name, module, bits in quantization_targets(model, scheme):
        weight_name = f"{name}.weight"
        q = quantized.get(weight_name)
        if q is None:
            if module.weight.is_meta:
                continue
            q = quantize_tensor(module.weight, bits)
        dtype = module.weight.dtype
        new = QuantEmbedding(q, dtype) if isinstance(module, nn.Embedding) else QuantLinear(q, dtype)
        replace_module(model, name, new)
        replaced[weight_name] = q.bits
    return replaced


def dequantize_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, QuantizedTensor]:
    """Replace, in place, every QuantLinear / QuantEmbedding by a float nn.Linear / nn.Embedding holding its
    dequantized weight in `dtype` (the function the codes compute, for exporters that need float graphs).
    Returns {parameter name: its QuantizedTensor} of what was replaced."""
    replaced: dict[str, QuantizedTensor] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, _Quantized):
            continue
        q = module.quantized()
        weight = nn.Parameter(q.dequantize(dtype), requires_grad=False)
        if isinstance(module, QuantEmbedding):
            new: nn.Module = nn.Embedding(*q.shape, _weight=weight, _freeze=True)
        else:
            new = nn.Linear(q.shape[1], q.shape[0], bias=False, device="meta")
            new.weight = weight
        replace_module(model, name, new)
        replaced[f"{name}.weight"] = q
    return replaced


# ---- checkpoints -------------------------------------------------------------------------------------


def is_quantized(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('version')} is not supported "
            f"(this version reads {FORMAT!r} v{'/'.join(map(str, READABLE_VERSIONS))}); "
            "re-run `gemma-embed quantize`"
        )
    if manifest.get("scheme") not in SCHEMES or manifest.get("block_size") != BLOCK:
        raise CheckpointError(f"{path}: unsupported scheme or block size in {manifest}")
    return manifest


def fits_outliers(q: QuantizedTensor) -> bool:
    """Whether stored outlier columns and values have the shapes and range that `q.shape` asks for."""
    columns, values = q.outlier_columns, q.outlier_values
    assert columns is not None and values is not None
    return (
        columns.ndim == 1
        and not columns.is_floating_point()
        and tuple(values.shape) == (q.shape[0], columns.numel())
        and bool(((columns >= 0) & (columns < q.shape[1])).all())
    )


def split_quantized(
    root: Path, tensors: dict[str, Tensor], folder: str = ""
) -> tuple[dict[str, Tensor], dict[str, QuantizedTensor], str]:
    """Tensors of one file of a quantized checkpoint -> (float tensors with meta placeholders for the
    quantized ones, {name: QuantizedTensor}, scheme). `folder`: "" for the encoder's `model.safetensors`,
    else a head Dense folder (e.g. "2_Dense"), whose tensors the manifest lists under `head_tensors` (none
    before version 3: that head is stored float). Called by `load_checkpoint`."""
    manifest = read_manifest(root)
    floats = {k: v for k, v in tensors.items() if not k.endswith(QUANT_SUFFIXES)}
    quantized: dict[str, QuantizedTensor] = {}
    where = root / folder / "model.safetensors"
    entries = manifest.get("head_tensors", {}).get(folder, {}) if folder else manifest.get("tensors", {})
    for name, entry in entries.items():
        codes, scales = tensors.get(name + CODES), tensors.get(name + SCALES)
        if codes is None or scales is None:
            raise CheckpointError(f"{where}: codes or scales of {name!r} are missing")
        columns, outliers = tensors.get(name + OUTLIER_COLUMNS), tensors.get(name + OUTLIER_VALUES)
        shape = (int(entry["shape"][0]), int(entry["shape"][1]))
        q = QuantizedTensor(codes, scales, check_bits(int(entry["bits"])), shape, BLOCK, columns, outliers)
        expected_codes = (shape[0], shape[1] // (2 if q.bits == 4 else 1))
        if tuple(codes.shape) != expected_codes or tuple(scales.shape) != (shape[0], shape[1] // BLOCK):
            raise CheckpointError(f"{where}: codes/scales of {name!r} do not fit {shape}")
        if (columns is None) != (outliers is None) or (columns is not None and not fits_outliers(q)):
            raise CheckpointError(f"{where}: outlier columns/values of {name!r} do not fit {shape}")
        quantized[name] = q
        floats[name] = torch.empty(shape, device="meta")
    extra = sorted(k for k in tensors if k.endswith(QUANT_SUFFIXES) and k.rsplit(".", 1)[0] not in quantized)
    if extra:
        raise CheckpointError(f"{root / MANIFEST} does not list quantized tensor {extra[0]!r} of {where}")
    return floats, quantized, manifest["scheme"]


def apply_quantized(
    model: nn.Module,
    quantized: dict[str, QuantizedTensor],
    scheme: str,
    head: dict[str, QuantizedTensor] | None = None,
) -> None:
    """Install the stored encoder and head tensors (`head` by `dense.{i}.weight`); a head layer not in
    `head` (stored float, before version 3) is quantized from its float weight (load-time hook)."""
    quantize_model(model.encoder, scheme, quantized)
    quantize_model(model.head, scheme, head)


def quantized_state(
    encoder_state: dict[str, Tensor], scheme: str, head: dict[str, Tensor] | None = None
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], dict[str, Any]]:
    """The encoder's stored tensors quantized with `scheme` (codes, scales and outliers beside the float
    tensors that stay float), those of each head Dense folder (`head`: {folder: its `linear.weight`}) and
    the `quantization.json` manifest describing them."""
    bits_for("x.weight", scheme)  # validates the scheme before any work
    tensors, entries = _quantized_tensors(encoder_state, scheme)
    head_tensors: dict[str, dict[str, Tensor]] = {}
    head_entries: dict[str, Any] = {}
    for folder, weight in (head or {}).items():
        head_tensors[folder], head_entries[folder] = _quantized_tensors({"linear.weight": weight}, scheme)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "scheme": scheme,
        "block_size": BLOCK,
        "scale_dtype": str(SCALE_DTYPE).removeprefix("torch."),
        "symmetric": True,
        "int4_packing": "two codes per byte, offset 8, even input column in the low nibble",
        "head": "Dense layers stored quantized in their folders (the tensors of head_tensors)",
        "tensors": entries,
        "head_tensors": head_entries,
    }
    return tensors, head_tensors, manifest


def _quantized_tensors(state: dict[str, Tensor], scheme: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """One file's tensors quantized with `scheme` and their manifest entries (see `quantized_state`)."""
    tensors: dict[str, Tensor] = {}
    entries: dict[str, Any] = {}
    for name, tensor in state.items():
        bits = bits_for(name, scheme)
        if bits is None or tensor.ndim != 2 or tensor.shape[1] % BLOCK:
            tensors[name] = tensor
            continue
        q = quantize_tensor(tensor, bits)
        tensors[name + CODES], tensors[name + SCALES] = q.codes, q.scales
        entries[name] = {"bits": bits, "shape": list(q.shape)}
        if q.outlier_columns is not None and q.outlier_values is not None:
            tensors[name + OUTLIER_COLUMNS], tensors[name + OUTLIER_VALUES] = (
                q.outlier_columns,
                q.outlier_values,
            )
            entries[name]["outlier_columns"] = q.outlier_columns.numel()
    return tensors, entries
