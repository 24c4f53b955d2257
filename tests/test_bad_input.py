"""Every bad input of the core gets a typed error with an actionable message, in the API and in the CLI."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

import gemma_embed
from gemma_embed import CheckpointError, InputError, UnsupportedDtypeError


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gemma_embed.load(tiny_checkpoint)


@pytest.fixture()
def ckpt_copy(tiny_checkpoint, tmp_path):
    return shutil.copytree(tiny_checkpoint, tmp_path / "copy")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gemma_embed", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


# ---- checkpoint files ----------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        gemma_embed.load(tmp_path / "nope")


def test_missing_file(ckpt_copy):
    (ckpt_copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing"):
        gemma_embed.load(ckpt_copy)


def test_corrupt_safetensors(ckpt_copy):
    (ckpt_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        gemma_embed.load(ckpt_copy)


def test_truncated_safetensors(ckpt_copy):
    data = (ckpt_copy / "model.safetensors").read_bytes()
    (ckpt_copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        gemma_embed.load(ckpt_copy)


def test_corrupt_json_names_line(ckpt_copy):
    (ckpt_copy / "config.json").write_text('{\n  "hidden_size": 64,\n  oops\n}')
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON \(line 3"):
        gemma_embed.load(ckpt_copy)


def test_shape_mismatch_names_tensor_and_shapes(ckpt_copy):
    config = json.loads((ckpt_copy / "config.json").read_text())
    config["intermediate_size"] = 96
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'layers.0.mlp.gate_proj.weight' has shape \(128, 64\), the config expects \(96, 64\)",
    ):
        gemma_embed.load(ckpt_copy)


def test_missing_and_unexpected_tensors(ckpt_copy):
    tensors = load_file(ckpt_copy / "model.safetensors")
    tensors["layers.0.extra.weight"] = tensors.pop("norm.weight")
    save_file(tensors, ckpt_copy / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"tensor 'norm\.weight' is missing"):
        gemma_embed.load(ckpt_copy)


def test_dense_shape_mismatch(ckpt_copy):
    save_file(
        {
            "linear.weight": load_file(ckpt_copy / "3_Dense" / "model.safetensors")["linear.weight"][
                :, :100
            ].contiguous()
        },
        ckpt_copy / "3_Dense" / "model.safetensors",
    )
    with pytest.raises(CheckpointError, match=r"3_Dense.*shape"):
        gemma_embed.load(ckpt_copy)


def test_prefixed_keys_load(ckpt_copy, model):
    tensors = load_file(ckpt_copy / "model.safetensors")
    save_file({f"model.{k}": v for k, v in tensors.items()}, ckpt_copy / "model.safetensors")
    assert (gemma_embed.load(ckpt_copy).encode("mars") == model.encode("mars")).all()


class Boom:
    """Unpickling this would create a file: the proof that nothing was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_is_refused_without_unpickling(ckpt_copy, tmp_path):
    marker = tmp_path / "unpickled"
    (ckpt_copy / "model.safetensors").unlink()
    (ckpt_copy / "pytorch_model.bin").write_bytes(pickle.dumps(Boom(str(marker))))
    with pytest.raises(CheckpointError, match=r"pickle checkpoint.*never unpickles.*safe_serialization"):
        gemma_embed.load(ckpt_copy)
    with pytest.raises(CheckpointError, match="pickle checkpoint"):
        gemma_embed.load(ckpt_copy / "pytorch_model.bin")
    assert not marker.exists()


# ---- call arguments ------------------------------------------------------------------------------


def test_unknown_task_lists_known_ones(model):
    with pytest.raises(InputError, match=r"unknown task 'serch'.*known tasks: .*query"):
        model.encode(["x"], task="serch")


@pytest.mark.parametrize("dim", [0, -1, 65, 4096, 2.5, True, "128"])
def test_dim_not_allowed(model, dim):
    with pytest.raises(InputError, match=r"dim=.* is not allowed; use an integer from 1 to 64"):
        model.encode(["x"], dim=dim)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "texts is empty"),
        (["ok", 3], r"texts\[1\] is int"),
        (["ok", None], r"texts\[1\] is NoneType"),
        (None, "must be a string or a list"),
        (b"bytes", "must be a string or a list"),
        (12, "must be a string or a list"),
    ],
)
def test_bad_texts(model, texts, message):
    with pytest.raises(InputError, match=message):
        model.encode(texts)


def test_float16_is_refused_with_reason(tiny_checkpoint):
    with pytest.raises(UnsupportedDtypeError, match=r"float16 range.*bfloat16"):
        gemma_embed.load(tiny_checkpoint, dtype="float16")
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        import torch

        gemma_embed.load(tiny_checkpoint, dtype=torch.float16)


def test_task_and_prompt_together(model):
    with pytest.raises(InputError, match="either task= or prompt="):
        model.encode(["x"], task="query", prompt="p: ")


# ---- the CLI: one line on stderr, exit code 2, no traceback ----------------------------------------


def test_cli_errors(tiny_checkpoint, tmp_path):
    ckpt = str(tiny_checkpoint)
    assert_one_line_error(run_cli("info", str(tmp_path / "missing")), "not found")
    assert_one_line_error(run_cli("encode", "-m", ckpt, "--task", "serch", stdin="x\n"), "unknown task")
    assert_one_line_error(
        run_cli("encode", "-m", ckpt, "--dim", "1000", stdin="x\n"), "dim=1000 is not allowed"
    )
    assert_one_line_error(run_cli("encode", "-m", ckpt, stdin=""), "no input texts")
    assert_one_line_error(
        run_cli("encode", "-m", ckpt, "--format", "jsonl", stdin='{"text": 3}\n'), "<stdin>, line 1"
    )
    assert_one_line_error(
        run_cli("encode", "-m", ckpt, "-i", str(tmp_path / "none.txt")), "no such input file"
    )
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"junk")
    assert_one_line_error(run_cli("info", str(bad)), "corrupt")
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(b"junk")
    assert_one_line_error(run_cli("info", str(bad)), "pickle")
    assert_one_line_error(run_cli("info", ckpt, "--dtype", "float16"), "float16 range")
    assert_one_line_error(
        run_cli("encode", "-m", ckpt, "--dtype", "fp8", stdin="x\n"), "'fp8' is not supported"
    )


def test_cli_encode_and_similarity(tiny_checkpoint, tmp_path, model):
    ckpt = str(tiny_checkpoint)
    out = run_cli("encode", "-m", ckpt, "--task", "query", "--dim", "32", "-q", stdin="mars\nvenus planet\n")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and len(rows[0]["embedding"]) == 32
    expected = model.encode(["mars", "venus planet"], task="query", dim=32)
    assert max(abs(a - b) for a, b in zip(rows[1]["embedding"], expected[1], strict=True)) < 1e-6

    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "mars"}\n{"id": "b", "text": "saturn"}\n')
    npy = tmp_path / "vectors.npy"
    assert run_cli("encode", "-m", ckpt, "-i", str(src), "-o", str(npy), "-q").returncode == 0
    import numpy as np

    np.testing.assert_allclose(np.load(npy), model.encode(["mars", "saturn"]), atol=1e-6)

    ranked = run_cli("similarity", "-m", ckpt, "red planet", "saturn rings", "red planet")
    assert ranked.returncode == 0, ranked.stderr
    first = ranked.stdout.splitlines()[0].split()
    assert first[0] == "1" and ranked.stdout.splitlines()[0].endswith("red planet")

    info = run_cli("info", ckpt)
    assert info.returncode == 0 and "token embeddings" in info.stdout and "task: search result" in info.stdout
