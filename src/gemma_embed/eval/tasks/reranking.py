"""Reranking: order each query's candidate documents (its positives and negatives) by similarity.

Protocol (MTEB 1.x `RerankingEvaluator`, whose `map` / `mrr` are the scores MTEB published for Reranking):
queries and candidates are embedded with the task's prompts ("Reranking" for EmbeddingGemma, which has no
"Reranking-query" / "Reranking-document"); for each sample the candidates are scored by cosine
similarity. `map`: mean over samples of the average precision of the positives (sklearn
`average_precision_score`); `mrr_at_10`: mean reciprocal rank of the first positive within the top 10
(0 beyond). Samples without a positive or without a negative are skipped, as in MTEB. Main score: `map`.

Local format: a `.jsonl` file (or split directory) with one sample per line:
`{"query": str, "positive": [str, ...], "negative": [str, ...]}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType, normalize


@dataclass(frozen=True)
class RerankingData:
    """Queries with their relevant and non-relevant candidates (every sample has both)."""

    queries: list[str]
    positives: list[list[str]]
    negatives: list[list[str]]


def load(source: str | Path, split: str) -> RerankingData:
    """The generic local reranking format (see the module docstring)."""
    path = find_split_file(Path(source), split)
    rows = read_rows(path, ("query", "positive", "negative"))
    samples = [(r.text("query"), r.texts("positive"), r.texts("negative")) for r in rows]
    samples = [s for s in samples if s[1] and s[2]]
    if not samples:
        raise DataError(f"{path}: no sample has both a positive and a negative (the split is empty)")
    queries, positives, negatives = (list(column) for column in zip(*samples, strict=True))
    return RerankingData(queries, positives, negatives)


def sample_metrics(scores: np.ndarray, is_relevant: np.ndarray, mrr_at_k: int = 10) -> tuple[float, float]:
    """(average precision, reciprocal rank of the first relevant candidate within `mrr_at_k`) of one sample."""
    from sklearn.metrics import average_precision_score

    order = np.argsort(-scores, kind="stable")
    hits = np.flatnonzero(is_relevant[order][:mrr_at_k])
    rr = 1.0 / (hits[0] + 1) if len(hits) else 0.0
    return float(average_precision_score(is_relevant, scores)), float(rr)


def evaluate(data: RerankingData, embed: EmbedFn, *, mrr_at_k: int = 10) -> dict[str, float]:
    """MAP and MRR@k over the samples (main score: map)."""
    query_vectors = normalize(embed(data.queries, "query"))
    candidates = [p + n for p, n in zip(data.positives, data.negatives, strict=True)]
    doc_vectors = normalize(embed([c for group in candidates for c in group], "document"))
    aps, rrs = [], []
    start = 0
    for i, group in enumerate(candidates):
        scores = doc_vectors[start : start + len(group)] @ query_vectors[i]
        start += len(group)
        is_relevant = np.array([True] * len(data.positives[i]) + [False] * len(data.negatives[i]))
        ap, rr = sample_metrics(scores, is_relevant, mrr_at_k)
        aps.append(ap)
        rrs.append(rr)
    return {"map": float(np.mean(aps)), f"mrr_at_{mrr_at_k}": float(np.mean(rrs))}


RERANKING = TaskType(
    name="Reranking",
    main_score="map",
    load=load,
    evaluate=evaluate,
    data_format='.jsonl file or split directory: {"query": str, "positive": [str], "negative": [str]}',
)
