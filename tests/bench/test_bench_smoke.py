"""`bench/speed.py --smoke` (what CI runs of the speed benchmark): every installed path gets a row of finite
numbers, and only the benchmark's marked section of the output file is rewritten. Timings are never checked."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_embed.paths import data_root

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "speed.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not all((data_root() / name).is_dir() for name in ("scifact", "stsbenchmark")),
    reason="needs ../shared/data/scifact and stsbenchmark",
)
def test_smoke_run_reports_every_path(tmp_path: Path) -> None:
    speed = bench_module()
    out = tmp_path / "benchmarks.md"
    out.write_text(
        f"# Benchmarks\n\nkept before\n\n{speed.MARK_START}\nstale numbers\n{speed.MARK_END}\n\nkept after\n",
        encoding="utf-8",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "kept before" in text and "kept after" in text and "stale numbers" not in text
    assert text.count(speed.MARK_START) == 1 and text.count(speed.MARK_END) == 1
    section = text[text.index(speed.MARK_START) + len(speed.MARK_START) : text.index(speed.MARK_END)]
    assert section.strip() in done.stdout
    assert "AVX-512:" in section and "torch " in section

    paths_table, _, targets_table = section.partition("Targets of issues #6 and #15")
    assert (
        "| gemma-int8 mean cosine |" in targets_table and "| int4 checkpoint on disk (MB) |" in targets_table
    )
    assert "| best gemma-embed path (gemma-" in targets_table
    rows = {}
    for line in paths_table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0].split(" ")[0] in speed.PATHS:
            rows[cells[0].split(" ")[0]] = cells[1:]
    assert set(rows) == set(speed.available_paths())
    assert {"gemma-fp32", "gemma-bf16", "gemma-int8", "gemma-int4", "gemma-mixed"} <= set(rows)
    for name, cells in rows.items():
        assert len(cells) == 12, name
        numbers = cells if name in speed.FLOAT32_PATHS else cells[:-1]
        if "st-fp32" not in rows:
            numbers = [c for c in numbers if c != "–"]
        assert all(math.isfinite(float(c)) for c in numbers), (name, cells)
        assert 0.5 < float(cells[9]) <= 1.0001, (name, cells)  # mean cosine to the float32 reference
