"""Conversion of the registered training sets: cleaning against the held-out texts, writing `<name>.jsonl`
files and `manifest.json`, and the `build-training-sets` command.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.files import write_json
from gemma_embed.io.tables import write_jsonl
from gemma_embed.paths import DATA_ENV
from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data.pairs import MANIFEST, Example, PairDataset
from gemma_embed.train.data.sources.converters import SOURCES
from gemma_embed.train.data.sources.heldout import HeldOut, held_out, text_key

# --------------------------------------------------------------------------------------------- conversion


@dataclass
class ConversionStats:
    """What happened to the rows of one training set."""

    read: int = 0
    written: int = 0
    held_out: int = 0  # query or positive is a held-out text
    trivial: int = 0  # query and positive are the same text
    duplicate: int = 0
    negatives_removed: int = 0  # held-out or trivial negatives dropped from kept rows


def _clean(
    examples: Iterable[Example], held: HeldOut, exempt: tuple[str, ...], stats: ConversionStats
) -> Iterator[Example]:
    blocked = held.blocked(exempt)
    seen: set[tuple[str, str]] = set()
    for example in examples:
        stats.read += 1
        query, positive = example.query.strip(), example.positive.strip()
        q_key, p_key = text_key(query), text_key(positive)
        if (q_key and q_key in blocked) or (p_key and p_key in blocked):
            stats.held_out += 1
            continue
        if q_key == p_key:
            stats.trivial += 1
            continue
        if (query, positive) in seen:
            stats.duplicate += 1
            continue
        seen.add((query, positive))
        negatives = []
        for negative in dict.fromkeys(n.strip() for n in example.negatives):
            key = text_key(negative)
            if not key or key in blocked or key in (q_key, p_key):
                stats.negatives_removed += 1
            else:
                negatives.append(negative)
        stats.written += 1
        yield Example(query, positive, tuple(negatives), example.query_key, example.positive_key)


def convert(name: str, data_root: Path | None = None) -> tuple[list[Example], ConversionStats]:
    """The cleaned examples of one registered training set and what was dropped."""
    if name not in SOURCES:
        raise ConfigError(f"unknown training set {name!r}; known: {', '.join(SOURCES)}")
    root = data_root or default_data_root()
    source, stats = SOURCES[name], ConversionStats()
    examples = list(_clean(source.convert(root), held_out(root), source.exempt, stats))
    return examples, stats


def load_source(name: str, data_root: Path | None = None) -> PairDataset:
    """A registered training set converted in memory, as a `PairDataset` with its task's prompts."""
    examples, _ = convert(name, data_root)
    query_prompt, document_prompt = SOURCES[name].prompts
    return PairDataset(examples, name=name, query_prompt=query_prompt, document_prompt=document_prompt)


def default_sets() -> list[str]:
    """Names of the default training sets (no evaluation or model-selection data)."""
    return [name for name, source in SOURCES.items() if source.default]


def write_training_sets(
    out_dir: str | os.PathLike[str], names: Iterable[str] | None = None, data_root: Path | None = None
) -> dict[str, int]:
    """Write `<name>.jsonl` for each set (default: `default_sets()`) and `manifest.json`; returns row counts."""
    out = Path(out_dir)
    chosen = list(names) if names is not None else default_sets()
    entries: dict[str, dict[str, Any]] = {}
    for name in tqdm(chosen, desc="training sets", unit="set"):
        examples, stats = convert(name, data_root)
        if not examples:
            raise DataError(f"training set {name!r} has no examples left after cleaning ({asdict(stats)})")
        file = f"{name}.jsonl"
        write_jsonl(out / file, (example.to_record() for example in examples))
        source = SOURCES[name]
        query_prompt, document_prompt = source.prompts
        entries[name] = {
            "file": file,
            "rows": stats.written,
            "with_negatives": sum(1 for e in examples if e.negatives),
            "task": source.task,
            "query_prompt": query_prompt,
            "document_prompt": document_prompt,
            "query_lang": source.query_lang,
            "doc_lang": source.doc_lang,
            "licence": source.licence,
            "description": source.description,
            "stats": asdict(stats),
        }
    write_json(out / MANIFEST, {"data_root": str(data_root or default_data_root()), "sets": entries})
    return {name: entry["rows"] for name, entry in entries.items()}


# --------------------------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    counts = write_training_sets(args.out, args.sets or None, Path(args.data) if args.data else None)
    width = max(map(len, counts))
    for name, rows in counts.items():
        print(f"{name:<{width}}  {rows:>7}")
    print(
        f"{'total':<{width}}  {sum(counts.values()):>7}   ({len(counts)} sets, {time.perf_counter() - start:.1f} s)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `build-training-sets --out DIR [--sets NAME ...] [--data DIR]` to the CLI."""
    parser = subparsers.add_parser(
        "build-training-sets", help="convert ../shared/data into JSONL training sets"
    )
    add_out_arg(parser, required=True, help="output folder (under runs/)")
    parser.add_argument(
        "--sets", nargs="*", help=f"set names (default: all default sets; known: {', '.join(SOURCES)})"
    )
    parser.add_argument("--data", help=f"data root (default: ${DATA_ENV} or ../shared/data)")
    parser.set_defaults(func=_run)
