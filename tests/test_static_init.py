"""Static warm start: the ridge fit, and a Gemma 3 model that computes it exactly before training."""

import random

import numpy as np
import pytest
import torch

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import EmbeddingModel, preset
from gemma_embed.train.init.adapt import pretrain
from gemma_embed.train.init.pretrain import LoopConfig
from gemma_embed.train.init.static import (
    fit_static,
    load_static,
    ridge_fit,
    save_static,
    token_bags,
    token_table,
    warm_start,
)
from helpers import build_tokenizer, random_text

TINY = preset("tiny")  # hidden 64, dense (256, 64): the "teacher" below is 64-dimensional


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    path = build_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=TINY.vocab_size)
    return TextTokenizer.from_file(path, bos_id=2, eos_id=1, pad_id=0, max_length=64)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [random_text(rng, rng.randint(2, 12)) for _ in range(n)]


def test_token_bags_are_mean_pooling_weights(tokenizer: TextTokenizer) -> None:
    sample = texts(5)
    bags = token_bags(tokenizer, sample, prompts=()).to_dense()
    ids, _ = tokenizer.encode(sample)
    for row, seq in zip(bags, ids, strict=True):
        expected = torch.bincount(torch.tensor(seq), minlength=tokenizer.vocab_size).float() / len(seq)
        torch.testing.assert_close(row, expected)
    assert torch.allclose(bags.sum(1), torch.ones(5))


def test_ridge_fit_recovers_a_linear_map() -> None:
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(400, 50, generator=gen) * (torch.rand(400, 50, generator=gen) < 0.2)
    true = torch.randn(50, 8, generator=gen)
    fitted = ridge_fit(dense.to_sparse_csr(), dense @ true, l2=1e-9, iters=500, tol=1e-8)
    torch.testing.assert_close(fitted, true, atol=1e-3, rtol=1e-3)
    # A strong ridge shrinks the solution.
    assert ridge_fit(dense.to_sparse_csr(), dense @ true, l2=10.0).norm() < 0.5 * true.norm()


def test_warm_started_model_computes_the_static_fit(tokenizer: TextTokenizer, tmp_path) -> None:
    train = texts(600)
    targets = np.random.default_rng(0).standard_normal((600, 64)).astype(np.float32)
    fit = fit_static(tokenizer, train, targets)
    path = save_static(fit, tmp_path / "static", {"texts": 600})
    fit = load_static(path.parent)
    table = token_table(fit, TINY.hidden_size)
    torch.testing.assert_close(table.norm(dim=1), torch.ones(TINY.vocab_size))

    model = warm_start(EmbeddingModel(TINY).initialize(0), fit).eval()
    sample = texts(7, seed=1)
    ids, _ = tokenizer.encode(sample)
    batch = tokenizer.pad(ids)
    with torch.no_grad():
        got = model(batch.input_ids, batch.attention_mask)
    # The static prediction, seen through the top hidden - 1 principal directions the model keeps.
    keep = fit["directions"][:, : TINY.hidden_size - 1]
    expected = token_bags(tokenizer, sample, prompts=()) @ fit["vectors"] @ keep @ keep.T
    expected = torch.nn.functional.normalize(expected, dim=1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_gate_opens_the_layers(tokenizer: TextTokenizer) -> None:
    fit = fit_static(tokenizer, texts(300), np.random.default_rng(1).standard_normal((300, 64)).astype("f4"))
    closed = warm_start(EmbeddingModel(TINY).initialize(0), fit, gate=0.0)
    opened = warm_start(EmbeddingModel(TINY).initialize(0), fit, gate=0.5)
    batch = tokenizer.pad(tokenizer.encode(texts(3, seed=2))[0])
    with torch.no_grad():
        a = closed(batch.input_ids, batch.attention_mask)
        b = opened(batch.input_ids, batch.attention_mask)
    assert (a - b).abs().max() > 1e-3
    assert all((layer.post_attention_layernorm.weight == -0.5).all() for layer in opened.encoder.layers)


def test_warm_start_refuses_mismatched_shapes(tokenizer: TextTokenizer, tmp_path) -> None:
    fit = fit_static(tokenizer, texts(200), np.ones((200, 32), dtype=np.float32))
    with pytest.raises(ConfigError, match="dense_dims"):
        warm_start(EmbeddingModel(TINY).initialize(0), fit)
    with pytest.raises(ConfigError, match="tokens"):
        warm_start(EmbeddingModel(TINY.replace(vocab_size=TINY.vocab_size + 1)), fit)
    with pytest.raises(CheckpointError, match="fit-static"):
        load_static(tmp_path)


def test_pretrain_lm_starts_from_the_static_fit_and_can_keep_it(tokenizer: TextTokenizer, tmp_path) -> None:
    torch.set_num_threads(1)
    tok_dir = build_tokenizer(tmp_path / "tok", vocab_size=TINY.vocab_size).parent
    fit = fit_static(tokenizer, texts(300), np.random.default_rng(2).standard_normal((300, 64)).astype("f4"))
    save_static(fit, tmp_path / "static", {})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": "{t}"}}\n' for t in texts(200)))
    loop = LoopConfig(steps=3, batch_size=4, seq_len=32, bf16=False, freeze_embeddings=True)
    out = pretrain(tok_dir, tmp_path / "lm", corpus, loop, trunk="tiny", static=tmp_path / "static")
    from gemma_embed.io.decoder import load_decoder

    lm = load_decoder(out)
    torch.testing.assert_close(lm.model.embed_tokens.weight, token_table(fit, TINY.hidden_size))
