"""`gemma-embed adapt`: a Hugging Face Gemma3ForCausalLM -> UL2 encoder-decoder -> embedding init checkpoint."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer

from gemma_embed import load
from gemma_embed.io.decoder import hf_decoder_config, load_decoder
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.encdec import EncoderDecoder
from gemma_embed.train.init import adapt as adapt_cli
from gemma_embed.train.init.adapt import adapt, decoder_tokenizer
from gemma_embed.train.init.pretrain import (
    LoopConfig,
    corpus_tokens,
    encdec_loss,
    sentinel_ids,
    train_ul2,
    ul2_batch,
)
from helpers import build_tokenizer, random_text

transformers = pytest.importorskip("transformers")

TRUNK = GemmaEmbedConfig(
    vocab_size=416,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=8,
    sliding_window_pattern=2,
    max_position_embeddings=128,
    max_seq_length=128,
)
LOOP = LoopConfig(steps=12, batch_size=8, seq_len=32, lr=3e-3, warmup=2, save_every=4, bf16=True)


@pytest.fixture(scope="module")
def hf_decoder(tmp_path_factory):
    """A random Gemma3ForCausalLM saved by transformers, with a tokenizer that has <mask> (id 400)."""
    root = tmp_path_factory.mktemp("hf") / "gemma3-decoder"
    tok_path = build_tokenizer(root, vocab_size=400)
    tok = Tokenizer.from_file(str(tok_path))
    tok.add_special_tokens(["<mask>"])
    tok.save(str(tok_path))
    hf = {k: v for k, v in hf_decoder_config(TRUNK, torch.float32).items() if k != "architectures"}
    torch.manual_seed(0)
    transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**hf)).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
    path.write_text("".join(json.dumps({"text": random_text(rng, 20)}) + "\n" for _ in range(200)))
    return path


def test_steps_zero_exports_the_decoder_trunk(hf_decoder, tmp_path):
    out = adapt(hf_decoder, tmp_path / "init")
    embedder = load(out)
    model = embedder.model
    trunk = load_decoder(hf_decoder).model.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, trunk[name]), name
    assert [layer.weight.shape for layer in model.head.dense] == [(128, 32), (32, 128)]
    vectors = embedder.encode_document(["Mars is the red planet.", "Water on the moon."])
    assert vectors.shape == (2, 32)


def test_ul2_reduces_the_loss_and_resumes(hf_decoder, corpus, tmp_path):
    tokenizer = decoder_tokenizer(hf_decoder, TRUNK)
    assert sentinel_ids(tokenizer) == [400]
    model = EncoderDecoder.from_decoder(load_decoder(hf_decoder))
    stream_batch = ul2_batch(corpus_tokens(corpus, tokenizer), random.Random(123), LOOP, tokenizer, [400])
    with torch.no_grad():
        before = float(encdec_loss(model, stream_batch))
    first = train_ul2(model, tokenizer, corpus, replace(LOOP, steps=8), tmp_path / "work")
    resumed = train_ul2(model, tokenizer, corpus, LOOP, tmp_path / "work")  # continues at step 8
    with torch.no_grad():
        after = float(encdec_loss(model, stream_batch))
    assert len(first) == 8 and len(resumed) == 12 and resumed[:8] == first
    assert after < before - 0.3, (before, after)


def test_cli_adapt_with_steps(hf_decoder, corpus, tmp_path):
    parser = argparse.ArgumentParser()
    adapt_cli.register(parser.add_subparsers())
    options = ["--steps", "3", "--corpus", str(corpus), "--batch-size", "4", "--seq-len", "24"]
    args = parser.parse_args(
        ["adapt", str(hf_decoder), "--out", str(tmp_path / "init"), *options, "--dense-dims", "64,16"]
    )
    assert args.func(args) == 0
    embedder = load(tmp_path / "init")
    assert embedder.encode_query("red planet").shape == (16,)
    assert (tmp_path / "init-ul2" / "state" / "model.safetensors").is_file()
