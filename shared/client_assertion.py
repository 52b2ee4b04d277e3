"""`private_key_jwt` client authentication (SMART Backend Services, RFC 7523 §3, RFC 7521 §4.2).

Pure: the token endpoint hands over the client's registered JWK Set, its own token URL, the
client_id and the `client_assertion`; it gets back the assertion's (jti, exp) once every check
passed, and records the jti in a `ReplayStore` (Table Storage in Azure, shared by all instances)
so that no assertion is accepted twice before it expires. Every failure is RFC 6749 §5.2
`invalid_client` (401) with a reason that names the failed check, never key material.

Checks, in order: the header's `alg` is one of ES384/RS384 (SMART's required pair) or ES256/RS256
(never `none` or HMAC, which would let a public key serve as a shared secret); `kid` names a key
of the set whose type and curve fit `alg`; the signature; `iss` = `sub` = client_id; `aud` is the
token URL (alone or in a list); `exp` is present, not past, and at most five minutes ahead
(plus clock skew); `jti` is present.

`validate_jwks` is the registration side: public EC P-256/P-384 or RSA ≥ 2048-bit signing keys
with unique `kid`s, at most `MAX_KEYS`, each error naming the offending field.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jwt
from jwt.exceptions import InvalidKeyError, PyJWKError, PyJWTError

from shared.errors import InvalidField, OAuthError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# alg → the JWK (kty, crv) that can verify it; crv None for RSA.
ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "ES384": ("EC", "P-384"), "RS384": ("RSA", None), "ES256": ("EC", "P-256"), "RS256": ("RSA", None)}
MAX_LIFETIME_SECONDS = 300  # SMART: exp no more than five minutes in the future
CLOCK_SKEW_SECONDS = 30
MAX_KEYS = 10
MIN_RSA_BITS = 2048
_CURVES = frozenset(crv for _, crv in ALGORITHMS.values() if crv)
# RFC 7518 §6.2.2 / §6.3.2 private members, and `k` of a symmetric key.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_REQUIRED_CLAIMS = ["exp", "iss", "sub", "aud", "jti"]


class InvalidAssertion(OAuthError):
    """RFC 6749 §5.2: a client assertion that fails any check is `invalid_client`, 401."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid_client", f"client assertion rejected: {reason}", 401)


class Assertion(NamedTuple):
    """What the replay store needs: the assertion's id and when it stops being acceptable anyway."""

    jti: str
    exp: int


class ReplayStore(Protocol):
    """Shared by every instance. `claim` is atomic: True the first time (client, jti) is seen
    before `exp`, False on any later attempt; entries may be forgotten once `exp` has passed."""

    def claim(self, client_id: str, jti: str, exp: int) -> bool: ...


def assertion_request(form: Mapping[str, str], basic_auth: bool) -> tuple[str, str] | None:
    """(client_id, assertion) when the token request authenticates with `private_key_jwt`, else None.

    RFC 7521 §4.2: `client_id` may be omitted (the assertion's `iss` names the client) and must
    match it when sent. RFC 6749 §2.3: one authentication method per request, so an assertion
    beside a client secret or HTTP Basic is `invalid_request`.
    """
    if "client_assertion" not in form and "client_assertion_type" not in form:
        return None
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidAssertion(f"client_assertion_type must be {ASSERTION_TYPE}")
    if basic_auth or "client_secret" in form:
        raise OAuthError("invalid_request", "use one client authentication method: the assertion or a secret")
    assertion = form.get("client_assertion") or ""
    client_id = unverified_client_id(assertion)
    if form.get("client_id", client_id) != client_id:
        raise InvalidAssertion("client_id does not match the assertion's iss")
    return client_id, assertion


def unverified_client_id(assertion: str) -> str:
    """The `iss` an assertion names, to look the client up before verifying (SMART sends no client_id)."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except PyJWTError as exc:
        raise InvalidAssertion("not a JWT") from exc
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise InvalidAssertion("iss is missing")
    return issuer


def verify_assertion(jwks: Mapping[str, Any], token_url: str, client_id: str, assertion: str) -> Assertion:
    """Every check of the assertion but replay; returns its (jti, exp)."""
    alg, key = _signing_key(jwks, assertion)
    try:
        claims = jwt.decode(assertion, key, algorithms=[alg], audience=token_url, issuer=client_id,
                            leeway=CLOCK_SKEW_SECONDS, options={"require": _REQUIRED_CLAIMS})
    except PyJWTError as exc:
        raise InvalidAssertion(_describe(exc)) from exc
    if claims["sub"] != client_id:
        raise InvalidAssertion("sub must equal iss and the client_id")
    if claims["exp"] > time.time() + MAX_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS:
        raise InvalidAssertion(f"exp is more than {MAX_LIFETIME_SECONDS} seconds ahead")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise InvalidAssertion("jti must be a non-empty string")
    return Assertion(claims["jti"], int(claims["exp"]))


def accept_assertion(jwks: Mapping[str, Any], token_url: str, client_id: str, assertion: str,
                     replay: ReplayStore) -> Assertion:
    """`verify_assertion`, then the jti is claimed: a second use before exp is refused."""
    verified = verify_assertion(jwks, token_url, client_id, assertion)
    if not replay.claim(client_id, verified.jti, verified.exp):
        raise InvalidAssertion("jti was already used")
    return verified


def _signing_key(jwks: Mapping[str, Any], assertion: str) -> tuple[str, Any]:
    """The header's alg and the registered key its kid names, if that key can verify that alg."""
    try:
        header = jwt.get_unverified_header(assertion)
    except PyJWTError as exc:
        raise InvalidAssertion("not a JWT") from exc
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise InvalidAssertion(f"alg must be one of {', '.join(ALGORITHMS)}")
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    jwk = next((k for k in keys or () if isinstance(k, Mapping) and k.get("kid") == kid), None)
    if not isinstance(kid, str) or jwk is None:
        raise InvalidAssertion("kid names no key registered for this client")
    if _fits(jwk) != ALGORITHMS[alg] or jwk.get("alg", alg) != alg:
        raise InvalidAssertion(f"the key {kid!r} cannot verify {alg}")
    try:
        return alg, jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (PyJWKError, InvalidKeyError) as exc:
        raise InvalidAssertion(f"the key {kid!r} is unusable") from exc


def _fits(jwk: Mapping[str, Any]) -> tuple[object, object]:
    kty = jwk.get("kty")
    return (kty, jwk.get("crv") if kty == "EC" else None)


def _describe(exc: PyJWTError) -> str:
    """PyJWT's own messages name the failed claim (audience, expiry, issuer) without key material."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature does not verify with the registered key"
    return str(exc) or type(exc).__name__


def validate_jwks(value: object, field: str = "jwks") -> dict[str, Any]:
    """A JWK Set fit for registration: public signing keys only; errors name the field."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise _bad(field, "must be a JWK Set: an object with a \"keys\" array")
    keys = value["keys"]
    if not 1 <= len(keys) <= MAX_KEYS:
        raise _bad(f"{field}.keys", f"must hold between 1 and {MAX_KEYS} keys")
    kids: set[str] = set()
    for index, key in enumerate(keys):
        where = f"{field}.keys[{index}]"
        _check_key(key, where)
        if key["kid"] in kids:
            raise _bad(f"{where}.kid", "kid must be unique within the set")
        kids.add(key["kid"])
    return {"keys": [dict(key) for key in keys]}


def _check_key(key: object, where: str) -> None:
    if not isinstance(key, dict):
        raise _bad(where, "must be a JWK object")
    private = next((m for m in _PRIVATE_MEMBERS if m in key), None)
    if private is not None:
        raise _bad(f"{where}.{private}", "private key material must never be registered; send the public key")
    if not isinstance(key.get("kid"), str) or not key["kid"]:
        raise _bad(f"{where}.kid", "every key needs a kid")
    if key.get("kty") not in ("EC", "RSA"):
        raise _bad(f"{where}.kty", "must be EC or RSA")
    if key["kty"] == "EC" and key.get("crv") not in _CURVES:
        raise _bad(f"{where}.crv", f"EC keys must use {' or '.join(sorted(_CURVES))}")
    if "alg" in key and (key["alg"] not in ALGORITHMS or ALGORITHMS[key["alg"]] != _fits(key)):
        raise _bad(f"{where}.alg", f"must be one of {', '.join(ALGORITHMS)} and fit the key type")
    if key.get("use", "sig") != "sig":
        raise _bad(f"{where}.use", "must be sig")
    try:
        parsed = jwt.PyJWK(key).key
    except (PyJWKError, InvalidKeyError, ValueError) as exc:
        raise _bad(where, "is not a valid public key") from exc
    if key["kty"] == "RSA" and parsed.key_size < MIN_RSA_BITS:
        raise _bad(f"{where}.n", f"RSA keys must have at least {MIN_RSA_BITS} bits")


def _bad(field: str, detail: str) -> InvalidField:
    return InvalidField(field, detail, subject="JWK Set")
