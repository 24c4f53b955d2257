"""Classification: a linear probe on the embeddings.

Protocol (MTEB `AbsTaskClassification`, v2 sampling, which reproduces v1's): `n_experiments` (10)
experiments; in each the train split is undersampled to at most `samples_per_label` (8) examples per label:
the list of train indices is shuffled in place by a fresh `numpy.random.RandomState(seed)` (seed 42; the
same list is shuffled again for the next experiment) and the first examples of each label are kept. A
`LogisticRegression(max_iter=100, random_state=seed)` is fit on the embeddings of that sample and predicts
the test split. Metrics (averaged over experiments): `accuracy` (main score), `f1` (macro), `f1_weighted`,
`precision`, `precision_weighted`, `recall`, `recall_weighted`, and for two labels `ap` / `ap_weighted`
(computed from the predicted labels, as mteb does). Texts are embedded with the "Classification" prompt;
only train texts that some experiment samples are embedded.

Local format: a directory with `train.<ext>` and `<split>.<ext>` (`.csv`, `.tsv` or `.jsonl`) with columns
`text` and `label` (any strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import Row, find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType


@dataclass(frozen=True)
class ClassificationData:
    """Texts and labels of the train split and of the split evaluated."""

    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def _texts_labels(rows: list[Row]) -> tuple[list[str], list[str]]:
    return [r.text("text") for r in rows], [str(r.fields["label"]) for r in rows]


def load_files(train: Path, test: Path, *, aliases: dict[str, str] | None = None) -> ClassificationData:
    """Classification data from a train file and a test file with text and label columns."""
    train_texts, train_labels = _texts_labels(read_rows(train, ("text", "label"), aliases=aliases))
    test_texts, test_labels = _texts_labels(read_rows(test, ("text", "label"), aliases=aliases))
    unknown = sorted(set(test_labels) - set(train_labels))
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"{test}: label(s) {shown} never occur in the train split {train}")
    return ClassificationData(train_texts, train_labels, test_texts, test_labels)


def load(source: str | Path, split: str) -> ClassificationData:
    """The generic local classification format (a directory with train and `split` files)."""
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{folder}: classification data must be a directory with train and {split} files")
    return load_files(find_split_file(folder, "train"), find_split_file(folder, split))


def undersample(labels: list[str], samples_per_label: int, n_experiments: int, seed: int) -> list[np.ndarray]:
    """The train indices of each experiment, exactly as mteb's `_undersample_data` draws them."""
    order = np.arange(len(labels))
    experiments = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)
        counts: dict[str, int] = {}
        chosen = []
        for i in order:
            if counts.get(labels[i], 0) < samples_per_label:
                counts[labels[i]] = counts.get(labels[i], 0) + 1
                chosen.append(i)
        experiments.append(np.array(chosen))
    return experiments


def prediction_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """mteb's classification metrics of one experiment."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
    )

    scores = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        scores[name] = float(fn(y_true, y_pred, average="macro", zero_division=0))
        scores[f"{name}_weighted"] = float(fn(y_true, y_pred, average="weighted", zero_division=0))
    if len(np.unique(y_true)) == 2:
        scores["ap"] = float(average_precision_score(y_true, y_pred, average="macro"))
        scores["ap_weighted"] = float(average_precision_score(y_true, y_pred, average="weighted"))
    return scores


def evaluate(
    data: ClassificationData,
    embed: EmbedFn,
    *,
    n_experiments: int = 10,
    samples_per_label: int = 8,
    seed: int = 42,
    max_iter: int = 100,
) -> dict[str, float]:
    """Every classification metric, averaged over the experiments (main score: accuracy)."""
    from sklearn.linear_model import LogisticRegression

    labels = sorted(set(data.train_labels))
    label_id = {label: i for i, label in enumerate(labels)}
    y_train = np.array([label_id[x] for x in data.train_labels])
    y_test = np.array([label_id[x] for x in data.test_labels])
    experiments = undersample(data.train_labels, samples_per_label, n_experiments, seed)
    used = np.unique(np.concatenate(experiments))
    train_vectors = dict(zip(used.tolist(), embed([data.train_texts[i] for i in used]), strict=True))
    test_vectors = embed(data.test_texts)
    results = []
    for chosen in experiments:
        classifier = LogisticRegression(max_iter=max_iter, random_state=seed)
        classifier.fit(np.stack([train_vectors[i] for i in chosen.tolist()]), y_train[chosen])
        results.append(prediction_metrics(y_test, classifier.predict(test_vectors)))
    return {name: float(np.mean([r[name] for r in results])) for name in results[0]}


CLASSIFICATION = TaskType(
    name="Classification",
    main_score="accuracy",
    load=load,
    evaluate=evaluate,
    data_format="directory with train and <split> files (.csv/.tsv/.jsonl) with text, label",
)
