"""Checkpoint tensors are copy-on-write maps of the file (read when touched), equal to what safetensors reads;
models to load into are built as storage-less skeletons."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from gemma_embed.io.checkpoint import map_tensors, read_tensors
from gemma_embed.model import EmbeddingModel, preset
from gemma_embed.model.gemma3 import skeleton


def test_mapped_tensors_equal_safetensors_and_never_write_the_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.codes": torch.randint(
            -128, 127, (3, 5), dtype=torch.int8, generator=g
        ),  # 15 bytes: odd offsets next
        "b.scales": torch.randn(4, 2, generator=g).to(torch.bfloat16),
        "c.weight": torch.randn(6, 7, generator=g),
        "d.flag": torch.tensor([True, False]),
        "e.empty": torch.zeros(0, 4),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    before = path.read_bytes()
    mapped = read_tensors(path, mapped=True)
    expected = load_file(str(path))
    assert mapped.keys() == expected.keys()
    for name, tensor in expected.items():
        assert mapped[name].dtype == tensor.dtype and torch.equal(mapped[name], tensor), name
    mapped["c.weight"].add_(1.0)  # copy-on-write: the process sees the change, the file does not
    assert path.read_bytes() == before
    assert torch.equal(map_tensors(path)["c.weight"], expected["c.weight"])


def test_skeleton_builds_storage_less_models_without_initializing():
    with skeleton():
        model = EmbeddingModel(preset("embeddinggemma-300m"))
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 300e6
    plain = torch.nn.Linear(3, 3)  # outside: ordinary initialization again
    assert not plain.weight.is_meta and plain.weight.abs().sum() > 0
