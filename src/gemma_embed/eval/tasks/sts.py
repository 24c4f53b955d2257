"""STS (semantic textual similarity): how well embedding similarity ranks sentence pairs like humans do.

Protocol (MTEB `AbsTaskSTS` / `AnySTSEvaluator`): both sentences of every pair are embedded with the
"STS" prompt; for each pair the cosine similarity, the dot product and the negated Manhattan and Euclidean
distances are correlated with the gold scores. Metrics: `<similarity>_pearson` and `<similarity>_spearman`
(scipy); main score `cosine_spearman`. Gold scores need no normalization (correlations are scale-free).

Local format: a `.csv`, `.tsv` or `.jsonl` file (or a directory with one file per split, e.g. `test.csv`)
with columns `sentence1`, `sentence2`, `score`; or the original STS benchmark TSV (no header: genre, file,
year, id, score, sentence1, sentence2, sometimes followed by source columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import Row, find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType, paired_similarities

STSB_COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
REQUIRED = ("sentence1", "sentence2", "score")


@dataclass(frozen=True)
class STSData:
    """Sentence pairs and their gold similarity scores."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray


def _from_rows(rows: list[Row]) -> STSData:
    return STSData(
        sentences1=[r.text("sentence1") for r in rows],
        sentences2=[r.text("sentence2") for r in rows],
        scores=np.array([r.number("score") for r in rows], dtype=np.float64),
    )


def load_table(
    path: Path,
    *,
    columns: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
    delimiter: str | None = None,
) -> STSData:
    """STS pairs from a table or JSON Lines file with sentence1, sentence2 and score (see `read_rows` for
    `columns` of headerless files, `aliases` (other column names) and `delimiter`)."""
    return _from_rows(read_rows(path, REQUIRED, columns=columns, aliases=aliases, delimiter=delimiter))


def load_stsb_original(path: Path) -> STSData:
    """The STS benchmark's own tab-separated files (sts-train/dev/test.csv, no header)."""
    return _from_rows(
        read_rows(path, REQUIRED, columns=STSB_COLUMNS, delimiter="\t", allow_extra_fields=True)
    )


def _is_stsb_original(path: Path) -> bool:
    if path.suffix not in (".csv", ".tsv"):
        return False
    with open(path, encoding="utf-8-sig") as f:
        fields = f.readline().rstrip("\r\n").split("\t")
    if len(fields) < len(STSB_COLUMNS):
        return False
    try:
        float(fields[4])
    except ValueError:
        return False
    return True


def load(source: str | Path, split: str) -> STSData:
    """The generic local STS format (see the module docstring)."""
    path = find_split_file(Path(source), split)
    return load_stsb_original(path) if _is_stsb_original(path) else load_table(path)


def correlations(similarities: Mapping[str, np.ndarray], gold: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of each similarity with the gold scores (distances are negated first,
    so that for every measure higher means more similar, as MTEB reports them)."""
    from scipy.stats import pearsonr, spearmanr

    scores: dict[str, float] = {}
    for name, values in similarities.items():
        oriented = -values if name in ("manhattan", "euclidean") else values
        scores[f"{name}_pearson"] = float(pearsonr(gold, oriented)[0])
        scores[f"{name}_spearman"] = float(spearmanr(gold, oriented)[0])
    return scores


def evaluate(data: STSData, embed: EmbedFn) -> dict[str, float]:
    """Every STS metric for the pairs in `data` (main score: cosine_spearman)."""
    n = len(data.sentences1)
    if n < 2:
        raise DataError(f"STS needs at least 2 pairs to correlate, got {n}")
    vectors = embed(data.sentences1 + data.sentences2)
    return correlations(paired_similarities(vectors[:n], vectors[n:]), data.scores)


STS = TaskType(
    name="STS",
    main_score="cosine_spearman",
    load=load,
    evaluate=evaluate,
    data_format="file or split directory with sentence1, sentence2, score (.csv/.tsv/.jsonl) or STS-B TSV",
)
