"""The named tasks load the project's real data (../shared/data) with the sizes MTEB's versions have."""

from __future__ import annotations

import pytest

from gemma_embed.eval.registry import TASKS, build_task


def _load(name: str, subset: str = "default", **kwargs):
    return build_task(name, subsets=[subset], **kwargs).subsets[subset]()


@pytest.mark.parametrize(
    ("name", "split", "pairs"),
    [
        ("STSBenchmark", "test", 1379),
        ("STSBenchmark", "dev", 1500),
        ("KorSTS", "test", 1379),
        ("JSTS", "validation", 1457),
        ("STSB", "test", 1361),
    ],
)
def test_sts_tasks(shared_data, name, split, pairs):
    data = _load(name, split=split)
    assert len(data.sentences1) == len(data.sentences2) == len(data.scores) == pairs
    assert data.scores.min() >= 0 and data.scores.max() <= 5


def test_stsbenchmark_keeps_quotes_and_extra_columns(shared_data):
    data = _load("STSBenchmark")
    assert data.sentences1[0] == "A girl is styling her hair." and data.scores[0] == 2.5
    assert any('"' in s for s in data.sentences1 + data.sentences2)


def test_multilingual_sts_subsets(shared_data):
    task = build_task("STSBenchmarkMultilingualSTS")
    assert list(task.subsets) == ["en", "de", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh"]
    de = task.subsets["de"]()
    assert len(de.sentences1) == 1379 and de.sentences1[0] == "Ein Mädchen frisiert ihr Haar."


def test_scifact(shared_data):
    data = _load("SciFact")
    assert len(data.corpus_ids) == 5183 and len(data.query_ids) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339


def test_cosqa_and_xquad(shared_data):
    cosqa = _load("CoSQA")
    assert len(cosqa.corpus_ids) == 6267 and len(cosqa.query_ids) == 500
    task = build_task("XQuADRetrieval")
    assert len(task.subsets) == 12 and task.split == "validation"
    de = task.subsets["de"]()
    assert len(de.corpus_ids) == 240 and len(de.query_ids) == 1190


def test_banking77(shared_data):
    data = _load("Banking77Classification")
    assert len(data.test_texts) == 3080 and len(data.train_texts) == 10003
    assert len(set(data.train_labels)) == 77


def test_twitter_url_corpus_is_train_plus_test(shared_data):
    data = _load("TwitterURLCorpus")
    assert len(data.labels) == 51524
    assert set(data.labels.tolist()) == {0, 1}


def test_tatoeba(shared_data):
    task = build_task("Tatoeba", subsets=["deu-eng"])
    data = task.subsets["deu-eng"]()
    assert len(data.sentences1) == 1000
    assert data.sentences1[0].startswith("Maria") and data.sentences2[0].startswith("Mary")
    assert task.languages["deu-eng"] == ["deu", "eng"]
    assert len(build_task("Tatoeba").subsets) == 112


def test_every_named_task_builds(shared_data):
    for name in TASKS:
        task = build_task(name)
        assert task.subsets and task.split
