"""Fixtures of the server tests: the tiny model, and real uvicorn servers on free 127.0.0.1 ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn

import gemma_embed
from gemma_embed.encode import Embedder
from gemma_embed.serve.app import create_app
from gemma_embed.serve.cli import uvicorn_config
from gemma_embed.serve.settings import LOOPBACK, ServeSettings

MODEL_NAME = "tiny"
# Small limits, so the tests reach every one of them with small requests.
SETTINGS = ServeSettings(model_name=MODEL_NAME, max_inputs=16, max_queue=64, max_body_bytes=64 * 1024)


class ServerThread:
    """The app under uvicorn (as `gemma-embed serve` runs it) on a background thread and a free loopback port."""

    def __init__(self, embedder: Embedder, settings: ServeSettings, *, wait_warm: bool = True) -> None:
        self.wait_warm = wait_warm
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.url = f"http://{LOOPBACK}:{self.sock.getsockname()[1]}"
        self.settings = settings
        self.app = create_app(embedder, settings)
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        if self.wait_warm:
            self.wait_until_healthy()
        return self

    def wait_until_healthy(self, timeout: float = 120) -> None:
        """Poll /health until 200: the warm-up is done (as a client or an orchestrator would wait)."""
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/health", timeout=10).status_code != 200:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not warm up"
            time.sleep(0.05)

    def stop(self) -> None:
        """What SIGINT/SIGTERM do: stop accepting, finish in-flight requests, run the shutdown."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the server did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.sock.close()


@pytest.fixture(scope="session")
def embedder(tiny_checkpoint) -> Embedder:
    return gemma_embed.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def server(embedder) -> Iterator[ServerThread]:
    """One server for the tests that leave it as they found it (no key, small limits)."""
    with ServerThread(embedder, SETTINGS) as running:
        yield running


@pytest.fixture()
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def start_server(embedder) -> Callable[..., ServerThread]:
    """`start_server(**settings)`: a server of its own with other settings (use it as a context manager);
    `wait_warm=False` returns it as soon as it listens, before its warm-up is done."""

    def start(wait_warm: bool = True, **settings: Any) -> ServerThread:
        return ServerThread(embedder, replace(SETTINGS, **settings), wait_warm=wait_warm)

    return start
