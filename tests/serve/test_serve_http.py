"""Health, models, metrics, CORS and the OpenAPI spec."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

ORIGIN = "http://app.example"


def samples(http: httpx.Client, name: str) -> list:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return [s for f in families for s in f.samples if s.name == name]


def requests_counted(http: httpx.Client, endpoint: str, status: str) -> float:
    counted = samples(http, "gemma_embed_requests_total")
    return sum(s.value for s in counted if s.labels == {"endpoint": endpoint, "status": status})


def test_health(http):
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "tiny", "queued_inputs": 0}


def test_metrics_count_requests_by_endpoint_and_status(http):
    before_ok = requests_counted(http, "/v1/embeddings", "200")
    before_bad = requests_counted(http, "/v1/embeddings", "400")
    before_other = requests_counted(http, "other", "404")
    http.post("/v1/embeddings", json={"input": "Mars"})
    http.post("/v1/embeddings", json={"input": []})
    http.get("/no/such/path")
    assert requests_counted(http, "/v1/embeddings", "200") == before_ok + 1
    assert requests_counted(http, "/v1/embeddings", "400") == before_bad + 1
    assert requests_counted(http, "other", "404") == before_other + 1  # unknown paths share one label
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    for name in (
        "gemma_embed_request_duration_seconds_count",
        "gemma_embed_batch_size_count",
        "gemma_embed_batch_tokens_count",
        "gemma_embed_queue_depth",
    ):
        assert samples(http, name), name


def test_cors_is_off_by_default(http):
    response = http.options(
        "/v1/embeddings", headers={"origin": ORIGIN, "access-control-request-method": "POST"}
    )
    assert response.status_code == 405 and "access-control-allow-origin" not in response.headers
    response = http.post("/v1/embeddings", json={"input": "Mars"}, headers={"origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origins(start_server):
    with (
        start_server(cors_origins=(ORIGIN,), api_key="k") as server,
        httpx.Client(base_url=server.url) as http,
    ):
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        }
        allowed = http.options("/v1/embeddings", headers={"origin": ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
        refused = http.options("/v1/embeddings", headers={"origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers
        response = http.post(
            "/v1/embeddings", json={"input": "Mars"}, headers={"origin": ORIGIN, "authorization": "Bearer k"}
        )
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == ORIGIN


def test_openapi_spec_documents_the_routes_and_errors(http):
    spec = http.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/v1/embeddings", "/embed", "/health", "/v1/models", "/metrics"}
    embeddings = spec["paths"]["/v1/embeddings"]["post"]
    assert {"200", "400", "404", "413", "422", "503"} <= set(embeddings["responses"])
    assert embeddings["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "task" in spec["components"]["schemas"]["EmbeddingRequest"]["properties"]
