"""ONNX export of the whole embedding pipeline, and a small ONNX Runtime encoder for the exported folder.

    gemma-embed export onnx MODEL --out DIR [--opset 18]

The graph maps `input_ids` [batch, sequence] (int64) and `attention_mask` [batch, sequence] (int64, 1 for
real tokens, right padding) to `embeddings` [batch, dim] (float32): encoder -> mean pooling over real tokens
-> both Dense layers -> L2 normalization, i.e. what `EmbeddingModel.forward` computes; Matryoshka truncation
is left to the caller (keep the first d coordinates and re-normalize). Batch and sequence axes are dynamic.

The export uses torch's exporter (`torch.export` + onnxscript), which writes opset 18 or newer; the older
TorchScript exporter, which could write opset 17, cannot convert grouped-query attention. After writing,
the model is run with ONNX Runtime on padded batches (one longer than the sliding window, one unpadded) and
compared with PyTorch; a max |difference| above 1e-4 raises `ExportError` and nothing is written.

A quantized checkpoint (`gemma-embed quantize`: int8, int4, mixed) exports with its own codes as ONNX
Runtime's block-quantized ops (`MatMulNBits`, `GatherBlockQuantized`; see `onnx_quant`): a runtime without
torch. Its check is the cosine to the function the codes compute in PyTorch (>= QUANTIZED_MIN_COSINE),
since ONNX Runtime quantizes the activations of its integer products.

DIR holds `model.onnx` (+ `model.onnx.data`, the weights), the checkpoint's `tokenizer.json` /
`tokenizer_config.json`, and `gemma_embed_onnx.json` (special token ids, max_seq_length, prompts, the
measured difference). Tokenization is the model's usual contract: `<bos> text <eos>`, truncated to
max_seq_length. Needs the `onnx` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gemma_embed.cli_args import add_out_arg
from gemma_embed.encode import MAX_BATCH_TOKENS, check_batching, length_batches
from gemma_embed.errors import CheckpointError, ConfigError, ExportError
from gemma_embed.export.onnx_quant import quantize_onnx_file
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import EmbeddingModel, mean_pool, truncate_and_normalize
from gemma_embed.model.gemma3 import layer_rotary_tables

ONNX_FILE = "model.onnx"
MANIFEST = "gemma_embed_onnx.json"
FORMAT, FORMAT_VERSION = "gemma-embed-onnx", 1
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embeddings"
MIN_OPSET = 18
TOLERANCE = 1e-4
# A quantized export computes int8 activations against the checkpoint's codes (onnx_quant.ACCURACY_LEVEL),
# so it is checked by its cosine to the codes' float function, not by max |diff|.
QUANTIZED_MIN_COSINE = 0.999
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
EXTRA_HELP = "pip install 'gemma-embed[onnx]'"


def _require(module: str) -> Any:
    """Import an optional dependency of the export, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export and inference need {module}: {EXTRA_HELP}") from None


class ExportablePipeline(nn.Module):
    """`EmbeddingModel.forward` as one graph without data-dependent branches.

    The encoder's own forward skips masks it can prove unnecessary (no padding; sequences shorter than the
    sliding window) by looking at the values and the length, which a graph with dynamic axes cannot do.
    Here both masks are always built: a key is visible when it is real or is the query itself, and on
    sliding layers also within the window radius. The layers, embedding, rotary tables, pooling and head
    are the model's own modules and functions, so the results are the same (checked after every export).
    """

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        encoder = self.model.encoder
        cfg = encoder.config
        x = encoder.embed(input_ids)
        positions = torch.arange(input_ids.shape[1], device=x.device)
        distance = (positions[:, None] - positions[None, :]).abs()
        full = attention_mask.bool()[:, None, None, :] | (distance == 0)
        sliding = full & (distance <= cfg.window_radius)
        tables = layer_rotary_tables(cfg, input_ids.shape[1], x.device, x.dtype)
        for layer in encoder.layers:
            x = layer(x, tables[layer.is_sliding], sliding if layer.is_sliding else full)
        pooled = mean_pool(encoder.norm(x), attention_mask)
        return truncate_and_normalize(self.model.head(pooled).float())


class OnnxEncoder:
    """An exported folder run by ONNX Runtime on CPU: texts (prompt already applied) -> float32 vectors.

    ONNX Runtime's memory arena is off by default: it keeps the largest batch's buffers for the session's
    life (int4 300m, benchmark mix: 2,672 MiB peak with it, 1,161 without; 367 with glibc's mmap threshold
    fixed as well, `gemma_embed.encode.return_freed_memory()`; bench/int4_memory.py). `memory_arena=True`
    turns it back on.
    """

    def __init__(self, path: str | Path, threads: int | None = None, memory_arena: bool = False) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{manifest_path} cannot be read ({exc}); is this a `gemma-embed export onnx` folder?"
            ) from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{manifest_path}: not a {FORMAT} v{FORMAT_VERSION} manifest; re-export")
        self.tokenizer = TextTokenizer.from_file(
            self.path / "tokenizer.json",
            bos_id=self.manifest["bos_token_id"],
            eos_id=self.manifest["eos_token_id"],
            pad_id=self.manifest["pad_token_id"],
            max_length=self.manifest["max_seq_length"],
        )
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = memory_arena
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.path / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embeddings [batch, dim] of right-padded int64 token ids and their mask."""
        feeds = {INPUTS[0]: input_ids.astype(np.int64), INPUTS[1]: attention_mask.astype(np.int64)}
        return self.session.run([OUTPUT], feeds)[0]

    def encode(
        self, texts: Sequence[str], batch_size: int = 32, max_batch_tokens: int = MAX_BATCH_TOKENS
    ) -> np.ndarray:
        """L2-normalized float32 vectors [n, dim]; the input order is kept.

        Texts are stripped, tokenized as `<bos> text <eos>` (truncated to max_seq_length) and batched as
        `gemma_embed.load(...).encode(texts)` does with its prompt already in the text: by length, at most
        `batch_size` texts and `max_batch_tokens` padded tokens per batch.
        """
        check_batching(batch_size, max_batch_tokens)
        ids, _ = self.tokenizer.encode([text.strip() for text in texts])
        out = np.empty((len(ids), self.embedding_dim), dtype=np.float32)
        for rows in length_batches(ids, batch_size, max_batch_tokens):
            padded = self.tokenizer.pad([ids[i] for i in rows])
            out[rows] = self.run(padded.input_ids.numpy(), padded.attention_mask.numpy())
        return out


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notices (deprecations, axis renaming, operators of torchvision, which we do not
    use); errors still surface."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def verification_batches(model: EmbeddingModel, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """A padded batch whose longest row exceeds the sliding window (when max_seq_length allows), with a
    half-length and a 3-token row, and an unpadded single row: other shapes than the export example."""
    cfg = model.config
    generator = torch.Generator().manual_seed(seed)
    longest = min(cfg.max_seq_length, 2 * cfg.window_radius + 10)
    ids = torch.randint(3, cfg.vocab_size, (3, longest), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate((longest, max(3, longest // 2), 3)):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, cfg.pad_token_id)
    single = torch.randint(3, cfg.vocab_size, (1, 5), generator=generator)
    return [(ids, mask), (single, torch.ones_like(single))]


def export_onnx(
    model_path: str | Path, out: str | Path, *, opset: int = MIN_OPSET, overwrite: bool = False
) -> float:
    """Export a checkpoint (directory or a name `gemma_embed.load` resolves) to an ONNX folder `out`; a
    quantized one keeps its codes (see the module docstring).

    Returns the max |difference| to PyTorch on the verification batches; raises ExportError (writing
    nothing) when it exceeds TOLERANCE.
    """
    from gemma_embed.encode import resolve_model_path
    from gemma_embed.io.checkpoint import load_checkpoint
    from gemma_embed.quant.weights import dequantize_model, is_quantized, read_manifest

    if opset < MIN_OPSET:
        raise ConfigError(
            f"--opset {opset} is not supported; torch's ONNX exporter writes opset {MIN_OPSET} or newer"
        )
    for module in ("onnx", "onnxscript", "onnxruntime"):
        _require(module)
    source = resolve_model_path(model_path)
    checkpoint = load_checkpoint(source, dtype=torch.float32)
    model, cfg = checkpoint.model.eval(), checkpoint.model.config
    codes = dequantize_model(model) if is_quantized(source) else {}  # the function its codes compute
    pipeline = ExportablePipeline(model).eval()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=cfg.max_position_embeddings)
    example = torch.randint(3, cfg.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    dynamic = {name: {0: batch, 1: sequence} for name in INPUTS}
    with atomic_directory(Path(out), overwrite=overwrite, error=CheckpointError) as tmp:
        with quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                pipeline,
                (example, torch.ones_like(example)),
                str(tmp / ONNX_FILE),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=True,
                verbose=False,
            )
        written = quantize_onnx_file(tmp / ONNX_FILE, model, codes) if codes else {}
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source": str(source),
            "opset": opset,
            "inputs": list(INPUTS),
            "output": OUTPUT,
            "embedding_dim": cfg.embedding_dim,
            "matryoshka_dims": list(cfg.matryoshka_dims),
            "max_seq_length": cfg.max_seq_length,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "prompts": checkpoint.prompts,
            "weights": read_manifest(source)["scheme"] if codes else "float32",
            "quantized_ops": written,
        }
        write_json(tmp / MANIFEST, manifest)
        encoder = OnnxEncoder(tmp)
        diff, cosine = 0.0, 1.0
        with torch.no_grad():
            for ids, mask in verification_batches(model):
                expected = model(ids, mask).numpy()
                found = encoder.run(ids.numpy(), mask.numpy())
                diff = max(diff, float(np.abs(found - expected).max()))
                cosine = min(cosine, float((found * expected).sum(1).min()))  # both are unit vectors
        if codes and not cosine >= QUANTIZED_MIN_COSINE:
            raise ExportError(
                f"the quantized ONNX model's cosine to its codes' float function in PyTorch is {cosine:.5f} "
                f"< {QUANTIZED_MIN_COSINE}; nothing was written"
            )
        if not codes and not diff <= TOLERANCE:
            raise ExportError(
                f"the ONNX model differs from PyTorch by {diff:.2e} > {TOLERANCE:g}; nothing was written"
            )
        write_json(tmp / MANIFEST, {**manifest, "max_abs_diff": diff, "min_cosine": cosine})
    return diff


def add_format(formats: argparse._SubParsersAction) -> None:
    """Add `export onnx` to the `export` command's formats (`gemma_embed.export.cli`)."""
    p = formats.add_parser(
        "onnx",
        help="ids + mask -> normalized embeddings as one ONNX graph, verified against PyTorch",
        description="Export encoder, mean pooling, Dense layers and L2 normalization to ONNX (dynamic batch "
        "and sequence axes), then check it with ONNX Runtime (max |diff| <= 1e-4; quantized checkpoints: "
        "cosine >= 0.999 to their codes' function).",
    )
    p.add_argument(
        "model",
        help="checkpoint directory (or a name `load` resolves); a `gemma-embed quantize` folder exports its "
        "int8/int4 codes as ONNX Runtime's MatMulNBits / GatherBlockQuantized",
    )
    add_out_arg(p, required=True, help="output folder (model.onnx, tokenizer, manifest)")
    p.add_argument(
        "--opset", type=int, default=MIN_OPSET, help=f"ONNX opset, >= {MIN_OPSET} (default {MIN_OPSET})"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    diff = export_onnx(args.model, args.out, opset=args.opset, overwrite=args.overwrite)
    print(f"wrote {args.out} (opset {args.opset}); max |diff| to PyTorch on padded batches: {diff:.1e}")
    return 0
