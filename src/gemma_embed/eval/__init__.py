"""MTEB-style evaluation: task types with MTEB's metrics and protocols, local data loaders, named tasks
on the project's data, an embedding cache, Matryoshka dims, reports and an mteb adapter.

    from gemma_embed.eval import EmbeddingCache, EmbeddingSource, build_task, load_encoder, run_task

    source = EmbeddingSource(load_encoder("path/to/model"), EmbeddingCache())
    result = run_task(build_task("STSBenchmark"), source, dims=[768, 256])

The command line is `gemma-embed eval` / `gemma-embed report` (see docs/evaluation.md).
"""

from gemma_embed.eval.cache import EmbeddingCache
from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.encoders import Encoder, load_encoder
from gemma_embed.eval.registry import TASKS, build_task
from gemma_embed.eval.runner import EvalTask, read_results, run_task, write_results
from gemma_embed.eval.tasks import TASK_TYPES, TaskType, get_task_type

__all__ = [
    "TASKS",
    "TASK_TYPES",
    "EmbeddingCache",
    "EmbeddingSource",
    "Encoder",
    "EvalTask",
    "TaskType",
    "build_task",
    "get_task_type",
    "load_encoder",
    "read_results",
    "run_task",
    "write_results",
]
