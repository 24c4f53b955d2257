"""Through HTTP: concurrent requests share batches, a full queue answers 503, shutdown finishes requests.

A gate holds the worker inside the model call, so the queue fills deterministically, without timing. The
servers skip the warm-up (it would call the gated model; tests/serve/test_serve_warm_up.py covers it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 30
TEXTS = [f"Planet number {i} orbits the sun." for i in range(8)]


class Gate:
    """Wraps `embedder.encode`: the worker enters, then waits until the gate opens."""

    def __init__(self, encode: Callable[..., np.ndarray]) -> None:
        self.original = encode
        self.entered = threading.Event()
        self.opened = threading.Event()

    def encode(self, *args: object, **kwargs: object) -> np.ndarray:
        self.entered.set()
        assert self.opened.wait(TIMEOUT)
        return self.original(*args, **kwargs)


@pytest.fixture()
def gate(embedder, monkeypatch) -> Gate:
    gate = Gate(embedder.encode)
    monkeypatch.setattr(embedder, "encode", gate.encode)
    yield gate
    gate.opened.set()


def post(url: str, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=TIMEOUT)


def wait_for_queue(url: str, inputs: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while httpx.get(f"{url}/health").json()["queued_inputs"] != inputs:
        assert time.monotonic() < deadline, f"the queue never held {inputs} inputs"
        time.sleep(0.01)


def batch_sizes(url: str) -> dict[float, float]:
    """Cumulative histogram of inputs per forward pass: upper bound -> number of batches."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    family = next(f for f in families if f.name == "gemma_embed_batch_size")
    return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}


def test_concurrent_requests_share_a_batch(start_server, embedder, gate):
    with start_server(warm_up=False) as server, ThreadPoolExecutor(len(TEXTS) + 1) as pool:
        first = pool.submit(post, server.url, ["Mars"])
        assert gate.entered.wait(TIMEOUT)  # the worker holds "Mars"; the next requests queue up
        rest = [pool.submit(post, server.url, [text]) for text in TEXTS]
        wait_for_queue(server.url, len(TEXTS))
        gate.opened.set()
        assert first.result().status_code == 200
        vectors = np.array([r.result().json()[0] for r in rest], dtype=np.float32)
        buckets = batch_sizes(server.url)
    assert buckets[1.0] == 1 and buckets[4.0] == 1 and buckets[8.0] == 2  # one batch of 1, one of 8
    # Another padding length than one text alone: equal up to float32 rounding.
    np.testing.assert_allclose(vectors, gate.original(TEXTS, batch_size=1), rtol=0, atol=1e-6)


def test_a_full_queue_answers_503_with_retry_after(start_server, gate):
    with start_server(max_queue=16, warm_up=False) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, server.url, ["Mars"])
        assert gate.entered.wait(TIMEOUT)
        queued = pool.submit(post, server.url, ["Venus"] * 16)
        wait_for_queue(server.url, 16)
        refused = post(server.url, ["Jupiter"])
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        gate.opened.set()
        assert first.result().status_code == queued.result().status_code == 200
        assert post(server.url, ["Jupiter"]).status_code == 200


def test_shutdown_finishes_in_flight_requests(start_server, gate):
    server = start_server(warm_up=False)
    with server, ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(post, server.url, ["Mars", "Venus"])
        assert gate.entered.wait(TIMEOUT)
        stopping = pool.submit(server.stop)  # what SIGTERM does
        deadline = time.monotonic() + TIMEOUT
        while True:  # new connections are refused while the request is still held at the gate
            try:
                httpx.get(f"{server.url}/health", timeout=1)
            except httpx.TransportError:
                break
            assert time.monotonic() < deadline, "the server kept accepting connections"
            time.sleep(0.05)
        assert not in_flight.done()
        gate.opened.set()
        response = in_flight.result()
        stopping.result()
    assert response.status_code == 200 and len(response.json()) == 2
