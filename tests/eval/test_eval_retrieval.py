"""Retrieval: trec_eval-style metrics, exact chunked top-k, ties, qrels with score 0, identical ids, BEIR
loading and its errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gemma_embed.errors import DataError
from gemma_embed.eval.tasks import retrieval
from gemma_embed.eval.tasks.base import _sortable, top_k


def test_query_metrics_by_hand():
    # ranking: d1 (rel 0), d2 (rel 2), d3 (not judged), d4 (rel 1); d5 (rel 1) never retrieved
    judged = {"d1": 0, "d2": 2, "d4": 1, "d5": 1}
    m = retrieval.query_metrics(["d1", "d2", "d3", "d4"], judged, (1, 2, 4))
    dcg2 = 2 / math.log2(3)
    idcg2 = 2 + 1 / math.log2(3)
    assert m["ndcg_at_1"] == 0.0
    assert m["ndcg_at_2"] == pytest.approx(dcg2 / idcg2)
    dcg4 = dcg2 + 1 / math.log2(5)
    idcg4 = idcg2 + 1 / math.log2(4)
    assert m["ndcg_at_4"] == pytest.approx(dcg4 / idcg4)
    assert m["map_at_4"] == pytest.approx((1 / 2 + 2 / 4) / 3)  # 3 relevant docs in qrels
    assert m["recall_at_2"] == pytest.approx(1 / 3)
    assert m["recall_at_4"] == pytest.approx(2 / 3)
    assert m["precision_at_4"] == pytest.approx(2 / 4)
    assert m["mrr_at_1"] == 0.0 and m["mrr_at_2"] == pytest.approx(0.5)


def test_query_without_relevant_documents_scores_zero():
    m = retrieval.query_metrics(["a", "b"], {"a": 0}, (1, 10))
    assert all(v == 0.0 for v in m.values())


def test_precision_divides_by_k_even_for_short_rankings():
    m = retrieval.query_metrics(["a"], {"a": 1}, (10,))
    assert m["precision_at_10"] == pytest.approx(0.1)
    assert m["recall_at_10"] == 1.0


def test_metrics_match_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        judged = rng.choice(60, size=8, replace=False)
        qrels[f"q{q}"] = {docs[i]: int(rng.integers(0, 3)) for i in judged}
        scores = np.round(rng.normal(size=60), 1)  # ties on purpose
        run[f"q{q}"] = {d: float(s) for d, s in zip(docs, scores, strict=True)}
    k_values = (1, 3, 5, 10, 20)
    measures = {f"{m}.{','.join(map(str, k_values))}" for m in ("ndcg_cut", "map_cut", "recall", "P")}
    expected = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for qid in qrels:
        # trec_eval's order: score descending, then document id descending
        ranking = sorted(run[qid], key=lambda d: (run[qid][d], d), reverse=True)
        ours = retrieval.query_metrics(ranking, qrels[qid], k_values)
        for k in k_values:
            assert ours[f"ndcg_at_{k}"] == pytest.approx(expected[qid][f"ndcg_cut_{k}"], abs=1e-9)
            assert ours[f"map_at_{k}"] == pytest.approx(expected[qid][f"map_cut_{k}"], abs=1e-9)
            assert ours[f"recall_at_{k}"] == pytest.approx(expected[qid][f"recall_{k}"], abs=1e-9)
            assert ours[f"precision_at_{k}"] == pytest.approx(expected[qid][f"P_{k}"], abs=1e-9)


def test_top_k_is_exact_across_chunks_with_deterministic_ties():
    # Small integer-valued vectors: every dot product is an integer below 2**24, exact in float32 whatever
    # order a BLAS kernel sums in, so chunked and whole products are bitwise equal on any CPU. The scores
    # take only a few dozen values over 1000 documents, so most of the top-k are exact ties: this checks
    # the tie rule (earlier document first, or larger tie_order first) across query and document chunks.
    rng = np.random.default_rng(0)
    q = rng.integers(-2, 3, size=(70, 8)).astype(np.float32)
    d = rng.integers(-2, 3, size=(1000, 8)).astype(np.float32)
    full = q @ d.T
    idx, scores = top_k(q, d, 25, query_chunk=16, doc_chunk=97)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :25]  # ties: earlier document first
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, expected, 1))
    tie_order = rng.permutation(1000)
    idx, _ = top_k(q, d, 25, tie_order, query_chunk=16, doc_chunk=97)
    for row, got in zip(full, idx, strict=True):
        np.testing.assert_array_equal(got, np.lexsort((-tie_order, -row))[:25])  # ties: larger tie_order
    idx, _ = top_k(q[:1], d, 5000)
    assert idx.shape == (1, 1000)


def test_top_k_of_real_scores_equals_the_whole_product_up_to_rounding():
    # A chunked product is a differently shaped matmul: BLAS kernels (AVX2, AVX-512, AMX) sum it in another
    # order, so its scores differ from the whole product's in the last bits (1.4e-6 on an AVX2-only EPYC).
    # Scores are compared to a tolerance, and the order only where no two neighbours are within it.
    tolerance = 1e-5
    rng = np.random.default_rng(0)
    q = rng.normal(size=(70, 8)).astype(np.float32)
    d = rng.normal(size=(1000, 8)).astype(np.float32)
    full = q @ d.T
    idx, scores = top_k(q, d, 25, query_chunk=16, doc_chunk=97)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :25]
    np.testing.assert_allclose(scores, np.take_along_axis(full, idx, 1), rtol=0, atol=tolerance)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=0, atol=tolerance)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    swapped = idx != expected
    gaps = np.abs(np.take_along_axis(full, idx, 1) - np.take_along_axis(full, expected, 1))
    assert np.all(gaps[swapped] <= tolerance)  # a different document only in place of a near tie


def test_signed_zero_scores_tie():
    # -0.0 == 0.0, but their bit patterns order apart; which sign a kernel gives an exact zero varies.
    assert len(set(_sortable(np.array([-0.0, 0.0], np.float32)).tolist())) == 1


def _data(corpus_ids, qrels, query_ids=None):
    query_ids = query_ids or list(qrels)
    return retrieval.RetrievalData(list(corpus_ids), list(corpus_ids), query_ids, query_ids, qrels)


def test_rank_orders_ties_by_id_descending_and_drops_identical_ids():
    data = _data(["a", "q1", "c", "b"], {"q1": {"b": 1}})
    doc_vectors = np.ones((4, 2), dtype=np.float32)  # every document ties
    query_vectors = np.ones((1, 2), dtype=np.float32)
    assert retrieval.rank(data, query_vectors, doc_vectors, 4, ignore_identical_ids=False) == [
        ["q1", "c", "b", "a"]
    ]
    assert retrieval.rank(data, query_vectors, doc_vectors, 4, ignore_identical_ids=True) == [["c", "b", "a"]]


def test_evaluate_with_identical_ids():
    table = {"q1": [1, 0], "q1doc": [1, 0], "other": [0.9, 0.1]}

    def embed(texts, role=None):
        return np.array([table[t] for t in texts], dtype=np.float32)

    data = retrieval.RetrievalData(["q1", "other"], ["q1doc", "other"], ["q1"], ["q1"], {"q1": {"other": 1}})
    kept = retrieval.evaluate(data, embed, k_values=(1,), ignore_identical_ids=False)
    dropped = retrieval.evaluate(data, embed, k_values=(1,), ignore_identical_ids=True)
    assert kept["ndcg_at_1"] == 0.0 and dropped["ndcg_at_1"] == 1.0


def test_document_text_joins_title_like_mteb():
    assert retrieval.document_text("Title", " body ") == "Title  body"
    assert retrieval.document_text("", " body ") == "body"


def _beir(folder, qrels_lines, corpus=None, queries=None):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = corpus or [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}]
    queries = queries or [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_bytes(("query-id\tcorpus-id\tscore\r\n" + qrels_lines).encode())


def test_load_beir(tmp_path):
    _beir(tmp_path, "q1\td1\t1\r\nq1\td2\t0\r\n")
    data = retrieval.load(tmp_path, "test")
    assert data.corpus_texts == ["T one", "two"]
    assert data.query_ids == ["q1"]  # q2 has no qrels: not evaluated
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}}


def test_beir_bad_inputs(tmp_path):
    _beir(tmp_path, "q1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 3: query id 'q9' is not in .*queries\.jsonl"):
        retrieval.load(tmp_path, "test")
    _beir(tmp_path, "q1\tdX\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 2: corpus id 'dX' is not in .*corpus\.jsonl"):
        retrieval.load(tmp_path, "test")
    _beir(tmp_path, "")
    with pytest.raises(DataError, match=r"test\.tsv: line 2: end of file without any record"):
        retrieval.load(tmp_path, "test")
    _beir(tmp_path, "q1\td1\tyes\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 2: field 'score' must be a number"):
        retrieval.load(tmp_path, "test")
    _beir(tmp_path, "q1\td1\t1\n", corpus=[{"_id": "d1", "body": "x"}])
    with pytest.raises(DataError, match=r"corpus\.jsonl: line 1: missing column\(s\) 'text'"):
        retrieval.load(tmp_path, "test")
    with pytest.raises(DataError, match=r"qrels[/\\]train\.tsv: file not found"):
        retrieval.load(tmp_path, "train")
