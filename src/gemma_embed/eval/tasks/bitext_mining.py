"""BitextMining: find each sentence's translation among all sentences of the other language.

Protocol (MTEB `AbsTaskBitextMining` / `BitextMiningEvaluator`): both sides are embedded with the
"BitextMining" prompt; for every sentence1[i] the nearest sentence2 by cosine similarity is its predicted
translation (the gold one is sentence2[i]; among equal scores the earlier sentence wins). Metrics (sklearn,
over the predicted vs gold indices): `accuracy`, and `precision`, `recall`, `f1` with
`average="weighted"`, `zero_division=0`; main score: `f1`.

Local format: two parallel line files given as `src.txt,tgt.txt` (line i of one translates line i of the
other; sentence1 comes from the first), or a `.csv`, `.tsv` or `.jsonl` file with `sentence1`, `sentence2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType, normalize, top_k
from gemma_embed.io.tables import read_lines


@dataclass(frozen=True)
class BitextData:
    """Parallel sentences: sentences2[i] translates sentences1[i]."""

    sentences1: list[str]
    sentences2: list[str]


def load_parallel(path1: Path, path2: Path) -> BitextData:
    """Two line-aligned text files."""
    lines1, lines2 = read_lines(path1), read_lines(path2)
    if len(lines1) != len(lines2):
        shorter = path1 if len(lines1) < len(lines2) else path2
        raise DataError(
            f"{shorter}: line {min(len(lines1), len(lines2)) + 1}: file ends while its parallel file goes on "
            f"({len(lines1)} lines in {path1.name}, {len(lines2)} in {path2.name})"
        )
    if not lines1:
        raise DataError(f"{path1}: no lines (the split is empty)")
    return BitextData(lines1, lines2)


def load(source: str | Path, split: str) -> BitextData:
    """The generic local bitext format: `file1,file2` or a table with sentence1 and sentence2."""
    parts = str(source).split(",")
    if len(parts) == 2:
        return load_parallel(Path(parts[0]), Path(parts[1]))
    rows = read_rows(find_split_file(Path(source), split), ("sentence1", "sentence2"))
    return BitextData([r.text("sentence1") for r in rows], [r.text("sentence2") for r in rows])


def nearest_neighbours(vectors1: np.ndarray, vectors2: np.ndarray) -> np.ndarray:
    """For each row of vectors1, the index of the most cosine-similar row of vectors2."""
    indices, _ = top_k(normalize(vectors1), normalize(vectors2), 1)
    return indices[:, 0]


def mining_metrics(predicted: np.ndarray) -> dict[str, float]:
    """Metrics of predicted translation indices (the gold index of sentence i is i)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold = np.arange(len(predicted))
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0, average="weighted")),
        "recall": float(recall_score(gold, predicted, zero_division=0, average="weighted")),
        "f1": float(f1_score(gold, predicted, zero_division=0, average="weighted")),
        "accuracy": float(accuracy_score(gold, predicted)),
    }


def evaluate(data: BitextData, embed: EmbedFn) -> dict[str, float]:
    """Bitext mining metrics (main score: f1)."""
    return mining_metrics(nearest_neighbours(embed(data.sentences1), embed(data.sentences2)))


BITEXT_MINING = TaskType(
    name="BitextMining",
    main_score="f1",
    load=load,
    evaluate=evaluate,
    data_format="two parallel line files as 'a.txt,b.txt', or a file with sentence1, sentence2",
)
