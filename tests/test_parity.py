"""Parity with the reference: transformers' Gemma3TextModel (bidirectional) inside sentence-transformers.

Random weights are written to disk once per config and loaded by both sides. The reference is the
sentence-transformers pipeline Transformer -> Pooling(mean) -> Dense -> Dense -> Normalize, the
published EmbeddingGemma layout. Tolerance: max |difference| <= 1e-5 in float32.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from gemma_embed import load
from gemma_embed.model import GemmaEmbedConfig, preset
from gemma_embed.prompts import DEFAULT_PROMPTS
from helpers import random_text, write_random_checkpoint

st = pytest.importorskip("sentence_transformers")

VOCAB = 400
CONFIGS = {
    "tiny": preset("tiny").replace(vocab_size=VOCAB),
    # The exact published widths (hidden 768, 3 heads / 1 KV head of 256, FFN 1152, window 512), 6 layers.
    "300m-widths": preset("embeddinggemma-300m").replace(vocab_size=VOCAB, num_hidden_layers=6),
    # Odd window, no GQA, a 3-layer pattern, scalar != head_dim, other dense sizes and rope bases.
    "odd": GemmaEmbedConfig(
        vocab_size=VOCAB,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=7,
        num_attention_heads=3,
        num_key_value_heads=3,
        head_dim=32,
        query_pre_attn_scalar=24,
        sliding_window=9,
        sliding_window_pattern=3,
        max_position_embeddings=512,
        max_seq_length=200,
        rope_theta=500_000.0,
        rope_local_base_freq=20_000.0,
        dense_dims=(128, 48),
        matryoshka_dims=(48, 32, 16),
    ),
}
TOLERANCE = 1e-5


def mixed_texts(config: GemmaEmbedConfig, seed: int = 0) -> list[str]:
    """Short texts, texts longer than twice the window, and one longer than max_seq_length."""
    rng = random.Random(seed)
    long_words = config.sliding_window + 20  # >= 2x the window in tokens (words are >= 1 token)
    return [
        random_text(rng, 3),
        random_text(rng, long_words),
        "",
        random_text(rng, 12),
        random_text(rng, config.max_seq_length + 10),  # truncated on both sides, EOS kept
        random_text(rng, long_words // 2),
        "   Mars is the red planet   ",
    ]


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(our embedder, the reference SentenceTransformer, config) over the same files on disk."""
    config = CONFIGS[request.param]
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp(request.param) / "ckpt", config, seed=7)
    reference = st.SentenceTransformer(str(ckpt), device="cpu")
    return load(ckpt), reference, config


def reference_encode(reference, texts, **kwargs) -> np.ndarray:
    return reference.encode(texts, batch_size=len(texts), convert_to_numpy=True, **kwargs)


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_fp32_matches_reference_on_mixed_lengths(pair):
    ours, reference, config = pair
    texts = mixed_texts(config)
    expected = reference_encode(reference, texts, prompt_name="query")
    got = ours.encode(texts, task="query", batch_size=len(texts))
    assert np.isfinite(expected).all(), "the reference produced NaN: padding rows must not be fully masked"
    assert got.shape == (len(texts), config.embedding_dim)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_batching_does_not_change_vectors(pair):
    ours, _, config = pair
    texts = mixed_texts(config, seed=1)
    together = ours.encode(texts, batch_size=len(texts))
    alone = np.stack([ours.encode(t) for t in texts])
    assert np.abs(together - alone).max() <= TOLERANCE


def test_every_task_prompt_matches_reference(pair):
    ours, reference, config = pair
    texts = mixed_texts(config)[:4]
    for task in DEFAULT_PROMPTS:
        expected = reference_encode(reference, texts, prompt_name=task)
        got = ours.encode(texts, task=task)
        assert np.abs(got - expected).max() <= TOLERANCE, task


def test_matryoshka_dims_match_reference(pair):
    ours, reference, config = pair
    texts = mixed_texts(config)[:4]
    for dim in config.matryoshka_dims:
        expected = reference_encode(reference, texts, truncate_dim=dim, normalize_embeddings=True)
        got = ours.encode(texts, dim=dim)
        assert got.shape == (len(texts), dim)
        assert np.abs(got - expected).max() <= TOLERANCE, dim
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_bfloat16_path_close_to_float32(pair):
    ours, _, config = pair
    texts = mixed_texts(config, seed=2)
    fast = load(ours.name_or_path, dtype="bfloat16")
    cosine = (fast.encode(texts) * ours.encode(texts)).sum(axis=1)
    assert fast.dtype.is_floating_point and str(fast.dtype) == "torch.bfloat16"
    assert cosine.mean() >= 0.999


def test_we_load_what_sentence_transformers_saves(pair, tmp_path):
    ours, reference, config = pair
    reference.save(str(tmp_path / "st-saved"))
    reloaded = load(tmp_path / "st-saved")
    texts = mixed_texts(config)[:4]
    assert np.abs(reloaded.encode(texts, task="STS") - ours.encode(texts, task="STS")).max() <= TOLERANCE


def test_bfloat16_checkpoint_round_trips_through_sentence_transformers(pair, tmp_path):
    ours, _, config = pair
    fast = load(ours.name_or_path, dtype="bfloat16")
    fast.save(tmp_path / "bf16")
    texts = mixed_texts(config)[:4]
    again = load(tmp_path / "bf16")
    assert str(again.dtype) == "torch.bfloat16"
    np.testing.assert_array_equal(again.encode(texts), fast.encode(texts))
    reference = st.SentenceTransformer(str(tmp_path / "bf16"), device="cpu")
    cosine = (reference_encode(reference, texts) * again.encode(texts)).sum(axis=1)
    assert cosine.min() >= 0.99  # both in bfloat16, different op order: close, not identical


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*truncated")
def test_full_300m_config_matches_reference(tmp_path):
    """The exact published config: 24 layers, vocab 262,144 (the test tokenizer uses its first 400 ids)."""
    config = preset("embeddinggemma-300m")
    ckpt = write_random_checkpoint(tmp_path / "ckpt", config, seed=3, tokenizer_vocab=VOCAB)
    texts = mixed_texts(config)
    reference = st.SentenceTransformer(str(ckpt), device="cpu")
    expected = reference_encode(reference, texts, prompt_name="document")
    got = load(ckpt).encode(texts, task="document", batch_size=len(texts))
    assert np.abs(got - expected).max() <= TOLERANCE
