"""Tokenizer training: special ids, byte fallback, exact round trip, the HF config, the CLI hook."""

import argparse
import json

import pytest
from tokenizers import Tokenizer

from gemma_embed.errors import ConfigError
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.train.data.corpus import CorpusText
from gemma_embed.train.data.tokenizer import (
    BYTE_TOKENS,
    SPECIAL_TOKENS,
    balanced_sample,
    register,
    save_tokenizer,
    tokens_per_char,
    train_tokenizer,
)

SENTENCES = [
    "A man is playing a guitar on the street.",
    "Two dogs are running through the snowy field.",
    "Ein Mann spielt Gitarre auf der Straße.",
    "Le chat dort sur le canapé depuis trois heures.",
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)",
    "一架飞机要起飞了。",
    "東京は日本の首都です。",
    "비행기가 이륙하고 있다.",
    "The price rose by 12.5% in 2024.",
]
ROUND_TRIP = [
    "Hello world",
    "  leading and  double  spaces ",
    "tabs\tand\nnewlines\r\n",
    "unseen: Ωμέγα, עברית, 🙂🚀, ①, ﬁ",
    "class A:\n        pass",
    "数字 0123456789",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{s} {i}" for i in range(30) for s in SENTENCES]
    return train_tokenizer(texts, vocab_size=600, show_progress=False)


def test_special_and_byte_token_ids(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert SPECIAL_TOKENS == ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
    assert [vocab[t] for t in BYTE_TOKENS] == list(range(5, 261))
    assert tokenizer.get_vocab_size() <= 600
    assert any(len(piece) > 3 for piece in vocab)  # BPE merges were learned


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_encode_round_trips(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == text
    assert 3 not in ids  # no <unk>: unknown characters fall back to bytes


def test_sentencepiece_style_pieces_and_specials(tokenizer):
    encoding = tokenizer.encode("Two dogs are running 2024")
    assert encoding.ids[0] == 2 and encoding.ids[-1] == 1
    pieces = encoding.tokens[1:-1]
    assert not pieces[0].startswith("▁")  # no dummy prefix, as in Gemma
    assert "".join(pieces) == "Two▁dogs▁are▁running▁2024"
    assert pieces[-4:] == ["▁2", "0", "2", "4"]  # digits are split one by one
    assert "<0xF0>" in tokenizer.encode("🙂", add_special_tokens=False).tokens


def test_saved_tokenizer_loads_in_transformers_and_gemma_embed(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (
        config["add_bos_token"] is True
        and config["add_eos_token"] is True
        and config["padding_side"] == "right"
    )
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    batch = hf(["Hello world", "A man is playing a guitar on the street."], padding=True)
    short, long = batch["input_ids"]
    assert short[0] == 2 and long[0] == 2 and long[-1] == 1
    assert short[short.index(1) + 1 :] == [0] * (len(long) - short.index(1) - 1)  # right padding with <pad>
    assert hf.decode(long, skip_special_tokens=True) == "A man is playing a guitar on the street."
    ours = TextTokenizer.from_file(tmp_path / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=64)
    assert ours.encode(["Hello world"])[0][0] == short[: short.index(1) + 1]
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("x").ids == tokenizer.encode("x").ids


def test_tokens_per_char_and_balanced_sample(tokenizer):
    items = [CorpusText(s, "en" if i < 6 else "xx", "t") for i, s in enumerate(SENTENCES)]
    report = tokens_per_char(tokenizer, items)
    assert set(report) == {"en", "xx"}
    assert report["en"]["chars"] == sum(len(s) for s in SENTENCES[:6])
    assert 0 < report["en"]["tokens_per_char"] < 1
    many = [CorpusText(f"e{i}", "en", "t") for i in range(900)] + [
        CorpusText(f"k{i}", "ko", "t") for i in range(100)
    ]
    sample = balanced_sample(many, 200, seed=1)
    assert sample == balanced_sample(many, 200, seed=1)
    assert sum(t.startswith("e") for t in sample) == 150 and sum(t.startswith("k") for t in sample) == 50


def test_vocab_too_small_or_no_texts_is_refused():
    with pytest.raises(ConfigError, match="vocab_size must be"):
        train_tokenizer(["a b c"], vocab_size=300)
    with pytest.raises(ConfigError, match="no texts"):
        train_tokenizer([], vocab_size=1000)


def test_register_adds_build_tokenizer_subcommand():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["build-tokenizer", "--out", "runs/tokenizer", "--vocab-size", "1000"])
    assert args.out == "runs/tokenizer" and args.vocab_size == 1000 and callable(args.func)


def test_lowercase_tokenizer_sees_every_casing_as_one_text(tmp_path):
    """`lowercase=True`: an uncased teacher's view; cased variants tokenize identically, the learned pieces
    hold no upper-case letters, and the saved tokenizer lowercases when gemma_embed loads it."""
    texts = [f"{s} {i}" for i in range(30) for s in SENTENCES]
    lower = train_tokenizer(texts, vocab_size=600, lowercase=True, show_progress=False)
    ids = lambda t: lower.encode(t, add_special_tokens=False).ids  # noqa: E731
    assert ids("A MAN Is Playing") == ids("a man is playing")
    assert lower.decode(ids("Ein Mann spielt")) == "ein mann spielt"
    assert not any(piece != piece.lower() for piece in lower.get_vocab() if not piece.startswith("<"))
    save_tokenizer(lower, tmp_path)
    loaded = TextTokenizer.from_file(tmp_path / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=64)
    assert loaded.text_ids(["Two DOGS"]) == loaded.text_ids(["two dogs"])
    cased = train_tokenizer(texts, vocab_size=600, show_progress=False)
    assert cased.encode("Two").ids != cased.encode("two").ids  # the default stays cased
