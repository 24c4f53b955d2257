"""`gemma-embed serve` started as the README says (no --model: the shipped default model, 127.0.0.1), used
through the official `openai` client: what it returns is what local `encode` returns, and bad input is a 4xx."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

import gemma_embed
from helpers import free_port

TEXTS = ["Which planet is known as the Red Planet?", "Mars is the red planet.", "Venus is hot."]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GEMMA_EMBED_MODEL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gemma_embed", "serve", "--port", str(port), "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def embedder() -> gemma_embed.Embedder:
    return gemma_embed.load("default")


def test_openai_client_gets_what_encode_gives(url, embedder):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    model = client.models.list().data[0].id
    single = client.embeddings.create(model=model, input=TEXTS[1])  # base64 by default
    np.testing.assert_array_equal(
        np.array(single.data[0].embedding, dtype=np.float32), embedder.encode(TEXTS[1])
    )
    many = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    np.testing.assert_array_equal(
        np.array([d.embedding for d in many.data], dtype=np.float32), embedder.encode(TEXTS)
    )
    short = client.embeddings.create(model=model, input=TEXTS, dimensions=128, encoding_format="float")
    np.testing.assert_allclose(
        np.array([d.embedding for d in short.data], dtype=np.float32),
        embedder.encode(TEXTS, dim=128),
        atol=1e-6,
    )


def test_bad_input_is_a_client_error_and_the_server_keeps_serving(url):
    for body in ({"input": []}, {"input": ""}, {"input": [1, 2]}, {"input": "x", "dimensions": 5000}):
        response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=30)
        assert 400 <= response.status_code < 500 and "error" in response.json()
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
