"""ONNX export: the exported pipeline matches PyTorch on padded batches of other shapes than the example,
the encoder keeps the input order, and bad requests fail with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gemma_embed
from gemma_embed import cli as main_cli
from gemma_embed.errors import InputError
from gemma_embed.model import preset
from helpers import write_random_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = [
    "the planet mars is red",
    "protein " * 40 + "cell",  # longer than the sliding window of the config below
    "a",
    "water on earth and a gas giant with a ring",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer tiny checkpoint (one sliding, one full layer) and its ONNX export through the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    config = preset("tiny").replace(num_hidden_layers=2, sliding_window_pattern=2, vocab_size=400)
    ckpt = write_random_checkpoint(root / "ckpt", config, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main_cli.main(["export", "onnx", str(ckpt), "--out", str(root / "onnx")]) == 0
    finally:
        torch.set_num_threads(threads)
    return ckpt, root / "onnx"


def test_onnx_matches_pytorch_on_padded_batches(exported) -> None:
    from gemma_embed.export.onnx import OnnxEncoder

    ckpt, out = exported
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "tokenizer.json", "gemma_embed_onnx.json"}
    model = gemma_embed.load(ckpt)
    onnx = OnnxEncoder(out, threads=1)
    generator = torch.Generator().manual_seed(0)
    for batch, length in ((5, 40), (2, 3), (1, 17)):
        ids = torch.randint(3, 400, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length // 2 + 1 :] = 0  # the first row is padded (all rows when batch == 1)
        ids = ids.masked_fill(mask == 0, 0)
        with torch.no_grad():
            expected = model.model(ids, mask).numpy()
        np.testing.assert_allclose(onnx.run(ids.numpy(), mask.numpy()), expected, rtol=0, atol=1e-4)
    got = onnx.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(got, model.encode(TEXTS, batch_size=3), rtol=0, atol=1e-4)
    # a token budget below every text's length: one text per batch, same vectors, input order kept
    np.testing.assert_allclose(onnx.encode(TEXTS, max_batch_tokens=1), got, rtol=0, atol=1e-5)
    arena = OnnxEncoder(out, threads=1, memory_arena=True)
    assert arena.session.get_session_options().enable_cpu_mem_arena
    assert not onnx.session.get_session_options().enable_cpu_mem_arena
    for bad in ({"batch_size": 0}, {"max_batch_tokens": -1}, {"max_batch_tokens": 2.5}):
        with pytest.raises(InputError, match="must be a positive integer"):
            onnx.encode(TEXTS, **bad)


def test_bad_requests_are_one_line_errors(exported, tmp_path, capsys) -> None:
    ckpt, out = exported
    assert main_cli.main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "x"), "--opset", "17"]) == 2
    assert "opset 18 or newer" in capsys.readouterr().err
    assert main_cli.main(["export", "onnx", str(ckpt), "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["int8", "int4", "mixed"])
def test_quantized_export_reads_the_checkpoints_own_codes(scheme, tmp_path, monkeypatch) -> None:
    """A quantized checkpoint exports as ONNX Runtime's block-quantized ops over its own codes: every weight
    product and the token table are rewritten (no float copy of a quantized matrix stays in the graph), and
    the graph computes what the checkpoint's codes compute in PyTorch (dequantized, float32), outlier
    columns included (one column of the table and of a projection is made an outlier first)."""
    import json

    import onnx

    from gemma_embed.export.onnx import OnnxEncoder
    from gemma_embed.io.checkpoint import load_checkpoint, save_quantized
    from gemma_embed.quant.weights import outlier_columns

    config = preset("tiny").replace(num_hidden_layers=2, sliding_window_pattern=2, vocab_size=400)
    ckpt = load_checkpoint(write_random_checkpoint(tmp_path / "ckpt", config, seed=5), dtype=torch.float32)
    with torch.no_grad():
        ckpt.model.encoder.embed_tokens.weight[:, 5] *= 40
        ckpt.model.encoder.layers[0].mlp.up_proj.weight[:, 7] *= 40
    assert outlier_columns(ckpt.model.encoder.embed_tokens.weight) is not None
    save_quantized(ckpt, scheme, tmp_path / "q")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main_cli.main(["export", "onnx", str(tmp_path / "q"), "--out", str(tmp_path / "onnx")]) == 0
    finally:
        torch.set_num_threads(threads)

    manifest = json.loads((tmp_path / "onnx" / "gemma_embed_onnx.json").read_text())
    linears = 7 * config.num_hidden_layers + 2
    assert manifest["weights"] == scheme
    assert manifest["quantized_ops"] == {"GatherBlockQuantized": 1, "MatMulNBits": linears}
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx"), load_external_data=False).graph
    float_matrices = [
        i.name for i in graph.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT
    ]
    kinds = {name.rsplit("_", 1)[0].rsplit(".", 1)[-1] for name in float_matrices}
    assert kinds == {"scales", "outlier_values", "outlier_spread"}, float_matrices

    monkeypatch.setenv("GEMMA_EMBED_INT_KERNELS", "0")  # PyTorch dequantizes: the codes' float function
    model = gemma_embed.load(tmp_path / "q", dtype="float32")
    expected = model.encode(TEXTS, batch_size=3)
    got = OnnxEncoder(tmp_path / "onnx", threads=1).encode(TEXTS, batch_size=3)
    assert float((got * expected).sum(1).min()) >= 0.999
    assert manifest["min_cosine"] >= 0.999
