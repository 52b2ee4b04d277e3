"""Backend clients' public keys and the checks on their signed assertions (RFC 7523, SMART Backend Services)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from devtools.upstream_idp.protocol import Refusal

MAX_ASSERTION_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes ahead
CLOCK_SKEW = 30

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def alg_for(key: object) -> str:
    """The one SMART algorithm a key can verify; anything else is refused at registration."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError("backend client keys must be RSA or EC P-384 public keys (RS384 / ES384)")


def load_public_key(public_key: str | bytes | dict) -> PublicKey:
    """A PEM text or a JWK object; refused unless :func:`alg_for` knows its algorithm."""
    if isinstance(public_key, dict):
        key = jwt.PyJWK(public_key).key
    else:
        data = public_key.encode() if isinstance(public_key, str) else public_key
        key = load_pem_public_key(data)
    alg_for(key)
    return key


def unverified_parts(assertion: str) -> tuple[dict[str, Any], str]:
    """The header and iss, read before verification only to pick the key that verifies them."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Refusal("invalid_client", "client_assertion is not a JWT", 401) from None
    if header.get("alg") not in ("RS384", "ES384"):
        raise Refusal("invalid_client", "assertion alg must be RS384 or ES384", 401)
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise Refusal("invalid_client", "assertion header must carry a kid", 401)
    if not isinstance(claims.get("iss"), str):
        raise Refusal("invalid_client", "assertion must carry iss", 401)
    return header, claims["iss"]


def verified_claims(assertion: str, key: PublicKey, alg: str, client_id: str, token_url: str) -> dict:
    try:
        claims = jwt.decode(
            assertion, key, algorithms=[alg], audience=token_url, issuer=client_id, leeway=CLOCK_SKEW,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.InvalidAudienceError:
        raise Refusal("invalid_client", f"assertion aud must be {token_url}", 401) from None
    except jwt.InvalidTokenError as exc:
        raise Refusal("invalid_client", f"assertion rejected: {exc}", 401) from None
    if claims["sub"] != client_id:
        raise Refusal("invalid_client", "assertion sub must equal iss (the client_id)", 401)
    if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise Refusal("invalid_client", "assertion exp is more than five minutes ahead", 401)
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise Refusal("invalid_client", "assertion jti must be a non-empty string", 401)
    return claims
