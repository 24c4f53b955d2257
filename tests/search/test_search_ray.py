"""embed-corpus on Ray Data (a local Ray cluster, 2 actors of 1 CPU each) gives the embeddings of the local
path; the slow test kills a worker and then the whole job on a 20k-text corpus and resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gemma_embed.search.corpus import EmbedJob, embed_corpus, read_embeddings

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'ray[data]')")

# Ray Data hands each actor batches of up to 1024 rows, the local path encodes shard by shard: other batches
# are padded to other lengths, so the same text goes through differently shaped matmuls (last-bit changes).
TOLERANCE = 1e-5
RAY_INIT = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False, "configure_logging": False}


@pytest.fixture(autouse=True)
def no_usage_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray reports usage statistics to its servers unless told not to; tests send nothing off this machine.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def local_ray():
    ray.init(**RAY_INIT)
    yield
    ray.shutdown()


def assert_same_embeddings(ray_folder: Path, local_folder: Path) -> None:
    local, on_ray = read_embeddings(local_folder), read_embeddings(ray_folder)
    assert on_ray.docs == local.docs
    assert on_ray.manifest == local.manifest
    np.testing.assert_allclose(on_ray.vectors, local.vectors, rtol=0, atol=TOLERANCE)


def test_ray_matches_local(local_ray, tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path) -> None:
    job = EmbedJob(str(tiny_checkpoint), dim=32, shard_size=3)
    embed_corpus(docs_jsonl, tmp_path / "local", job, progress=False)
    embed_corpus(docs_jsonl, tmp_path / "ray", job, ray=True, ray_actors=2, progress=False)
    assert_same_embeddings(tmp_path / "ray", tmp_path / "local")


# ---- 20k texts: a killed worker, a killed job, a resumed job ------------------------------------------------

DRIVER = """
import sys
import ray
from gemma_embed.search.corpus import EmbedJob, embed_corpus
ray.init(**{init})
embed_corpus(sys.argv[1], sys.argv[2], EmbedJob(sys.argv[3], dim=32, shard_size={shard_size}), ray=True,
             ray_actors=2, progress=False)
"""
SHARD_SIZE = 1000
WORDS = ["mars", "venus", "planet", "red", "gas", "giant", "moon", "ring", "tea", "bread", "river", "chess"]


def _corpus(path: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            words = rng.choice(WORDS, size=int(rng.integers(3, 25)))
            handle.write(json.dumps({"id": f"d{i}", "title": "", "text": " ".join(words)}) + "\n")
    return path


def _shards(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.parquet")}


def _in_session(session: int, word: str) -> list[int]:
    """Processes of the session whose command line holds `word` (Ray names an actor's process after it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session and word in (entry / "cmdline").read_text(
                errors="replace"
            ):
                found.append(int(entry.name))
        except OSError:  # the process ended while we looked
            continue
    return found


def _wait_for(condition: Callable[[], bool], driver: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert driver.poll() is None, f"the Ray job ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes in /proc")
def test_ray_job_survives_a_killed_worker_and_resumes_after_a_killed_job(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    docs = _corpus(tmp_path / "docs.jsonl", 20 * SHARD_SIZE)
    out, log = tmp_path / "ray", tmp_path / "driver.log"
    script = DRIVER.format(init=RAY_INIT, shard_size=SHARD_SIZE)
    with log.open("w") as stderr:  # its own session: the job and the Ray cluster it starts die together
        driver = subprocess.Popen(
            [sys.executable, "-c", script, str(docs), str(out), str(tiny_checkpoint)],
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: len(_shards(out)) >= 2, driver, log, 240)
        workers = _in_session(driver.pid, "RayEmbedder")
        assert workers, "no Ray Data worker process found"
        os.kill(workers[0], signal.SIGKILL)  # Ray Data restarts the actor and retries its batch
        before = len(_shards(out))
        _wait_for(lambda: len(_shards(out)) >= before + 2, driver, log, 240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the whole job crashes: driver, workers, the local cluster
        driver.wait(timeout=60)
    finished = _shards(out)
    assert 4 <= len(finished) < 20, "the job must be killed part-way"

    job = EmbedJob(str(tiny_checkpoint), dim=32, shard_size=SHARD_SIZE)
    ray.init(**RAY_INIT)
    try:
        embed_corpus(docs, out, job, ray=True, ray_actors=2, progress=False)
    finally:
        ray.shutdown()
    resumed = _shards(out)
    assert len(resumed) == 20
    assert {name: resumed[name] for name in finished} == finished  # finished shards were not redone
    embed_corpus(docs, tmp_path / "local", job, progress=False)
    assert_same_embeddings(out, tmp_path / "local")
