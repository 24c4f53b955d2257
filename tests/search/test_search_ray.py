"""embed-corpus on Ray Data (a local Ray with 2 CPUs) gives the embeddings of the local path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gemma_embed.search.corpus import EmbedJob, embed_corpus, read_embeddings

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'ray[data]')")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_matches_local(local_ray, tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path) -> None:
    job = EmbedJob(str(tiny_checkpoint), dim=32, shard_size=3)
    embed_corpus(docs_jsonl, tmp_path / "local", job, progress=False)
    embed_corpus(docs_jsonl, tmp_path / "ray", job, ray=True, ray_actors=2, progress=False)
    local, on_ray = read_embeddings(tmp_path / "local"), read_embeddings(tmp_path / "ray")
    assert on_ray.docs == local.docs
    assert on_ray.manifest == local.manifest
    np.testing.assert_allclose(on_ray.vectors, local.vectors, atol=1e-5)
