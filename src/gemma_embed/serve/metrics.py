"""Prometheus metrics of one app (its own registry): requests, latency, batch sizes and queue depth."""

from __future__ import annotations

import time
from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536)
OTHER_ENDPOINT = "other"  # label of paths that are no route, so clients cannot grow the label set


class Metrics:
    """The server's metric families, registered in a registry of their own (set `queue_depth`'s function)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gemma_embed_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gemma_embed_request_duration_seconds",
            "time from request to the end of the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "gemma_embed_batch_size",
            "inputs per forward pass",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "gemma_embed_batch_tokens",
            "padded tokens per forward pass (inputs x longest input)",
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gemma_embed_queue_depth", "inputs waiting for the model", registry=self.registry
        )

    def observe_batch(self, inputs: int, padded_tokens: int) -> None:
        self.batch_size.observe(inputs)
        self.batch_tokens.observe(padded_tokens)


class MetricsMiddleware:
    """Counts every response (errors and refusals included) and its latency, by route path."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else OTHER_ENDPOINT
        start = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped and becomes a 500 outside

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
