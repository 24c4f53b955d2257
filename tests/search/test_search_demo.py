"""scifact_demo builds then reuses its index; the bench reports recall and latency per precision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gemma_embed.search import scifact_demo
from gemma_embed.search.bench import measure
from gemma_embed.search.corpus import Document
from gemma_embed.search.demo import demo_documents


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


def test_demo_subset_keeps_the_judged_documents_first(tmp_path: Path) -> None:
    rows = [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(6)]
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "query"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td4\t1\nq\td2\t1\n")
    ids = [doc.id for doc in demo_documents(tmp_path / "corpus.jsonl", 3)]
    assert ids == ["d0", "d2", "d4"]  # both judged documents, then the first other, in corpus order
    assert len(demo_documents(tmp_path / "corpus.jsonl", None)) == 6


def test_demo_index_names_its_part_and_shows_progress(
    tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("gemma_embed.paths.runs_dir", lambda: tmp_path)
    lines: list[str] = []
    folder = scifact_demo(
        str(tiny_checkpoint), 1, queries=["tea"], data=docs_jsonl, subset=4, out=lines.append
    )
    assert folder.parent == tmp_path / "search" and folder.name.startswith("scifact-4-")
    assert lines[0].startswith("built index of 4")
    assert "embedding SciFact: 100%" in capsys.readouterr().err
