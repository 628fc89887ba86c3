"""Property-based fuzzing of the served OpenAPI spec (schemathesis + hypothesis) over real HTTP on 127.0.0.1.

Every operation gets generated bodies, headers and garbage; the server must never answer 5xx, and every
response must match the status codes and schemas the spec declares. Bounded in examples to stay fast.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 100


@pytest.fixture
def api_schema(api_server):
    """The spec exactly as the running server publishes it."""
    return schemathesis.openapi.from_url(api_server.base_url + "/openapi.json")


@pytest.fixture
def http(api_server):
    """A requests session that never goes through a proxy (loopback only)."""
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


OPERATIONS = [("POST", "/v1/ask"), ("POST", "/v1/ask/stream"), ("POST", "/v1/feedback"),
              ("POST", "/v1/handoff"), ("GET", "/v1/health")]


# schemathesis' pytest integration does not run under pytest 9 yet, so hypothesis drives its strategies here.
@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors_and_responses_match_the_spec(api_schema, http, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None, phases=[Phase.explicit, Phase.generate])
    def check(case):
        case.call_and_validate(session=http, timeout=120, checks=[
            not_a_server_error, status_code_conformance, content_type_conformance,
            response_schema_conformance])

    check()


def test_the_fuzzer_covers_every_endpoint(api_schema):
    """Guards against the list above drifting from the spec the server publishes."""
    ops = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert ops == set(OPERATIONS)
