"""mteb integration: `mteb.evaluate` runs a harness encoder through `MTEBModel`, offline, on tasks whose
data is supplied locally, and agrees with the harness's own evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.mteb_adapter import MTEBModel
from gemma_embed.eval.tasks import retrieval, sts

mteb = pytest.importorskip("mteb", reason="mteb is not installed (optional: pip install mteb)")
datasets = pytest.importorskip("datasets")

WORDS = [
    "red",
    "planet",
    "mars",
    "moon",
    "orbit",
    "star",
    "gas",
    "giant",
    "ring",
    "water",
    "rock",
    "life",
    "cell",
    "gene",
    "protein",
    "virus",
    "brain",
    "heart",
]


def _sentence(rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def test_protocol_and_meta(fake_encoder):
    from mteb.models import EncoderProtocol

    model = MTEBModel(fake_encoder, dim=32)
    assert isinstance(model, EncoderProtocol)
    meta = model.mteb_model_meta
    assert meta.name == "gemma-embed/fake-encoder" and meta.embed_dim == 32
    assert meta.revision == fake_encoder.identity[:12]


@pytest.mark.filterwarnings("ignore:The task 'STSBenchmark' is superseded")
def test_mteb_sts_matches_harness(make_fake_encoder):
    rng = np.random.default_rng(0)
    s1 = [_sentence(rng) for _ in range(60)]
    s2 = [_sentence(rng) for _ in range(60)]
    gold = rng.uniform(0, 5, size=60)
    task = mteb.get_task("STSBenchmark")
    task.dataset = datasets.DatasetDict(
        {"test": datasets.Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": gold.tolist()})}
    )
    task.data_loaded = True
    encoder = make_fake_encoder()
    result = mteb.evaluate(MTEBModel(encoder), task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    ours = sts.evaluate(
        sts.STSData(s1, s2, gold), EmbeddingSource(make_fake_encoder(), progress=False).embed_fn("STS")
    )
    assert scores["cosine_spearman"] == pytest.approx(ours["cosine_spearman"], abs=1e-9)
    assert {prompt for _, prompt in encoder.calls} == {"s: "}  # the STS prompt


def test_mteb_retrieval_matches_harness(make_fake_encoder):
    rng = np.random.default_rng(1)
    corpus = {f"d{i}": (f"title {i}" if i % 2 else "", _sentence(rng, 12)) for i in range(80)}
    queries = {f"q{i}": _sentence(rng, 5) for i in range(15)}
    qrels = {q: {f"d{j}": 1 for j in rng.choice(80, size=2, replace=False)} for q in queries}
    task = mteb.get_task("SciFact")
    task.dataset = {
        "default": {
            "test": {
                "corpus": datasets.Dataset.from_list(
                    [{"id": d, "title": t, "text": x} for d, (t, x) in corpus.items()]
                ),
                "queries": datasets.Dataset.from_list([{"id": q, "text": x} for q, x in queries.items()]),
                "relevant_docs": qrels,
                "top_ranked": None,
            }
        }
    }
    task.data_loaded = True
    encoder = make_fake_encoder()
    result = mteb.evaluate(MTEBModel(encoder), task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    data = retrieval.make_data(
        {d: retrieval.document_text(t, x) for d, (t, x) in corpus.items()}, queries, qrels
    )
    ours = retrieval.evaluate(
        data, EmbeddingSource(make_fake_encoder(), progress=False).embed_fn("Retrieval")
    )
    for metric in ("ndcg_at_10", "map_at_10", "recall_at_10", "mrr_at_10"):
        assert scores[metric] == pytest.approx(ours[metric], abs=1e-5)  # mteb rounds to 5 decimals
    assert {prompt for _, prompt in encoder.calls} == {"q: ", "d: "}
