"""The client registry through the management API: accounts, secrets, rotation, disabling.

AUTH-5 (a consumer obtains its own client_id and client_secret) and AUTH-6 (several secrets live at
once; each can be removed on its own, like Azure AD app registrations). The management API is
guarded by a Functions key (`x-functions-key`). Changes reach the token endpoint and the FHIR
proxy within SECRET_CACHE_TTL_SECONDS: the tests that prove it run on a stack of their own with a
2-second TTL and allow TTL plus a margin.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import (
    TIMEOUT,
    access_token,
    add_secret,
    assert_oauth_error,
    assert_problem,
    client_credentials,
    create_client,
    eventually,
    onboard,
    start_stack,
)

TTL = 2
WITHIN_TTL = TTL + 3.0  # the TTL, plus room for a slow request


@pytest.fixture(scope="module")
def short_ttl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("short-ttl"), ehr_versions=("stu3",),
                        SECRET_CACHE_TTL_SECONDS=str(TTL))
    try:
        yield stack
    finally:
        stack.stop()


def token_status(stack: Stack, client_id: str, secret: str, tenant: str) -> int:
    return client_credentials(stack.facts["token_url"], client_id, secret, tenant).status_code


def fhir_status(stack: Stack, token: str) -> int:
    return requests.get(f"{stack.facts['fhir_base_urls']['stu3']}/Patient", params={"_count": "1"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT).status_code


def later(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


# --- the function key ----------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/clients"), ("POST", "/clients"),
                                              ("GET", f"/clients/{uuid.uuid4()}/secrets"),
                                              ("POST", f"/clients/{uuid.uuid4()}/disable"),
                                              ("GET", "/tenants"), ("PUT", f"/tenants/{uuid.uuid4()}"),
                                              ("POST", "/signing-keys/rotate")])
def test_management_api_refuses_callers_without_the_function_key_401(facts: dict[str, Any], method: str,
                                                                      path: str) -> None:
    url = f"{facts['manage_url']}{path}"
    assert requests.request(method, url, json={"name": "x"}, timeout=TIMEOUT).status_code == 401
    wrong = {"x-functions-key": facts["manage_key"] + "x"}
    assert requests.request(method, url, json={"name": "x"}, headers=wrong, timeout=TIMEOUT).status_code == 401


# --- AUTH-5: an account with its own credentials --------------------------------------------------

def test_creating_a_client_returns_its_id_and_secret_once_AUTH_5(manage: Any, facts: dict[str, Any]) -> None:
    response = manage("POST", "/clients", json={"name": "  Contoso Patients app  "})
    assert response.status_code == 201, response.text
    assert "no-store" in response.headers["Cache-Control"]
    created = response.json()
    secret = created["client_secret"]
    uuid.UUID(created["client_id"])
    assert created["name"] == "Contoso Patients app"
    assert created["status"] == "active"
    assert created["secret"]["enabled"] is True and created["secret"]["expires_on"] is None
    assert len(secret) >= 43  # 256 random bits, base64url
    # The secret is shown once: no read of the registry returns it.
    reads = [manage("GET", "/clients"), manage("GET", f"/clients/{created['client_id']}"),
             manage("GET", f"/clients/{created['client_id']}/secrets")]
    for read in reads:
        assert read.status_code == 200, read.text
        assert secret not in read.text
        assert secret[-20:] not in read.text
    listed = {c["client_id"]: c for c in reads[0].json()["clients"]}
    assert listed[created["client_id"]]["status"] == "active"
    assert reads[1].json() == {k: created[k] for k in ("client_id", "name", "status", "created")}
    # and the secret works at the token endpoint, given a tenant that allows the client
    tenant = onboard(manage, facts["provider_base_urls"]["stu3"], [created["client_id"]])
    assert client_credentials(facts["token_url"], created["client_id"], secret, tenant).status_code == 200


def test_secret_listing_shows_metadata_never_values_AUTH_6(manage: Any) -> None:
    created = create_client(manage)
    expires = later(3600)
    second = add_secret(manage, created["client_id"], expires_on=expires.isoformat())
    response = manage("GET", f"/clients/{created['client_id']}/secrets")
    assert response.status_code == 200
    secrets = response.json()["secrets"]
    # oldest first (`created` has one-second resolution, so two secrets of the same second may come either way)
    assert [s["created"] for s in secrets] == sorted(s["created"] for s in secrets)
    by_id = {s["secret_id"]: s for s in secrets}
    assert set(by_id) == {created["secret"]["secret_id"], second["secret"]["secret_id"]}
    for listed in secrets:
        assert set(listed) == {"secret_id", "hint", "created", "expires_on", "enabled"}
        assert len(listed["hint"]) <= 4, "a hint, not a prefix of the secret"
        assert listed["enabled"] is True
    assert by_id[created["secret"]["secret_id"]]["expires_on"] is None
    assert datetime.fromisoformat(by_id[second["secret"]["secret_id"]]["expires_on"]) == expires
    for value in (created["client_secret"], second["client_secret"]):
        assert value not in response.text


# --- AUTH-6: rotation ----------------------------------------------------------------------------

def test_two_secrets_work_at_once_and_deleting_one_leaves_the_other_AUTH_6(short_ttl: Stack) -> None:
    client = create_client(short_ttl.manage, "Rotating client")
    cid = client["client_id"]
    tenant = onboard(short_ttl.manage, short_ttl.facts["provider_base_urls"]["stu3"], [cid])
    old = client
    new = add_secret(short_ttl.manage, cid)
    assert new["client_secret"] != old["client_secret"]
    assert token_status(short_ttl, cid, old["client_secret"], tenant) == 200
    assert token_status(short_ttl, cid, new["client_secret"], tenant) == 200

    deleted = short_ttl.manage("DELETE", f"/clients/{cid}/secrets/{old['secret']['secret_id']}")
    assert deleted.status_code == 204, deleted.text
    assert eventually(lambda: token_status(short_ttl, cid, old["client_secret"], tenant) == 401, WITHIN_TTL)
    assert_oauth_error(client_credentials(short_ttl.facts["token_url"], cid, old["client_secret"], tenant),
                       "invalid_client", 401)
    assert token_status(short_ttl, cid, new["client_secret"], tenant) == 200
    listed = short_ttl.manage("GET", f"/clients/{cid}/secrets").json()["secrets"]
    assert [s["secret_id"] for s in listed] == [new["secret"]["secret_id"]]
    again = short_ttl.manage("DELETE", f"/clients/{cid}/secrets/{old['secret']['secret_id']}")
    assert_problem(again, 404)


def test_deleting_the_last_live_secret_is_refused_409_AUTH_6(manage: Any, facts: dict[str, Any]) -> None:
    client = create_client(manage)
    cid, secret_id = client["client_id"], client["secret"]["secret_id"]
    assert_problem(manage("DELETE", f"/clients/{cid}/secrets/{secret_id}"), 409, "secret_id")
    tenant = onboard(manage, facts["provider_base_urls"]["stu3"], [cid])
    assert client_credentials(facts["token_url"], cid, client["client_secret"], tenant).status_code == 200
    assert len(manage("GET", f"/clients/{cid}/secrets").json()["secrets"]) == 1


def test_an_expired_secret_does_not_count_as_live_AUTH_6(short_ttl: Stack) -> None:
    """With one secret expired, the other is the last live one: deleting it is refused; the expired
    one can be cleaned up."""
    client = create_client(short_ttl.manage, "Client with an expiring secret")
    cid = client["client_id"]
    expires = later(4)
    expiring = add_secret(short_ttl.manage, cid, expires_on=expires.isoformat())
    assert datetime.fromisoformat(expiring["secret"]["expires_on"]) == expires
    # while both are live, either may go; wait until the second has expired
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.0)
    assert_problem(short_ttl.manage("DELETE", f"/clients/{cid}/secrets/{client['secret']['secret_id']}"), 409,
                   "secret_id")
    removed = short_ttl.manage("DELETE", f"/clients/{cid}/secrets/{expiring['secret']['secret_id']}")
    assert removed.status_code == 204, removed.text


def test_a_disabled_client_gets_no_tokens_and_its_tokens_stop_working_within_the_ttl(short_ttl: Stack) -> None:
    client = create_client(short_ttl.manage, "Client to disable")
    cid, secret = client["client_id"], client["client_secret"]
    tenant = onboard(short_ttl.manage, short_ttl.facts["provider_base_urls"]["stu3"], [cid])
    token = access_token(short_ttl.facts["token_url"], cid, secret, tenant)
    assert fhir_status(short_ttl, token) == 200

    disabled = short_ttl.manage("POST", f"/clients/{cid}/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "disabled"
    assert short_ttl.manage("GET", f"/clients/{cid}").json()["status"] == "disabled"
    assert eventually(lambda: fhir_status(short_ttl, token) == 401, WITHIN_TTL)
    assert eventually(lambda: token_status(short_ttl, cid, secret, tenant) != 200, WITHIN_TTL)
    assert_oauth_error(client_credentials(short_ttl.facts["token_url"], cid, secret, tenant), "unauthorized_client")

    # A disabled client's last secret may be deleted (the 409 guard protects active clients only).
    deleted = short_ttl.manage("DELETE", f"/clients/{cid}/secrets/{client['secret']['secret_id']}")
    assert deleted.status_code == 204, deleted.text
    assert short_ttl.manage("GET", f"/clients/{cid}/secrets").json()["secrets"] == []
    assert_oauth_error(client_credentials(short_ttl.facts["token_url"], cid, secret, tenant), "invalid_client", 401)


# --- input validation and unknown clients --------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"\xff\xfe", "body"),
    (b"[1, 2]", "body"),
    (b"{}", "name"),
    (b'{"name": ""}', "name"),
    (b'{"name": 42}', "name"),
    (b'{"name": "' + b"x" * 201 + b'"}', "name"),
    (b'{"name": "ok", "expires_on": "next tuesday"}', "expires_on"),
    (b'{"name": "ok", "expires_on": "2031-01-01T00:00:00"}', "expires_on"),
    (b'{"name": "ok", "expires_on": "2001-01-01T00:00:00Z"}', "expires_on"),
])
def test_creating_a_client_validates_its_body_400_naming_the_field(manage: Any, body: bytes, field: str) -> None:
    response = manage("POST", "/clients", data=body, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, field)


@pytest.mark.parametrize(("body", "field"), [
    (b"{oops", "body"),
    (b'"a string"', "body"),
    (b'{"expires_on": "tomorrow"}', "expires_on"),
    (b'{"expires_on": "2031-01-01T00:00:00"}', "expires_on"),
    (b'{"expires_on": "2001-01-01T00:00:00+00:00"}', "expires_on"),
])
def test_adding_a_secret_validates_its_body_400_naming_the_field(manage: Any, body: bytes, field: str) -> None:
    client = create_client(manage)
    response = manage("POST", f"/clients/{client['client_id']}/secrets", data=body,
                      headers={"Content-Type": "application/json"})
    assert_problem(response, 400, field)
    assert len(manage("GET", f"/clients/{client['client_id']}/secrets").json()["secrets"]) == 1


@pytest.mark.parametrize("client_id", [str(uuid.uuid4()), "not-a-client-id"])
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/disable"), ("GET", "/secrets"),
                                                ("POST", "/secrets"), ("DELETE", "/secrets/0123456789abcdef")])
def test_an_unknown_client_is_404_problem(manage: Any, client_id: str, method: str, suffix: str) -> None:
    assert_problem(manage(method, f"/clients/{client_id}{suffix}", json={}), 404)


def test_deleting_an_unknown_secret_of_a_known_client_is_404_problem(manage: Any) -> None:
    client = create_client(manage)
    assert_problem(manage("DELETE", f"/clients/{client['client_id']}/secrets/0123456789abcdef"), 404)


def test_a_client_listing_includes_every_created_client(manage: Any) -> None:
    made = {create_client(manage, f"Listed client {i}")["client_id"] for i in range(2)}
    listed = {c["client_id"] for c in manage("GET", "/clients").json()["clients"]}
    assert made <= listed
