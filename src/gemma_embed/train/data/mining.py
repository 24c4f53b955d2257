"""Hard-negative mining with an embedding model, for the fine-tuning stage.

For each query the candidate documents of a pool (default: the dataset's own positives) are ranked by
cosine similarity under the dataset's prompts, using any model with the `Embedder.encode` signature
(`gemma_embed.train.data.teacher.TextEncoder`). The query's positives are never candidates: a candidate is
excluded when its text equals the query or one of the query's positives, or when its key equals one of the
positives' keys (`Example.positive_key`, e.g. the intent of same-intent pairs: no negative of the same
intent). Ranks count the remaining candidates from 0; negatives are drawn (seeded, without replacement)
from the rank window [start, stop) - the top ranks are skipped because they are often unlabelled
positives. With a margin m, a candidate scoring above (positive score - m) is skipped as a likely false
negative. Mined negatives are appended to the example's existing ones.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gemma_embed.cli_args import add_device_arg, add_out_arg
from gemma_embed.errors import ConfigError, DataError, InputError
from gemma_embed.io.files import write_json
from gemma_embed.io.tables import read_json
from gemma_embed.train.data.pairs import MANIFEST, Example, PairDataset, load_training_sets
from gemma_embed.train.data.teacher import (
    MODEL_SPEC_HELP,
    CachedTeacher,
    TeacherCache,
    TextEncoder,
    load_teacher,
)

DEFAULT_WINDOW = (10, 50)


@dataclass
class MiningStats:
    """Outcome of one mining pass."""

    examples: int = 0
    mined: int = 0  # negatives added in total
    without_negative: int = 0  # examples that got no mined negative (window empty after exclusions / margin)
    below_margin: int = 0  # window candidates skipped by the margin


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def mine_hard_negatives(
    dataset: PairDataset,
    encoder: TextEncoder,
    *,
    pool: Sequence[str] | None = None,
    pool_keys: Sequence[str | None] | None = None,
    window: tuple[int, int] = DEFAULT_WINDOW,
    num_negatives: int = 1,
    margin: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    query_chunk: int = 256,
    show_progress: bool = True,
) -> tuple[PairDataset, MiningStats]:
    """A copy of `dataset` whose examples carry up to `num_negatives` mined negatives more.

    pool: candidate documents (default: the unique positives of the dataset, keyed by their positive_key);
    pool_keys: an optional key per pool text (None: no key). window: ranks [start, stop) to sample from.
    """
    start, stop = window
    if not 0 <= start < stop:
        raise ConfigError(f"rank window must satisfy 0 <= start < stop, got {window}")
    if num_negatives < 1:
        raise ConfigError(f"num_negatives must be >= 1, got {num_negatives}")
    if margin is not None and margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    if pool is None:
        first: dict[str, str | None] = {}
        for example in dataset.examples:
            first.setdefault(example.positive, example.positive_key)
        pool, pool_keys = list(first), list(first.values())
    if pool_keys is not None and len(pool_keys) != len(pool):
        raise InputError(f"pool_keys has {len(pool_keys)} entries for {len(pool)} pool texts")
    if not pool:
        raise InputError("the candidate pool is empty")
    keys = list(pool_keys) if pool_keys is not None else [None] * len(pool)

    # Encode unique queries and documents (pool + any positive missing from it) once.
    queries = list(dict.fromkeys(e.query for e in dataset.examples))
    documents = list(dict.fromkeys([*pool, *(e.positive for e in dataset.examples)]))
    doc_row = {text: i for i, text in enumerate(documents)}
    pool_rows = np.array([doc_row[text] for text in pool])
    q_vecs = _unit(
        encoder.encode(
            queries, prompt=dataset.query_prompt, batch_size=batch_size, show_progress=show_progress
        )
    )
    d_vecs = _unit(
        encoder.encode(
            documents, prompt=dataset.document_prompt, batch_size=batch_size, show_progress=show_progress
        )
    )
    if q_vecs.shape[0] != len(queries) or d_vecs.shape[0] != len(documents):
        raise DataError("the encoder returned a different number of vectors than texts")
    p_vecs = d_vecs[pool_rows]

    by_text: dict[str, list[int]] = defaultdict(list)
    by_key: dict[str, list[int]] = defaultdict(list)
    for j, (text, key) in enumerate(zip(pool, keys, strict=True)):
        by_text[text].append(j)
        if key is not None:
            by_key[key].append(j)
    positives: dict[str, set[str]] = defaultdict(set)
    positive_keys: dict[str, set[str]] = defaultdict(set)
    for example in dataset.examples:
        positives[example.query].add(example.positive)
        if example.positive_key is not None:
            positive_keys[example.query].add(example.positive_key)

    # Window candidates (pool indices, scores) of every query.
    window_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    chunks = range(0, len(queries), query_chunk)
    for c in tqdm(chunks, desc=f"mining {dataset.name}", unit="chunk", disable=not show_progress):
        block = queries[c : c + query_chunk]
        scores = q_vecs[c : c + query_chunk] @ p_vecs.T
        for row, query in enumerate(block):
            excluded = [j for text in (query, *positives[query]) for j in by_text.get(text, ())]
            excluded += [j for key in positive_keys[query] for j in by_key.get(key, ())]
            line = scores[row]
            line[excluded] = -np.inf
            top = min(stop, len(line))
            best = np.argpartition(-line, top - 1)[:top] if top < len(line) else np.arange(len(line))
            ranked = best[np.argsort(-line[best], kind="stable")]
            ranked = ranked[np.isfinite(line[ranked])][start:stop]
            window_of[query] = (ranked, line[ranked])

    stats = MiningStats(examples=len(dataset))
    q_row = {text: i for i, text in enumerate(queries)}
    out = []
    for i, example in enumerate(dataset.examples):
        candidates, scores = window_of[example.query]
        if margin is not None:
            positive_score = float(q_vecs[q_row[example.query]] @ d_vecs[doc_row[example.positive]])
            keep = scores < positive_score - margin
            stats.below_margin += int((~keep).sum())
            candidates = candidates[keep]
        take = min(num_negatives, len(candidates))
        chosen = np.sort(np.random.default_rng([seed, i]).choice(len(candidates), size=take, replace=False))
        mined = [pool[int(candidates[k])] for k in chosen]
        stats.mined += len(mined)
        stats.without_negative += take == 0
        negatives = tuple(dict.fromkeys(n for n in (*example.negatives, *mined) if n != example.positive))
        out.append(
            Example(example.query, example.positive, negatives, example.query_key, example.positive_key)
        )
    mined_set = PairDataset(
        out,
        name=dataset.name,
        query_prompt=dataset.query_prompt,
        document_prompt=dataset.document_prompt,
        origins=dataset.origins,
    )
    return mined_set, stats


def mine_training_sets(
    sets_dir: str | Path,
    out_dir: str | Path,
    encoder: TextEncoder,
    names: Sequence[str] | None = None,
    max_rows: int = 0,
    **options: Any,
) -> dict[str, MiningStats]:
    """Mine the named sets of a `write_training_sets` folder into `out_dir` (JSONL + manifest.json); with
    `max_rows`, each set's `PairDataset.subset` of that size under the mining seed (a recipe's subset of the
    same size and seed has the same rows)."""
    source, out = Path(sets_dir), Path(out_dir)
    entries = read_json(source / MANIFEST)["sets"]
    results: dict[str, MiningStats] = {}
    mined_entries = {}
    for dataset in load_training_sets(source, names):
        dataset = dataset.subset(max_rows, options.get("seed", 0))
        mined, stats = mine_hard_negatives(dataset, encoder, **options)
        mined.save(out / entries[dataset.name]["file"])
        results[dataset.name] = stats
        mined_entries[dataset.name] = entries[dataset.name] | {
            "with_negatives": sum(1 for e in mined.examples if e.negatives),
            "mining": {"stats": asdict(stats), "options": options},
        }
    write_json(out / MANIFEST, {"mined_from": str(source), "sets": mined_entries})
    return results


def _run(args: argparse.Namespace) -> int:
    encoder, identity = load_teacher(args.model, device=args.device)
    if args.cache:
        encoder = CachedTeacher(TeacherCache(encoder, identity, args.cache, batch_size=args.batch_size))
    results = mine_training_sets(
        args.sets,
        args.out,
        encoder,
        args.names or None,
        max_rows=args.max_rows,
        window=(args.window[0], args.window[1]),
        num_negatives=args.num_negatives,
        margin=args.margin,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    for name, stats in results.items():
        print(
            f"{name}: {stats.examples} examples, {stats.mined} negatives mined, {stats.without_negative} without"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add `mine-negatives --model DIR --sets DIR --out DIR [--names ...] [--window A B] ...` to the CLI."""
    parser = subparsers.add_parser("mine-negatives", help="add mined hard negatives to training sets")
    parser.add_argument(
        "--model",
        required=True,
        help=MODEL_SPEC_HELP,
    )
    parser.add_argument("--sets", required=True, help="folder written by build-training-sets")
    add_out_arg(parser, required=True, help="output folder for the mined sets")
    parser.add_argument("--names", nargs="*", help="set names (default: all in the manifest)")
    parser.add_argument(
        "--window", type=int, nargs=2, default=list(DEFAULT_WINDOW), metavar=("START", "STOP")
    )
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument(
        "--max-rows", type=int, default=0, help="mine a seeded subset of this many rows per set (0: all)"
    )
    parser.add_argument(
        "--margin", type=float, default=None, help="skip candidates within this of the positive"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    add_device_arg(parser)
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="embed through this teacher cache, without prompts (for a prompt-free model such as "
        "all-MiniLM-L6-v2: the vectors are shared with distillation's)",
    )
    parser.set_defaults(func=_run)
