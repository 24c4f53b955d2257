"""The MTEB task types, one module each: STS, Retrieval, Classification, Clustering, PairClassification,
Reranking and BitextMining."""

from __future__ import annotations

from gemma_embed.errors import InputError
from gemma_embed.eval.tasks.base import TaskType
from gemma_embed.eval.tasks.bitext_mining import BITEXT_MINING
from gemma_embed.eval.tasks.classification import CLASSIFICATION
from gemma_embed.eval.tasks.clustering import CLUSTERING
from gemma_embed.eval.tasks.pair_classification import PAIR_CLASSIFICATION
from gemma_embed.eval.tasks.reranking import RERANKING
from gemma_embed.eval.tasks.retrieval import RETRIEVAL
from gemma_embed.eval.tasks.sts import STS

TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (STS, RETRIEVAL, CLASSIFICATION, CLUSTERING, PAIR_CLASSIFICATION, RERANKING, BITEXT_MINING)
}


def get_task_type(name: str) -> TaskType:
    """A task type by its MTEB name (case-insensitive)."""
    for key, task_type in TASK_TYPES.items():
        if key.lower() == name.lower():
            return task_type
    raise InputError(f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}")


__all__ = ["TASK_TYPES", "TaskType", "get_task_type"]
