"""Weight quantization: numerics, checkpoints (save/load bit-identical, sizes), cosine to float, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gemma_embed.encode import load
from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.checkpoint import save_quantized
from gemma_embed.model import preset
from gemma_embed.quant.cli import register
from gemma_embed.quant.weights import (
    MANIFEST,
    QuantEmbedding,
    QuantLinear,
    bits_for,
    pack_int4,
    quantize_tensor,
    unpack_int4,
)
from helpers import write_random_checkpoint

TEXTS = ["the planet mars is red", "protein cell gene disease", "def return value loop", "water on earth"]


def test_int4_packing_round_trip() -> None:
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)
    assert torch.equal(unpack_int4(pack_int4(codes)), codes)


@pytest.mark.parametrize(("bits", "max_rel"), [(8, 0.5 / 127), (4, 0.3)])  # int4 clips up to 30%
def test_blockwise_error_bound(bits: int, max_rel: float) -> None:
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    q = quantize_tensor(w, bits)
    assert q.scales.shape == (16, 3)
    err = (q.dequantize() - w).abs().reshape(16, 3, 32).amax(-1)
    absmax = w.abs().reshape(16, 3, 32).amax(-1)
    assert bool((err <= absmax * max_rel * 1.01 + 1e-7).all())  # half a step, bf16 scale rounding aside
    assert torch.equal(q.dequantize(rows=torch.tensor([3])), q.dequantize()[3:4])


def test_scheme_table() -> None:
    attn, mlp = "layers.0.self_attn.q_proj.weight", "layers.0.mlp.up_proj.weight"
    assert (bits_for(attn, "mixed"), bits_for(mlp, "mixed"), bits_for("embed_tokens.weight", "mixed")) == (
        8,
        4,
        4,
    )
    assert bits_for("dense.0.weight", "mixed") == 4 and bits_for("norm.weight", "int8") is None
    with pytest.raises(ConfigError):
        bits_for(attn, "int2")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory) -> Path:
    """EmbeddingGemma-300m widths (hidden 768, ffn 1152, 3 heads x 256, head 768->3072->768), 2 layers."""
    cfg = preset("embeddinggemma-300m").replace(
        vocab_size=400, num_hidden_layers=2, max_seq_length=256, max_position_embeddings=256
    )
    return write_random_checkpoint(tmp_path_factory.mktemp("wide") / "ckpt", cfg, seed=3)


@pytest.mark.parametrize(("scheme", "min_cos"), [("int8", 0.995), ("mixed", 0.975), ("int4", 0.96)])
def test_wide_checkpoint_round_trip(
    wide_checkpoint: Path, tmp_path: Path, scheme: str, min_cos: float
) -> None:
    floats = load(wide_checkpoint)
    ref = floats.encode(TEXTS)
    out = save_quantized(floats.checkpoint, scheme, tmp_path / scheme)
    assert (out / MANIFEST).is_file() and not list(out.rglob("*.bin"))
    quant = load(out)
    enc = quant.model.encoder
    assert isinstance(enc.embed_tokens, QuantEmbedding) and isinstance(quant.model.head.dense[0], QuantLinear)
    assert enc.layers[0].self_attn.q_proj.bits == (4 if scheme == "int4" else 8)
    assert enc.layers[0].mlp.up_proj.bits == (8 if scheme == "int8" else 4)
    assert cosines(ref, quant.encode(TEXTS)).min() >= min_cos
    # Bit-identical round trip: codes and scales loaded equal what quantization produced.
    stored = load_file(str(out / "model.safetensors"))
    direct = quantize_tensor(
        floats.model.encoder.layers[1].mlp.down_proj.weight, enc.layers[1].mlp.down_proj.bits
    )
    assert torch.equal(stored["layers.1.mlp.down_proj.weight.qcodes"], direct.codes)
    assert torch.equal(enc.layers[1].mlp.down_proj.codes, direct.codes)
    assert torch.equal(enc.layers[1].mlp.down_proj.scales, direct.scales)
    ratio = (out / "model.safetensors").stat().st_size / (
        wide_checkpoint / "model.safetensors"
    ).stat().st_size
    assert ratio < {"int8": 0.28, "mixed": 0.2, "int4": 0.15}[scheme]
    again = load(out)
    assert np.array_equal(again.encode(TEXTS), quant.encode(TEXTS))


def test_tiny_cli_and_int8(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "q8"
    argv = ["quantize", str(tiny_checkpoint), "--scheme", "int8", "--out", str(out)]
    assert run_cli(argv) == 0
    assert cosines(load(tiny_checkpoint).encode(TEXTS), load(out).encode(TEXTS)).min() >= 0.995
    with pytest.raises(CheckpointError, match="not empty"):
        run_cli(argv)


def run_cli(argv: list[str]) -> int:
    """Until gemma_embed.cli lists gemma_embed.quant.cli in SUBCOMMAND_MODULES, build the parser here."""
    import argparse

    parser = argparse.ArgumentParser(prog="gemma-embed")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_bad_manifest(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = save_quantized(load(tiny_checkpoint).checkpoint, "int4", tmp_path / "q4")
    (out / MANIFEST).write_text('{"format": "other", "version": 9}')
    with pytest.raises(CheckpointError, match="not supported"):
        load(out)


def test_saving_a_loaded_quantized_model_is_refused(tiny_checkpoint, tmp_path):
    import gemma_embed
    from gemma_embed.io.checkpoint import save_quantized

    out = save_quantized(gemma_embed.load(tiny_checkpoint).checkpoint, "int8", tmp_path / "q")
    with pytest.raises(gemma_embed.CheckpointError, match="quantized weights"):
        gemma_embed.load(out).save(tmp_path / "again")
