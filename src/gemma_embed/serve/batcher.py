"""Dynamic batching: inputs of concurrent requests merged into token-budgeted forward passes.

Requests queue their inputs (a bounded FIFO counted in inputs); one worker thread, the only one that touches
the model, takes inputs in arrival order until the next one would push the padded batch (inputs x longest
input, in tokens) over `max_batch_tokens`, embeds them in one call and hands each request its rows when all
of its inputs are done. Large requests span several batches and small ones share them; while a batch runs,
new requests accumulate, so the batch size follows the load without any waiting timer.

Before its first batch the worker runs an optional warm-up (the server's: one pass per length bucket, which
compiles the fused kernels); requests that arrive meanwhile wait in the queue, and `warm` says when it is done.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("uvicorn.error")  # uvicorn's own logger: shown with its startup lines


class Overloaded(Exception):
    """The queue has no room for a request, or the batcher is shutting down."""


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    tokens: Sequence[int]
    future: Future[np.ndarray] = field(default_factory=Future)
    vectors: np.ndarray | None = None
    taken: int = 0  # inputs handed to the worker
    done: int = 0  # inputs embedded


class Batcher:
    """A bounded queue of inputs and the single worker thread that embeds them in batches.

    embed: texts -> float32 vectors [len(texts), dim], called only from the worker thread.
    on_batch: called after every forward pass with (inputs, padded tokens), e.g. for metrics.
    warm_up: called once on the worker thread before the first batch (not counted by on_batch); a failure is
    logged and serving goes on (the requests then meet the same error, with its message).
    """

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        max_batch_tokens: int,
        max_queue: int,
        on_batch: Callable[[int, int], None] | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        self._embed = embed
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._warm_up = warm_up
        self._warm = threading.Event()
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gemma-embed-batcher", daemon=True)

    @property
    def queued(self) -> int:
        """Inputs waiting for the model (not yet in a batch)."""
        return self._queued

    @property
    def running(self) -> bool:
        """True while the worker accepts requests (started, alive and not shutting down)."""
        return self._thread.is_alive() and not self._closing

    @property
    def warm(self) -> bool:
        """True once the warm-up has run (at once without one): the first request then pays no compilation."""
        return self._warm.is_set()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Block until `warm` (or `timeout` seconds); returns `warm`."""
        return self._warm.wait(timeout)

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: Sequence[str], tokens: Sequence[int]) -> Future[np.ndarray]:
        """Queue one request's inputs (with their token counts); the future gets its vectors in order.

        Cancelling the future before the worker reaches the request drops its inputs.
        Raises Overloaded when the queue has no room for all of them or the batcher is closing.
        """
        job = _Job(texts, tokens)
        with self._cond:
            if not self.running:
                raise Overloaded("the server is shutting down")
            if self._queued + len(texts) > self.max_queue:
                raise Overloaded(
                    f"the server is busy: {self._queued} inputs are queued and the queue holds {self.max_queue}"
                )
            self._jobs.append(job)
            self._queued += len(texts)
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        if self._warm_up is not None:
            try:
                self._warm_up()
            except Exception:
                logger.exception("warm-up failed; serving without it")
        self._warm.set()
        while (batch := self._next_batch()) is not None:
            if batch:
                self._process(batch)

    def _next_batch(self) -> list[tuple[_Job, int]] | None:
        """The next (job, input index) pairs to embed; None once closing with nothing left."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            batch: list[tuple[_Job, int]] = []
            longest = 0
            while self._jobs:
                job = self._jobs[0]
                length = max(longest, job.tokens[job.taken])
                if batch and (len(batch) + 1) * length > self.max_batch_tokens:
                    break
                if (job.taken == 0 and not job.future.set_running_or_notify_cancel()) or job.future.done():
                    self._jobs.popleft()  # cancelled by its client, or failed in an earlier batch
                    self._queued -= len(job.texts) - job.taken
                    continue
                batch.append((job, job.taken))
                longest = length
                job.taken += 1
                self._queued -= 1
                if job.taken == len(job.texts):
                    self._jobs.popleft()
            return batch

    def _process(self, batch: list[tuple[_Job, int]]) -> None:
        jobs = list(dict.fromkeys(job for job, _ in batch))
        try:
            vectors = self._embed([job.texts[i] for job, i in batch])
        except Exception as exc:  # delivered to every request of the batch; the worker keeps serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), len(batch) * max(job.tokens[i] for job, i in batch))
        for (job, i), row in zip(batch, vectors, strict=True):
            if job.vectors is None:
                job.vectors = np.empty((len(job.texts), vectors.shape[1]), dtype=vectors.dtype)
            job.vectors[i] = row
            job.done += 1
        for job in jobs:
            if job.done == len(job.texts):
                job.future.set_result(job.vectors)
