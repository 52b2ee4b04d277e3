"""Routing by the token's tenant only (ROUTE-3), the read-only policy, and what the audit log may hold."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.conftest import get_token


def admin(provider_base: str) -> str:
    return provider_base.rsplit("/fhir", 1)[0] + "/_admin/requests"


def provider_log(provider_base: str) -> list[dict]:
    return requests.get(admin(provider_base), timeout=10).json()


def clear(provider_base: str) -> None:
    requests.post(admin(provider_base) + "/clear", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def second_hospital(stack: Stack, facts: dict[str, Any]) -> dict[str, str]:
    """Tenant B: another STU3 hospital on its own sample EHR, the demo client allowed on it."""
    provider = stack.start_ehr("stu3", name="ehr-stu3-b")["base_url"]
    tenant = str(uuid.uuid4())
    body = {"display_name": "Hospital B", "provider_base_url": provider, "fhir_version": "stu3",
            "allowed_clients": [facts["demo_client_id"]]}
    stack.manage("PUT", f"/tenants/{tenant}", json=body).raise_for_status()
    return {"tenant": tenant, "provider": provider, "token": get_token(facts, tenant)}


@pytest.fixture(scope="module")
def tenant_a(facts: dict[str, Any]) -> dict[str, str]:
    tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == "stu3")
    return {"tenant": tenant, "provider": facts["provider_base_urls"]["stu3"], "token": get_token(facts, tenant)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_token_reaches_only_its_own_tenants_provider(facts: dict[str, Any], tenant_a: dict,
                                                          second_hospital: dict) -> None:
    """ROUTE-3: same URL, two tokens, two providers; neither provider sees the other's traffic."""
    base = facts["fhir_base_urls"]["stu3"]
    clear(tenant_a["provider"])
    clear(second_hospital["provider"])
    for who in (tenant_a, second_hospital):
        assert requests.get(f"{base}/Patient", params={"_count": "1"}, headers=bearer(who["token"]),
                            timeout=30).status_code == 200
    assert len(provider_log(tenant_a["provider"])) == 1
    assert len(provider_log(second_hospital["provider"])) == 1


def test_a_next_link_replayed_with_another_tenants_token_is_routed_by_that_token(
        facts: dict[str, Any], tenant_a: dict, second_hospital: dict) -> None:
    """A rewritten next link carries no routing power: the token decides the provider."""
    base = facts["fhir_base_urls"]["stu3"]
    page = requests.get(f"{base}/Patient", params={"_count": "2"}, headers=bearer(tenant_a["token"]),
                        timeout=30).json()
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert next_url.startswith(base)
    clear(tenant_a["provider"])
    clear(second_hospital["provider"])
    followed = requests.get(next_url, headers=bearer(second_hospital["token"]), timeout=30)
    assert followed.status_code == 200
    assert provider_log(tenant_a["provider"]) == []
    assert len(provider_log(second_hospital["provider"])) == 1


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer not-a-jwt", "Basic abc", "Bearer a.b.c"])
def test_requests_without_a_valid_token_are_refused_and_never_forwarded(
        facts: dict[str, Any], tenant_a: dict, authorization: str | None) -> None:
    base = facts["fhir_base_urls"]["stu3"]
    clear(tenant_a["provider"])
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{base}/Patient", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["resourceType"] == "OperationOutcome"
    assert provider_log(tenant_a["provider"]) == []


def _onboard(stack: Stack, facts: dict[str, Any]) -> tuple[str, dict]:
    tenant = str(uuid.uuid4())
    body = {"provider_base_url": facts["provider_base_urls"]["dstu2"], "fhir_version": "dstu2",
            "allowed_clients": [facts["demo_client_id"]]}
    stack.manage("PUT", f"/tenants/{tenant}", json=body).raise_for_status()
    return tenant, body


def _token_request(facts: dict[str, Any], tenant: str) -> requests.Response:
    return requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_id": facts["demo_client_id"],
        "client_secret": facts["demo_client_secret"], "scope": tenant}, timeout=30)


def test_a_disabled_tenant_is_forbidden_and_gets_no_new_tokens(stack: Stack, facts: dict[str, Any]) -> None:
    """The management API drops its own instance's route cache; other instances follow within the TTL."""
    tenant, _ = _onboard(stack, facts)
    headers = bearer(get_token(facts, tenant))
    url = f"{facts['fhir_base_urls']['dstu2']}/Patient"
    assert requests.get(url, headers=headers, timeout=30).status_code == 200
    stack.manage("POST", f"/tenants/{tenant}/disable").raise_for_status()
    refused = requests.get(url, headers=headers, timeout=30)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert _token_request(facts, tenant).json()["error"] == "invalid_scope"


def test_a_client_taken_off_a_tenant_is_forbidden(stack: Stack, facts: dict[str, Any]) -> None:
    tenant, body = _onboard(stack, facts)
    headers = bearer(get_token(facts, tenant))
    stack.manage("PUT", f"/tenants/{tenant}", json={**body, "allowed_clients": []}).raise_for_status()
    response = requests.get(f"{facts['fhir_base_urls']['dstu2']}/Patient", headers=headers, timeout=30)
    assert response.status_code == 403
    assert _token_request(facts, tenant).json()["error"] == "invalid_scope"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", "Patient/x", 405), ("DELETE", "Patient/x", 405), ("PATCH", "Patient/x", 405),
    ("POST", "Patient", 405), ("GET", "Patient/x/$everything", 400), ("GET", "Patient/../../etc/passwd", 404),
    ("GET", "Patient/%2e%2e", 400), ("GET", "Basic/1", 403), ("GET", "http:%2F%2Fevil.example/Patient", 400),
])
def test_the_gateway_is_read_only_and_confined_to_the_providers_base(
        facts: dict[str, Any], tenant_a: dict, method: str, path: str, status: int) -> None:
    clear(tenant_a["provider"])
    response = requests.request(method, f"{facts['fhir_base_urls']['stu3']}/{path}",
                                headers=bearer(tenant_a["token"]), timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert provider_log(tenant_a["provider"]) == []


def test_transactions_are_refused_and_batch_write_entries_fail_alone(facts: dict[str, Any], tenant_a: dict) -> None:
    base = facts["fhir_base_urls"]["stu3"]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    assert requests.post(base, json=transaction, headers=bearer(tenant_a["token"]), timeout=30).status_code == 405
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/x"}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}},
        {"request": {"method": "GET", "url": "https://elsewhere.example/fhir/Patient"}}]}
    answer = requests.post(base, json=batch, headers=bearer(tenant_a["token"]), timeout=30).json()
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["405", "200", "400"]


def test_a_tenants_resource_allow_list_is_enforced(stack: Stack, facts: dict[str, Any]) -> None:
    tenant = str(uuid.uuid4())
    body = {"provider_base_url": facts["provider_base_urls"]["stu3"], "fhir_version": "stu3",
            "allowed_clients": [facts["demo_client_id"]], "resource_types": ["Patient"]}
    stack.manage("PUT", f"/tenants/{tenant}", json=body).raise_for_status()
    headers = bearer(get_token(facts, tenant))
    base = facts["fhir_base_urls"]["stu3"]
    assert requests.get(f"{base}/Patient", params={"_count": "1"}, headers=headers, timeout=30).status_code == 200
    assert requests.get(f"{base}/Observation", headers=headers, timeout=30).status_code == 403


def test_the_audit_log_has_one_line_per_request_and_no_phi_or_tokens(stack: Stack, facts: dict[str, Any],
                                                                      tenant_a: dict) -> None:
    """Runs last in this module: every request above left an audit line; no name, MRN, date or token."""
    base = facts["fhir_base_urls"]["stu3"]
    patients = requests.get(f"{facts['provider_base_urls']['stu3']}/Patient", params={"_count": "100"},
                            timeout=30).json()["entry"]
    victim = patients[0]["resource"]
    family = victim["name"][0]["family"]
    requests.post(f"{base}/Patient/_search", data={"family": family, "birthdate": victim["birthDate"]},
                  headers=bearer(tenant_a["token"]), timeout=30).raise_for_status()
    requests.get(f"{base}/Patient/{victim['id']}", headers=bearer(tenant_a["token"]), timeout=30)
    log = (stack.state / "logs" / "gateway.log").read_text()
    lines = [line.split("gateway.audit: ", 1)[1] for line in log.splitlines() if "gateway.audit: " in line]
    records = [json.loads(line) for line in lines]
    audit = [r for r in records if r["event"] == "fhir-request"]
    assert len(audit) >= 10
    assert {"request_id", "client_id", "tenant_id", "interaction", "resource_type", "status", "upstream_ms",
            "bytes"} <= set(audit[-1])
    forbidden = [family, victim["birthDate"], victim["id"], tenant_a["token"], facts["demo_client_secret"]]
    forbidden += [i["value"] for p in patients for i in p["resource"].get("identifier", []) if "value" in i]
    forbidden += [p["resource"]["name"][0]["family"] for p in patients]
    leaked = [word for word in forbidden if word and word in log]
    assert leaked == []
