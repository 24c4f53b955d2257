"""`bench/peer.py --smoke` (what CI runs of the peer benchmark): every installed engine (gemma-embed's four, its
two ONNX Runtime ones when the onnx extra imports, llama.cpp's three when llama-cpp-python imports) gets a row
of finite numbers, the results file holds the same engines, and only the benchmark's marked section of the
markdown file is rewritten. Timings are never checked."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_embed.paths import data_root

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "peer.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not all((data_root() / name).is_dir() for name in ("scifact", "stsbenchmark")),
    reason="needs ../shared/data/scifact and stsbenchmark",
)
@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is None, reason="needs the gguf extra")
def test_smoke_run_reports_every_engine(tmp_path: Path) -> None:
    peer = bench_module()
    out, results = tmp_path / "benchmarks.md", tmp_path / "peer.json"
    out.write_text(f"# Benchmarks\n\nkept\n\n{peer.MARK_START}\nstale\n{peer.MARK_END}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--json", str(results)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "kept" in text and "stale" not in text and text.count(peer.MARK_START) == 1
    section = text[text.index(peer.MARK_START) + len(peer.MARK_START) : text.index(peer.MARK_END)]
    assert section.strip() in done.stdout and "AVX-512:" in section

    engines = peer.available_engines()
    assert {"gemma-fp32", "gemma-bf16", "gemma-int8", "gemma-int4"} <= set(engines)
    engine_table, _, targets_table = section.partition("Issue 15's targets")
    assert "| gemma-int4 peak RSS (MB) |" in targets_table
    if "gemma-onnx-int4" in engines:  # the quantized export runs and is measured against llama.cpp's q4_0
        assert "| gemma-onnx-int4 peak RSS (MB) |" in targets_table
    rows = {}
    for line in engine_table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0].split(" ")[0] in peer.ENGINES:
            rows[cells[0].split(" ")[0]] = [float(c) for c in cells[1:]]
    assert set(rows) == set(engines)
    for name, numbers in rows.items():
        assert len(numbers) == 8 and all(math.isfinite(n) and n >= 0 for n in numbers), (name, numbers)
        assert min(numbers[:5]) > 0, (name, numbers)  # rates, latencies, RSS (a tiny load may print 0.0 s)
        assert 0.5 < numbers[6] <= 1.0001, name  # mean cosine to gemma-embed float32

    report = json.loads(results.read_text(encoding="utf-8"))
    assert set(report["results"]) == set(engines)
    assert report["settings"]["cpu_kind"] in ("amx", "avx512", "avx2", "other")
    if "llama-f32" in engines:  # the same tokenizer on both sides, and llama.cpp's float32 = ours
        assert report["settings"]["token_mismatches"] == 0
        assert report["results"]["llama-f32"]["cos_mean"] >= 0.9999
