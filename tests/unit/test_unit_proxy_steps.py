"""The proxy's steps one by one, each without the others: who and where (shared/access.py), the checks
and the provider's dialect (shared/request_shaping.py), and batch-response entries and the audit
line's one format (shared/response_shaping.py, shared/audit.py). tests/unit/test_unit_proxy.py
proves them together, through `FhirProxy.handle` and a real provider.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from shared.access import Access, AccessCheck
from shared.audit import Audit, TokenAudit
from shared.capability import CONTENT_TYPE
from shared.errors import FhirError
from shared.http import FORM_TYPE, Headers, Request
from shared.page_links import PageLinks, PagingKey
from shared.policy import Interaction
from shared.request_shaping import batch_entries, passthrough_request, requested_action, upstream_request
from shared.response_shaping import batch_response_entry, refused_entry
from shared.routes import TenantRoute
from shared.token_service import AccessClaims
from shared.upstream_auth import UpstreamAuthenticator
from tests.unit.world import URLS, World, build_world

pytestmark = pytest.mark.unit

PROVIDER = "https://ehr.example/fhir"


def _check(world: World) -> AccessCheck:
    upstream = UpstreamAuthenticator(world.vault, timeout=(2.0, 5.0), secret_ttl=60.0)
    return AccessCheck(world.tokens, world.clients, world.tenants, upstream, PagingKey(world.vault))


def _bearer(token: str) -> Request:
    return Request("GET", f"{URLS.fhir_base('stu3')}/Patient/p1", Headers({"Authorization": f"Bearer {token}"}))


def _refusal(call: Callable[[], object]) -> FhirError:
    with pytest.raises(FhirError) as caught:
        call()
    return caught.value


def _route(fhir_version: str = "stu3") -> TenantRoute:
    return TenantRoute("t1", "Clinic", PROVIDER, fhir_version)


# --- who and where --------------------------------------------------------------------------------------

def test_the_access_check_names_the_caller_its_tenants_route_and_no_credential_for_an_open_provider() -> None:
    world = build_world()
    client_id, secret = world.client()
    tenant_id = world.tenant(PROVIDER, allowed=(client_id,))
    access = _check(world).check(_bearer(world.token(client_id, secret, tenant_id)), "stu3", URLS)
    assert (access.claims.client_id, access.claims.tenant_id) == (client_id, tenant_id)
    assert (access.route.tenant_id, access.route.provider_base_url) == (tenant_id, PROVIDER)
    assert access.authorization is None


def test_the_access_check_refuses_a_facade_its_tenants_provider_cannot_be_bridged_to() -> None:
    """STU3 tenant, DSTU2 facade: neither side is R4, so no bridge; R4 is offered instead."""
    world = build_world()
    client_id, secret = world.client()
    tenant_id = world.tenant(PROVIDER, allowed=(client_id,))
    request = _bearer(world.token(client_id, secret, tenant_id))
    refused = _refusal(lambda: _check(world).check(request, "dstu2", URLS))
    assert (refused.status, refused.code) == (400, "not-supported")
    assert "use the stu3 or r4 FHIR base URL" in refused.diagnostics
    assert _check(world).check(request, "r4", URLS).route.fhir_version == "stu3"


# --- the checks ------------------------------------------------------------------------------------------

def test_a_post_search_needs_a_form_body() -> None:
    url = f"{URLS.fhir_base('stu3')}/Patient/_search"
    action = requested_action(Request("POST", url, Headers({"Content-Type": FORM_TYPE}), body=b"family=x"),
                              "Patient/_search")
    assert (action.kind, action.resource_type, action.query) == ("search-post", "Patient", (("family", "x"),))
    refused = _refusal(lambda: requested_action(Request("POST", url, Headers({"Content-Type": "application/json"}),
                                                        body=b"{}"), "Patient/_search"))
    assert refused.status == 415


@pytest.mark.parametrize(("bundle", "status"), [
    ({"resourceType": "Bundle", "type": "transaction", "entry": []}, 405),
    ({"resourceType": "Bundle", "type": "batch", "entry": [{}] * 101}, 400),
    ({"resourceType": "Patient"}, 400),
])
def test_only_a_batch_bundle_of_at_most_a_hundred_entries_is_read(bundle: dict, status: int) -> None:
    assert _refusal(lambda: batch_entries(json.dumps(bundle).encode())).status == status
    assert batch_entries(json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [{}] * 100}).encode())


# --- the provider's dialect -------------------------------------------------------------------------------

def test_only_the_listed_request_headers_reach_the_provider_with_the_request_id() -> None:
    headers = Headers({"Prefer": "handling=strict", "Cookie": "c=1", "Authorization": "Bearer gateway-token",
                       "If-None-Match": 'W/"1"'})
    search = Interaction("search", "Patient", query=(("family", "x"),))
    request = upstream_request(_route(), "stu3", search, headers, "req-1")
    assert (request.method, request.url, request.data) == ("GET", f"{PROVIDER}/Patient?family=x", None)
    assert request.headers == {"prefer": "handling=strict", "if-none-match": 'W/"1"',
                               "Accept": CONTENT_TYPE["stu3"], "X-Request-Id": "req-1"}


def test_a_post_search_goes_on_as_a_form_and_a_bridged_request_asks_in_the_providers_media_type() -> None:
    search = Interaction("search-post", "Patient", query=(("family", "x"),))
    request = upstream_request(_route("r4"), "stu3", search, Headers(), "req-1")
    assert (request.method, request.url, request.data) == ("POST", f"{PROVIDER}/Patient/_search", b"family=x")
    assert request.headers == {"Accept": CONTENT_TYPE["r4"], "X-Request-Id": "req-1", "Content-Type": FORM_TYPE}


def test_a_passthrough_batch_is_the_validated_bundle_posted_to_the_provider_base() -> None:
    request = passthrough_request(_route(), "stu3", [Interaction("read", "Patient", "p1")], "req-1")
    assert (request.method, request.url) == ("POST", PROVIDER)
    assert request.headers["Content-Type"] == request.headers["Accept"] == CONTENT_TYPE["stu3"]
    sent = json.loads(request.data or b"")
    assert (sent["type"], [e["request"]["url"] for e in sent["entry"]]) == ("batch", ["Patient/p1"])


# --- batch-response entries -------------------------------------------------------------------------------

def test_a_batch_response_entry_splices_the_resource_and_states_status_etag_and_a_fhir_instant() -> None:
    entry = batch_response_entry(200, {"Etag": 'W/"2"', "Last-Modified": "Tue, 01 Oct 2024 08:30:00 GMT"},
                                 b'{"resourceType":"Patient","id":"p1"}')
    assert json.loads(entry) == {"response": {"status": "200 OK", "etag": 'W/"2"',
                                              "lastModified": "2024-10-01T08:30:00+00:00"},
                                 "resource": {"resourceType": "Patient", "id": "p1"}}
    assert json.loads(batch_response_entry(304, {"Last-Modified": "not a date"}, b"")) == {
        "response": {"status": "304 Not Modified"}}


def test_a_refused_batch_entry_carries_its_operation_outcome() -> None:
    entry = json.loads(refused_entry(FhirError(403, "forbidden", "resource type Account is not available")))
    assert entry["response"] == {"status": "403 Forbidden"}
    assert entry["resource"]["resourceType"] == "OperationOutcome"
    assert entry["resource"]["issue"][0]["diagnostics"] == "resource type Account is not available"


# --- the audit line ----------------------------------------------------------------------------------------

def test_fhir_and_token_audit_lines_share_one_logger_and_one_format(caplog: pytest.LogCaptureFixture) -> None:
    """Compact JSON with `event` first: the alerts select lines by that prefix (docs/operations.md)."""
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        Audit("req-1").emit(200, 10)
        TokenAudit("client-1", "tenant-1", "jti-1").emit("issued")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert [line[:26] for line in lines] == ['{"event":"fhir-request","r', '{"event":"token-request","']
    assert json.loads(lines[1]) == {"event": "token-request", "outcome": "issued", "client_id": "client-1",
                                    "tenant_id": "tenant-1", "jti": "jti-1"}
    assert all(json.dumps(json.loads(line), separators=(",", ":")) == line for line in lines)


@pytest.mark.parametrize("version, provider", [("stu3", "stu3"), ("r4", "stu3"), ("dstu2", "dstu2")])
def test_the_provider_gets_exactly_one_accept_header_the_gateways(version: str, provider: str) -> None:
    headers = Headers({"Accept": "application/fhir+json", "Prefer": "handling=strict"})
    request = upstream_request(_route(provider), version, Interaction("read", "Patient", "p1"), headers, "req-1")
    accepts = [value for name, value in request.headers.items() if name.lower() == "accept"]
    expected = CONTENT_TYPE[provider] if version == "r4" else "application/fhir+json"
    assert accepts == [expected]


def test_an_access_decision_never_shows_the_providers_credential_in_its_repr() -> None:
    claims = AccessClaims("c1", "t1", "jti-1", 2_000_000_000)
    access = Access(claims, _route(), "Bearer upstream-secret-token", PageLinks(b"k" * 32, "t1"))
    assert access.authorization == "Bearer upstream-secret-token"
    assert "upstream-secret-token" not in repr(access)
