"""What every task type shares: the `TaskType` record, pairwise similarities and exact top-k search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TaskType:
    """One MTEB task type: how to load its local data and how to score a model on it.

    load(source, split) reads the generic local format of the type (see each module); evaluate(data, embed,
    **options) returns every metric, `main_score` naming the headline one (as in MTEB).
    """

    name: str
    main_score: str
    load: Callable[[str | Path, str], Any]
    evaluate: Callable[..., dict[str, float]]
    data_format: str


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def paired_similarities(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """For each row pair (a[i], b[i]): cosine similarity, dot product, and the Manhattan and Euclidean
    distances (as sklearn's paired_* functions compute them, in float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = a64 - b64
    norms = np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-24)
    return {
        "cosine": np.sum(a64 * b64, axis=1) / norms,
        "dot": np.sum(a64 * b64, axis=1),
        "manhattan": np.abs(diff).sum(axis=1),
        "euclidean": np.sqrt((diff**2).sum(axis=1)),
    }


def _sortable(scores: np.ndarray) -> np.ndarray:
    """float32 -> uint64 whose order is the float order (IEEE-754 bit trick)."""
    # + 0.0 turns -0.0 into 0.0: equal scores must get equal keys so that the tie rule decides their order.
    bits = (np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    flipped = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    return flipped.astype(np.uint64)


def _unsortable(keys: np.ndarray) -> np.ndarray:
    bits = (keys >> np.uint64(32)).astype(np.uint32)
    original = np.where(bits & np.uint32(0x80000000), bits & np.uint32(0x7FFFFFFF), ~bits)
    return original.astype(np.uint32).view(np.float32)


def top_k(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    tie_order: np.ndarray | None = None,
    *,
    query_chunk: int = 256,
    doc_chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, computed in chunks over queries and documents so that a large corpus
    never needs a full score matrix: memory is O(query_chunk * (doc_chunk + k)).

    Ties are broken deterministically: among equal scores the document with the larger `tie_order` comes
    first (default: the earlier document). Returns (indices [nq, k], scores [nq, k]), best first.
    """
    n_docs = len(docs)
    k = min(k, n_docs)
    if tie_order is None:
        tie_order = np.arange(n_docs - 1, -1, -1)
    tie = np.asarray(tie_order, dtype=np.uint64)
    by_tie = np.empty(n_docs, dtype=np.int64)
    by_tie[tie.astype(np.int64)] = np.arange(n_docs)
    out_idx = np.empty((len(queries), k), dtype=np.int64)
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0 : q0 + query_chunk]
        best = np.zeros((len(q), 0), dtype=np.uint64)
        for d0 in range(0, n_docs, doc_chunk):
            scores = q @ docs[d0 : d0 + doc_chunk].T
            keys = (_sortable(scores) << np.uint64(32)) | tie[d0 : d0 + doc_chunk][None, :]
            candidates = np.concatenate([best, keys], axis=1)
            width = candidates.shape[1]
            if width > k:
                candidates = np.partition(candidates, width - k, axis=1)[:, width - k :]
            best = candidates
        best = np.sort(best, axis=1)[:, ::-1]
        out_idx[q0 : q0 + len(q)] = by_tie[(best & np.uint64(0xFFFFFFFF)).astype(np.int64)]
        out_scores[q0 : q0 + len(q)] = _unsortable(best)
    return out_idx, out_scores
