"""private_key_jwt client assertions (SMART Backend Services, RFC 7523) and JWK Set registration.

Each check of the issue's "Done when" list has its failing variant here: replay, wrong aud, far
exp, expired, wrong key, unknown kid, alg none, HS256 with the public key as secret, iss ≠ sub.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from functools import cache

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.client_assertion import (
    ASSERTION_TYPE,
    MAX_KEYS,
    InvalidAssertion,
    accept_assertion,
    assertion_request,
    unverified_client_id,
    validate_jwks,
    verify_assertion,
)
from shared.edge import problem
from shared.errors import InvalidField, OAuthError

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

TOKEN_URL = "https://gateway.example/api/oauth2/token"
CLIENT = "7d0c3b52-1111-4a5e-9f00-5c7a1e2b3c4d"


class MemoryReplayStore:
    """Test-only ReplayStore: the shared Table Storage one is the lead's."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], int] = {}

    def claim(self, client_id: str, jti: str, exp: int) -> bool:
        now = time.time()
        self.seen = {key: until for key, until in self.seen.items() if until > now}
        if (client_id, jti) in self.seen:
            return False
        self.seen[(client_id, jti)] = exp
        return True


@cache
def private_key(alg: str):
    if alg.startswith("ES"):
        return ec.generate_private_key(ec.SECP384R1() if alg == "ES384" else ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(alg: str, kid: str | None = None) -> dict:
    key = private_key(alg).public_key()
    as_jwk = ECAlgorithm.to_jwk if alg.startswith("ES") else RSAAlgorithm.to_jwk
    return {**as_jwk(key, as_dict=True), "kid": kid or alg.lower(), "use": "sig"}


JWKS = {"keys": [public_jwk(alg) for alg in ("ES384", "RS384", "ES256", "RS256")]}


def claims(**changes) -> dict:
    now = int(time.time())
    base = {"iss": CLIENT, "sub": CLIENT, "aud": TOKEN_URL, "exp": now + 240, "iat": now, "jti": str(uuid.uuid4())}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def assertion(alg: str = "ES384", kid: str | None = None, key=None, **changes) -> str:
    return jwt.encode(claims(**changes), key or private_key(alg), algorithm=alg, headers={"kid": kid or alg.lower()})


def rejected(token: str, jwks: dict = JWKS) -> str:
    with pytest.raises(InvalidAssertion) as info:
        verify_assertion(jwks, TOKEN_URL, CLIENT, token)
    assert info.value.error == "invalid_client" and info.value.status == 401
    return info.value.description.lower()


@pytest.mark.parametrize("alg", ["ES384", "RS384", "ES256", "RS256"])
def test_each_allowed_algorithm_verifies_and_returns_jti_and_exp(alg):
    token = assertion(alg, jti="abc", exp=int(time.time()) + 200)
    jti, exp = verify_assertion(JWKS, TOKEN_URL, CLIENT, token)
    assert jti == "abc" and exp > time.time()


def test_aud_may_be_a_list_holding_the_token_url():
    verify_assertion(JWKS, TOKEN_URL, CLIENT, assertion(aud=["https://other.example", TOKEN_URL]))


def test_replayed_jti_is_refused_until_it_expires():
    store, token = MemoryReplayStore(), assertion()
    accept_assertion(JWKS, TOKEN_URL, CLIENT, token, store)
    with pytest.raises(InvalidAssertion, match="jti was already used"):
        accept_assertion(JWKS, TOKEN_URL, CLIENT, token, store)
    accept_assertion(JWKS, TOKEN_URL, CLIENT, assertion(), store)  # a fresh jti passes


def test_wrong_aud_is_refused():
    assert "audience" in rejected(assertion(aud="https://gateway.example/api/other"))


def test_exp_more_than_five_minutes_ahead_is_refused():
    assert "exp is more than 300 seconds ahead" in rejected(assertion(exp=int(time.time()) + 3600))


def test_expired_assertion_is_refused():
    assert "expired" in rejected(assertion(exp=int(time.time()) - 120, iat=int(time.time()) - 300))


@pytest.mark.parametrize("missing", ["exp", "jti", "aud", "sub", "iss"])
def test_each_required_claim_must_be_present(missing):
    assert missing in rejected(assertion(**{missing: None}))


def test_signature_by_another_key_with_the_registered_kid_is_refused():
    stranger = ec.generate_private_key(ec.SECP384R1())
    assert "signature" in rejected(assertion("ES384", key=stranger))


def test_unknown_kid_is_refused():
    assert "kid names no key" in rejected(assertion(kid="nobody"))


def test_alg_none_is_refused():
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "es384"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    assert "alg must be one of" in rejected(f"{header.decode()}.{body.decode()}.")


def test_hs256_with_the_public_key_as_shared_secret_is_refused():
    pem = private_key("RS256").public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "rs256"}
    body = json.dumps(claims()).encode()
    assert "alg must be one of" in rejected(_hmac_token(body, pem, header))


def _hmac_token(body: bytes, secret: bytes, header: dict) -> str:
    """Signed by hand: PyJWT itself refuses a PEM key as an HMAC secret, an attacker would not."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_iss_different_from_sub_is_refused():
    assert "sub must equal" in rejected(assertion(sub="someone-else"))


def test_iss_other_than_the_client_is_refused():
    assert "issuer" in rejected(assertion(iss="someone-else", sub="someone-else"))


def test_alg_must_fit_the_key_type_and_curve():
    es256_under_es384_kid = assertion("ES256", kid="es384")
    assert "cannot verify es256" in rejected(es256_under_es384_kid)
    pinned = {"keys": [{**public_jwk("RS256", "k"), "alg": "RS256"}]}
    assert "cannot verify rs384" in rejected(assertion("RS384", kid="k", key=private_key("RS256")), pinned)


def test_garbage_is_refused_as_invalid_client():
    assert "not a jwt" in rejected("not.a.jwt")


def test_unverified_client_id_reads_iss_for_the_client_lookup():
    assert unverified_client_id(assertion()) == CLIENT
    with pytest.raises(InvalidAssertion):
        unverified_client_id(assertion(iss=None))


def test_a_token_form_without_an_assertion_takes_the_secret_path():
    assert assertion_request({"grant_type": "client_credentials", "client_secret": "s"}, basic_auth=False) is None


def test_a_token_form_with_an_assertion_names_the_client_by_its_iss():
    token = assertion()
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": token}
    assert assertion_request(form, basic_auth=False) == (CLIENT, token)
    assert assertion_request({**form, "client_id": CLIENT}, basic_auth=False) == (CLIENT, token)


@pytest.mark.parametrize(("changes", "basic", "error"), [
    ({"client_id": "someone-else"}, False, "invalid_client"),
    ({"client_assertion_type": "urn:other"}, False, "invalid_client"),
    ({"client_secret": "s"}, False, "invalid_request"),
    ({}, True, "invalid_request"),
    ({"client_assertion": ""}, False, "invalid_client"),
])
def test_a_token_form_with_a_bad_or_doubled_authentication_is_refused(changes, basic, error):
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(), **changes}
    with pytest.raises(OAuthError) as info:
        assertion_request(form, basic_auth=basic)
    assert info.value.error == error


# --- registration -------------------------------------------------------------------------------

def field_of(value) -> str:
    with pytest.raises(InvalidField) as info:
        validate_jwks(value)
    answer = problem(info.value)
    assert answer is not None and answer.status == 400
    return info.value.field


def test_a_valid_public_set_is_accepted_as_given():
    assert validate_jwks(JWKS) == JWKS


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi"])
def test_private_members_are_refused_naming_the_member(member):
    assert field_of({"keys": [{**public_jwk("RS256"), member: "AQAB"}]}) == f"jwks.keys[0].{member}"


def test_a_private_ec_key_is_refused():
    private = ECAlgorithm.to_jwk(private_key("ES256"), as_dict=True)
    assert field_of({"keys": [{**private, "kid": "x"}]}) == "jwks.keys[0].d"


def test_symmetric_keys_are_refused():
    assert field_of({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}) == "jwks.keys[0].k"


def test_rsa_below_2048_bits_is_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 (refused)
    assert field_of({"keys": [{**RSAAlgorithm.to_jwk(small, as_dict=True), "kid": "small"}]}) == "jwks.keys[0].n"


def test_ec_curves_other_than_p256_p384_are_refused():
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key()
    assert field_of({"keys": [{**ECAlgorithm.to_jwk(p521, as_dict=True), "kid": "x"}]}) == "jwks.keys[0].crv"


def test_kids_must_be_present_and_unique():
    assert field_of({"keys": [public_jwk("ES256", "a"), public_jwk("ES384", "a")]}) == "jwks.keys[1].kid"
    no_kid = {k: v for k, v in public_jwk("ES256").items() if k != "kid"}
    assert field_of({"keys": [no_kid]}) == "jwks.keys[0].kid"


def test_alg_and_use_members_must_fit():
    assert field_of({"keys": [{**public_jwk("ES256"), "alg": "RS256"}]}) == "jwks.keys[0].alg"
    assert field_of({"keys": [{**public_jwk("ES256"), "alg": "HS256"}]}) == "jwks.keys[0].alg"
    assert field_of({"keys": [{**public_jwk("ES256"), "use": "enc"}]}) == "jwks.keys[0].use"


def test_set_shape_and_size_are_checked():
    assert field_of([]) == "jwks"
    assert field_of({"keys": []}) == "jwks.keys"
    many = {"keys": [public_jwk("ES256", f"k{i}") for i in range(MAX_KEYS + 1)]}
    assert field_of(many) == "jwks.keys"
    assert field_of({"keys": ["x"]}) == "jwks.keys[0]"
    assert field_of({"keys": [{**public_jwk("ES256"), "x": "AAAA"}]}) == "jwks.keys[0]"
