"""The token endpoint and token verification (shared/token_service.py) over the store fakes.

What is proven here without a running host: the RFC 6749 error shapes a client sees, the RFC 8725
checks that refuse forged, expired or over-long tokens, the signing-key ring's rotation and
revocation, the failure throttle's limits on a hand-moved clock, and that a warm instance issues
and verifies tokens without a single store call.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shared.client_auth import ClientAuthThrottle
from shared.errors import OAuthError, StoreUnavailable
from shared.signing import PREFIX, RING, KeyRing
from shared.token_service import InvalidToken, TokenService
from shared.urls import Urls
from tests.fakes import Clock, FakeSecretStore
from tests.unit.world import FORM, URLS, World, build_world, oauth_error

pytestmark = pytest.mark.unit


@pytest.fixture()
def world() -> World:
    return build_world()


@pytest.fixture()
def granted(world: World) -> tuple[str, str, str]:
    """(client_id, secret, tenant_id): a client allowed on one tenant."""
    client_id, secret = world.client()
    return client_id, secret, world.tenant(allowed=(client_id,))


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _forge(world: World, claims: dict, *, key: ec.EllipticCurvePrivateKey | None = None,
           headers: dict | None = None) -> str:
    """A token signed as the gateway would, with the caller's claims (by default with the real key:
    a stolen key is the worst case the verifier must still bound)."""
    current = world.keys.current()
    return jwt.encode(claims, key or current.private_key, algorithm="ES256",
                      headers={"kid": current.kid, "typ": "at+jwt", **(headers or {})})


def _claims(world: World, granted: tuple[str, str, str], **changes: object) -> dict:
    client_id, _, tenant_id = granted
    now = int(time.time())
    claims = {"iss": URLS.issuer, "aud": URLS.audience, "sub": client_id, "client_id": client_id, "tid": tenant_id,
              "scope": tenant_id, "iat": now, "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


# --- issuing ---------------------------------------------------------------------------------------------

def test_issued_token_is_an_es256_access_jwt_for_exactly_the_requested_tenant(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    answer = world.token_request(client_id, secret, tenant_id)
    assert (answer["token_type"], answer["expires_in"], answer["scope"]) == ("Bearer", 3600, tenant_id)
    header = jwt.get_unverified_header(answer["access_token"])
    assert (header["alg"], header["typ"], header["kid"]) == ("ES256", "at+jwt", world.keys.current().kid)
    claims = jwt.decode(answer["access_token"], world.keys.current().private_key.public_key(), algorithms=["ES256"],
                        audience=URLS.audience, issuer=URLS.issuer)
    assert (claims["sub"], claims["tid"], claims["scope"]) == (client_id, tenant_id, tenant_id)
    assert claims["exp"] - claims["iat"] == 3600


def test_verify_returns_the_client_and_tenant_the_token_was_issued_for(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    claims = world.tokens.verify(world.token(client_id, secret, tenant_id), URLS)
    assert (claims.client_id, claims.tenant_id) == (client_id, tenant_id)


def test_basic_authentication_is_accepted_like_body_credentials(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    body = urlencode({"grant_type": "client_credentials", "scope": tenant_id}).encode()
    answer = world.tokens.issue(body, {**FORM, "authorization": _basic(client_id, secret)}, URLS)
    assert world.tokens.verify(answer["access_token"], URLS).client_id == client_id


def test_every_token_has_its_own_jti(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    jtis = {world.tokens.verify(world.token(client_id, secret, tenant_id), URLS).jti for _ in range(3)}
    assert len(jtis) == 3


# --- RFC 6749 §5.2 error shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize(("form", "error"), [
    ({"client_id": "x", "client_secret": "y", "scope": "s"}, "invalid_request"),  # no grant_type
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"grant_type": "client_credentials", "grant-type": "password"}, "invalid_request"),
])
def test_grant_problems_are_answered_before_any_credential_is_looked_at(world: World, form: dict,
                                                                        error: str) -> None:
    exc = oauth_error(lambda: world.tokens.issue(urlencode(form).encode(), FORM, URLS))
    assert (exc.error, exc.status) == (error, 400)
    assert world.client_table.calls.total() == 0


def test_a_token_request_that_is_not_a_form_is_invalid_request(world: World, granted) -> None:
    body = json.dumps({"grant_type": "client_credentials"}).encode()
    exc = oauth_error(lambda: world.tokens.issue(body, {"content-type": "application/json"}, URLS))
    assert exc.error == "invalid_request" and "x-www-form-urlencoded" in exc.description


def test_a_repeated_parameter_is_invalid_request_naming_it(world: World, granted) -> None:
    body = b"grant_type=client_credentials&scope=a&scope=b"
    exc = oauth_error(lambda: world.tokens.issue(body, FORM, URLS))
    assert exc.error == "invalid_request" and "'scope'" in exc.description


def test_missing_client_credentials_are_invalid_client_401_without_a_basic_challenge(world: World) -> None:
    exc = oauth_error(lambda: world.tokens.issue(b"grant_type=client_credentials&scope=x", FORM, URLS))
    assert (exc.error, exc.status) == ("invalid_client", 401)
    assert "WWW-Authenticate" not in exc.headers


def test_a_wrong_secret_is_invalid_client_and_the_response_is_no_store(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    wrong = secret[:17] + ("A" if secret[17] != "A" else "B") + secret[18:]
    exc = oauth_error(lambda: world.token_request(client_id, wrong, tenant_id))
    response = exc.to_response()
    assert response.status == 401
    assert json.loads(response.body) == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"


def test_a_wrong_secret_over_basic_gets_the_basic_challenge(world: World, granted) -> None:
    client_id, _, tenant_id = granted
    body = urlencode({"grant_type": "client_credentials", "scope": tenant_id}).encode()
    exc = oauth_error(lambda: world.tokens.issue(body, {**FORM, "authorization": _basic(client_id, "0" * 16 + "~x")},
                                                 URLS))
    assert exc.status == 401 and exc.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("authorization", ["Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"nocolon").decode()])
def test_a_malformed_basic_header_is_invalid_client_with_a_challenge(world: World, authorization: str) -> None:
    body = b"grant_type=client_credentials&scope=x"
    exc = oauth_error(lambda: world.tokens.issue(body, {**FORM, "authorization": authorization}, URLS))
    assert (exc.error, exc.status) == ("invalid_client", 401) and "WWW-Authenticate" in exc.headers


def test_two_authentication_methods_at_once_are_invalid_request(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    body = urlencode({"grant_type": "client_credentials", "scope": tenant_id, "client_secret": secret}).encode()
    exc = oauth_error(lambda: world.tokens.issue(body, {**FORM, "authorization": _basic(client_id, secret)}, URLS))
    assert exc.error == "invalid_request" and "one client authentication method" in exc.description


def test_a_body_client_id_other_than_basics_is_invalid_request(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    body = urlencode({"grant_type": "client_credentials", "scope": tenant_id, "client_id": str(uuid.uuid4())}).encode()
    exc = oauth_error(lambda: world.tokens.issue(body, {**FORM, "authorization": _basic(client_id, secret)}, URLS))
    assert exc.error == "invalid_request"


@pytest.mark.parametrize("scope", ["", "not-a-guid", "{t} {t}", "{t} extra"])
def test_scope_must_be_exactly_one_tenant_guid(world: World, granted, scope: str) -> None:
    client_id, secret, tenant_id = granted
    exc = oauth_error(lambda: world.token_request(client_id, secret, scope.format(t=tenant_id)))
    assert (exc.error, exc.status) == ("invalid_scope", 400)


def test_a_tenant_that_does_not_allow_the_client_is_invalid_scope(world: World, granted) -> None:
    client_id, secret, _ = granted
    other = world.tenant(allowed=())
    assert oauth_error(lambda: world.token_request(client_id, secret, other)).error == "invalid_scope"
    assert oauth_error(lambda: world.token_request(client_id, secret, str(uuid.uuid4()))).error == "invalid_scope"


def test_a_disabled_tenant_issues_no_more_tokens(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    world.token(client_id, secret, tenant_id)
    world.tenants.disable(tenant_id)
    assert oauth_error(lambda: world.token_request(client_id, secret, tenant_id)).error == "invalid_scope"


def test_a_disabled_client_with_the_right_secret_is_unauthorized_client(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    world.clients.disable(client_id)
    exc = oauth_error(lambda: world.token_request(client_id, secret, tenant_id))
    assert (exc.error, exc.status) == ("unauthorized_client", 400)


def test_each_request_writes_one_audit_line_without_secrets(world: World, granted,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    client_id, secret, tenant_id = granted
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        token = world.token(client_id, secret, tenant_id)
        oauth_error(lambda: world.token_request(client_id, "0123456789abcdef~" + "x" * 43, tenant_id))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.audit"]
    assert [(line["outcome"], line["client_id"]) for line in lines] == [("issued", client_id),
                                                                         ("invalid_client", None)]
    assert lines[0]["tenant_id"] == tenant_id and lines[0]["jti"]
    assert not any(secret in r.getMessage() or token in r.getMessage() for r in caplog.records)


# --- verification (RFC 8725) ------------------------------------------------------------------------------

def _refusal(world: World, token: str, urls: Urls = URLS) -> str:
    with pytest.raises(InvalidToken) as caught:
        world.tokens.verify(token, urls)
    return str(caught.value)


def test_an_expired_token_is_refused_as_expired() -> None:
    issued_long_ago = build_world(token_clock=lambda: time.time() - 3600 - 120)
    client_id, secret = issued_long_ago.client()
    tenant_id = issued_long_ago.tenant(allowed=(client_id,))
    assert _refusal(issued_long_ago, issued_long_ago.token(client_id, secret, tenant_id)) == "token expired"


def test_a_token_for_another_audience_is_refused(world: World, granted) -> None:
    token = world.token(*granted)
    assert _refusal(world, token, Urls("https://other-gateway.example")) == "token rejected"


def test_a_signature_by_another_key_under_our_kid_is_refused(world: World, granted) -> None:
    forged = _forge(world, _claims(world, granted), key=ec.generate_private_key(ec.SECP256R1()))
    assert _refusal(world, forged) == "token rejected"


def test_a_kid_the_ring_never_had_is_not_ours(world: World, granted) -> None:
    forged = _forge(world, _claims(world, granted), headers={"kid": "0" * 32})
    assert _refusal(world, forged) == "token not signed by this gateway"


def test_alg_none_and_hs256_are_not_ours(world: World, granted) -> None:
    kid = world.keys.current().kid
    unsigned = jwt.encode(_claims(world, granted), None, algorithm="none", headers={"kid": kid, "typ": "at+jwt"})
    hmac_signed = jwt.encode(_claims(world, granted), "k" * 32, algorithm="HS256",
                             headers={"kid": kid, "typ": "at+jwt"})
    assert _refusal(world, unsigned) == "malformed token"  # no signature part: not a compact JWS
    assert _refusal(world, hmac_signed) == "token not signed by this gateway"


def test_a_token_without_the_access_token_type_is_refused(world: World, granted) -> None:
    assert _refusal(world, _forge(world, _claims(world, granted), headers={"typ": "JWT"})) == "not an access token"


def test_a_token_living_longer_than_we_issue_is_refused_even_when_signed_by_our_key(world: World, granted) -> None:
    now = int(time.time())
    assert _refusal(world, _forge(world, _claims(world, granted, iat=now, exp=now + 3600 + 31))) == "token rejected"
    assert world.tokens.verify(_forge(world, _claims(world, granted, iat=now, exp=now + 3600)), URLS)


@pytest.mark.parametrize("changes", [
    {"scope": "something-else"},            # scope must be the tenant
    {"client_id": str(uuid.uuid4())},       # client_id must be sub
    {"jti": None},                          # every registered claim is required
    {"exp": "numeric string"},              # NumericDate, not a string PyJWT would take
])
def test_claims_that_disagree_or_are_missing_are_refused(world: World, granted, changes: dict) -> None:
    if changes.get("exp") == "numeric string":  # made now, not at collection: the suite may run for minutes
        changes = {"exp": str(int(time.time()) + 600)}
    assert _refusal(world, _forge(world, _claims(world, granted, **changes))) == "token rejected"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "a+b.c.d", "x" * 9000 + ".a.b"])
def test_malformed_tokens_are_refused_before_any_key_lookup(world: World, token: str) -> None:
    assert _refusal(world, token) == "malformed token"
    assert world.vault.calls.total() == 0


def test_a_verified_token_is_remembered_so_the_second_check_reads_no_store(world: World, granted) -> None:
    token = world.token(*granted)
    world.tokens.verify(token, URLS)
    before = world.vault.calls.total() + world.client_table.calls.total() + world.tenant_table.calls.total()
    world.tokens.verify(token, URLS)
    assert world.vault.calls.total() + world.client_table.calls.total() + world.tenant_table.calls.total() == before


def test_a_warm_instance_issues_tokens_without_any_store_call(world: World, granted) -> None:
    """The design goal of issue #14: once rows, peppers and keys are held, the hot path is memory only."""
    world.token(*granted)
    before = (world.vault.calls.copy(), world.client_table.calls.copy(), world.tenant_table.calls.copy())
    world.token(*granted)
    assert (world.vault.calls, world.client_table.calls, world.tenant_table.calls) == before


def test_a_cold_instance_fails_closed_while_the_tenant_table_is_down(world: World, granted) -> None:
    client_id, secret, tenant_id = granted
    cold = build_world(vault=world.vault, tenant_table=world.tenant_table, client_table=world.client_table)
    world.tenant_table.outage = StoreUnavailable("table-storage", "HTTP 503", 3.0, True)
    with pytest.raises(StoreUnavailable):
        cold.token_request(client_id, secret, tenant_id)
    world.tenant_table.outage = None
    assert cold.token(client_id, secret, tenant_id)


# --- signing keys ------------------------------------------------------------------------------------------

def test_a_fresh_vault_gets_a_signing_key_and_a_pending_one_in_jwks() -> None:
    vault = FakeSecretStore()
    ring = KeyRing(vault, token_lifetime=3600, cache_ttl=300)
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2 and {k["alg"] for k in jwks["keys"]} == {"ES256"}
    assert len(vault.list_secrets(PREFIX)) == 2
    index = json.loads(vault.get_secret(RING).value or "[]")
    assert sorted(e["activated"] is None for e in index) == [False, True], "one signing, one pending"


def test_rotation_signs_with_the_pending_key_and_old_tokens_still_verify(world: World, granted) -> None:
    old_token = world.token(*granted)
    pending = {k["kid"] for k in world.keys.jwks()["keys"]} - {world.keys.current().kid}
    rotated = world.keys.rotate()
    assert {rotated.kid} == pending, "the key every instance already knew signs next"
    new_token = world.token(*granted)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.kid
    assert world.tokens.verify(old_token, URLS) and world.tokens.verify(new_token, URLS)


def test_deleting_a_signing_keys_secret_revokes_its_tokens_within_the_cache_ttl() -> None:
    clock = Clock()
    world = build_world()
    world.keys = KeyRing(world.vault, 3600, 300, clock=clock)
    world.tokens = TokenService(world.keys, world.clients, world.tenants, 3600)
    client_id, secret = world.client()
    tenant_id = world.tenant(allowed=(client_id,))
    token = world.token(client_id, secret, tenant_id)
    assert world.tokens.verify(token, URLS)
    world.vault.delete_secret(PREFIX + world.keys.current().kid)
    clock.advance(301)
    assert _refusal(world, token) == "token not signed by this gateway"


# --- failure throttle (ClientAuthThrottle) -----------------------------------------------------------------

def _throttled(clock: Clock, *, pair: int = 3, source: int = 50, client: int = 100) -> World:
    return build_world(throttle=ClientAuthThrottle(pair, source, client, 60, good_for_seconds=3600, clock=clock))


def _wrong(secret: str) -> str:
    return secret[:17] + ("A" if secret[17] != "A" else "B") + secret[18:]


def test_guessing_one_secret_from_one_source_is_slowed_down_then_released_after_the_window() -> None:
    clock = Clock()
    world = _throttled(clock)
    client_id, secret = world.client()
    tenant_id = world.tenant(allowed=(client_id,))
    for _ in range(3):
        assert oauth_error(lambda: world.token_request(client_id, _wrong(secret), tenant_id)).error == "invalid_client"
    blocked = oauth_error(lambda: world.token_request(client_id, secret, tenant_id))
    assert (blocked.error, blocked.status) == ("slow_down", 429)
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    clock.advance(61)
    assert world.token(client_id, secret, tenant_id)


def test_a_blocked_attempt_does_not_look_at_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    world = _throttled(clock, pair=1)
    client_id, secret = world.client()
    tenant_id = world.tenant(allowed=(client_id,))
    oauth_error(lambda: world.token_request(client_id, _wrong(secret), tenant_id))
    before = world.client_table.calls.copy()
    assert oauth_error(lambda: world.token_request(client_id, _wrong(secret), tenant_id)).error == "slow_down"
    assert world.client_table.calls == before


def test_one_source_spraying_many_clients_is_limited_per_source_but_other_sources_are_not() -> None:
    clock = Clock()
    world = _throttled(clock, source=4)
    clients = [world.client(f"c{i}") for i in range(5)]
    tenant_id = world.tenant(allowed=tuple(c for c, _ in clients))
    for client_id, secret in clients[:4]:
        with pytest.raises(OAuthError):
            world.token_request(client_id, _wrong(secret), tenant_id, source="198.51.100.7")
    last_id, last_secret = clients[4]
    assert oauth_error(lambda: world.token_request(last_id, last_secret, tenant_id,
                                                   source="198.51.100.7")).error == "slow_down"
    assert world.token_request(last_id, last_secret, tenant_id, source="198.51.100.8")["access_token"]


def test_a_clients_known_good_source_is_not_cut_off_by_failures_from_that_source() -> None:
    """A shared NAT address with an attacker behind it must not lock out the client that works there."""
    clock = Clock()
    world = _throttled(clock, source=2)
    good_id, good_secret = world.client("good")
    other_id, other_secret = world.client("other")
    tenant_id = world.tenant(allowed=(good_id, other_id))
    world.token(good_id, good_secret, tenant_id)
    for _ in range(2):
        oauth_error(lambda: world.token_request(other_id, _wrong(other_secret), tenant_id))
    assert oauth_error(lambda: world.token_request(other_id, other_secret, tenant_id)).error == "slow_down"
    assert world.token(good_id, good_secret, tenant_id)


def test_malformed_basic_headers_count_against_their_source() -> None:
    clock = Clock()
    world = _throttled(clock, source=2)
    headers = {**FORM, "authorization": "Basic !!!", "x-forwarded-for": "192.0.2.1"}
    for _ in range(2):
        assert oauth_error(lambda: world.tokens.issue(b"grant_type=client_credentials", headers, URLS)).status == 401
    assert oauth_error(lambda: world.tokens.issue(b"grant_type=client_credentials", headers, URLS)).status == 429
