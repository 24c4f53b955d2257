"""Retrieval: rank a corpus for each query by embedding similarity, score the ranking against qrels.

Protocol (MTEB `AbsTaskRetrieval` + `RetrievalEvaluator`, metrics as pytrec_eval / trec_eval compute them):

* queries are embedded with the "query" side prompt, documents with the "document" side prompt; a
  document's text is `(title + " " + text).strip()` when it has a non-empty title, else `text.strip()`
  (mteb `_corpus_to_dict`);
* every query gets the exact top-1000 documents by cosine similarity (chunked over the corpus); like
  trec_eval, equal scores are ordered by document id, descending;
* with `ignore_identical_ids` (the MTEB 1.x default that produced the published scores) a document whose
  id equals the query id is dropped from that query's ranking;
* only queries with at least one qrels entry are evaluated; a document is relevant when its qrels score is
  >= 1 (pytrec_eval relevance_level 1); qrels score 0 (or below) is a judged non-relevant document.

Metrics, averaged over queries, for k in (1, 3, 5, 10, 20, 100, 1000):
`ndcg_at_k` (trec_eval ndcg_cut: gain = qrels score, discount log2(rank + 1), ideal ranking from all
judged documents), `map_at_k` (map_cut: precision at each relevant rank <= k, divided by the number of
relevant documents), `recall_at_k`, `precision_at_k` (P: relevant in top k / k) and `mrr_at_k` (reciprocal
rank of the first relevant document within k, mteb's own function). Main score: `ndcg_at_10`.
A query without relevant documents scores 0 on every metric, as in trec_eval.

Local format: a BEIR folder: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/<split>.tsv` (header, then query-id, corpus-id, score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import read_rows, split_candidates
from gemma_embed.eval.tasks.base import TaskType, normalize, top_k
from gemma_embed.io.tables import require_file

K_VALUES = (1, 3, 5, 10, 20, 100, 1000)


@dataclass(frozen=True)
class RetrievalData:
    """A corpus, the queries to evaluate, and qrels: query id -> {document id: relevance score}."""

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def document_text(title: str, text: str) -> str:
    """A document as MTEB embeds it: title and text joined by a space when there is a title."""
    return f"{title} {text}".strip() if title else text.strip()


def load_beir(folder: Path, split: str) -> RetrievalData:
    """A BEIR folder's split. Queries without qrels are left out (as MTEB does); qrels naming an unknown
    query or document raise DataError with the qrels file and line."""
    qrels_path = next(
        (
            folder / "qrels" / f"{name}.tsv"
            for name in split_candidates(split)
            if (folder / "qrels" / f"{name}.tsv").is_file()
        ),
        folder / "qrels" / f"{split}.tsv",
    )
    require_file(qrels_path)
    corpus_rows = read_rows(folder / "corpus.jsonl", ("_id", "text"))
    corpus: dict[str, str] = {}
    for row in corpus_rows:
        doc_id = str(row.fields["_id"])
        if doc_id in corpus:
            raise row.error(f"duplicate document id {doc_id!r}")
        title = row.fields.get("title") or ""
        if not isinstance(title, str):
            raise row.error("field 'title' must be a string")
        corpus[doc_id] = document_text(title, row.text("text"))
    queries: dict[str, str] = {}
    for row in read_rows(folder / "queries.jsonl", ("_id", "text")):
        queries[str(row.fields["_id"])] = row.text("text")
    qrels: dict[str, dict[str, int]] = {}
    for row in read_rows(qrels_path, ("query-id", "corpus-id", "score"), delimiter="\t"):
        qid, doc_id = row.text("query-id"), row.text("corpus-id")
        if qid not in queries:
            raise row.error(f"query id {qid!r} is not in {folder / 'queries.jsonl'}")
        if doc_id not in corpus:
            raise row.error(f"corpus id {doc_id!r} is not in {folder / 'corpus.jsonl'}")
        qrels.setdefault(qid, {})[doc_id] = row.integer("score")
    return make_data(corpus, queries, qrels)


def make_data(
    corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> RetrievalData:
    """RetrievalData for the queries that have qrels (in qrels order)."""
    if not corpus:
        raise DataError("retrieval corpus is empty")
    query_ids = [qid for qid in qrels if qrels[qid]]
    if not query_ids:
        raise DataError("no query has qrels in this split (the split is empty)")
    return RetrievalData(
        corpus_ids=list(corpus),
        corpus_texts=list(corpus.values()),
        query_ids=query_ids,
        query_texts=[queries[qid] for qid in query_ids],
        qrels=qrels,
    )


def load(source: str | Path, split: str) -> RetrievalData:
    """The generic local retrieval format: a BEIR folder."""
    return load_beir(Path(source), split)


def rank(
    data: RetrievalData,
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    k: int,
    ignore_identical_ids: bool,
) -> list[list[str]]:
    """For each query, the ids of its top-k documents by cosine similarity, best first (ties: id desc)."""
    n_docs = len(data.corpus_ids)
    tie_order = np.empty(n_docs, dtype=np.int64)
    tie_order[np.argsort(np.array(data.corpus_ids, dtype=object), kind="stable")] = np.arange(n_docs)
    indices, _ = top_k(normalize(query_vectors), normalize(doc_vectors), k, tie_order)
    rankings = []
    for qid, row in zip(data.query_ids, indices, strict=True):
        ids = [data.corpus_ids[i] for i in row]
        rankings.append([d for d in ids if d != qid] if ignore_identical_ids else ids)
    return rankings


def query_metrics(
    ranking: Sequence[str], judged: dict[str, int], k_values: Sequence[int]
) -> dict[str, float]:
    """trec_eval's ndcg_cut, map_cut, recall and P at each k, and mteb's MRR@k, for one query."""
    gains = np.array([max(judged.get(doc, 0), 0) for doc in ranking], dtype=np.float64)
    relevant = gains >= 1
    n_relevant = sum(1 for score in judged.values() if score >= 1)
    ideal = np.sort(np.array([s for s in judged.values() if s > 0], dtype=np.float64))[::-1]
    discounts = 1.0 / np.log2(np.arange(2, max(len(gains), len(ideal)) + 2))
    hits = np.cumsum(relevant)
    precision_at_hit = np.where(relevant, hits / np.arange(1, len(relevant) + 1), 0.0)
    first_hit = int(np.argmax(relevant)) if relevant.any() else None
    out: dict[str, float] = {}
    for k in k_values:
        dcg = float(np.sum(gains[:k] * discounts[: len(gains[:k])]))
        idcg = float(np.sum(ideal[:k] * discounts[: len(ideal[:k])]))
        found = int(hits[min(k, len(hits)) - 1]) if len(hits) else 0
        out[f"ndcg_at_{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"map_at_{k}"] = float(precision_at_hit[:k].sum()) / n_relevant if n_relevant else 0.0
        out[f"recall_at_{k}"] = found / n_relevant if n_relevant else 0.0
        out[f"precision_at_{k}"] = found / k
        out[f"mrr_at_{k}"] = 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
    return out


def ranking_metrics(
    rankings: Sequence[Sequence[str]], qrels: Sequence[dict[str, int]], k_values: Sequence[int] = K_VALUES
) -> dict[str, float]:
    """`query_metrics` averaged over queries (rankings[i] is judged by qrels[i])."""
    per_query = [query_metrics(r, q, k_values) for r, q in zip(rankings, qrels, strict=True)]
    return {name: float(np.mean([m[name] for m in per_query])) for name in per_query[0]}


def evaluate(
    data: RetrievalData,
    embed: EmbedFn,
    *,
    k_values: Sequence[int] = K_VALUES,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """Every retrieval metric (main score: ndcg_at_10)."""
    query_vectors = embed(data.query_texts, "query")
    doc_vectors = embed(data.corpus_texts, "document")
    # One extra document, so that dropping a query's own id still leaves max(k_values) ranked ones.
    depth = max(k_values) + (1 if ignore_identical_ids else 0)
    rankings = rank(data, query_vectors, doc_vectors, depth, ignore_identical_ids)
    return ranking_metrics(rankings, [data.qrels[qid] for qid in data.query_ids], k_values)


RETRIEVAL = TaskType(
    name="Retrieval",
    main_score="ndcg_at_10",
    load=load,
    evaluate=evaluate,
    data_format="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv",
)
