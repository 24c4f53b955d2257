"""The raw-text corpus: every text of the shared data, deduplicated, without evaluation or selection texts.

Used to train the tokenizer (`gemma_embed.train.data.tokenizer`) and as the input of teacher distillation
(`gemma_embed.train.data.teacher`), which only needs text. Texts come from `gemma_embed.train.data.sources.raw_texts`
(the train/dev/valid splits of every non-evaluation file, never a test split, plus SciFact / mini-BEIR /
CoSQA corpus documents: documents are fine, queries are not), are stripped, dropped when held out
(`sources.held_out`: STS-B dev/test in every language, SciFact queries, TwitterURLCorpus, Tatoeba, the test
splits of training datasets, ...), and deduplicated exactly (first occurrence
wins). A deterministic ~2% of texts (by text hash) is held back for measuring the tokenizer.

Output (atomic): `train.jsonl` and `heldout.jsonl` with rows {"text", "lang", "source"}, and `stats.json`.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import DataError
from gemma_embed.io.files import write_json
from gemma_embed.io.tables import location, read_jsonl, write_jsonl
from gemma_embed.paths import DATA_ENV, runs_dir
from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data.pairs import stable_id
from gemma_embed.train.data.sources import held_out, raw_texts, text_key

TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"
STATS_FILE = "stats.json"
HELDOUT_PER_MILLE = 20  # 2% held back


@dataclass(frozen=True, slots=True)
class CorpusText:
    """One corpus text with its language ('code' for source code) and source folder."""

    text: str
    lang: str
    source: str


def is_heldout(text: str) -> bool:
    """The deterministic held-back split: ~2% of texts, chosen by the hash of the text."""
    return stable_id(text) % 1000 < HELDOUT_PER_MILLE


def corpus_texts(data_root: Path | None = None) -> Iterator[CorpusText]:
    """Unique, non-held-out texts of the shared data, in a fixed order."""
    root = data_root or default_data_root()
    blocked = held_out(root).blocked()
    seen: set[str] = set()
    for source, lang, raw in raw_texts(root):
        text = raw.strip()
        if not text or text in seen:
            continue
        key = text_key(text)
        if key and key in blocked:
            continue
        seen.add(text)
        yield CorpusText(text, lang, source)


def _stats(texts: list[CorpusText]) -> dict[str, Any]:
    return {
        "texts": len(texts),
        "chars": sum(len(t.text) for t in texts),
        "by_lang": dict(sorted(Counter(t.lang for t in texts).items())),
        "by_source": dict(sorted(Counter(t.source for t in texts).items())),
    }


def build_corpus(out_dir: str | os.PathLike[str], data_root: Path | None = None) -> dict[str, Any]:
    """Write `train.jsonl`, `heldout.jsonl` and `stats.json` under `out_dir`; returns the stats."""
    out = Path(out_dir)
    train, heldout = [], []
    for item in tqdm(corpus_texts(data_root), desc="corpus", unit=" texts"):
        (heldout if is_heldout(item.text) else train).append(item)
    for name, items in ((TRAIN_FILE, train), (HELDOUT_FILE, heldout)):
        write_jsonl(out / name, ({"text": t.text, "lang": t.lang, "source": t.source} for t in items))
    stats = {
        "data_root": str(data_root or default_data_root()),
        "train": _stats(train),
        "heldout": _stats(heldout),
    }
    write_json(out / STATS_FILE, stats)
    return stats


def read_corpus(path: str | os.PathLike[str]) -> list[CorpusText]:
    """The texts of a corpus file written by `build_corpus` (`train.jsonl` or `heldout.jsonl`)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such corpus file; build it with `gemma-embed build-corpus`")
    out = []
    for n, row in read_jsonl(file):
        text, lang, source = row.get("text"), row.get("lang"), row.get("source")
        if not isinstance(text, str) or not isinstance(lang, str) or not isinstance(source, str):
            raise DataError(f"{location(file, n)}: a corpus row needs string fields text, lang and source")
        out.append(CorpusText(text, lang, source))
    return out


def sample_texts(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """A seeded random sample of n texts (all of them, in order, when n is 0 or >= len(texts)); the same
    (texts, n, seed) always gives the same sample, so stages that sample the corpus share cached work."""
    if n <= 0 or n >= len(texts):
        return list(texts)
    rows = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in rows]


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    stats = build_corpus(args.out, Path(args.data) if args.data else None)
    for split in ("train", "heldout"):
        part = stats[split]
        print(f"{split}: {part['texts']} texts, {part['chars']} characters; by language: {part['by_lang']}")
    print(f"written to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def register(subparsers: Any) -> None:
    """Add `build-corpus [--out DIR] [--data DIR]` to the CLI."""
    parser = subparsers.add_parser("build-corpus", help="deduplicated raw-text corpus of ../shared/data")
    add_out_arg(parser, default=str(runs_dir() / "corpus"), help="output folder (default runs/corpus)")
    parser.add_argument("--data", help=f"data root (default: ${DATA_ENV} or ../shared/data)")
    parser.set_defaults(func=_run)
