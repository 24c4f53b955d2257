"""The official `openai` client against the real server returns what local `encode` returns."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

TEXTS = ["Which planet is known as the Red Planet?", "Mars is the red planet.", "Venus is hot."]


@pytest.fixture(scope="module")
def model_name(server) -> str:
    return server.settings.model_name


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_single_string_base64_by_default(model_name, client, embedder):
    # The client asks for base64 unless told otherwise and decodes the little-endian float32 bytes.
    response = client.embeddings.create(model=model_name, input="Mars is the red planet.")
    assert response.model == model_name and response.object == "list"
    assert [d.index for d in response.data] == [0] and response.data[0].object == "embedding"
    vector = np.array(response.data[0].embedding, dtype=np.float32)
    np.testing.assert_array_equal(vector, embedder.encode("Mars is the red planet."))


def test_list_as_floats_with_usage(model_name, client, embedder):
    response = client.embeddings.create(model=model_name, input=TEXTS, encoding_format="float")
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_array_equal(vectors, embedder.encode(TEXTS))
    assert [d.index for d in response.data] == [0, 1, 2]
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(embedder.count_tokens(TEXTS))


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_dimensions_and_task(model_name, client, embedder, encoding_format):
    response = client.embeddings.create(
        model=model_name,
        input=TEXTS,
        dimensions=16,
        encoding_format=encoding_format,
        extra_body={"task": "query"},
    )
    if encoding_format == "base64":  # asked for explicitly: the client leaves it encoded
        vectors = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
    else:
        vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    # Truncation re-normalizes the already normalized vector: equal up to float32 rounding.
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS, task="query", dim=16), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert response.usage.prompt_tokens == sum(embedder.count_tokens(TEXTS, task="query"))


def test_model_is_optional_and_checked(model_name, client, http):
    assert http.post("/v1/embeddings", json={"input": "Mars"}).json()["model"] == model_name
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="Mars")


def test_models_list(model_name, client):
    assert [m.id for m in client.models.list()] == [model_name]


def test_default_task_applies_when_the_request_names_none(model_name, start_server, embedder):
    with start_server(default_task="document") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        response = client.embeddings.create(model=model_name, input=TEXTS)
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_array_equal(vectors, embedder.encode(TEXTS, task="document"))


def test_tei_embed_matches_encode(http, embedder):
    vectors = np.array(http.post("/embed", json={"inputs": TEXTS, "prompt_name": "STS"}).json(), np.float32)
    np.testing.assert_array_equal(vectors, embedder.encode(TEXTS, task="STS"))
    single = http.post("/embed", json={"inputs": TEXTS[0]}).json()  # one string: still a list of vectors
    np.testing.assert_array_equal(np.array(single, np.float32), embedder.encode(TEXTS[:1]))


@pytest.mark.filterwarnings("ignore:.*exceed max_seq_length")  # the server ignores it outside pytest too
def test_truncate_true_embeds_the_first_max_length_tokens(http, embedder):
    long_text = "Mars is the red planet. " * 100
    local = embedder.encode([long_text])
    for path, field in (("/embed", "inputs"), ("/v1/embeddings", "input")):
        response = http.post(path, json={field: [long_text], "truncate": True})
        assert response.status_code == 200, response.text
        body = response.json()
        vectors = body if path == "/embed" else [d["embedding"] for d in body["data"]]
        np.testing.assert_array_equal(np.array(vectors, np.float32), local)
