"""STS and PairClassification: metrics against direct formulas, loaders and their bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score

from gemma_embed.errors import DataError
from gemma_embed.eval.tasks import pair_classification as pc
from gemma_embed.eval.tasks import sts
from gemma_embed.eval.tasks.base import paired_similarities


def _embed_table(table):
    """An EmbedFn that looks texts up in a dict (role ignored)."""

    def embed(texts, role=None):
        return np.array([table[t] for t in texts], dtype=np.float32)

    return embed


def test_paired_similarities_by_hand():
    a = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    b = np.array([[4.0, 3.0], [0.0, 2.0]], dtype=np.float32)
    sims = paired_similarities(a, b)
    np.testing.assert_allclose(sims["cosine"], [24 / 25, 0.0], atol=1e-7)
    np.testing.assert_allclose(sims["dot"], [24.0, 0.0])
    np.testing.assert_allclose(sims["manhattan"], [2.0, 3.0])
    np.testing.assert_allclose(sims["euclidean"], [np.sqrt(2), np.sqrt(5)])


def test_sts_correlations_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    gold = rng.uniform(0, 5, size=30)
    scores = sts.correlations(paired_similarities(a, b), gold)
    cosine = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert scores["cosine_spearman"] == pytest.approx(spearmanr(gold, cosine)[0], abs=1e-9)
    assert scores["cosine_pearson"] == pytest.approx(pearsonr(gold, cosine)[0], abs=1e-9)
    manhattan = np.abs(a - b).sum(1)
    assert scores["manhattan_spearman"] == pytest.approx(spearmanr(gold, -manhattan)[0], abs=1e-9)
    assert set(scores) == {
        f"{s}_{c}" for s in ("cosine", "dot", "manhattan", "euclidean") for c in ("pearson", "spearman")
    }


def test_sts_evaluate_perfect_ranking():
    table = {"a": [1, 0], "b": [1, 0.1], "c": [1, 1], "d": [0, 1], "e": [1, 0], "f": [-1, 0.2]}
    data = sts.STSData(["a", "c", "e"], ["b", "d", "f"], np.array([5.0, 2.0, 0.0]))
    scores = sts.evaluate(data, _embed_table(table))
    assert scores["cosine_spearman"] == pytest.approx(1.0)


def test_sts_generic_loaders(tmp_path):
    (tmp_path / "test.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "c", "sentence2": "d", "score": 4.5}\n'
    )
    data = sts.load(tmp_path, "test")
    assert data.sentences1 == ["a", "c"] and data.scores.tolist() == [1.0, 4.5]
    stsb = tmp_path / "sts-dev.csv"
    stsb.write_text(
        'main\tMSRvid\t2012\t0001\t2.5\tA "quoted" girl.\tA girl.\nmain\tx\t2012\t2\t1\tp\tq\tsrc1\tsrc2\n'
    )
    data = sts.load(tmp_path, "dev")
    assert data.sentences1 == ['A "quoted" girl.', "p"] and data.scores.tolist() == [2.5, 1.0]


def test_sts_bad_inputs(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("sentence1,sentence2\na,b\n")
    with pytest.raises(DataError, match=r"test\.csv: line 2: missing column\(s\) 'score'"):
        sts.load(path, "test")
    path.write_text("sentence1,sentence2,score\na,b,x\n")
    with pytest.raises(DataError, match=r"test\.csv: line 2: field 'score' must be a number"):
        sts.load(path, "test")
    path.write_text("sentence1,sentence2,score\n")
    with pytest.raises(DataError, match="empty"):
        sts.load(path, "test")


def _mteb_best_acc(scores, labels, high):
    """mteb's _find_best_acc_and_threshold, transcribed as the reference."""
    rows = sorted(zip(scores, labels, strict=True), key=lambda x: x[0], reverse=high)
    best, positives, negatives = 0, 0, sum(1 for x in labels if x == 0)
    for i in range(len(rows) - 1):
        if rows[i][1] == 1:
            positives += 1
        else:
            negatives -= 1
        best = max(best, (positives + negatives) / len(labels))
    return best


def _mteb_best_f1(scores, labels, high):
    rows = sorted(zip(scores, labels, strict=True), key=lambda x: x[0], reverse=high)
    best = (0.0, 0.0, 0.0)
    correct = 0
    for extracted, (_, label) in enumerate(rows[:-1], start=1):
        correct += label == 1
        if correct:
            p, r = correct / extracted, correct / sum(labels)
            f1 = 2 * p * r / (p + r)
            if f1 > best[0]:
                best = (f1, p, r)
    return best


@pytest.mark.parametrize("high", [True, False])
def test_pair_thresholds_match_mteb_loops(high):
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = np.round(rng.normal(size=40), 1)  # rounding makes ties
        labels = rng.integers(0, 2, size=40)
        assert pc.best_accuracy(scores, labels, high) == pytest.approx(_mteb_best_acc(scores, labels, high))
        assert pc.best_f1(scores, labels, high) == pytest.approx(_mteb_best_f1(scores, labels, high))


def test_pair_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([1, 0, 1, 0])
    m = pc.score_metrics(scores, labels, True)
    assert m["accuracy"] == pytest.approx(0.75)  # cut after 0.7: 1, 0, 1 | 0 -> 3 right
    assert m["f1"] == pytest.approx(0.8)  # top 3: p 2/3, r 1 -> f1 0.8
    assert m["ap"] == pytest.approx((1 + 2 / 3) / 2)
    distances = -scores
    assert pc.score_metrics(distances, labels, False)["ap"] == pytest.approx(m["ap"])
    assert m["ap"] == pytest.approx(average_precision_score(labels, scores))


def test_pair_evaluate_max_over_similarities():
    table = {"a": [1, 0], "b": [1, 0.1], "c": [1, 0], "d": [0, 1], "e": [0, 1], "f": [0.1, 1]}
    data = pc.PairData(["a", "c", "e"], ["b", "d", "f"], np.array([1, 0, 1]))
    scores = pc.evaluate(data, _embed_table(table))
    assert scores["max_ap"] == pytest.approx(1.0)
    for name in ("cosine", "dot", "manhattan", "euclidean"):
        assert f"{name}_ap" in scores and f"{name}_accuracy" in scores
    assert scores["max_accuracy"] == max(
        scores[f"{n}_accuracy"] for n in ("cosine", "dot", "manhattan", "euclidean")
    )


def test_pair_loader_and_bad_labels(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t0\n")
    assert pc.load(path, "test").labels.tolist() == [1, 0]
    path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t2\n")
    with pytest.raises(DataError, match=r"pairs\.tsv: line 3: label must be 0 or 1"):
        pc.load(path, "test")
    path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\n")
    with pytest.raises(DataError, match="both 0 and 1"):
        pc.load(path, "test")
