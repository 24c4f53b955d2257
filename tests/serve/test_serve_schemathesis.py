"""Requests generated from the served OpenAPI spec (schemathesis): no 5xx, every response as documented.

Each operation gets valid data and, where it has a body, invalid data; hypothesis' examples are bounded.
Every check runs but `positive_data_acceptance`: a request can match the schema and still be refused
with a 4xx for limits the spec cannot state (tokens per input, the model's dims, its prompt names, empty
strings). schemathesis' own pytest loader needs a pytest internal that pytest 9 removed, so the strategies
are used directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

MAX_EXAMPLES = 50
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
OPERATIONS = [
    ("POST", "/v1/embeddings", POSITIVE),
    ("POST", "/v1/embeddings", NEGATIVE),
    ("POST", "/embed", POSITIVE),
    ("POST", "/embed", NEGATIVE),
    ("GET", "/health", POSITIVE),
    ("GET", "/v1/models", POSITIVE),
    ("GET", "/metrics", POSITIVE),
]


@pytest.fixture(scope="module")
def api_schema(server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=lambda v: getattr(v, "value", v))
def test_generated_requests(api_schema, http, method, path, mode):
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

    check()
    assert http.get("/health").json()["status"] == "ok"
