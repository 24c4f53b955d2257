"""Bad requests get 4xx JSON errors in the OpenAI shape, naming the field; the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

LONG = "Mars is the red planet. " * 60  # > 256 tokens, the tiny model's limit
OPENAI = "/v1/embeddings"
TEI = "/embed"

# (route, JSON body, status, param named in the error)
BAD_REQUESTS = {
    "empty list": (OPENAI, {"input": []}, 400, "input"),
    "empty string": (OPENAI, {"input": ["Mars", ""]}, 400, "input[1]"),
    "number": (OPENAI, {"input": 42}, 422, "input"),
    "token ids": (OPENAI, {"input": [[1, 2, 3]]}, 422, "input"),
    "null item": (OPENAI, {"input": ["Mars", None]}, 422, "input"),
    "missing input": (OPENAI, {"model": "tiny"}, 422, "input"),
    "unknown field": (OPENAI, {"input": "Mars", "dimension": 16}, 422, "dimension"),
    "too many inputs": (OPENAI, {"input": ["Mars"] * 17}, 400, "input"),
    "too long": (OPENAI, {"input": ["Mars", LONG]}, 400, "input[1]"),
    "unknown task": (OPENAI, {"input": "Mars", "task": "poetry"}, 400, "task"),
    "dimensions too large": (OPENAI, {"input": "Mars", "dimensions": 65}, 400, "dimensions"),
    "dimensions zero": (OPENAI, {"input": "Mars", "dimensions": 0}, 400, "dimensions"),
    "dimensions not int": (OPENAI, {"input": "Mars", "dimensions": "16"}, 422, "dimensions"),
    "bad encoding": (OPENAI, {"input": "Mars", "encoding_format": "int8"}, 422, "encoding_format"),
    "other model": (OPENAI, {"input": "Mars", "model": "gpt-4"}, 404, "model"),
    "body not an object": (OPENAI, ["Mars"], 422, None),
    "tei empty string": (TEI, {"inputs": ""}, 400, "inputs[0]"),
    "tei too many inputs": (TEI, {"inputs": ["Mars"] * 17}, 413, "inputs"),
    "tei too long": (TEI, {"inputs": [LONG]}, 413, "inputs[0]"),
    "tei unknown prompt": (TEI, {"inputs": "Mars", "prompt_name": "poetry"}, 400, "prompt_name"),
    "tei unnormalized": (TEI, {"inputs": "Mars", "normalize": False}, 400, "normalize"),
}


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["param"] == param
    return error


def assert_serving(http: httpx.Client) -> None:
    response = http.post(OPENAI, json={"input": ["Mars", "Venus"]})
    assert response.status_code == 200 and len(response.json()["data"]) == 2


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
def test_bad_request(http, path, body, status, param):
    error = assert_error(http.post(path, json=body), status, param)
    if param and param.startswith(("input[", "inputs[")):
        assert param in error["message"]
    assert_serving(http)


def test_limits_are_named_in_the_message(http):
    assert "at most 16" in http.post(OPENAI, json={"input": ["Mars"] * 17}).json()["error"]["message"]
    assert "at most 256" in http.post(TEI, json={"inputs": [LONG]}).json()["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"\xff\xfe", b'{"input": "Mars"'],
    ids=["garbage", "empty", "binary", "cut"],
)
def test_invalid_json(http, content):
    response = http.post(OPENAI, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400 if content else 422)
    assert_serving(http)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_must_be_sent_as_json(http, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = http.post(OPENAI, content=b'{"input": "Mars"}', headers=headers)
    error = assert_error(response, 422)
    assert error["code"] == "invalid_content_type" and "application/json" in error["message"]


def test_body_too_large_declared_or_streamed(http):
    big = b'{"input": "' + b"a" * (64 * 1024) + b'"}'
    assert_error(http.post(OPENAI, content=big), 413)
    chunked = http.post(OPENAI, content=iter([big[:1000], big[1000:]]))  # no Content-Length
    assert_error(chunked, 413)
    assert_serving(http)


def test_unknown_route_and_method(http):
    assert assert_error(http.get("/v2/embeddings"), 404)["code"] == "not_found"
    response = http.get(OPENAI)
    assert assert_error(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


def test_internal_errors_reveal_nothing(start_server, embedder, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    with start_server() as server, httpx.Client(base_url=server.url) as http:
        monkeypatch.setattr(embedder, "encode", broken)
        response = http.post(OPENAI, json={"input": "Mars"})
        error = assert_error(response, 500)
        assert "secret" not in response.text and error["code"] == "internal_error"
        monkeypatch.undo()
        assert_serving(http)


class TestApiKey:
    KEY = "s3cret-key"

    @pytest.fixture(scope="class")
    def secured(self, start_server):
        with start_server(api_key=self.KEY) as server:
            yield server

    @pytest.mark.parametrize("path", [OPENAI, TEI, "/v1/models", "/metrics", "/nowhere"])
    @pytest.mark.parametrize(
        "header", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"], ids=str
    )
    def test_refused_without_the_key(self, secured, path, header):
        headers = {"authorization": header} if header else {}
        response = httpx.post(f"{secured.url}{path}", json={"input": "Mars"}, headers=headers)
        error = assert_error(response, 401)
        assert error["code"] == "invalid_api_key" and response.headers["www-authenticate"] == "Bearer"

    def test_the_key_opens_the_api(self, secured):
        client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=self.KEY, max_retries=0)
        assert len(client.embeddings.create(model="tiny", input=["Mars", "Venus"]).data) == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{secured.url}/v1", api_key="nope", max_retries=0).models.list()

    def test_health_and_the_spec_stay_open(self, secured):
        assert httpx.get(f"{secured.url}/health").status_code == 200
        spec = httpx.get(f"{secured.url}/openapi.json").json()
        assert spec["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
        assert spec["paths"][OPENAI]["post"]["security"] == [{"apiKey": []}]
        assert "security" not in spec["paths"]["/health"]["get"]
