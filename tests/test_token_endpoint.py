"""The token endpoint: OAuth 2.0 client credentials (RFC 6749 §4.4) for one tenant per token.

AUTH-1 (client credentials grant, form POST, access_token/token_type/expires_in), AUTH-2 (scope is
the tenant GUID; the token carries it), AUTH-7 (the seed's `grant-type` spelling), and every error
of RFC 6749 §5.2 the endpoint can produce, each with its status, JSON body and no internals.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from tests.gateway_calls import (
    TIMEOUT,
    access_token,
    add_secret,
    assert_oauth_error,
    basic,
    client_credentials,
    create_client,
    eventually,
    onboard,
    put_tenant,
    request_token,
    route_body,
)

GRANT = "client_credentials"


@pytest.fixture(scope="module")
def provider(facts: dict[str, Any]) -> str:
    return facts["provider_base_urls"]["stu3"]


@pytest.fixture(scope="module")
def client(stack: Any) -> dict[str, Any]:
    return create_client(stack.manage, "Token endpoint test client")


@pytest.fixture(scope="module")
def other_client(stack: Any) -> dict[str, Any]:
    return create_client(stack.manage, "Token endpoint test client B")


@pytest.fixture(scope="module")
def tenant(stack: Any, provider: str, client: dict[str, Any], other_client: dict[str, Any]) -> str:
    return onboard(stack.manage, provider, [client["client_id"], other_client["client_id"]])


@pytest.fixture(scope="module")
def token_url(facts: dict[str, Any]) -> str:
    return facts["token_url"]


@pytest.fixture()
def form(client: dict[str, Any], tenant: str) -> dict[str, str]:
    """A valid client_secret_post request; tests take pieces away or change them."""
    return {"grant_type": GRANT, "client_id": client["client_id"], "client_secret": client["client_secret"],
            "scope": tenant}


def jwks(gateway: str) -> dict[str, jwt.PyJWK]:
    keys = requests.get(f"{gateway}/api/oauth2/jwks", timeout=TIMEOUT).json()["keys"]
    return {k["kid"]: jwt.PyJWK(k) for k in keys}


def verified_claims(gateway: str, token: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    key = jwks(gateway)[header["kid"]]
    return jwt.decode(token, key.key, algorithms=["ES256"], audience=f"{gateway}/api/fhir",
                      issuer=f"{gateway}/api/oauth2", options={"require": ["exp", "iat", "nbf", "jti", "sub"]})


def fhir_read(facts: dict[str, Any], token: str) -> requests.Response:
    return requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", params={"_count": "1"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


# --- AUTH-1: success ---------------------------------------------------------------------------------

def assert_token_response(response: requests.Response, tenant: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    assert "no-store" in response.headers["Cache-Control"]  # RFC 6749 §5.1
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["scope"] == tenant
    assert "refresh_token" not in body  # RFC 6749 §4.4.3: SHOULD NOT for client credentials
    return body


def test_client_secret_post_gets_a_bearer_token_AUTH_1(token_url: str, form: dict[str, str], tenant: str) -> None:
    assert_token_response(request_token(token_url, form), tenant)


def test_client_secret_basic_gets_a_bearer_token_AUTH_1(token_url: str, client: dict[str, Any],
                                                        tenant: str) -> None:
    response = request_token(token_url, {"grant_type": GRANT, "scope": tenant},
                             {"Authorization": basic(client["client_id"], client["client_secret"])})
    assert_token_response(response, tenant)


def test_client_secret_basic_credentials_are_form_url_decoded_RFC6749_2_3_1(
        token_url: str, client: dict[str, Any], tenant: str) -> None:
    """The secret's `~` sent as %7E must decode back to `~` (Basic user and password are form-encoded)."""
    assert "~" in client["client_secret"]
    header = basic(client["client_id"], client["client_secret"], encode_every_tilde=True)
    assert "%7E" in base64.b64decode(header.split()[1]).decode()
    assert_token_response(request_token(token_url, {"grant_type": GRANT, "scope": tenant},
                                        {"Authorization": header}), tenant)


def test_basic_with_the_same_client_id_in_the_body_is_accepted(token_url: str, client: dict[str, Any],
                                                               tenant: str) -> None:
    response = request_token(token_url, {"grant_type": GRANT, "client_id": client["client_id"], "scope": tenant},
                             {"Authorization": basic(client["client_id"], client["client_secret"])})
    assert_token_response(response, tenant)


def test_form_content_type_with_charset_is_accepted(token_url: str, form: dict[str, str], tenant: str) -> None:
    body = "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in form.items())
    response = request_token(token_url, body,
                             {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_token_response(response, tenant)


def test_seed_spelling_grant_hyphen_type_is_accepted_AUTH_7(token_url: str, form: dict[str, str],
                                                            tenant: str) -> None:
    form["grant-type"] = form.pop("grant_type")
    assert_token_response(request_token(token_url, form), tenant)


def test_tenant_id_scope_is_case_insensitive_and_returned_canonical_AUTH_2(
        token_url: str, form: dict[str, str], tenant: str) -> None:
    form["scope"] = tenant.upper()
    assert_token_response(request_token(token_url, form), tenant)


def test_access_token_is_an_es256_jwt_for_the_tenant_verifiable_with_the_jwks_AUTH_2(
        gateway: str, token_url: str, form: dict[str, str], client: dict[str, Any], tenant: str) -> None:
    body = assert_token_response(request_token(token_url, form), tenant)
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] in jwks(gateway)
    claims = verified_claims(gateway, token)
    for absolute in (claims["iss"], claims["aud"]):
        parts = urlsplit(absolute)
        assert f"{parts.scheme}://{parts.netloc}" == gateway
    assert claims["sub"] == claims["client_id"] == client["client_id"]
    assert claims["tid"] == tenant
    assert claims["scope"] == tenant  # AUTH-2: the token carries the tenant in its scope
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert abs(claims["iat"] - time.time()) < 300
    uuid.UUID(claims["jti"])
    second = verified_claims(gateway, access_token(token_url, client["client_id"], client["client_secret"], tenant))
    assert second["jti"] != claims["jti"], "every token has its own jti"


def test_the_issued_token_opens_the_fhir_facade_for_its_tenant_ROUTE_3(
        facts: dict[str, Any], token_url: str, form: dict[str, str], tenant: str) -> None:
    token = request_token(token_url, form).json()["access_token"]
    response = fhir_read(facts, token)
    assert response.status_code == 200, response.text
    assert fhir_read(facts, token + "x").status_code == 401


# --- RFC 6749 §5.2: invalid_request ------------------------------------------------------------------

def test_missing_grant_type_is_invalid_request(token_url: str, form: dict[str, str]) -> None:
    del form["grant_type"]
    assert_oauth_error(request_token(token_url, form), "invalid_request")


def test_empty_grant_type_is_invalid_request(token_url: str, form: dict[str, str]) -> None:
    form["grant_type"] = ""
    assert_oauth_error(request_token(token_url, form), "invalid_request")


def test_grant_type_and_its_seed_alias_disagreeing_is_invalid_request_AUTH_7(token_url: str,
                                                                             form: dict[str, str]) -> None:
    form["grant-type"] = "password"
    assert_oauth_error(request_token(token_url, form), "invalid_request")


@pytest.mark.parametrize("name", ["grant_type", "client_id", "client_secret", "scope", "grant-type"])
def test_a_repeated_parameter_is_invalid_request_RFC6749_3_2(token_url: str, form: dict[str, str],
                                                              name: str) -> None:
    pairs = list(form.items())
    if name == "grant-type":
        pairs = [(("grant-type" if k == "grant_type" else k), v) for k, v in pairs]
    value = dict(pairs)[name]
    assert_oauth_error(request_token(token_url, [*pairs, (name, value)]), "invalid_request")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x",
                                          None])
def test_a_body_that_is_not_form_encoded_is_invalid_request_RFC6749_4_4_2(
        token_url: str, form: dict[str, str], content_type: str | None) -> None:
    if content_type == "application/json":
        response = requests.post(token_url, json=form, timeout=TIMEOUT)
    else:
        body = "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in form.items()).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        prepared = requests.Request("POST", token_url, data=body, headers=headers).prepare()
        if content_type is None:
            prepared.headers.pop("Content-Type", None)
        response = requests.Session().send(prepared, timeout=TIMEOUT)
    assert_oauth_error(response, "invalid_request")


def test_basic_and_a_body_secret_together_are_invalid_request_RFC6749_2_3(
        token_url: str, form: dict[str, str], client: dict[str, Any]) -> None:
    """"The client MUST NOT use more than one authentication method in each request." """
    response = request_token(token_url, form, {"Authorization": basic(client["client_id"], client["client_secret"])})
    assert_oauth_error(response, "invalid_request")


def test_basic_with_a_different_client_id_in_the_body_is_invalid_request(
        token_url: str, client: dict[str, Any], other_client: dict[str, Any], tenant: str) -> None:
    response = request_token(token_url, {"grant_type": GRANT, "client_id": other_client["client_id"],
                                         "scope": tenant},
                             {"Authorization": basic(client["client_id"], client["client_secret"])})
    assert_oauth_error(response, "invalid_request")


def test_a_huge_body_is_refused_with_a_json_error(token_url: str, form: dict[str, str]) -> None:
    form["padding"] = "x" * 200_000
    response = requests.post(token_url, data=form, timeout=TIMEOUT)
    assert 400 <= response.status_code < 500, response.status_code
    assert response.json()["error"] == "invalid_request"
    assert_oauth_error(response, "invalid_request", response.status_code)


def test_too_many_parameters_is_invalid_request(token_url: str, form: dict[str, str]) -> None:
    pairs = list(form.items()) + [(f"extra{i}", "1") for i in range(40)]
    assert_oauth_error(request_token(token_url, pairs), "invalid_request")


# --- unsupported_grant_type --------------------------------------------------------------------------

@pytest.mark.parametrize("grant", ["password", "authorization_code", "refresh_token", "implicit",
                                   "urn:ietf:params:oauth:grant-type:jwt-bearer", "CLIENT_CREDENTIALS"])
def test_any_other_grant_is_unsupported_grant_type(token_url: str, form: dict[str, str], grant: str) -> None:
    form["grant_type"] = grant
    assert_oauth_error(request_token(token_url, form), "unsupported_grant_type")


# --- invalid_client ----------------------------------------------------------------------------------

def test_no_client_authentication_is_invalid_client_401(token_url: str, tenant: str) -> None:
    assert_oauth_error(request_token(token_url, {"grant_type": GRANT, "scope": tenant}), "invalid_client", 401)


def test_client_id_without_a_secret_is_invalid_client_401(token_url: str, form: dict[str, str]) -> None:
    del form["client_secret"]
    assert_oauth_error(request_token(token_url, form), "invalid_client", 401)


def tamper(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


def test_a_wrong_secret_is_invalid_client_401(token_url: str, form: dict[str, str]) -> None:
    form["client_secret"] = tamper(form["client_secret"])
    body = assert_oauth_error(request_token(token_url, form), "invalid_client", 401)
    assert form["client_secret"][:-1] not in str(body)


def test_a_wrong_secret_with_basic_is_401_with_a_basic_challenge_RFC6749_5_2(
        token_url: str, client: dict[str, Any], tenant: str) -> None:
    response = request_token(token_url, {"grant_type": GRANT, "scope": tenant},
                             {"Authorization": basic(client["client_id"], tamper(client["client_secret"]))})
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].lower().startswith("basic")


def test_an_unknown_client_is_invalid_client_401_indistinguishable_from_a_wrong_secret(
        token_url: str, form: dict[str, str]) -> None:
    wrong_secret = dict(form, client_secret=tamper(form["client_secret"]))
    unknown = dict(form, client_id=str(uuid.uuid4()))
    assert request_token(token_url, unknown).json() == request_token(token_url, wrong_secret).json()
    assert_oauth_error(request_token(token_url, unknown), "invalid_client", 401)


def test_one_clients_secret_does_not_authenticate_another_client(
        token_url: str, form: dict[str, str], other_client: dict[str, Any]) -> None:
    form["client_id"] = other_client["client_id"]  # both clients may use the tenant; only the secret is wrong
    assert_oauth_error(request_token(token_url, form), "invalid_client", 401)


@pytest.mark.parametrize("header", [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b":secret-without-id").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "Basic",
    "Bearer " + base64.b64encode(b"a:b").decode(),
])
def test_a_malformed_basic_header_is_invalid_client_401(token_url: str, tenant: str, header: str) -> None:
    response = request_token(token_url, {"grant_type": GRANT, "scope": tenant}, {"Authorization": header})
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].lower().startswith("basic")


def test_an_expired_secret_is_invalid_client(stack: Any, token_url: str, tenant: str, provider: str) -> None:
    """A secret created with expires_on stops authenticating once that moment passes (Key Vault `exp`)."""
    owner = create_client(stack.manage, "Expiring secret client")
    allowed = onboard(stack.manage, provider, [owner["client_id"]])
    expires = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
    expiring = add_secret(stack.manage, owner["client_id"], expires_on=expires.isoformat())
    assert expiring["secret"]["expires_on"] is not None
    assert client_credentials(token_url, owner["client_id"], expiring["client_secret"], allowed).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.0)
    response = client_credentials(token_url, owner["client_id"], expiring["client_secret"], allowed)
    assert_oauth_error(response, "invalid_client", 401)
    # the client's other secret, without expiry, still works
    assert client_credentials(token_url, owner["client_id"], owner["client_secret"], allowed).status_code == 200


# --- invalid_scope (AUTH-2) --------------------------------------------------------------------------

@pytest.mark.parametrize("scope", [None, "", "not-a-guid", "{00000000-0000-0000-0000-000000000000}", "two"])
def test_scope_must_be_exactly_one_tenant_guid_invalid_scope_AUTH_2(token_url: str, form: dict[str, str],
                                                                   tenant: str, scope: str | None) -> None:
    if scope is None:
        del form["scope"]
    elif scope == "two":
        form["scope"] = f"{tenant} {uuid.uuid4()}"
    else:
        form["scope"] = scope
    assert_oauth_error(request_token(token_url, form), "invalid_scope")


def test_the_same_tenant_twice_is_still_two_scopes_invalid_scope(token_url: str, form: dict[str, str],
                                                                 tenant: str) -> None:
    form["scope"] = f"{tenant} {tenant}"
    assert_oauth_error(request_token(token_url, form), "invalid_scope")


def test_an_unknown_tenant_is_invalid_scope_ROUTE_1(token_url: str, form: dict[str, str]) -> None:
    form["scope"] = str(uuid.uuid4())
    assert_oauth_error(request_token(token_url, form), "invalid_scope")


def test_a_tenant_that_does_not_allow_the_client_is_invalid_scope_AUTH_2(
        stack: Any, token_url: str, form: dict[str, str], provider: str, other_client: dict[str, Any]) -> None:
    form["scope"] = onboard(stack.manage, provider, [other_client["client_id"]])
    assert_oauth_error(request_token(token_url, form), "invalid_scope")


def test_a_disabled_tenant_is_invalid_scope_ROUTE_2(stack: Any, token_url: str, form: dict[str, str],
                                                    provider: str, client: dict[str, Any]) -> None:
    tenant_id = onboard(stack.manage, provider, [client["client_id"]])
    form["scope"] = tenant_id
    assert request_token(token_url, form).status_code == 200
    assert stack.manage("POST", f"/tenants/{tenant_id}/disable").status_code == 200
    assert_oauth_error(request_token(token_url, form), "invalid_scope")
    # and a tenant created disabled never issues tokens
    created_disabled = str(uuid.uuid4())
    put = put_tenant(stack.manage, created_disabled, route_body(provider, [client["client_id"]], enabled=False))
    assert put.status_code == 201, put.text
    form["scope"] = created_disabled
    assert_oauth_error(request_token(token_url, form), "invalid_scope")


# --- unauthorized_client -----------------------------------------------------------------------------

def test_a_disabled_client_is_unauthorized_client(stack: Any, token_url: str, provider: str) -> None:
    doomed = create_client(stack.manage, "Client to disable")
    allowed = onboard(stack.manage, provider, [doomed["client_id"]])
    assert client_credentials(token_url, doomed["client_id"], doomed["client_secret"], allowed).status_code == 200
    assert stack.manage("POST", f"/clients/{doomed['client_id']}/disable").status_code == 200
    assert eventually(lambda: client_credentials(token_url, doomed["client_id"], doomed["client_secret"],
                                                 allowed).status_code != 200, within=65)
    response = client_credentials(token_url, doomed["client_id"], doomed["client_secret"], allowed)
    assert_oauth_error(response, "unauthorized_client")


# --- every error: JSON, no internals, no secrets ------------------------------------------------------

def test_no_error_echoes_the_client_secret(token_url: str, form: dict[str, str]) -> None:
    cases = [dict(form, grant_type="password"), dict(form, scope="x"), dict(form, client_secret=form["client_secret"]
                                                                             + "x"), dict(form, client_id="nope")]
    for case in cases:
        response = request_token(token_url, case)
        assert response.status_code >= 400
        assert form["client_secret"] not in response.text
        assert response.json()["error"]


# --- signing key rotation -----------------------------------------------------------------------------

def test_rotated_signing_keys_sign_new_tokens_while_old_tokens_stay_valid(
        stack: Any, facts: dict[str, Any], gateway: str, client: dict[str, Any], tenant: str) -> None:
    """Rotation twice in quick succession: each rotation's key signs the next token (even within one
    second, the Key Vault timestamp resolution), and tokens signed before keep opening the facade."""
    before = access_token(facts["token_url"], client["client_id"], client["client_secret"], tenant)
    previous = jwt.get_unverified_header(before)["kid"]
    for _ in range(3):
        rotated = stack.manage("POST", "/signing-keys/rotate")
        assert rotated.status_code == 201, rotated.text
        kid = rotated.json()["kid"]
        assert kid != previous
        token = access_token(facts["token_url"], client["client_id"], client["client_secret"], tenant)
        assert jwt.get_unverified_header(token)["kid"] == kid
        assert {previous, kid} <= set(jwks(gateway))
        previous = kid
    assert fhir_read(facts, before).status_code == 200


# --- audit ----------------------------------------------------------------------------------------------

def token_audit_lines(stack: Any) -> list[dict[str, Any]]:
    log = (stack.state / "logs" / "gateway.log").read_text().splitlines()
    records = [json.loads(line.split("gateway.audit: ", 1)[1]) for line in log if "gateway.audit: " in line]
    return [r for r in records if r["event"] == "token-request"]


def test_every_token_request_leaves_one_audit_line_without_secrets_or_tokens(
        stack: Any, token_url: str, form: dict[str, str], client: dict[str, Any], tenant: str) -> None:
    before = len(token_audit_lines(stack))
    issued = requests.post(token_url, data=form, timeout=TIMEOUT).json()
    refused = requests.post(token_url, data={**form, "client_secret": client["client_secret"][:-2] + "xx"},
                            timeout=TIMEOUT)
    assert refused.status_code == 401
    lines = token_audit_lines(stack)[before:]
    assert [line["outcome"] for line in lines] == ["issued", "invalid_client"]
    claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
    assert lines[0] == {"event": "token-request", "outcome": "issued", "client_id": client["client_id"],
                        "tenant_id": tenant, "jti": claims["jti"]}
    assert lines[1]["client_id"] is None and lines[1]["tenant_id"] is None
    log = (stack.state / "logs" / "gateway.log").read_text()
    assert issued["access_token"] not in log and client["client_secret"] not in log
