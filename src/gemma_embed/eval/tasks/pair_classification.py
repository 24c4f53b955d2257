"""PairClassification: does embedding similarity separate paraphrase (1) from non-paraphrase (0) pairs?

Protocol (MTEB `AbsTaskPairClassification`): both sides are embedded with the "PairClassification"
prompt; each pair gets four scores: cosine similarity, dot product, Manhattan and Euclidean distance
(for distances, smaller means more similar). For each score: `ap` = average precision of the labels
ranked by the score (sklearn `average_precision_score`, distances negated), and the best `accuracy` and
best `f1` (with its `precision` and `recall`) over thresholds between consecutive sorted scores, as
mteb's `_find_best_acc_and_threshold` / `_find_best_f1_and_threshold` scan them. Metrics are named
`<score>_<metric>` (`cosine_ap`, `manhattan_f1`, ...) and `max_<metric>` is the best over the four scores;
main score: `max_ap`.

Local format: a `.csv`, `.tsv` or `.jsonl` file (or split directory) with columns `sentence1`,
`sentence2` and `label` (0 or 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType, paired_similarities

SIMILARITIES = ("cosine", "dot", "manhattan", "euclidean")
DISTANCES = ("manhattan", "euclidean")


@dataclass(frozen=True)
class PairData:
    """Sentence pairs with binary labels (1 = similar / paraphrase)."""

    sentences1: list[str]
    sentences2: list[str]
    labels: np.ndarray


def make_data(
    sentences1: Sequence[str], sentences2: Sequence[str], labels: Sequence[int], source: str
) -> PairData:
    """PairData after checking that both label values occur (`source` names the data in errors)."""
    array = np.asarray(labels, dtype=np.int64)
    if len(array) == 0:
        raise DataError(f"{source}: no pairs (the split is empty)")
    if set(np.unique(array).tolist()) != {0, 1}:
        raise DataError(f"{source}: labels must include both 0 and 1, found {sorted(set(array.tolist()))}")
    return PairData(list(sentences1), list(sentences2), array)


def load_table(path: Path, *, aliases: Mapping[str, str] | None = None) -> PairData:
    """Pairs from a table or JSON Lines file with sentence1, sentence2 and label (0/1)."""
    rows = read_rows(path, ("sentence1", "sentence2", "label"), aliases=aliases)
    labels = []
    for row in rows:
        label = row.integer("label")
        if label not in (0, 1):
            raise row.error(f"label must be 0 or 1, got {row.fields['label']!r}")
        labels.append(label)
    return make_data(
        [r.text("sentence1") for r in rows], [r.text("sentence2") for r in rows], labels, str(path)
    )


def load(source: str | Path, split: str) -> PairData:
    """The generic local pair classification format."""
    return load_table(find_split_file(Path(source), split))


def _sorted_labels(scores: np.ndarray, labels: np.ndarray, high_is_similar: bool) -> np.ndarray:
    # A stable sort, in the direction mteb sorts (Python's sorted(..., reverse=True) keeps equal items in order).
    order = np.argsort(-scores if high_is_similar else scores, kind="stable")
    return labels[order]


def best_accuracy(scores: np.ndarray, labels: np.ndarray, high_is_similar: bool) -> float:
    """The best accuracy of "similar iff the score is on the similar side of a threshold" over the
    thresholds between consecutive sorted scores."""
    ranked = _sorted_labels(scores, labels, high_is_similar)[:-1]
    positives_so_far = np.cumsum(ranked == 1)
    negatives_remaining = np.sum(labels == 0) - np.cumsum(ranked == 0)
    return float(np.max((positives_so_far + negatives_remaining) / len(labels), initial=0.0))


def best_f1(scores: np.ndarray, labels: np.ndarray, high_is_similar: bool) -> tuple[float, float, float]:
    """(f1, precision, recall) at the threshold with the best F1 (the first one on ties, as mteb)."""
    ranked = _sorted_labels(scores, labels, high_is_similar)[:-1]
    correct = np.cumsum(ranked == 1)
    extracted = np.arange(1, len(ranked) + 1)
    precision = correct / extracted
    recall = correct / max(int(labels.sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(correct > 0, 2 * precision * recall / (precision + recall), 0.0)
    if len(f1) == 0 or f1.max() <= 0:
        return 0.0, 0.0, 0.0
    best = int(np.argmax(f1))
    return float(f1[best]), float(precision[best]), float(recall[best])


def score_metrics(scores: np.ndarray, labels: np.ndarray, high_is_similar: bool) -> dict[str, float]:
    """accuracy, f1, precision, recall and ap of one similarity score."""
    from sklearn.metrics import average_precision_score

    f1, precision, recall = best_f1(scores, labels, high_is_similar)
    return {
        "accuracy": best_accuracy(scores, labels, high_is_similar),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "ap": float(average_precision_score(labels, scores if high_is_similar else -scores)),
    }


def pair_metrics(similarities: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """`<score>_<metric>` for each similarity and `max_<metric>` over them."""
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    for name in SIMILARITIES:
        for metric, value in score_metrics(similarities[name], labels, name not in DISTANCES).items():
            out[f"{name}_{metric}"] = value
            per_metric.setdefault(metric, []).append(value)
    out.update({f"max_{metric}": max(values) for metric, values in per_metric.items()})
    return out


def evaluate(data: PairData, embed: EmbedFn) -> dict[str, float]:
    """Every pair classification metric (main score: max_ap)."""
    n = len(data.sentences1)
    vectors = embed(data.sentences1 + data.sentences2)
    return pair_metrics(paired_similarities(vectors[:n], vectors[n:]), data.labels)


PAIR_CLASSIFICATION = TaskType(
    name="PairClassification",
    main_score="max_ap",
    load=load,
    evaluate=evaluate,
    data_format="file or split directory with sentence1, sentence2, label 0/1 (.csv/.tsv/.jsonl)",
)
