"""One request, one id: response header, error bodies, audit line and the trace sent upstream (issue #15).

Real HTTP through the session's gateway to `devtools/faulty_provider.py`, whose request log keeps
the headers the gateway sent it only when asked for (`traceparent` and `x-request-id` here).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.reliability import Consumer, bearer, clear_provider_log, provider_log, start_faulty_provider

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


@pytest.fixture(scope="module")
def provider(stack: Stack) -> dict[str, Any]:
    root = start_faulty_provider(stack)
    consumer = Consumer(stack, "Request id test client")
    base = f"{root}/ok/fhir"
    return {"base": base, "headers": bearer(consumer.token(consumer.onboard(base)))}


def audit_line(stack: Stack, request_id: str) -> dict[str, Any]:
    log = (stack.state / "logs" / "gateway.log").read_text()
    records = [json.loads(line.split("gateway.audit: ", 1)[1]) for line in log.splitlines()
               if "gateway.audit: " in line and request_id in line]
    assert len(records) == 1, records
    return records[0]


def test_an_incoming_trace_is_continued_to_the_provider_and_names_the_request(
        stack: Stack, facts: dict[str, Any], provider: dict[str, Any]) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    clear_provider_log(provider["base"])
    response = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", timeout=30,
                            headers={**provider["headers"], "traceparent": f"00-{trace_id}-{parent}-01"})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == trace_id
    sent = provider_log(provider["base"])[-1]["traceparent"]
    match = TRACEPARENT.match(sent)
    assert match and match.group(1) == trace_id and match.group(2) != parent
    assert audit_line(stack, trace_id)["status"] == 200


def test_without_a_trace_every_answer_still_has_an_id_and_the_provider_gets_a_trace(
        facts: dict[str, Any], provider: dict[str, Any]) -> None:
    clear_provider_log(provider["base"])
    response = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", headers=provider["headers"], timeout=30)
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert TRACEPARENT.match(provider_log(provider["base"])[-1]["traceparent"]).group(1) == request_id


def test_a_malformed_traceparent_starts_a_new_trace(facts: dict[str, Any], provider: dict[str, Any]) -> None:
    for bad in ("00-" + "0" * 32 + "-" + "1" * 16 + "-01", "zz-not-a-trace", "00-ABCDEF-12-01"):
        response = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", timeout=30,
                                headers={**provider["headers"], "traceparent": bad})
        assert response.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
        assert response.headers["X-Request-Id"] != "0" * 32


def test_an_operation_outcome_names_the_request_id(facts: dict[str, Any]) -> None:
    response = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", timeout=30)
    assert response.status_code == 401
    request_id = response.headers["X-Request-Id"]
    assert f"request id {request_id}" in response.json()["issue"][0]["diagnostics"]


def test_a_problem_document_names_the_request_id(stack: Stack) -> None:
    response = stack.manage("GET", "/tenants/not-a-guid", headers={"X-Request-Id": "ops-4711"})
    assert response.status_code in (400, 404)
    assert response.headers["X-Request-Id"] == "ops-4711"
    assert response.json()["request_id"] == "ops-4711"


def test_a_token_error_carries_the_request_id_in_its_header(facts: dict[str, Any]) -> None:
    response = requests.post(facts["token_url"], data={"grant_type": "password"}, timeout=30)
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert "request_id" not in response.json()  # RFC 6749 §5.2 error members only


def test_every_endpoint_family_answers_with_an_id(stack: Stack, facts: dict[str, Any]) -> None:
    base = facts["gateway_base_url"]
    for response in (requests.get(f"{facts['fhir_base_urls']['stu3']}/metadata", timeout=30),
                     requests.get(f"{base}/api/health", timeout=30),
                     requests.get(f"{base}/api/oauth2/jwks", timeout=30),
                     requests.get(f"{base}/api/portal", timeout=30),
                     stack.manage("GET", "/tenants")):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"]), response.url
