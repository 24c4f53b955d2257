"""Warm before ready: /health answers 503 "warming_up" until the warm-up passes are done, requests sent
meanwhile wait in the queue, and the warm-up covers every length bucket alone and padded."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from gemma_embed.serve.app import WARM_UP_TOKENS, EmbeddingService
from gemma_embed.serve.batcher import Batcher
from gemma_embed.serve.metrics import Metrics
from gemma_embed.serve.settings import ServeSettings


def test_health_is_503_until_the_warm_up_is_done(start_server, monkeypatch):
    gate, started = threading.Event(), threading.Event()

    def blocked_warm_up(self: EmbeddingService) -> None:
        started.set()
        assert gate.wait(60), "the test never opened the gate"

    monkeypatch.setattr(EmbeddingService, "warm_up", blocked_warm_up)
    with start_server(wait_warm=False) as server, ThreadPoolExecutor(1) as pool:
        assert started.wait(30)
        response = httpx.get(f"{server.url}/health", timeout=10)
        assert response.status_code == 503
        assert response.json() == {"status": "warming_up", "model": "tiny", "queued_inputs": 0}
        # A request sent during the warm-up is queued, not refused, and answered once it is done.
        pending = pool.submit(httpx.post, f"{server.url}/embed", json={"inputs": ["Mars"]}, timeout=60)
        gate.set()
        server.wait_until_healthy()
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
        answer = pending.result(timeout=60)
        assert answer.status_code == 200 and len(answer.json()) == 1


def test_the_warm_up_passes_cover_each_length_alone_and_padded(embedder):
    settings = ServeSettings(model_name="tiny")
    service = EmbeddingService(embedder, settings, Metrics())
    batches = service.warm_up_batches()
    limit = min(embedder.tokenizer.max_length, settings.max_batch_tokens)
    lengths = [max(embedder.count_tokens(batch, prompt="")) for batch in batches]
    assert len(batches) >= len({min(n, limit) for n in WARM_UP_TOKENS})
    assert any(len(b) == 2 for b in batches) and any(len(b) == 1 for b in batches)
    # the longest bucket nearly reaches the limit (words are fitted to tokens proportionally, not exactly)
    assert 0.9 * min(limit, max(WARM_UP_TOKENS)) <= max(lengths) <= limit
    service.warm_up()  # runs for real on the tiny model (its passes never touch the batch metrics)


def test_a_failing_warm_up_is_logged_and_serving_goes_on(caplog):
    def fail() -> None:
        raise RuntimeError("no compiler")

    batcher = Batcher(lambda texts: np.ones((len(texts), 2), np.float32), 100, 10, warm_up=fail)
    assert not batcher.warm
    batcher.start()
    try:
        assert batcher.wait_warm(30)
        assert batcher.submit(["a"], [1]).result(timeout=30).shape == (1, 2)
    finally:
        batcher.close(30)
    assert "warm-up failed" in caplog.text
