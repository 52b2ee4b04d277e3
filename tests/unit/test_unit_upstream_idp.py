"""The upstream authorization server's wire rules and assertion checks, without a socket.

tests/test_upstream_auth.py drives the same server over HTTP with the gateway's real clients.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtools.upstream_idp.keys import alg_for, load_public_key, unverified_parts, verified_claims
from devtools.upstream_idp.protocol import (
    Refusal,
    basic_credentials,
    client_auth_method,
    granted_scope,
    parse_form,
)

pytestmark = pytest.mark.unit

FORM = "application/x-www-form-urlencoded"
TOKEN_URL = "http://127.0.0.1:1/token"


def _refused(call: Callable[..., object], *args: object, **kwargs: object) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_refusal_is_an_rfc_6749_error_never_cached_and_challenges_after_basic() -> None:
    assert Refusal("invalid_request", "no").result() == (
        400,
        {"error": "invalid_request", "error_description": "no"},
        {"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
    status, _, headers = Refusal("invalid_client", "no", 401, basic=True).result()
    assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="upstream-idp"')


def test_a_form_is_taken_with_any_charset_and_case_of_its_media_type() -> None:
    assert parse_form("Application/X-WWW-Form-Urlencoded; charset=utf-8", b"a=1&b=") == {"a": "1", "b": ""}
    assert parse_form(FORM, b"") == {}


@pytest.mark.parametrize(
    ("content_type", "body", "description"),
    [
        ("application/json", b"{}", f"the body must be {FORM}"),
        (None, b"a=1", f"the body must be {FORM}"),
        (FORM, b"\xff", "the form body is malformed"),
        (FORM, b"a=1&&b", "the form body is malformed"),
        (FORM, b"a=1&a=2", "a parameter is repeated (RFC 6749 §3.2)"),
    ],
)
def test_a_body_that_is_not_one_form_of_distinct_fields_is_refused(
    content_type: str | None, body: bytes, description: str
) -> None:
    assert _refused(parse_form, content_type, body).description == description


@pytest.mark.parametrize(
    ("form", "authorization", "method"),
    [
        ({}, "Basic eDp5", "client_secret_basic"),
        ({"client_secret": "s"}, None, "client_secret_post"),
        ({"client_assertion_type": "x"}, None, "private_key_jwt"),
    ],
)
def test_the_client_authentication_method_is_named_by_what_the_request_carries(
    form: dict[str, str], authorization: str | None, method: str
) -> None:
    assert client_auth_method(form, authorization) == method


def test_two_methods_no_method_or_another_scheme_are_refused() -> None:
    both = _refused(client_auth_method, {"client_secret": "s"}, "Basic eDp5")
    assert both.description == "more than one client authentication method: client_secret_basic, client_secret_post"
    assert _refused(client_auth_method, {}, None).status == 401
    assert _refused(client_auth_method, {}, "Bearer t").error == "invalid_request"


def test_basic_credentials_are_form_urlencoded_before_base64() -> None:
    encoded = base64.b64encode(b"a%3Ab:p+w%2B").decode()
    assert basic_credentials("Basic " + encoded) == ("a:b", "p w+")


@pytest.mark.parametrize("authorization", ["Basic", "Basic !!", "Basic " + base64.b64encode(b"nocolon").decode()])
def test_malformed_basic_credentials_are_refused_with_the_challenge(authorization: str) -> None:
    refusal = _refused(basic_credentials, authorization)
    assert (refusal.status, refusal.basic) == (401, True)


def test_no_scope_asked_grants_everything_allowed_unless_a_scope_is_required() -> None:
    assert granted_scope(None, frozenset({"b", "a"}), required=False) == "a b"
    assert granted_scope(None, None, required=False) == ""
    assert _refused(granted_scope, None, None, required=True).description == "scope is required"


def test_a_scope_beyond_the_allowed_set_or_an_empty_one_is_refused() -> None:
    assert granted_scope("b a", frozenset({"a", "b", "c"}), required=True) == "a b"
    assert granted_scope("anything", None, required=False) == "anything"
    assert _refused(granted_scope, "a z", frozenset({"a"}), required=False).error == "invalid_scope"
    assert _refused(granted_scope, " ", None, required=False).error == "invalid_scope"


# --------------------------------------------------------------------------- keys


def test_each_key_type_verifies_exactly_one_smart_algorithm() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assert alg_for(rsa_key) == "RS384"
    assert alg_for(ec.generate_private_key(ec.SECP384R1()).public_key()) == "ES384"
    with pytest.raises(ValueError, match="P-384"):
        load_public_key(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )


def _assertion(key: ec.EllipticCurvePrivateKey, **claims: object) -> str:
    base = {"iss": "c", "sub": "c", "aud": TOKEN_URL, "exp": int(time.time()) + 240, "jti": "j1"}
    return jwt.encode({**base, **claims}, key, algorithm="ES384", headers={"kid": "k"})


def test_a_valid_assertion_names_its_key_and_passes_every_check() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    assertion = _assertion(key)
    header, issuer = unverified_parts(assertion)
    assert (header["kid"], header["alg"], issuer) == ("k", "ES384", "c")
    assert verified_claims(assertion, key.public_key(), "ES384", "c", TOKEN_URL)["jti"] == "j1"


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"sub": "other"}, "assertion sub must equal iss (the client_id)"),
        ({"aud": "http://elsewhere/token"}, f"assertion aud must be {TOKEN_URL}"),
        ({"exp": int(time.time()) + 3600}, "assertion exp is more than five minutes ahead"),
        ({"jti": ""}, "assertion jti must be a non-empty string"),
    ],
)
def test_an_assertion_breaking_a_smart_rule_is_refused(claims: dict[str, object], description: str) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    refusal = _refused(verified_claims, _assertion(key, **claims), key.public_key(), "ES384", "c", TOKEN_URL)
    assert (refusal.status, refusal.description) == (401, description)


def test_an_assertion_signed_with_another_algorithm_is_refused_before_any_key_is_looked_up() -> None:
    token = jwt.encode({"iss": "c"}, "secret-for-hs256-only-in-this-test", algorithm="HS256", headers={"kid": "k"})
    assert _refused(unverified_parts, token).description == "assertion alg must be RS384 or ES384"
    assert _refused(unverified_parts, "not.a.jwt").description == "client_assertion is not a JWT"
