"""A Gemma-style tokenizer for the small default model, trained with `tokenizers` on the project corpus.

Layout (as Gemma): `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, then `<mask>`=4 (for span corruption), then the
256 byte tokens `<0x00>`..`<0xFF>` (ids 5..260) used by byte fallback, then the learned BPE pieces.

Pipeline (SentencePiece-like, no Unicode normalization and by default no lowercasing, so every text
round-trips; `lowercase=True` / `--lowercase` lowercases first, as an uncased teacher sees the text):
- normalizer: each space becomes "▁" (U+2581); no dummy prefix, so a text's first word has no "▁";
- pre-tokenizer: words (letters with their combining marks, so Thai / Devanagari stay whole) with at most one
  leading "▁", single digits (digits are split as in Gemma), runs of punctuation/symbols, runs of
  newlines/tabs, and runs of "▁" (indentation) are separate pieces; BPE merges within a piece;
- model: BPE with byte fallback: a character outside the vocabulary becomes its UTF-8 byte tokens;
- decoder: "▁" -> space, byte tokens -> characters; decode(encode(text)) == text for any text without a
  literal "▁";
- post-processor: `<bos> text <eos>`.

The character alphabet covers 99.95% of the training characters (SentencePiece's character_coverage, capped
at a quarter of the vocabulary); the
training texts are a language-balanced sample of the corpus (per-language quotas proportional to
count ** 0.5, as in multilingual temperature sampling) so English does not crowd out the other languages.

`save_tokenizer` writes `tokenizer.json` (read by `gemma_embed.io.tokenizer`) and a `tokenizer_config.json`
with which transformers' `AutoTokenizer` / `PreTrainedTokenizerFast` load it (bos/eos/pad/unk/mask set,
add_bos_token and add_eos_token true, right padding).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import ConfigError
from gemma_embed.io.files import atomic_write, write_json
from gemma_embed.paths import DATA_ENV, runs_dir
from gemma_embed.train.data.corpus import HELDOUT_FILE, TRAIN_FILE, CorpusText, build_corpus, read_corpus

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, MASK)
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
SPACE = "▁"
DEFAULT_VOCAB_SIZE = 32_768
MODEL_MAX_LENGTH = 2048
CHARACTER_COVERAGE = 0.9995
PIECE_PATTERN = r"▁?[\p{L}\p{M}]+|▁?\p{N}|▁?[^\p{L}\p{M}\p{N}▁\s]+|\s+|▁+(?=▁[^▁])|▁+"


def _pipeline(tokenizer: Tokenizer, lowercase: bool = False) -> Tokenizer:
    spaces = normalizers.Replace(" ", SPACE)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), spaces]) if lowercase else spaces
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tokenizer


def coverage_alphabet(texts: Iterable[str], coverage: float = CHARACTER_COVERAGE) -> list[str]:
    """The most frequent characters (spaces counted as "▁") that together cover `coverage` of all characters."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    counts[SPACE] += counts.pop(" ", 0)
    total = sum(counts.values())
    alphabet, covered = [], 0
    for char, count in counts.most_common():
        if covered >= coverage * total:
            break
        alphabet.append(char)
        covered += count
    return alphabet


def train_tokenizer(
    texts: Sequence[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    lowercase: bool = False,
    show_progress: bool = True,
) -> Tokenizer:
    """Train the BPE tokenizer on `texts`; the vocabulary has at most `vocab_size` entries. `lowercase`
    lowercases every text first (Unicode lowercasing; decoding then gives the lowercased text)."""
    reserved = len(SPECIAL_TOKENS) + len(BYTE_TOKENS)
    if vocab_size <= reserved + 100:
        raise ConfigError(f"vocab_size must be > {reserved + 100} (specials and byte tokens take {reserved})")
    if not texts:
        raise ConfigError("no texts to train the tokenizer on")
    # The alphabet may take at most a quarter of the learnable vocabulary (matters for small test vocabularies).
    alphabet = coverage_alphabet([t.lower() for t in texts] if lowercase else texts)[
        : (vocab_size - reserved) // 4
    ]
    draft = _pipeline(Tokenizer(models.BPE(unk_token=UNK)), lowercase)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=show_progress,
    )
    draft.train_from_iterator(texts, trainer=trainer, length=len(texts))
    learned = json.loads(draft.to_str())["model"]
    pieces = [
        p for p, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]) if p not in SPECIAL_TOKENS
    ]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *BYTE_TOKENS, *pieces])}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tokenizer = _pipeline(
        Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True)),
        lowercase,
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return tokenizer


def tokenizer_config(model_max_length: int = MODEL_MAX_LENGTH) -> dict[str, Any]:
    """The `tokenizer_config.json` that transformers' AutoTokenizer reads."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "mask_token": MASK,
        "add_bos_token": True,
        "add_eos_token": True,
        "padding_side": "right",
        "truncation_side": "right",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | os.PathLike[str]) -> None:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` atomically."""
    out = Path(out_dir)
    with atomic_write(out / "tokenizer.json") as handle:
        handle.write(tokenizer.to_str(pretty=True))
    config = tokenizer_config()
    write_json(out / "tokenizer_config.json", config)
    write_json(out / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})


def balanced_sample(
    items: Sequence[CorpusText], budget: int, *, alpha: float = 0.5, seed: int = 0
) -> list[str]:
    """About `budget` texts: per-language quota proportional to count ** alpha (capped at the count), seeded."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_lang[item.lang].append(item.text)
    weights = {lang: len(texts) ** alpha for lang, texts in by_lang.items()}
    total = sum(weights.values())
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    for lang in sorted(by_lang):
        texts = by_lang[lang]
        quota = min(len(texts), round(budget * weights[lang] / total))
        sample += [texts[int(i)] for i in np.sort(rng.choice(len(texts), size=quota, replace=False))]
    return sample


def tokens_per_char(tokenizer: Tokenizer, items: Iterable[CorpusText]) -> dict[str, dict[str, float]]:
    """Per language: texts, characters, tokens (without specials) and tokens per character."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_lang[item.lang].append(item.text)
    report = {}
    for lang in sorted(by_lang):
        texts = by_lang[lang]
        tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
        chars = sum(len(t) for t in texts)
        report[lang] = {
            "texts": len(texts),
            "chars": chars,
            "tokens": tokens,
            "tokens_per_char": tokens / chars,
        }
    return report


def build_tokenizer(
    out_dir: str | os.PathLike[str],
    *,
    corpus_dir: str | os.PathLike[str] | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_texts: int = 250_000,
    data_root: Path | None = None,
    seed: int = 0,
    lowercase: bool = False,
) -> dict[str, Any]:
    """Train on a balanced sample of the corpus (built first if missing), save, and write `report.json`."""
    corpus = Path(corpus_dir) if corpus_dir is not None else runs_dir() / "corpus"
    if not (corpus / TRAIN_FILE).is_file() or not (corpus / HELDOUT_FILE).is_file():
        build_corpus(corpus, data_root)
    texts = balanced_sample(read_corpus(corpus / TRAIN_FILE), max_texts, seed=seed)
    start = time.perf_counter()
    tokenizer = train_tokenizer(texts, vocab_size, lowercase=lowercase)
    seconds = time.perf_counter() - start
    save_tokenizer(tokenizer, out_dir)
    report = {
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "lowercase": lowercase,
        "training_texts": len(texts),
        "training_chars": sum(map(len, texts)),
        "training_seconds": round(seconds, 1),
        "corpus": str(corpus),
        "heldout_tokens_per_char": tokens_per_char(tokenizer, read_corpus(corpus / HELDOUT_FILE)),
    }
    write_json(Path(out_dir) / "report.json", report)
    return report


def _run(args: argparse.Namespace) -> int:
    report = build_tokenizer(
        args.out,
        corpus_dir=args.corpus,
        vocab_size=args.vocab_size,
        max_texts=args.max_texts,
        data_root=Path(args.data) if args.data else None,
        lowercase=args.lowercase,
    )
    print(
        f"vocab {report['vocab_size']}, trained on {report['training_texts']} texts "
        f"({report['training_chars']} chars) in {report['training_seconds']} s; written to {args.out}"
    )
    print(f"{'lang':<6}{'texts':>8}{'chars':>10}{'tokens':>9}{'tok/char':>10}")
    for lang, row in report["heldout_tokens_per_char"].items():
        print(
            f"{lang:<6}{row['texts']:>8}{row['chars']:>10}{row['tokens']:>9}{row['tokens_per_char']:>10.3f}"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add `build-tokenizer --out DIR [--vocab-size N] [--lowercase] [--corpus DIR] [--max-texts N] [--data DIR]`."""
    parser = subparsers.add_parser(
        "build-tokenizer", help="train the small model's BPE tokenizer on the corpus"
    )
    add_out_arg(parser, required=True, help="output folder, e.g. runs/tokenizer")
    parser.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="vocabulary size (default 32768)"
    )
    parser.add_argument(
        "--lowercase",
        action="store_true",
        help="lowercase every text before tokenizing (as an uncased teacher sees it; not exportable to GGUF)",
    )
    parser.add_argument("--corpus", help="corpus folder (default runs/corpus; built there when missing)")
    parser.add_argument(
        "--max-texts", type=int, default=250_000, help="language-balanced training sample size"
    )
    parser.add_argument(
        "--data", help=f"data root for building the corpus (default: ${DATA_ENV} or ../shared/data)"
    )
    parser.set_defaults(func=_run)
