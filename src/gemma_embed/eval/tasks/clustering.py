"""Clustering: do k-means clusters of the embeddings agree with the gold labels?

Protocol (MTEB v2 `AbsTaskClustering`, the "fast" clustering): texts are embedded with the "Clustering"
prompt; `n_experiments` (10) times, `cluster_size` (16384) points are drawn with replacement by
`random.Random(seed).choices` (seed 42, one generator for all experiments) and clustered by
`MiniBatchKMeans(n_clusters=<number of gold labels>, batch_size=512, init="k-means++", n_init=1,
random_state=seed)`; each clustering is scored by the V-measure (sklearn `v_measure_score`, the harmonic
mean of homogeneity and completeness). Metrics: `v_measure` (mean, main score) and `v_measure_std`.
Unlike MTEB's hub datasets, which are pre-subsampled, local data is embedded in full.

Local format: a `.csv`, `.tsv` or `.jsonl` file (or split directory) with columns `text` and `label`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.embedding import EmbedFn
from gemma_embed.eval.io import find_split_file, read_rows
from gemma_embed.eval.tasks.base import TaskType


@dataclass(frozen=True)
class ClusteringData:
    """Texts and their gold cluster labels."""

    texts: list[str]
    labels: list[str]


def load_table(path: Path, *, aliases: Mapping[str, str] | None = None) -> ClusteringData:
    """Clustering data from a table or JSON Lines file with text and label columns."""
    rows = read_rows(path, ("text", "label"), aliases=aliases)
    return ClusteringData([r.text("text") for r in rows], [str(r.fields["label"]) for r in rows])


def load(source: str | Path, split: str) -> ClusteringData:
    """The generic local clustering format."""
    return load_table(find_split_file(Path(source), split))


def v_measures(
    vectors: np.ndarray,
    labels: list[str],
    *,
    n_experiments: int = 10,
    cluster_size: int = 16384,
    kmeans_batch_size: int = 512,
    seed: int = 42,
) -> list[float]:
    """The V-measure of each bootstrapped mini-batch k-means clustering (see the module docstring)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    gold = np.array(labels)
    n_clusters = len(np.unique(gold))
    if n_clusters < 2:
        raise DataError(f"clustering needs at least 2 distinct labels, got {n_clusters}")
    rng = random.Random(seed)
    model = MiniBatchKMeans(
        n_clusters=n_clusters, batch_size=kmeans_batch_size, init="k-means++", n_init=1, random_state=seed
    )
    scores = []
    for _ in range(n_experiments):
        sample = rng.choices(range(len(vectors)), k=cluster_size)
        assignment = model.fit_predict(vectors[sample])
        scores.append(float(v_measure_score(gold[sample], assignment)))
    return scores


def evaluate(data: ClusteringData, embed: EmbedFn, **options: int) -> dict[str, float]:
    """V-measure mean and standard deviation (main score: v_measure); options go to `v_measures`."""
    scores = v_measures(embed(data.texts), data.labels, **options)
    return {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores))}


CLUSTERING = TaskType(
    name="Clustering",
    main_score="v_measure",
    load=load,
    evaluate=evaluate,
    data_format="file or split directory with text, label (.csv/.tsv/.jsonl)",
)
