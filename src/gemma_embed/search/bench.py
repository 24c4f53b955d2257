"""Measure the ANN index against exact search: recall@k and per-query latency for each vector precision.

    python -m gemma_embed.search.bench --model PATH [--data DIR] [--dim D] [-k 10]

On SciFact (corpus + the 300 test queries) it embeds once, then for float32, int8 and binary builds an HNSW index
and reports build time, recall@k of the (rescored) ANN results against exact top-k, nDCG@10 of the test
split from the ANN results, and the median / p95 latency of one query (exact numpy search for comparison).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gemma_embed.search.corpus import Document
from gemma_embed.search.index import VectorIndex, build_index
from gemma_embed.search.vectors import PRECISIONS


def _latencies_ms(index: VectorIndex, queries: np.ndarray, k: int, exact: bool) -> np.ndarray:
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search_vectors(query[None], k, exact=exact)
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def measure(
    docs: Sequence[Document],
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    precisions: Sequence[str] = PRECISIONS,
    quality: Callable[[np.ndarray], float] | None = None,
) -> list[dict[str, Any]]:
    """One row per precision: build seconds, recall@k vs exact, median/p95 query ms (ANN and exact), and
    `quality(indices [nq, k + 1])` (e.g. nDCG@10) of the ANN and of the exact results when given."""
    rows = []
    for precision in precisions:
        start = time.perf_counter()
        index = build_index(
            docs, vectors, model="bench", model_identity="bench", precision=precision, exact_below=0
        )
        build_s = time.perf_counter() - start
        ann, _ = index.search_vectors(queries, k)
        exact, _ = index.search_vectors(queries, k, exact=True)
        recall = float(np.mean([len(set(a) & set(e)) / k for a, e in zip(ann, exact, strict=True)]))
        ann_ms, exact_ms = _latencies_ms(index, queries, k, False), _latencies_ms(index, queries, k, True)
        row: dict[str, Any] = {
            "precision": precision,
            "docs": len(docs),
            "dim": index.dim,
            "build_s": round(build_s, 3),
            f"recall_at_{k}": round(recall, 4),
            "ann_ms_p50": round(float(np.median(ann_ms)), 3),
            "ann_ms_p95": round(float(np.percentile(ann_ms, 95)), 3),
            "exact_ms_p50": round(float(np.median(exact_ms)), 3),
        }
        if quality is not None:
            row["quality_ann"] = round(quality(index.search_vectors(queries, k + 1)[0]), 4)
            row["quality_exact"] = round(quality(index.search_vectors(queries, k + 1, exact=True)[0]), 4)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from gemma_embed.eval.embedding import truncate
    from gemma_embed.eval.encoders import load_encoder
    from gemma_embed.eval.tasks import retrieval
    from gemma_embed.paths import data_root
    from gemma_embed.search.corpus import embed_documents, query_prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=None, help="BEIR folder (default: <data root>/scifact)")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)

    folder = data_root() / "scifact" if args.data is None else args.data
    data = retrieval.load_beir(folder, "test")
    encoder = load_encoder(args.model)
    docs = [Document(i, "", t) for i, t in zip(data.corpus_ids, data.corpus_texts, strict=True)]
    start = time.perf_counter()
    vectors = embed_documents(encoder, docs, args.dim)
    queries = truncate(
        encoder.encode(data.query_texts, prompt=query_prompt(encoder), batch_size=32), args.dim
    )
    print(f"embedded {len(docs)} documents and {len(queries)} queries in {time.perf_counter() - start:.1f}s")
    qrels = [data.qrels[q] for q in data.query_ids]

    def ndcg_at_10(indices: np.ndarray) -> float:
        rankings = [
            [docs[i].id for i in row if docs[i].id != q]
            for q, row in zip(data.query_ids, indices, strict=True)
        ]
        return retrieval.ranking_metrics(rankings, qrels, (10,))["ndcg_at_10"]

    for row in measure(docs, vectors, queries, args.k, quality=ndcg_at_10):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
