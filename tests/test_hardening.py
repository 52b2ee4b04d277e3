"""Issue #13 (hardening): each input the security review found working is sent as written, and gets
the answer the issue asks for. Unit-level checks run the pure functions with explicit policies;
end-to-end checks go through the running local stack (real host, Azurite, Key Vault emulator, EHRs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import threading
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests

from shared.errors import FhirError, NotFound, StoreUnavailable
from shared.health import CachedProbe
from shared.jsonbody import InvalidJson, loads_strict
from shared.offloop import inline_or_thread
from shared.outbound import BadUrl, OutboundPolicy, is_loopback_host, normalise_url
from shared.page_links import KEY_NAME as PAGING_KEY_NAME
from shared.page_links import PageLinks, PagingKey
from shared.policy import batch_entry_interaction, drop_disallowed_entries, interaction_for
from shared.portal.sessions import KEY_NAME as PORTAL_KEY_NAME
from shared.routes import TenantRoute, parse_route
from shared.signing import PREFIX as SIGNING_KEY_PREFIX
from shared.stores import SecretRecord
from shared.stores.tables import AzureTable
from shared.upstream_answers import (
    check_not_redirect,
    client_location,
    passthrough_bundle,
    sign_page_query,
    verified_page_query,
)
from shared.upstream_auth import InvalidUpstreamAuth, validate_upstream_auth
from tests.gateway_calls import (
    TIMEOUT,
    assert_operation_outcome,
    assert_problem,
    create_client,
    new_tenant_id,
    put_tenant,
    route_body,
)
from tests.portal_client import PortalUser, registered_user
from tests.reliability import Consumer, bearer, provider_log

PRODUCTION = OutboundPolicy()
LOCAL_DEV = OutboundPolicy(allow_loopback_http=True)
NOW = "2026-11-30T00:00:00+00:00"
TENANT = "0b6f1a52-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture(scope="module")
def client_id(stack: Any) -> str:
    return create_client(stack.manage, "Hardening test client")["client_id"]


def refused_and_not_stored(manage: Any, body: dict[str, Any], field: str) -> None:
    """400 naming the field, and the tenant does not exist afterwards."""
    tenant_id = new_tenant_id()
    assert_problem(put_tenant(manage, tenant_id, body), 400, field)
    assert manage("GET", f"/tenants/{tenant_id}").status_code == 404


# --- item 1: the management API cannot turn the gateway's identity or secrets against it -----------

def test_azure_ad_scope_of_another_resource_is_refused_and_nothing_stored(manage: Any, client_id: str) -> None:
    """The issue's input: a managed-identity token for Storage sent to an attacker's host."""
    for scope in ("https://storage.azure.com/.default", "https://vault.azure.net/.default",
                  "https://management.azure.com/.default"):
        body = route_body("https://attacker.example/fhir", [client_id],
                          upstream_auth={"kind": "azure_ad", "scope": scope})
        refused_and_not_stored(manage, body, "upstream_auth.scope")


def test_azure_ad_scope_is_the_provider_audience_or_on_the_operator_allow_list() -> None:
    base = "https://ehr.example.org/fhir"
    own = validate_upstream_auth({"kind": "azure_ad", "scope": "https://ehr.example.org/.default"}, base, PRODUCTION)
    assert own["scope"] == "https://ehr.example.org/.default"
    assert validate_upstream_auth({"kind": "azure_ad"}, base, PRODUCTION) == {"kind": "azure_ad"}
    allowed = OutboundPolicy(azure_ad_scopes_allowed=frozenset({"api://ehr-proxy/.default"}))
    assert validate_upstream_auth({"kind": "azure_ad", "scope": "api://ehr-proxy/.default"}, base, allowed)
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth({"kind": "azure_ad", "scope": "api://ehr-proxy/.default"}, base, PRODUCTION)
    assert caught.value.field == "upstream_auth.scope"


@pytest.mark.parametrize("kind", ["bearer", "client_credentials", "smart_backend"])
def test_the_gateways_own_secrets_can_never_be_referenced(stack: Any, manage: Any, client_id: str,
                                                          kind: str) -> None:
    kid = requests.get(f"{stack.facts['gateway_base_url']}/api/oauth2/jwks", timeout=TIMEOUT).json()["keys"][0]["kid"]
    own = [PORTAL_KEY_NAME, PAGING_KEY_NAME, f"{SIGNING_KEY_PREFIX}{kid}", f"client-{client_id}-s1",
           "gateway-anything"]
    extra = {"bearer": {},
             "client_credentials": {"token_url": "https://idp.example.org/token", "client_id": "gw"},
             "smart_backend": {"token_url": "https://idp.example.org/token", "client_id": "gw", "alg": "RS384",
                               "kid": "k1", "scope": "system/*.read"}}[kind]
    for name in own:
        body = route_body("https://ehr.example.org/fhir", [client_id],
                          upstream_auth={"kind": kind, "secret_name": name, **extra})
        refused_and_not_stored(manage, body, "upstream_auth.secret_name")


def test_upstream_token_urls_must_be_https(manage: Any, client_id: str) -> None:
    for url in ("http://idp.example.org/token", "ftp://idp.example.org/token"):
        body = route_body("https://ehr.example.org/fhir", [client_id], upstream_auth={
            "kind": "client_credentials", "token_url": url, "client_id": "gw", "secret_name": "upstream-cc"})
        refused_and_not_stored(manage, body, "upstream_auth.token_url")


def test_an_upstream_secret_in_its_own_name_space_is_accepted(manage: Any, client_id: str) -> None:
    body = route_body("https://ehr.example.org/fhir", [client_id],
                      upstream_auth={"kind": "bearer", "secret_name": "upstream-contoso-bearer"})
    response = put_tenant(manage, new_tenant_id(), body)
    assert response.status_code == 201, response.text


def test_a_route_stored_under_older_rules_is_refused_upstream_but_can_still_be_disabled(stack: Any) -> None:
    """A route written before the `upstream-` name space (here straight into the table) naming the
    portal key: the gateway will not send that secret, and the operator can still switch it off."""
    consumer = Consumer(stack, "Legacy route client")
    tenant_id = new_tenant_id()
    legacy = TenantRoute(tenant_id, "Legacy", stack.facts["provider_base_urls"]["stu3"], "stu3",
                         {"kind": "bearer", "secret_name": PORTAL_KEY_NAME}, (consumer.client_id,))
    table = AzureTable.connect("tenants", connection_string=stack.processes["azurite"].ready["connection_string"])
    table.insert(tenant_id, legacy.to_entity())
    answer = requests.get(f"{stack.facts['fhir_base_urls']['stu3']}/Patient?_count=1",
                          headers=bearer(consumer.token(tenant_id)), timeout=TIMEOUT)
    assert "misconfigured" in json.dumps(assert_operation_outcome(answer, 502))
    disabled = stack.manage("POST", f"/tenants/{tenant_id}/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False


# --- item 2: dev-only allowances, normalised URLs, one loopback test -------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]", "LOCALHOST"])
def test_one_loopback_helper_for_providers_and_token_urls(host: str) -> None:
    assert is_loopback_host(host)
    provider = parse_route(TENANT, {"provider_base_url": f"http://{host}:8080/fhir", "fhir_version": "stu3",
                                    "upstream_auth": {"kind": "client_credentials",
                                                      "token_url": f"http://{host}:9/token", "client_id": "gw",
                                                      "secret_name": "upstream-x"}}, NOW, policy=LOCAL_DEV)
    assert provider.provider_base_url.startswith("http://")
    assert provider.upstream_auth["token_url"].startswith("http://")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
def test_plain_http_loopback_is_refused_without_the_local_development_setting(host: str) -> None:
    with pytest.raises(BadUrl):
        normalise_url(f"http://{host}:8080/fhir", PRODUCTION, base=True)
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth({"kind": "client_credentials", "token_url": f"http://{host}/token", "client_id": "gw",
                                "secret_name": "upstream-x"}, "https://ehr.example.org/fhir", PRODUCTION)
    assert caught.value.field == "upstream_auth.token_url"


@pytest.mark.parametrize("url", [
    "http://local\thost/fhir", "https://ehr.example.org/fh\nir", "https://ehr.example.org/fhir\x00",
    "https://ehr.exa mple.org/fhir", "https://ehr.example.org/fhir?_format=json", "https://ehr.example.org/fhir#x",
    "https://ehr.example.org/fhir?", "https://user:pw@ehr.example.org/fhir", "https://ehr.exämple.org/fhir",
    "https://ehr%2eexample.org/fhir", "http://10.0.0.1/fhir", "http://127.0.0.1.example.org/fhir",
])
def test_provider_urls_with_control_characters_queries_or_odd_hosts_are_refused(
        manage: Any, client_id: str, url: str) -> None:
    refused_and_not_stored(manage, route_body(url, [client_id]), "provider_base_url")


def test_the_stored_url_is_the_normalised_one(manage: Any, client_id: str) -> None:
    tenant_id = new_tenant_id()
    body = route_body("HTTPS://EHR.Example.ORG:443/fhir/r4/", [client_id], upstream_auth={
        "kind": "client_credentials", "token_url": "HTTPS://IdP.Example.org:443/token?tenant=a", "client_id": "gw",
        "secret_name": "upstream-cc"})
    assert put_tenant(manage, tenant_id, body).status_code == 201
    stored = manage("GET", f"/tenants/{tenant_id}").json()
    assert stored["provider_base_url"] == "https://ehr.example.org/fhir/r4"
    assert stored["upstream_auth"]["token_url"] == "https://idp.example.org/token?tenant=a"
    assert normalise_url("http://[0:0:0:0:0:0:0:1]:80/fhir", LOCAL_DEV, base=True) == "http://[::1]/fhir"


# --- item 3: the resource-type allow-list cannot be bypassed ---------------------------------------

# The inputs, as sent; refused with 400 not-supported (the request form is unsupported,
# whatever the tenant allows), OperationOutcome.
CROSS_TYPE_QUERIES = ["_id=x&_revinclude=*", "_include=*", "_has:Observation:patient:code=1234",
                      "_id=x&_include:iterate=Patient:organization", "_REVINCLUDE=*", "_has=x"]


@pytest.mark.parametrize("query", CROSS_TYPE_QUERIES)
def test_include_revinclude_and_has_are_refused_by_policy(query: str) -> None:
    for attempt in (lambda: interaction_for("GET", "Patient", query),
                    lambda: interaction_for("POST", "Patient/_search", "", query.encode()),
                    lambda: batch_entry_interaction({"request": {"method": "GET", "url": f"Patient?{query}"}})):
        with pytest.raises(FhirError) as caught:
            attempt()
        assert (caught.value.status, caught.value.code) == (400, "not-supported")


@pytest.fixture(scope="module")
def patient_only(stack: Any) -> dict[str, Any]:
    """A tenant limited to ["Patient"] on the shared STU3 EHR, and a token for it."""
    consumer = Consumer(stack, "Patient-only client")
    tenant_id = new_tenant_id()
    provider = stack.facts["provider_base_urls"]["stu3"]
    body = route_body(provider, [consumer.client_id], resource_types=["Patient"])
    assert put_tenant(stack.manage, tenant_id, body).status_code == 201
    return {"headers": bearer(consumer.token(tenant_id)), "base": stack.facts["fhir_base_urls"]["stu3"],
            "provider": provider}


def _never_reached_the_provider(provider: str) -> None:
    for entry in provider_log(provider):
        query = entry["query"].lower()
        assert "include" not in query and "_has" not in query, entry


@pytest.mark.parametrize("query", CROSS_TYPE_QUERIES)
def test_include_revinclude_and_has_are_refused_end_to_end(patient_only: dict[str, Any], query: str) -> None:
    base, headers = patient_only["base"], patient_only["headers"]
    assert_operation_outcome(requests.get(f"{base}/Patient?{query}", headers=headers, timeout=TIMEOUT),
                             400, "not-supported")
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    assert_operation_outcome(requests.post(f"{base}/Patient/_search", data=query, headers=form, timeout=TIMEOUT),
                             400, "not-supported")
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"Patient?{query}"}}]}
    answer = requests.post(base, json=bundle, headers={**headers, "Content-Type": "application/fhir+json"},
                           timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["entry"][0]["response"]["status"].startswith("400")
    _never_reached_the_provider(patient_only["provider"])


def test_a_plain_patient_search_still_works_on_the_limited_tenant(patient_only: dict[str, Any]) -> None:
    answer = requests.get(f"{patient_only['base']}/Patient?_count=2", headers=patient_only["headers"],
                          timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"


def test_response_entries_of_types_the_tenant_does_not_allow_are_dropped() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
        {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "match"}},
        {"resource": {"resourceType": "Observation", "id": "o"}, "search": {"mode": "include"}},
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
        {"resource": {"resourceType": "Observation", "id": "o2"}}, {"resource": "junk"},
        {"response": {"status": "404 Not Found"}}]}
    dropped = drop_disallowed_entries(bundle, ("Patient",))
    assert [e.get("resource", {}).get("resourceType") for e in bundle["entry"]] == ["Patient", "OperationOutcome",
                                                                                   None]
    assert dropped == {"Observation": 2, "None": 1} and bundle["total"] == 1
    assert drop_disallowed_entries({"resourceType": "Patient"}, ("Patient",)) == {}


# --- item 4: numeric parameters are ASCII digits (R4 routes too, where `_offset=²` was a 500) ------

@pytest.mark.parametrize("query", ["_count=\u00b2", "_offset=\u00b2", "_count=\u0663", "_offset=1\u00b2"])
@pytest.mark.parametrize("tenant_index", [0, 2])
def test_unicode_digits_in_numeric_parameters_are_400(facts: dict[str, Any], query: str,
                                                      tenant_index: int) -> None:
    tenant = facts["demo_tenants"][tenant_index]["tenant_id"]
    response = requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_id": facts["demo_client_id"],
        "client_secret": facts["demo_client_secret"], "scope": tenant}, timeout=TIMEOUT)
    name, _, value = query.partition("=")
    answer = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient?{name}={quote(value)}",
                          headers=bearer(response.json()["access_token"]), timeout=TIMEOUT)
    assert_operation_outcome(answer, 400, "invalid")
    assert "ASCII" in json.dumps(answer.json())


# --- item 5: JSON bodies with duplicate keys are refused -------------------------------------------

@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b'{"x": {"kind": "none", "kind": "bearer"}}',
                                 b'[{"url": "a"}, {"url": "b", "url": "c"}]', b'{"n": NaN}', b'{"n": -Infinity}',
                                 b'"\xff"'])
def test_loads_strict_refuses_duplicate_keys_and_non_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson):
        loads_strict(raw)


def test_loads_strict_parses_ordinary_json() -> None:
    assert loads_strict(b'{"a": [1, {"b": null}], "c": "\\u00e9"}') == {"a": [1, {"b": None}], "c": "\u00e9"}


def test_management_json_with_duplicate_keys_is_400_and_nothing_stored(manage: Any, client_id: str) -> None:
    tenant_id = new_tenant_id()
    raw = (b'{"provider_base_url": "https://ehr.example.org/fhir", "fhir_version": "stu3", "allowed_clients": [],'
           b' "upstream_auth": {"kind": "none", "kind": "azure_ad", "scope": "https://storage.azure.com/.default"}}')
    response = manage("PUT", f"/tenants/{tenant_id}", data=raw, headers={"Content-Type": "application/json"})
    assert "duplicate key 'kind'" in assert_problem(response, 400, "body")["detail"]
    assert manage("GET", f"/tenants/{tenant_id}").status_code == 404
    response = manage("POST", "/clients", data=b'{"name": "a", "name": "b"}',
                      headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "body")


def test_portal_forms_with_a_repeated_field_are_refused(facts: dict[str, Any]) -> None:
    user = PortalUser(facts["portal_url"])
    token = user.form_token("/signin")
    body = (f"form_token={token}&client_id={facts['demo_client_id']}&client_id=other"
            f"&client_secret={quote(facts['demo_client_secret'])}")
    reply = user.http.post(f"{facts['portal_url']}/signin", data=body, allow_redirects=False, timeout=TIMEOUT,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 400 and "Set-Cookie" not in reply.headers


# --- item 6: rate limits key on the trusted hop, not on what the client writes ---------------------
# The local host passes X-Forwarded-For as sent, so each request carries what Azure's front end
# would make of it: the client's own (random) value, then the hop the front end appends for the
# socket it accepted. Only that last hop may count (CLIENT_ADDRESS_TRUSTED_HOPS=1).

def _random_ipv4() -> str:
    return str(ipaddress.IPv4Address(secrets.randbits(32)))


@pytest.mark.parametrize("front_end_hop", ["198.51.100.201", "[2001:db8:13:13::1]:443"])
def test_thirty_failed_secrets_with_random_forwarded_for_get_429(stack: Any, front_end_hop: str) -> None:
    client = create_client(stack.manage, "Spoofing test client")
    secret_id = client["client_secret"].partition("~")[0]
    statuses = []
    for index in range(30):
        hop = front_end_hop
        if hop.startswith("["):  # another address of the same /64 each time
            hop = f"[2001:db8:13:13::{index + 2:x}]:443"
        guess = f"{secret_id}~{secrets.token_urlsafe(32)}"
        response = requests.post(stack.facts["token_url"], timeout=TIMEOUT, data={
            "grant_type": "client_credentials", "client_id": client["client_id"], "client_secret": guess,
            "scope": new_tenant_id()}, headers={"X-Forwarded-For": f"{_random_ipv4()}, {hop}"})
        statuses.append(response.status_code)
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses


def test_portal_sign_in_limits_key_on_the_trusted_hop_too(facts: dict[str, Any]) -> None:
    user = PortalUser(facts["portal_url"])
    token = user.form_token("/signin")
    statuses = []
    for _ in range(31):  # PORTAL_ATTEMPTS_PER_IP (30), each for a different made-up client
        user.http.headers["X-Forwarded-For"] = f"{_random_ipv4()}, 198.51.100.202"
        statuses.append(user.post("/signin", {"form_token": token, "client_id": str(uuid.uuid4()),
                                              "client_secret": "wrong"}).status_code)
    assert statuses[:30] == [400] * 30 and statuses[30] == 429, statuses


# --- item 8: portal sessions can be revoked --------------------------------------------------------

def _signed_in(portal: str, cookie: str) -> bool:
    """Whether a bare copy of a session cookie (another browser, or a thief) still opens the portal."""
    page = requests.get(f"{portal}/secrets", cookies={"portal_session": cookie}, allow_redirects=False,
                        headers={"X-Forwarded-For": "198.51.100.203"}, timeout=TIMEOUT)
    assert page.status_code in (200, 303), page.status_code
    return page.status_code == 200


def test_sign_out_ends_the_session_on_the_server(facts: dict[str, Any], manage: Any) -> None:
    user, _, _ = registered_user(facts["portal_url"], manage)
    stolen = user.http.cookies["portal_session"]
    assert _signed_in(facts["portal_url"], stolen)
    assert user.post("/signout", {"csrf_token": user.csrf_token()}).status_code == 303
    assert not _signed_in(facts["portal_url"], stolen)


def test_deleting_the_secret_a_session_signed_in_with_ends_it(facts: dict[str, Any], manage: Any) -> None:
    user, client_id, first = registered_user(facts["portal_url"], manage)
    second = manage("POST", f"/clients/{client_id}/secrets", json={}).json()
    other = PortalUser(facts["portal_url"])
    assert other.sign_in(client_id, second["client_secret"]).status_code == 303
    on_first, on_second = user.http.cookies["portal_session"], other.http.cookies["portal_session"]
    assert manage("DELETE", f"/clients/{client_id}/secrets/{first.partition('~')[0]}").status_code == 204
    assert not _signed_in(facts["portal_url"], on_first)
    assert _signed_in(facts["portal_url"], on_second)  # bound to its own secret, which lives on


def test_disabling_the_client_ends_all_its_sessions(facts: dict[str, Any], manage: Any) -> None:
    user, client_id, secret = registered_user(facts["portal_url"], manage)
    other = PortalUser(facts["portal_url"])
    assert other.sign_in(client_id, secret).status_code == 303
    cookies = [user.http.cookies["portal_session"], other.http.cookies["portal_session"]]
    assert all(_signed_in(facts["portal_url"], c) for c in cookies)
    assert manage("POST", f"/clients/{client_id}/disable").status_code == 200
    assert not any(_signed_in(facts["portal_url"], c) for c in cookies)


# --- item 7: anonymous /api/health is cached -------------------------------------------------------

class Dependency:
    """A dependency that counts its probes; it can be made to fail."""

    def __init__(self) -> None:
        self.calls, self.down = 0, False

    def ping(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("key_vault")


def test_a_dependency_is_probed_at_most_once_per_ttl() -> None:
    now = [0.0]
    dependency = Dependency()
    cached = CachedProbe(dependency.ping, 15, clock=lambda: now[0])
    assert [cached.status() for _ in range(100)] == ["ok"] * 100 and dependency.calls == 1
    dependency.down = True
    now[0] = 14.9
    assert cached.status() == "ok" and dependency.calls == 1
    now[0] = 15.0
    assert cached.status() == "unavailable" and dependency.calls == 2


def test_a_hundred_anonymous_health_calls_cost_at_most_one_vault_request(stack: Any, gateway: str) -> None:
    control = stack.processes["keyvault"].ready["control_url"]
    requests.get(f"{gateway}/api/health", timeout=TIMEOUT)  # the instance's first probe, if not done yet
    requests.post(f"{control}/reset-stats", timeout=TIMEOUT)
    answers = {requests.get(f"{gateway}/api/health", timeout=TIMEOUT).status_code for _ in range(100)}
    assert answers == {200}
    assert requests.get(f"{control}/stats", timeout=TIMEOUT).json()["total"] <= 2  # a 401 challenge + one list


# --- helpers for the proxy (items the lead wires into shared/proxy.py) -----------------------------

PROVIDER_BASE = "https://ehr.example.org/fhir"


def _to_gateway(url: str) -> str:
    return "https://gw.example/api/fhir/stu3" + url[len(PROVIDER_BASE):]


@pytest.mark.parametrize(("location", "sent"), [
    (f"{PROVIDER_BASE}/Patient/1/_history/2", "https://gw.example/api/fhir/stu3/Patient/1/_history/2"),
    ("https://attacker.example/phish", None), (f"{PROVIDER_BASE}2/Patient/1", None),
    ("//attacker.example/x", None), ("/admin", None), ("", None), (None, None),
    ("https://ehr.example.org/other/Patient/1", None)])
def test_a_location_header_naming_another_host_is_dropped(location: str | None, sent: str | None) -> None:
    assert client_location(location, PROVIDER_BASE, _to_gateway) == sent


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_provider_redirects_become_502(status: int) -> None:
    with pytest.raises(FhirError) as caught:
        check_not_redirect(status)
    assert caught.value.status == 502
    for fine in (200, 304, 404, 500):
        check_not_redirect(fine)


def test_a_passed_through_batch_is_rebuilt_from_the_validated_entries() -> None:
    raw = (b'{"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET",'
           b' "url": "Patient/1", "url": "Observation?patient=Patient/1&_count=5"}, "resource": {"x": 1}}]}')
    with pytest.raises(InvalidJson):  # the proxy's batch parse refuses this first (loads_strict)
        loads_strict(raw)
    entries = json.loads(raw)["entry"]
    actions = [batch_entry_interaction(entry) for entry in entries]
    forwarded = json.loads(passthrough_bundle(actions))
    assert forwarded == {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation?patient=Patient%2F1&_count=5"}}]}


def test_page_links_are_accepted_only_as_signed_for_the_tenant() -> None:
    key, query = b"k" * 32, (("_getpages", "abc"), ("_getpagesoffset", "20"), ("_count", "10"))
    signed = sign_page_query(key, "tenant-a", query)
    assert verified_page_query(key, "tenant-a", signed) == query
    forged = [query, (*signed[:-1], ("_count", "11"), *signed[-1:]), (*signed, ("x", "1")),
              ((signed[-1]), *query)]
    for attempt in [*forged, sign_page_query(key, "tenant-b", query), sign_page_query(b"x" * 32, "tenant-a", query)]:
        with pytest.raises(FhirError) as caught:
            verified_page_query(key, "tenant-a", attempt)
        assert caught.value.status == 400
class CountingVault:
    """Just enough of a SecretStore for the paging key: a dict, and the thread of every read."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.read_on: list[int] = []

    def get_secret(self, name: str) -> SecretRecord:
        self.read_on.append(threading.get_ident())
        if name not in self.values:
            raise NotFound(name)
        return SecretRecord(name, self.values[name])

    def set_secret(self, name: str, value: str, **attributes: Any) -> SecretRecord:
        self.values[name] = value
        return SecretRecord(name, value)


def test_the_paging_key_is_created_once_cached_and_never_read_on_the_event_loop() -> None:
    vault, clock = CountingVault(), [0.0]
    key = PagingKey(vault, lambda: clock[0])

    async def read_on_the_loop() -> bytes:
        return await inline_or_thread(key.current)

    first = asyncio.run(read_on_the_loop())
    assert list(vault.values) == [PAGING_KEY_NAME] and len(first) == 32
    assert vault.read_on and threading.get_ident() not in vault.read_on  # cold: read on a thread
    reads = len(vault.read_on)
    assert asyncio.run(read_on_the_loop()) == first and len(vault.read_on) == reads  # warm: from memory
    clock[0] += 301
    assert asyncio.run(read_on_the_loop()) == first and len(vault.read_on) == reads + 1  # past its TTL: re-read
    assert threading.get_ident() not in vault.read_on
    assert PagingKey(vault).current() == first  # another instance shares it


def test_a_signed_page_link_goes_to_the_provider_without_its_mac_and_only_for_its_tenant() -> None:
    links = PageLinks(b"k" * 32, "tenant-a")
    signed = links.sign("_getpages=a/b&_getpagesoffset=10")
    assert signed is not None and signed.startswith("_getpages=a%2Fb&_getpagesoffset=10&_gateway_page=")
    followed = interaction_for("GET", "", signed)
    assert links.verified(followed).query == (("_getpages", "a/b"), ("_getpagesoffset", "10"))
    for other in (PageLinks(b"k" * 32, "tenant-b"), PageLinks(b"j" * 32, "tenant-a")):
        with pytest.raises(FhirError) as caught:
            other.verified(followed)
        assert caught.value.status == 400
    search = interaction_for("GET", "Patient", "name=x")
    assert links.verified(search) is search  # searches are judged by policy, not signed


def test_page_link_queries_the_gateway_would_refuse_anyway_are_left_unsigned() -> None:
    links = PageLinks(b"k" * 32, "tenant-a")
    for query in ("_getpages=\ud800", "bad name=1", "_count=\u00b2", "&".join(["a=1"] * 101)):
        assert links.sign(query) is None, query


