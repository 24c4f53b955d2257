"""Loading a quantized checkpoint makes no float copy of a quantized matrix: the head is stored quantized
(format version 3), the codes are file-mapped, and a version 2 folder (head stored float, quantized at load)
still loads to the same outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import gemma_embed.quant.weights as weights
from gemma_embed.encode import load
from gemma_embed.errors import CheckpointError
from gemma_embed.io.checkpoint import save_quantized
from gemma_embed.quant.weights import MANIFEST, SCALE_DTYPE, QuantLinear, quantize_tensor

TEXTS = ["the planet mars is red", "protein cell gene disease", "def return value loop", "water on earth"]
HEAD_FOLDERS = ("2_Dense", "3_Dense")


@pytest.fixture(scope="module")
def int4_folder(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    floats = load(tiny_checkpoint, dtype="float32")
    return save_quantized(floats.checkpoint, "int4", tmp_path_factory.mktemp("q") / "int4")


def float_matrices(model: torch.nn.Module) -> list[str]:
    """Names of the model's 2-D floating-point tensors (parameters and buffers) that hold data."""
    state = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in state if t is not None and t.is_floating_point() and t.ndim == 2 and t.numel()]


def test_head_is_stored_quantized(int4_folder: Path, tiny_checkpoint: Path) -> None:
    manifest = json.loads((int4_folder / MANIFEST).read_text())
    assert manifest["version"] == 3 and sorted(manifest["head_tensors"]) == list(HEAD_FOLDERS)
    for folder in HEAD_FOLDERS:
        stored = load_file(str(int4_folder / folder / "model.safetensors"))
        assert sorted(stored) == ["linear.weight.qcodes", "linear.weight.qscales"]
        float_weight = load_file(str(tiny_checkpoint / folder / "model.safetensors"))["linear.weight"]
        direct = quantize_tensor(float_weight, 4)  # what the float32 checkpoint quantizes to
        assert torch.equal(stored["linear.weight.qcodes"], direct.codes)
        assert torch.equal(stored["linear.weight.qscales"], direct.scales)


def test_load_makes_no_float_copy_of_a_quantized_matrix(int4_folder: Path, monkeypatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a matrix was quantized at load")

    monkeypatch.setattr(weights, "quantize_tensor", refuse)
    model = load(int4_folder).model
    assert all(name.endswith(".scales") for name in float_matrices(model))  # codes, scales, norm vectors
    for layer in model.head.dense:
        assert isinstance(layer, QuantLinear) and layer.codes.dtype == torch.uint8
        assert layer.scales.dtype == SCALE_DTYPE and layer.weight.numel() == 0
    table = model.encoder.embed_tokens
    assert table.codes.dtype == torch.uint8 and table.codes.untyped_storage().nbytes() > table.codes.nbytes
    # ... a view of the file's one map (all tensors of model.safetensors share it), not a copy


def write_version_2(folder: Path, float_checkpoint: Path, out: Path) -> Path:
    """`folder` as the previous format wrote it: the head's float weights in the Dense folders."""
    shutil.copytree(folder, out)
    for name in HEAD_FOLDERS:
        shutil.copy(float_checkpoint / name / "model.safetensors", out / name / "model.safetensors")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["version"] = 2
    del manifest["head_tensors"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_version_2_folder_loads_to_the_same_outputs(
    int4_folder: Path, tiny_checkpoint: Path, tmp_path: Path, dtype: str
) -> None:
    old = load(write_version_2(int4_folder, tiny_checkpoint, tmp_path / "v2"), dtype=dtype)
    new = load(int4_folder, dtype=dtype)
    for old_layer, new_layer in zip(old.model.head.dense, new.model.head.dense, strict=True):
        assert isinstance(old_layer, QuantLinear)
        if dtype == "float32":  # quantized from the same float32 weight: the same codes and scales
            assert torch.equal(old_layer.codes, new_layer.codes)
            assert torch.equal(old_layer.scales, new_layer.scales)
    if dtype == "float32":  # the same computation, bit for bit
        assert np.array_equal(old.encode(TEXTS), new.encode(TEXTS))
    else:  # v2 rounded the head to bfloat16 before quantizing it; v3 quantizes the float32 weight
        assert (old.encode(TEXTS) * new.encode(TEXTS)).sum(1).min() > 0.99


def test_head_codes_missing_from_the_manifest_are_refused(int4_folder: Path, tmp_path: Path) -> None:
    out = shutil.copytree(int4_folder, tmp_path / "bad")
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["head_tensors"]["3_Dense"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"does not list quantized tensor 'linear\.weight\.q"):
        load(out)


def test_head_codes_of_the_wrong_shape_are_refused(int4_folder: Path, tmp_path: Path) -> None:
    out = shutil.copytree(int4_folder, tmp_path / "bad")
    path = out / "2_Dense" / "model.safetensors"
    stored = load_file(str(path))
    save_file({k: v[:-1].contiguous() for k, v in stored.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"2_Dense.*do not fit"):
        load(out)


def test_loading_leaves_the_allocator_alone(int4_folder: Path, tiny_checkpoint: Path, monkeypatch) -> None:
    """`return_freed_memory` is opt-in (it costs speed): no load changes the process's malloc settings."""
    import gemma_embed.encode as encode

    calls: list[str] = []
    monkeypatch.setattr(encode, "return_freed_memory", lambda: calls.append("set") or True)
    load(tiny_checkpoint)
    load(int4_folder)
    assert calls == []


def test_the_users_mmap_threshold_wins(monkeypatch) -> None:
    from gemma_embed.encode import return_freed_memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert return_freed_memory() is False
