"""The batcher on its own: token budgets, request order, the queue bound, cancellation, failures, draining."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from gemma_embed.serve.batcher import Batcher, Overloaded

TIMEOUT = 10


class FakeModel:
    """Embeds text `t` as [len(t), 1]; records batches; blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on: str | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(TIMEOUT)
        self.batches.append(texts)
        if self.fail_on in texts:
            raise RuntimeError("boom")
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


@pytest.fixture()
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture()
def make(model) -> Iterator:
    started: list[Batcher] = []

    def make(max_batch_tokens: int = 100, max_queue: int = 100, **kwargs) -> Batcher:
        batcher = Batcher(model, max_batch_tokens, max_queue, **kwargs)
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    model.gate.set()
    for batcher in started:
        batcher.close(TIMEOUT)


def hold(model: FakeModel, batcher: Batcher) -> None:
    """Occupy the worker with a one-input request until `model.gate` is set again."""
    model.gate.clear()
    model.entered.clear()
    batcher.submit(["x"], [1])
    assert model.entered.wait(TIMEOUT)


def test_rows_come_back_in_request_order(make):
    vectors = make().submit(["a", "bbb", "cc"], [3, 5, 4]).result(TIMEOUT)
    np.testing.assert_array_equal(vectors, [[1, 1], [3, 1], [2, 1]])


def test_concurrent_requests_share_a_padded_token_budget(make, model):
    batches: list[tuple[int, int]] = []
    batcher = make(max_batch_tokens=12, on_batch=lambda n, tokens: batches.append((n, tokens)))
    hold(model, batcher)
    first = batcher.submit(["a", "b"], [3, 3])
    second = batcher.submit(["c", "d", "e"], [4, 3, 3])  # c: 3 inputs x 4 tokens = 12 fits, a 4th does not
    assert batcher.queued == 5
    model.gate.set()
    first.result(TIMEOUT), second.result(TIMEOUT)
    assert model.batches[1:] == [["a", "b", "c"], ["d", "e"]]
    assert batches[1:] == [(3, 12), (2, 6)]
    assert batcher.queued == 0


def test_an_input_over_the_budget_runs_alone(make):
    batcher = make(max_batch_tokens=1)
    vectors = batcher.submit(["aa", "b", "c"], [5, 2, 2]).result(TIMEOUT)
    assert len(vectors) == 3


def test_full_queue_refuses_and_recovers(make, model):
    batcher = make(max_queue=4)
    hold(model, batcher)
    waiting = batcher.submit(["a", "b", "c"], [1, 1, 1])
    with pytest.raises(Overloaded, match="busy"):
        batcher.submit(["d", "e"], [1, 1])
    model.gate.set()
    waiting.result(TIMEOUT)
    assert len(batcher.submit(["d", "e"], [1, 1]).result(TIMEOUT)) == 2


def test_cancelled_requests_are_dropped(make, model):
    batcher = make()
    hold(model, batcher)
    cancelled = batcher.submit(["gone"], [1])
    kept = batcher.submit(["kept"], [1])
    assert cancelled.cancel()
    model.gate.set()
    kept.result(TIMEOUT)
    assert ["gone"] not in model.batches and all("gone" not in batch for batch in model.batches)
    assert batcher.queued == 0


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on(make, model):
    batcher = make(max_batch_tokens=2)
    model.fail_on = "bad"
    failed = batcher.submit(["bad", "x", "y"], [1, 1, 1])
    with pytest.raises(RuntimeError, match="boom"):
        failed.result(TIMEOUT)
    assert batcher.submit(["ok"], [1]).result(TIMEOUT).shape == (1, 2)
    assert ["y"] not in model.batches  # the rest of a failed request is not embedded


def test_close_drains_the_queue_then_refuses(make, model):
    batcher = make()
    hold(model, batcher)
    waiting = batcher.submit(["a"], [1])
    closer = threading.Thread(target=batcher.close, args=(TIMEOUT,))
    closer.start()
    while batcher.running:  # closing has begun: no new requests
        time.sleep(0.001)
    model.gate.set()
    closer.join(TIMEOUT)
    assert waiting.result(0).shape == (1, 2)
    assert not batcher.running
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit(["b"], [1])
