"""scifact_demo builds then reuses its index; the bench reports recall and latency per precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gemma_embed.search import scifact_demo
from gemma_embed.search.bench import measure
from gemma_embed.search.corpus import Document


def test_demo_builds_then_reuses(tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    kwargs = {
        "queries": ["red planet", "tea"],
        "index_dir": tmp_path / "i",
        "data": docs_jsonl,
        "out": lines.append,
    }
    scifact_demo(str(tiny_checkpoint), 3, **kwargs)
    assert lines[0].startswith("built index of 7")
    assert sum(line.startswith("query: ") for line in lines) == 2
    ranked = [line for line in lines if line[:3].strip().isdigit()]
    assert len(ranked) == 6
    first = lines[:]
    lines.clear()
    scifact_demo(str(tiny_checkpoint), 3, **kwargs)
    assert lines[0].startswith("reusing index") and lines[1:] == first[1:]


def test_measure_reports_every_precision() -> None:
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(500, 32)), rng.normal(size=(5, 32))
    docs = [Document(str(i), "", "") for i in range(500)]
    rows = measure(docs, vectors, queries, k=5, quality=lambda idx: float(idx.shape[1]))
    assert [r["precision"] for r in rows] == ["float32", "int8", "binary"]
    assert all(0 <= r["recall_at_5"] <= 1 and r["ann_ms_p50"] > 0 and r["quality_ann"] == 6 for r in rows)
