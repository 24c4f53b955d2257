"""Prompts, the embedding cache (hit, miss, safety), Matryoshka dims from one encoding, model identity."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from gemma_embed.errors import InputError
from gemma_embed.eval.cache import EmbeddingCache, default_cache_dir, namespace, text_keys
from gemma_embed.eval.embedding import EmbeddingSource, truncate
from gemma_embed.eval.encoders import detect_backend, load_encoder, model_identity, resolve_prompt_name

GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
}


def test_prompt_names_follow_mteb_priority():
    assert resolve_prompt_name(GEMMA_PROMPTS, "Retrieval", "query") == "Retrieval"
    assert resolve_prompt_name(GEMMA_PROMPTS, "Retrieval", "document") == "Retrieval-document"
    assert resolve_prompt_name(GEMMA_PROMPTS, "STS") == "STS"
    assert resolve_prompt_name(GEMMA_PROMPTS, "Reranking", "document") == "Reranking"
    assert resolve_prompt_name(GEMMA_PROMPTS, "Clustering") is None
    assert resolve_prompt_name({"query": "", "document": ""}, "Retrieval", "document") == "document"
    with_task = {**GEMMA_PROMPTS, "SciFact-query": "custom"}
    assert resolve_prompt_name(with_task, "Retrieval", "query", task_name="SciFact") == "SciFact-query"


def test_source_uses_prompts(fake_encoder):
    source = EmbeddingSource(fake_encoder, progress=False)
    source.embed_fn("Retrieval")(["x"], "document")
    source.embed_fn("STS")(["x"])
    source.embed_fn("Clustering")(["x"])
    assert [prompt for _, prompt in fake_encoder.calls] == ["d: ", "s: ", ""]


def test_truncate_renormalizes():
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32) / 13
    np.testing.assert_allclose(truncate(v, 2), [[0.6, 0.8]], rtol=1e-6)
    assert truncate(v, None) is v and truncate(v, 3) is v
    with pytest.raises(InputError, match="dim 4 is not available"):
        truncate(v, 4)


def test_dims_reuse_one_encoding(fake_encoder):
    source = EmbeddingSource(fake_encoder, progress=False)
    texts = ["alpha", "beta", "alpha"]
    full = source.embed_fn("STS")(texts)
    small = source.embed_fn("STS", dim=16)(texts)
    assert fake_encoder.encoded_texts == 2  # duplicates and the second dim cost nothing
    np.testing.assert_allclose(small, truncate(full, 16))
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(full[0], full[2])


def test_cache_hit_and_miss(tmp_path, make_fake_encoder):
    cache = EmbeddingCache(tmp_path)
    first = make_fake_encoder()
    a = EmbeddingSource(first, cache, progress=False).encode(["one", "two"], "p: ")
    assert first.encoded_texts == 2
    second = make_fake_encoder()  # same identity: served from disk
    b = EmbeddingSource(second, cache, progress=False).encode(["two", "one", "three"], "p: ")
    assert second.encoded_texts == 1 and second.calls[0][0] == ["three"]
    np.testing.assert_array_equal(b[:2], a[::-1])
    other_prompt = make_fake_encoder()
    EmbeddingSource(other_prompt, cache, progress=False).encode(["one"], "q: ")
    assert other_prompt.encoded_texts == 1
    other_model = make_fake_encoder(identity="fake-2")
    EmbeddingSource(other_model, cache, progress=False).encode(["one"], "p: ")
    assert other_model.encoded_texts == 1
    no_cache = make_fake_encoder()
    EmbeddingSource(no_cache, None, progress=False).encode(["one"], "p: ")
    assert no_cache.encoded_texts == 1


def test_cache_files_are_plain_npy_and_atomic(tmp_path, fake_encoder):
    cache = EmbeddingCache(tmp_path)
    EmbeddingSource(fake_encoder, cache, progress=False).encode(["one", "two"], "p: ")
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(f.endswith((".keys.npy", ".emb.npy")) for f in files)
    for path in tmp_path.rglob("*.npy"):
        np.load(path, allow_pickle=False)  # never pickled objects
    ns = namespace("fake-1", "p: ")
    found, vectors = cache.lookup(ns, text_keys(["two", "zzz"]))
    assert found.tolist() == [True, False] and vectors.shape == (1, 64)


def test_corrupt_and_pickled_shards_are_ignored(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    ns = namespace("fake-1", "")
    directory = tmp_path / ns[:2] / ns
    directory.mkdir(parents=True)
    (directory / "bad.keys.npy").write_bytes(b"not numpy")
    (directory / "bad.emb.npy").write_bytes(b"not numpy")
    np.save(directory / "evil.keys.npy", np.array([object()], dtype=object), allow_pickle=True)
    np.save(directory / "evil.emb.npy", np.zeros((1, 4), np.float32))
    with caplog.at_level(logging.WARNING):
        found, vectors = cache.lookup(ns, text_keys(["a"]))
    assert not found.any() and vectors is None
    assert "ignored" in caplog.text


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_EMBED_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GEMMA_EMBED_CACHE")
    assert default_cache_dir().parts[-2:] == ("gemma-embed", "embeddings")


def test_model_identity_tracks_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = model_identity("gemma-embed", str(tmp_path))
    assert model_identity("gemma-embed", str(tmp_path)) == before
    assert model_identity("gemma-embed", str(tmp_path), dtype="bfloat16") != before
    (tmp_path / "config.json").write_text('{"a": 1}')
    changed = model_identity("gemma-embed", str(tmp_path))
    assert changed != before
    stat = os.stat(tmp_path / "model.safetensors")
    os.utime(tmp_path / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert model_identity("gemma-embed", str(tmp_path)) != changed
    assert model_identity("gemma-embed", "some/hub-name") != model_identity("gemma-embed", "other/hub-name")


def test_detect_backend(tmp_path):
    assert detect_backend(str(tmp_path)) == "gemma-embed"
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert detect_backend(str(tmp_path)) == "sentence-transformers"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert detect_backend(str(tmp_path)) == "gemma-embed"


def test_gemma_embed_backend_on_a_tiny_checkpoint(tiny_checkpoint):
    encoder = load_encoder(str(tiny_checkpoint), backend="gemma-embed")
    vectors = encoder.encode(["the red planet", "a gas giant"], prompt=encoder.prompts["query"], batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert encoder.identity == load_encoder(str(tiny_checkpoint), backend="gemma-embed").identity
