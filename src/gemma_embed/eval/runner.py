"""Running tasks and writing results in MTEB's result layout.

One result object per task, as in MTEB's results repository:
`{"task_name", "task_type", "dataset_revision", "evaluation_time", "kg_co2_emissions", "scores":
{split: [entry, ...]}}`, where each entry holds `hf_subset`, `languages`, `main_score` and every metric of
the task type (plus `dim` when Matryoshka dims were asked for). gemma-embed adds `model_name`,
`embedding_dim` (the model's full dimension) and, when given, `quantization`. A results file is a JSON
list of such objects.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_embed.errors import DataError, InputError
from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.io import write_text_atomic
from gemma_embed.eval.tasks import TASK_TYPES, TaskType


@dataclass(frozen=True)
class EvalTask:
    """A task ready to run: its type, the split, per subset (`hf_subset`) a function loading its data, the
    subsets' language codes, and the data's revision (upstream commit, or "local")."""

    name: str
    task_type: TaskType
    split: str
    subsets: Mapping[str, Callable[[], Any]]
    languages: Mapping[str, Sequence[str]] = field(default_factory=dict)
    revision: str = "local"


def parse_dims(text: str | None) -> list[int] | None:
    """Parse `--dims`: "768,512,256" -> [768, 512, 256] (None stays None)."""
    if text is None:
        return None
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--dims must be comma-separated integers, got {text!r}") from None
    if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise InputError(f"--dims must list distinct positive integers, got {text!r}")
    return dims


def run_task(
    task: EvalTask,
    source: EmbeddingSource,
    *,
    dims: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one task at each dim (one encoding for all dims) and return its MTEB-layout result."""
    start = time.perf_counter()
    entries = []
    full_dim = None
    for subset, load in task.subsets.items():
        data = load()
        for dim in dims or [None]:
            embed = source.embed_fn(task.task_type.name, task_name=task.name, dim=dim)
            scores = task.task_type.evaluate(data, embed)
            entry: dict[str, Any] = {
                "hf_subset": subset,
                "languages": list(task.languages.get(subset, [])),
                "main_score": scores[task.task_type.main_score],
            }
            if dims is not None:
                entry["dim"] = dim
            entry.update(scores)
            entries.append(entry)
        full_dim = source.full_dim
        source.clear()
    return {
        "task_name": task.name,
        "task_type": task.task_type.name,
        "dataset_revision": task.revision,
        "evaluation_time": round(time.perf_counter() - start, 3),
        "kg_co2_emissions": None,
        "model_name": source.encoder.name,
        "embedding_dim": full_dim,
        **(extra or {}),
        "scores": {task.split: entries},
    }


def run_tasks(
    tasks: Sequence[EvalTask],
    source: EmbeddingSource,
    *,
    dims: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
    output: Path | None = None,
) -> list[dict[str, Any]]:
    """`run_task` for each task in turn, progress on stderr; with `output`, the results are written after
    every task, so a long run keeps what it has finished."""
    results = []
    for task in tasks:
        print(
            f"{task.name}: {task.task_type.name}, split {task.split}, {len(task.subsets)} subset(s)",
            file=sys.stderr,
        )
        results.append(run_task(task, source, dims=dims, extra=extra))
        if output:
            write_results(output, results)
    return results


def write_results(path: Path, results: Sequence[Mapping[str, Any]]) -> Path:
    """Write a results file (JSON list of task results), atomically."""
    return write_text_atomic(path, json.dumps(list(results), indent=2, ensure_ascii=False) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """Task results from a results file: a JSON list of task objects, or one task object (MTEB writes one
    file per task)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    items = content if isinstance(content, list) else [content]
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "task_name" not in item or not isinstance(item.get("scores"), dict):
            raise DataError(f"{path}: task result {number} has no task_name / scores (not an MTEB result)")
    return items


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of main scores: one row per task, split, subset and dim."""
    rows = [("task", "split", "subset", "dim", "main score", "metric")]
    for result in results:
        task_type = TASK_TYPES.get(result.get("task_type", ""))
        metric = task_type.main_score if task_type else ""
        for split, entries in result["scores"].items():
            for entry in entries:
                rows.append(
                    (
                        result["task_name"],
                        split,
                        str(entry.get("hf_subset", "default")),
                        str(entry.get("dim", result.get("embedding_dim") or "")),
                        f"{entry['main_score']:.4f}",
                        metric,
                    )
                )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
