"""The vector index: CLI build/search, ANN precisions vs exact, model versioning, nDCG parity with eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.encoders import load_encoder
from gemma_embed.eval.registry import data_root
from gemma_embed.eval.tasks import retrieval
from gemma_embed.eval.tasks.base import normalize
from gemma_embed.search.corpus import Document, embed_documents
from gemma_embed.search.index import ModelMismatchError, build_index, load_index_encoder, open_index


def test_build_from_docs_and_search(run_cli, tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path) -> None:
    index = tmp_path / "idx"
    code, out, err = run_cli(
        "index", "build", docs_jsonl, "--out", index, "-m", tiny_checkpoint, "--dim", "32"
    )
    assert code == 0, err
    assert "7 documents, dim 32, exact index" in out
    code, out, _ = run_cli("search", index, "red planet", "-k", "3")
    lines = out.splitlines()
    assert lines[0] == "query: red planet" and len(lines) == 4
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)

    code, out, _ = run_cli("search", index, "red planet", "-k", "3", "--json")
    hits = json.loads(out)["hits"]
    loaded = open_index(index)
    encoder = load_index_encoder(loaded)
    q = loaded.embed_queries(encoder, ["red planet"])[0]
    best = np.argsort(-(loaded.vectors @ q))[:3]
    assert [h["id"] for h in hits] == [loaded.docs[i].id for i in best]
    assert hits[0]["title"] == loaded.docs[best[0]].title


def test_build_from_embeddings_with_ann(
    run_cli, tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path
) -> None:
    run_cli("embed-corpus", docs_jsonl, tmp_path / "e", "-m", tiny_checkpoint, "--precision", "int8", "-q")
    code, out, err = run_cli(
        "index", "build", tmp_path / "e", "--out", tmp_path / "i", "--precision", "int8", "--exact-below", "0"
    )
    assert code == 0, err
    assert "HNSW (int8)" in out
    code, ann_out, _ = run_cli("search", tmp_path / "i", "gas giant", "-k", "7")
    code, exact_out, _ = run_cli("search", tmp_path / "i", "gas giant", "-k", "7", "--exact")
    assert code == 0 and ann_out == exact_out  # k = corpus size: every document, rescored in float


def test_other_model_is_refused(
    run_cli, tiny_checkpoint: Path, other_checkpoint: Path, docs_jsonl: Path, tmp_path: Path
) -> None:
    run_cli("index", "build", docs_jsonl, "--out", tmp_path / "i", "-m", tiny_checkpoint)
    code, _, err = run_cli("search", tmp_path / "i", "planet", "-m", other_checkpoint)
    assert code == 2 and err.count("\n") == 1
    assert "index was built with model" in err and "rebuild the index" in err
    with pytest.raises(ModelMismatchError):
        load_index_encoder(open_index(tmp_path / "i"), str(other_checkpoint))
    code, _, err = run_cli("search", tmp_path / "nothing", "planet")
    assert code == 2 and "not a gemma-embed index" in err


@pytest.mark.parametrize(("precision", "min_recall"), [("float32", 0.95), ("int8", 0.9), ("binary", 0.7)])
def test_ann_recall_against_exact(precision: str, min_recall: float) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 64))
    vectors = centers[rng.integers(0, 20, 3000)] + 0.7 * rng.normal(size=(3000, 64))
    queries = centers[rng.integers(0, 20, 50)] + 0.7 * rng.normal(size=(50, 64))
    docs = [Document(str(i), "", "") for i in range(len(vectors))]
    index = build_index(docs, vectors, model="m", model_identity="x", precision=precision, exact_below=0)
    assert index.ann is not None
    ann, ann_scores = index.search_vectors(queries, 10)
    exact, _ = index.search_vectors(queries, 10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann, exact, strict=True)])
    assert recall >= min_recall
    assert np.all(np.diff(ann_scores, axis=1) <= 1e-6)


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    docs = [Document(f"d{i}", f"t{i}", "x") for i in range(50)]
    index = build_index(docs, rng.normal(size=(50, 8)), model="m", model_identity="x", exact_below=10)
    index.save(tmp_path / "i")
    loaded = open_index(tmp_path / "i")
    assert loaded.docs == docs and loaded.ann is not None
    q = rng.normal(size=(3, 8))
    np.testing.assert_array_equal(loaded.search_vectors(q, 5)[0], index.search_vectors(q, 5)[0])
    with pytest.raises(DataError, match="empty corpus"):
        build_index([], np.zeros((0, 8)), model="m", model_identity="x")


def scifact_subset(n_docs: int = 80) -> retrieval.RetrievalData:
    """SciFact test queries whose relevant documents are among the first `n_docs` documents."""
    folder = data_root() / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"{folder}: SciFact not available")
    full = retrieval.load_beir(folder, "test")
    corpus = dict(zip(full.corpus_ids[:n_docs], full.corpus_texts[:n_docs], strict=True))
    qrels = {q: r for q, r in full.qrels.items() if q in full.query_ids and set(r) <= set(corpus)}
    queries = dict(zip(full.query_ids, full.query_texts, strict=True))
    return retrieval.make_data(corpus, queries, qrels)


@pytest.mark.filterwarnings("ignore:.*exceed max_seq_length")
def test_scifact_ndcg_from_index_equals_harness(tiny_checkpoint: Path) -> None:
    data = scifact_subset()
    encoder = load_encoder(str(tiny_checkpoint))
    embed = EmbeddingSource(encoder, progress=False).embed_fn("Retrieval")
    harness = retrieval.evaluate(data, embed)
    query_vectors, doc_vectors = embed(data.query_texts, "query"), embed(data.corpus_texts, "document")
    expected = retrieval.rank(data, query_vectors, doc_vectors, 11, ignore_identical_ids=True)
    cosine = normalize(query_vectors) @ normalize(doc_vectors).T
    column = {doc_id: i for i, doc_id in enumerate(data.corpus_ids)}

    # The documents are already "title text" (load_beir); embed them with no title, as embed-corpus does.
    docs = [Document(i, "", t) for i, t in zip(data.corpus_ids, data.corpus_texts, strict=True)]
    vectors = embed_documents(encoder, docs, None)
    for exact_below in (10_000, 0):  # exact search, then HNSW (float32, rescored)
        index = build_index(
            docs, vectors, model="tiny", model_identity=encoder.identity, exact_below=exact_below
        )
        idx, _ = index.search_vectors(index.embed_queries(encoder, data.query_texts), 11)
        rankings = [
            [index.docs[i].id for i in row if index.docs[i].id != qid]
            for qid, row in zip(data.query_ids, idx, strict=True)
        ]
        # The harness batches the texts otherwise and scores all queries in one product, the HNSW path
        # rescores one query at a time: the same cosines up to float32 rounding, so two documents within
        # 1e-5 of each other may trade places. Any other difference in the order is a bug.
        for row, ours_row, harness_row in zip(cosine, rankings, expected, strict=True):
            for got, want in zip(ours_row[:10], harness_row[:10], strict=True):
                assert got == want or abs(row[column[got]] - row[column[want]]) <= 1e-5, exact_below
        ours = retrieval.ranking_metrics(rankings, [data.qrels[q] for q in data.query_ids], (10,))
        if [r[:10] for r in rankings] == [r[:10] for r in expected]:
            assert ours["ndcg_at_10"] == pytest.approx(harness["ndcg_at_10"], abs=1e-9), exact_below
