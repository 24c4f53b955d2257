"""The public API on a tiny random checkpoint: shapes, prompts, order, long inputs, save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gemma_embed
from gemma_embed.prompts import DEFAULT_PROMPTS


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gemma_embed.load(tiny_checkpoint)


def test_single_string_gives_one_normalized_vector(model):
    vector = model.encode("hello world")
    assert vector.shape == (64,) and vector.dtype == np.float32
    assert abs(np.linalg.norm(vector) - 1) < 1e-6


def test_order_is_restored_after_length_sorting(model):
    texts = ["a", "the red planet is mars " * 5, "b c", "saturn ring " * 9]
    together = model.encode(texts, batch_size=2)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(together[i], model.encode(text), atol=1e-6)


def test_task_helpers_use_the_published_prompts(model):
    assert model.prompts["query"] == "task: search result | query: "
    assert model.prompts["document"] == "title: none | text: "
    assert len(DEFAULT_PROMPTS) == 14
    np.testing.assert_array_equal(model.encode_query(["x y"]), model.encode(["x y"], task="query"))
    np.testing.assert_array_equal(model.encode_document(["x y"]), model.encode(["x y"], task="document"))
    literal = model.encode(["x y"], prompt="task: search result | query: ")
    np.testing.assert_array_equal(literal, model.encode(["x y"], task="query"))
    # (prompt + text).strip(): outer whitespace goes, inner spacing stays
    assert model.model_inputs([" x  "], task="document") == ["title: none | text:  x"]


def test_matryoshka_truncation_renormalizes(model):
    full = model.encode(["the planet mars"])
    small = model.encode(["the planet mars"], dim=32)
    assert small.shape == (1, 32)
    np.testing.assert_allclose(small[0], full[0, :32] / np.linalg.norm(full[0, :32]), atol=1e-6)


def test_similarity_is_cosine(model):
    a, b = model.encode(["mars", "venus planet"]), model.encode(["mars"])
    sims = model.similarity(a, b)
    assert sims.shape == (2, 1)
    assert abs(sims[0, 0] - 1) < 1e-5


def test_truncation_warns_once_with_count(model):
    long = "moon " * 400  # > 256 tokens (max_seq_length of the tiny preset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.encode([long, long, "short"])
    # Only ours: a first compile of the fused kernels (inputs this long) may add torch's own warnings.
    messages = [
        str(w.message) for w in caught if "gemma_embed" in w.filename or "max_seq_length" in str(w.message)
    ]
    assert len(messages) == 1 and messages[0].startswith("2 of 3 texts exceed max_seq_length=256")


def test_chunking_covers_long_texts(model):
    head = "mars red planet " * 60
    tail = "protein cell gene " * 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chunking never truncates, so it never warns
        chunked = model.encode([head + tail], long_text="chunk")
    truncated = model.encode([head + tail], long_text="truncate")
    assert np.isfinite(chunked).all() and abs(np.linalg.norm(chunked) - 1) < 1e-6
    assert not np.allclose(chunked, truncated, atol=1e-3)  # the tail now counts
    spans = model.tokenizer.split_spans(head + tail, window=100, overlap=20)
    assert len(spans) > 2 and spans[0][0] == 0 and spans[-1][1] == len(head + tail)
    short = model.encode(["short text"], long_text="chunk")
    np.testing.assert_allclose(short, model.encode(["short text"]), atol=1e-6)


def test_save_and_load_round_trip(model, tmp_path):
    texts = ["the red planet", "saturn has rings"]
    model.save(tmp_path / "copy")
    again = gemma_embed.load(tmp_path / "copy")
    np.testing.assert_array_equal(again.encode(texts), model.encode(texts))
    assert again.prompts == model.prompts and again.dims == model.dims


def test_save_refuses_to_overwrite(model, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(gemma_embed.CheckpointError, match="not empty"):
        model.save(target)
    assert (target / "keep.txt").read_text() == "precious"


def test_import_does_not_pull_optional_libraries():
    import subprocess
    import sys

    code = "import gemma_embed, sys; print(sorted(m for m in ('transformers','sentence_transformers','sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hub_id_resolves_from_local_cache_only(tiny_checkpoint, tmp_path, monkeypatch):
    import shutil

    repo = tmp_path / "hub" / "models--google--embeddinggemma-300m"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert gemma_embed.load("google/embeddinggemma-300m").encode("mars").shape == (64,)
    with pytest.raises(gemma_embed.CheckpointError, match="huggingface-cli download google/other"):
        gemma_embed.load("google/other")
    with pytest.raises(gemma_embed.CheckpointError, match=r"model directory '\./nope' not found"):
        gemma_embed.load("./nope")


def test_saved_checkpoint_is_readable_by_others(model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = model.save(tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
