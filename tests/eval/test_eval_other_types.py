"""Classification, Clustering, Reranking and BitextMining: metrics on tiny data, loaders, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_embed.errors import DataError
from gemma_embed.eval.tasks import bitext_mining, classification, clustering, reranking


def _onehot_embed(key):
    """An EmbedFn mapping each text to a one-hot vector of `key(text)` (plus a little text-specific noise)."""

    def embed(texts, role=None):
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, key(text)] = 1.0
            out[i, 7] = (sum(map(ord, text)) % 7) / 100
        return out

    return embed


def test_undersample_like_mteb():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 20
    experiments = classification.undersample(labels, samples_per_label=4, n_experiments=3, seed=42)
    assert len(experiments) == 3
    for chosen in experiments:
        counts = {label: sum(labels[i] == label for i in chosen) for label in "abc"}
        assert counts == {"a": 4, "b": 3, "c": 4}
    # mteb shuffles one index list in place with a fresh RandomState(seed) per experiment
    order = list(range(len(labels)))
    np.random.RandomState(42).shuffle(order)
    np.random.RandomState(42).shuffle(order)
    first_of_each = {}
    for i in order:
        first_of_each.setdefault(labels[i], []).append(i)
    expected = sorted(i for label in "abc" for i in first_of_each[label][:4])
    assert sorted(experiments[1].tolist()) == expected
    assert classification.undersample(labels, 4, 3, 42)[2].tolist() == experiments[2].tolist()


def test_prediction_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    m = classification.prediction_metrics(y_true, y_pred)
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["recall"] == pytest.approx((0.5 + 1) / 2)
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert "ap" in m  # binary tasks also report AP (of the predicted labels, as mteb)


def test_classification_evaluate_separable():
    train = [f"{c}{i}" for c in "xyz" for i in range(12)]
    test = [f"{c}t{i}" for c in "xyz" for i in range(5)]
    data = classification.ClassificationData(train, [t[0] for t in train], test, [t[0] for t in test])
    calls = []
    embed = _onehot_embed(lambda t: "xyz".index(t[0]))

    def counting(texts, role=None):
        calls.append(len(texts))
        return embed(texts, role)

    scores = classification.evaluate(data, counting, n_experiments=3, samples_per_label=8)
    assert scores["accuracy"] == 1.0 and scores["f1"] == 1.0
    sampled = set(np.concatenate(classification.undersample(data.train_labels, 8, 3, 42)).tolist())
    assert calls[0] == len(sampled) < len(train)  # only train texts some experiment samples are embedded


def test_classification_loader_and_errors(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "test.csv").write_text("text,label\nc,x\n")
    data = classification.load(tmp_path, "test")
    assert data.train_labels == ["x", "y"] and data.test_texts == ["c"]
    (tmp_path / "test.csv").write_text("text,label\nc,z\n")
    with pytest.raises(DataError, match=r"test\.csv: label\(s\) 'z' never occur in the train split"):
        classification.load(tmp_path, "test")
    (tmp_path / "test.csv").write_text("sentence,label\nc,x\n")
    with pytest.raises(DataError, match=r"test\.csv: line 2: missing column\(s\) 'text'"):
        classification.load(tmp_path, "test")
    with pytest.raises(DataError, match="must be a directory"):
        classification.load(tmp_path / "train.csv", "test")


def test_v_measure_perfect_and_deterministic():
    texts = [f"{c}{i}" for c in "abc" for i in range(30)]
    data = clustering.ClusteringData(texts, [t[0] for t in texts])
    embed = _onehot_embed(lambda t: "abc".index(t[0]))
    first = clustering.evaluate(data, embed, n_experiments=2, cluster_size=64)
    assert first["v_measure"] == pytest.approx(1.0)
    assert clustering.evaluate(data, embed, n_experiments=2, cluster_size=64) == first


def test_clustering_loader_and_single_label(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')
    assert clustering.load(path, "test").labels == ["1", "2"]
    data = clustering.ClusteringData(["a", "b"], ["x", "x"])
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        clustering.evaluate(data, _onehot_embed(lambda t: 0))


def test_reranking_sample_metrics_by_hand():
    scores = np.array([0.2, 0.9, 0.5, 0.1])
    relevant = np.array([True, False, False, True])
    ap, rr = reranking.sample_metrics(scores, relevant, 10)
    # ranking: n(0.9) n(0.5) p(0.2) p(0.1): precision at hits 1/3, 2/4
    assert ap == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert rr == pytest.approx(1 / 3)
    assert reranking.sample_metrics(scores, relevant, 2)[1] == 0.0


def test_reranking_evaluate_and_loader(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(
        '{"query": "q0", "positive": ["p0"], "negative": ["n1", "n2"]}\n'
        '{"query": "q1", "positive": [], "negative": ["n1"]}\n'
        '{"query": "q2", "positive": ["p2"], "negative": ["n0"]}\n'
    )
    data = reranking.load(tmp_path, "test")
    assert data.queries == ["q0", "q2"]  # the sample without positives is skipped, as in MTEB
    scores = reranking.evaluate(data, _onehot_embed(lambda t: int(t[1])))
    assert scores == {"map": pytest.approx(1.0), "mrr_at_10": pytest.approx(1.0)}
    path.write_text('{"query": "q", "positive": "p", "negative": ["n"]}\n')
    with pytest.raises(DataError, match=r"test\.jsonl: line 1: field 'positive' must be a list of strings"):
        reranking.load(path, "test")
    path.write_text('{"query": "q", "positive": [], "negative": ["n"]}\n')
    with pytest.raises(DataError, match="no sample has both"):
        reranking.load(path, "test")


def test_bitext_metrics_and_ties():
    v1 = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    v2 = np.array([[1, 0], [1, 0], [1, 1]], dtype=np.float32)
    predicted = bitext_mining.nearest_neighbours(v1, v2)
    assert predicted.tolist() == [0, 2, 2]  # a tie between 0 and 1 goes to the earlier sentence
    m = bitext_mining.mining_metrics(predicted)
    assert m["accuracy"] == pytest.approx(2 / 3)
    # weighted over gold labels 0, 1, 2 (support 1 each): per-label f1 = 1, 0, 2/3
    assert m["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_bitext_loaders_and_mismatch(tmp_path):
    a, b = tmp_path / "x.de", tmp_path / "x.en"
    a.write_text("Hallo\nWelt\n")
    b.write_text("Hello\nWorld\n")
    data = bitext_mining.load(f"{a},{b}", "test")
    assert data.sentences1 == ["Hallo", "Welt"] and data.sentences2 == ["Hello", "World"]
    b.write_text("Hello\n")
    with pytest.raises(DataError, match=r"x\.en: line 2: file ends while its parallel file goes on"):
        bitext_mining.load(f"{a},{b}", "test")
    table = tmp_path / "test.tsv"
    table.write_text("sentence1\tsentence2\nHallo\tHello\n")
    assert bitext_mining.load(tmp_path, "test").sentences2 == ["Hello"]
