"""Builders shared by the tests: a small Gemma-style tokenizer and random-weight checkpoints on disk."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from gemma_embed.io.checkpoint import Checkpoint, save_checkpoint
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import EmbeddingModel, GemmaEmbedConfig

_VOCABULARY = (
    "the a of to in is for on with as by at from that this it be are was an or which search result query "
    "title none text task sentence similarity classification clustering code retrieval summarization "
    "planet red mars venus jupiter saturn ring moon sun star space orbit earth water life rock gas giant "
    "protein cell gene disease patient study trial dose effect cancer brain heart virus vaccine model data "
    "function return value class import def loop list dict string number error file path user server"
)
WORDS = _VOCABULARY.split()
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def random_text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(words).capitalize() + "."


def build_tokenizer(out_dir: Path, vocab_size: int = 400) -> Path:
    """A BPE tokenizer with Gemma's special ids (<pad>=0 <eos>=1 <bos>=2 <unk>=3) and a metaspace scheme."""
    rng = random.Random(0)
    corpus = [random_text(rng, 16) for _ in range(3000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    alphabet = sorted(set("".join(corpus)) | set("abcdefghijklmnopqrstuvwxyz|:,.?!'0123456789"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": True,
        "padding_side": "right",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return out_dir / "tokenizer.json"


def randomize(model: EmbeddingModel, seed: int) -> EmbeddingModel:
    """Weights large enough that every part of the network changes the output (norm gains included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = 0.3 if name.endswith("norm.weight") else 0.05
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model


def write_random_checkpoint(
    out: Path, config: GemmaEmbedConfig, seed: int = 0, tokenizer_vocab: int | None = None
) -> Path:
    """Random weights in the standard layout with the test tokenizer (vocab = config.vocab_size by default;
    a smaller tokenizer vocab leaves the rest of the embedding table unused, as in real checkpoints)."""
    vocab = tokenizer_vocab or config.vocab_size
    tok_path = build_tokenizer(out.parent / f"{out.name}-tokenizer", vocab_size=vocab)
    assert Tokenizer.from_file(str(tok_path)).get_vocab_size() == vocab, "raise the test corpus size"
    tokenizer = TextTokenizer.from_file(
        tok_path, bos_id=2, eos_id=1, pad_id=0, max_length=config.max_seq_length
    )
    model = randomize(EmbeddingModel(config), seed)
    return save_checkpoint(Checkpoint(model, tokenizer, source=tok_path.parent), out)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (tests bind loopback only)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
