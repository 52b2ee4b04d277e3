"""The tenant routing table through the management API.

ROUTE-1 (one endpoint; tenant id -> provider FHIR endpoint) and ROUTE-2 (the partner configures the
mapping when onboarding a provider). Routes are written with optimistic concurrency (ETag,
If-Match, If-None-Match: *, RFC 9110 §13.1) and every invalid input is a 400 problem document
naming the offending field (RFC 9457).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.gateway_calls import (
    assert_oauth_error,
    assert_problem,
    client_credentials,
    create_client,
    new_tenant_id,
    put_tenant,
    route_body,
)

PROVIDER = "https://fhir.contoso-health.example/stu3"
ROUTE_FIELDS = {"tenant_id", "display_name", "provider_base_url", "fhir_version", "upstream_auth",
                "allowed_clients", "enabled", "resource_types", "batch_passthrough", "created", "updated"}


@pytest.fixture(scope="module")
def client_id(stack: Any) -> str:
    return create_client(stack.manage, "Tenant registry test client")["client_id"]


@pytest.fixture()
def body(client_id: str) -> dict[str, Any]:
    return route_body(PROVIDER, [client_id])


@pytest.fixture()
def tenant(manage: Any, body: dict[str, Any]) -> tuple[str, str]:
    """A freshly created tenant: (tenant_id, etag)."""
    tenant_id = new_tenant_id()
    created = put_tenant(manage, tenant_id, body)
    assert created.status_code == 201, created.text
    return tenant_id, created.headers["ETag"]


def get(manage: Any, tenant_id: str) -> requests.Response:
    return manage("GET", f"/tenants/{tenant_id}")


# --- ROUTE-2: create, read, replace, list ----------------------------------------------------------

def test_put_creates_a_route_201_with_an_etag_ROUTE_2(manage: Any, body: dict[str, Any]) -> None:
    tenant_id = new_tenant_id()
    response = put_tenant(manage, tenant_id, body)
    assert response.status_code == 201, response.text
    assert response.headers["ETag"]
    route = response.json()
    assert set(route) == ROUTE_FIELDS
    assert route["tenant_id"] == tenant_id
    assert route["provider_base_url"] == PROVIDER
    assert route["fhir_version"] == "stu3"
    assert route["upstream_auth"] == {"kind": "none"}
    assert route["allowed_clients"] == body["allowed_clients"]
    assert route["enabled"] is True
    fetched = get(manage, tenant_id)
    assert fetched.status_code == 200
    assert fetched.json() == route
    assert fetched.headers["ETag"] == response.headers["ETag"]


def test_put_on_an_existing_route_replaces_it_200_with_a_new_etag_ROUTE_2(
        manage: Any, tenant: tuple[str, str], body: dict[str, Any]) -> None:
    tenant_id, etag = tenant
    created = get(manage, tenant_id).json()
    replaced = put_tenant(manage, tenant_id, {**body, "display_name": "Renamed", "provider_base_url": PROVIDER + "/"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.headers["ETag"] != etag
    route = get(manage, tenant_id).json()
    assert route["display_name"] == "Renamed"
    assert route["provider_base_url"] == PROVIDER  # normalised: no trailing slash
    assert route["created"] == created["created"]


def test_a_tenant_id_is_case_insensitive_and_stored_lower_case(manage: Any, body: dict[str, Any]) -> None:
    tenant_id = new_tenant_id()
    response = put_tenant(manage, tenant_id.upper(), body)
    assert response.status_code == 201, response.text
    assert response.json()["tenant_id"] == tenant_id
    assert get(manage, tenant_id.upper()).json()["tenant_id"] == tenant_id


def test_the_listing_holds_every_route(manage: Any, tenant: tuple[str, str]) -> None:
    response = manage("GET", "/tenants")
    assert response.status_code == 200
    routes = {r["tenant_id"]: r for r in response.json()["tenants"]}
    assert tenant[0] in routes
    assert set(routes[tenant[0]]) == ROUTE_FIELDS


def test_a_route_change_applies_to_the_next_token_request_ROUTE_1_ROUTE_2(
        stack: Any, facts: dict[str, Any]) -> None:
    first, second = create_client(stack.manage, "Route client 1"), create_client(stack.manage, "Route client 2")
    tenant_id = new_tenant_id()
    provider = facts["provider_base_urls"]["stu3"]
    assert put_tenant(stack.manage, tenant_id, route_body(provider, [first["client_id"]])).status_code == 201

    def status(client: dict[str, Any]) -> int:
        return client_credentials(facts["token_url"], client["client_id"], client["client_secret"],
                                  tenant_id).status_code

    assert (status(first), status(second)) == (200, 400)
    assert put_tenant(stack.manage, tenant_id, route_body(provider, [second["client_id"]])).status_code == 200
    assert (status(first), status(second)) == (400, 200)


# --- optimistic concurrency ----------------------------------------------------------------------

def test_if_match_with_the_current_etag_replaces(manage: Any, tenant: tuple[str, str],
                                                 body: dict[str, Any]) -> None:
    tenant_id, etag = tenant
    response = put_tenant(manage, tenant_id, {**body, "display_name": "Guarded"}, **{"If-Match": etag})
    assert response.status_code == 200, response.text
    assert get(manage, tenant_id).json()["display_name"] == "Guarded"


def test_if_match_with_a_stale_etag_is_412_and_changes_nothing_RFC9110(manage: Any, tenant: tuple[str, str],
                                                                      body: dict[str, Any]) -> None:
    tenant_id, stale = tenant
    assert put_tenant(manage, tenant_id, {**body, "display_name": "Second writer"}).status_code == 200
    before = get(manage, tenant_id)
    lost_update = put_tenant(manage, tenant_id, {**body, "display_name": "First writer"}, **{"If-Match": stale})
    assert_problem(lost_update, 412)
    after = get(manage, tenant_id)
    assert after.json() == before.json()
    assert after.json()["display_name"] == "Second writer"
    assert after.headers["ETag"] == before.headers["ETag"]


def test_if_match_on_a_tenant_that_does_not_exist_is_412_RFC9110_13_1_1(manage: Any, tenant: tuple[str, str],
                                                                       body: dict[str, Any]) -> None:
    """No current representation: the If-Match condition is false, whatever the tag (also `*`)."""
    never_existed = new_tenant_id()
    for tag in (tenant[1], "*"):
        assert_problem(put_tenant(manage, never_existed, body, **{"If-Match": tag}), 412)
        assert_problem(get(manage, never_existed), 404)
    deleted, etag = tenant
    assert manage("DELETE", f"/tenants/{deleted}").status_code == 204
    assert_problem(put_tenant(manage, deleted, body, **{"If-Match": etag}), 412)
    assert_problem(get(manage, deleted), 404)


def test_if_none_match_star_creates_only_RFC9110_13_1_2(manage: Any, tenant: tuple[str, str],
                                                       body: dict[str, Any]) -> None:
    tenant_id, etag = tenant
    refused = put_tenant(manage, tenant_id, {**body, "display_name": "Overwrite"}, **{"If-None-Match": "*"})
    assert_problem(refused, 412)
    unchanged = get(manage, tenant_id)
    assert unchanged.json()["display_name"] == body["display_name"]
    assert unchanged.headers["ETag"] == etag
    fresh = new_tenant_id()
    assert put_tenant(manage, fresh, body, **{"If-None-Match": "*"}).status_code == 201


# --- disable and delete --------------------------------------------------------------------------

def test_disabling_a_route_keeps_it_but_stops_tokens_ROUTE_2(stack: Any, facts: dict[str, Any]) -> None:
    client = create_client(stack.manage, "Disabled route client")
    tenant_id = new_tenant_id()
    put = put_tenant(stack.manage, tenant_id, route_body(facts["provider_base_urls"]["stu3"], [client["client_id"]]))
    assert put.status_code == 201
    disabled = stack.manage("POST", f"/tenants/{tenant_id}/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    assert disabled.headers["ETag"] != put.headers["ETag"]
    assert get(stack.manage, tenant_id).json()["enabled"] is False
    assert_oauth_error(client_credentials(facts["token_url"], client["client_id"], client["client_secret"],
                                          tenant_id), "invalid_scope")


def test_disabling_an_unknown_route_is_404(manage: Any) -> None:
    assert_problem(manage("POST", f"/tenants/{new_tenant_id()}/disable"), 404)


def test_delete_removes_the_route_204_then_404(manage: Any, tenant: tuple[str, str]) -> None:
    tenant_id, _ = tenant
    deleted = manage("DELETE", f"/tenants/{tenant_id}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_problem(get(manage, tenant_id), 404)
    assert_problem(manage("DELETE", f"/tenants/{tenant_id}"), 404)
    assert tenant_id not in {r["tenant_id"] for r in manage("GET", "/tenants").json()["tenants"]}


def test_delete_with_a_stale_etag_is_412_and_keeps_the_route(manage: Any, tenant: tuple[str, str],
                                                             body: dict[str, Any]) -> None:
    tenant_id, stale = tenant
    assert put_tenant(manage, tenant_id, {**body, "display_name": "Changed"}).status_code == 200
    assert_problem(manage("DELETE", f"/tenants/{tenant_id}", headers={"If-Match": stale}), 412)
    assert get(manage, tenant_id).status_code == 200


@pytest.mark.parametrize("tenant_id", ["not-a-guid", "00000000000000000000000000000000"])
def test_reading_a_non_guid_tenant_is_404(manage: Any, tenant_id: str) -> None:
    assert_problem(get(manage, tenant_id), 404)


# --- validation: 400 naming the field ------------------------------------------------------------

INVALID = [
    ({"provider_base_url": "http://fhir.contoso-health.example/stu3"}, "provider_base_url"),
    ({"provider_base_url": "ftp://fhir.contoso-health.example/stu3"}, "provider_base_url"),
    ({"provider_base_url": "https://user:pass@fhir.contoso-health.example/stu3"}, "provider_base_url"),
    ({"provider_base_url": "https://fhir.contoso-health.example/stu3?x=1"}, "provider_base_url"),
    ({"provider_base_url": "/relative/fhir"}, "provider_base_url"),
    ({"provider_base_url": None}, "provider_base_url"),
    ({"fhir_version": "r5"}, "fhir_version"),
    ({"fhir_version": "STU3 "}, "fhir_version"),
    ({"upstream_auth": {"kind": "kerberos"}}, "upstream_auth.kind"),
    ({"upstream_auth": "none"}, "upstream_auth"),
    ({"upstream_auth": {"kind": "bearer", "secret_name": "provider-token", "token": "abc123"}},
     "upstream_auth.token"),
    ({"upstream_auth": {"kind": "client_credentials", "token_url": "https://idp.example/token", "client_id": "gw",
                        "secret_name": "gw", "client_secret": "s3cr3t"}}, "upstream_auth.client_secret"),
    ({"provider_url": PROVIDER}, "provider_url"),
    ({"allowed_clients": "0d76e233-c15a-4763-9348-16ce4add3796"}, "allowed_clients"),
    ({"allowed_clients": [42]}, "allowed_clients"),
    ({"allowed_clients": ["not a client id"]}, "allowed_clients"),
    ({"enabled": "yes"}, "enabled"),
    ({"tenant_id": str(uuid.uuid4())}, "tenant_id"),
    ({"display_name": "x" * 201}, "display_name"),
]


@pytest.mark.parametrize(("change", "field"), INVALID, ids=[f for _, f in INVALID])
def test_an_invalid_route_is_400_naming_the_field_and_is_not_stored(manage: Any, body: dict[str, Any],
                                                                    change: dict[str, Any], field: str) -> None:
    tenant_id = new_tenant_id()
    assert_problem(put_tenant(manage, tenant_id, {**body, **change}), 400, field)
    assert_problem(get(manage, tenant_id), 404)


REPLACEMENTS = INVALID[:3] + INVALID[8:11]


@pytest.mark.parametrize(("change", "field"), REPLACEMENTS, ids=[f for _, f in REPLACEMENTS])
def test_an_invalid_replacement_leaves_the_route_unchanged(manage: Any, tenant: tuple[str, str],
                                                           body: dict[str, Any], change: dict[str, Any],
                                                           field: str) -> None:
    tenant_id, etag = tenant
    assert_problem(put_tenant(manage, tenant_id, {**body, **change}), 400, field)
    after = get(manage, tenant_id)
    assert after.headers["ETag"] == etag
    assert after.json()["provider_base_url"] == PROVIDER


def test_a_non_guid_tenant_id_is_400_naming_tenant_id(manage: Any, body: dict[str, Any]) -> None:
    assert_problem(put_tenant(manage, "contoso-hospital", body), 400, "tenant_id")


@pytest.mark.parametrize(("raw", "field"), [(b"{broken", "body"), (b"[]", "body"), (b"null", "body")])
def test_a_body_that_is_not_a_json_object_is_400(manage: Any, raw: bytes, field: str) -> None:
    response = manage("PUT", f"/tenants/{new_tenant_id()}", data=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, field)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/fhir", "http://localhost/fhir", "http://[::1]:9/fhir"])
def test_plain_http_is_accepted_for_loopback_providers_only(manage: Any, body: dict[str, Any], url: str) -> None:
    response = put_tenant(manage, new_tenant_id(), {**body, "provider_base_url": url})
    assert response.status_code == 201, response.text
