"""``{"kind": "smart_backend", "token_url", "client_id", "secret_name", "alg", "kid", "scope"}``

SMART Backend Services: the client credentials grant with a ``private_key_jwt`` client assertion
(RFC 7523) signed with the PEM private key kept in Key Vault, ``alg`` RS384 or ES384.
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shared.upstream_auth.errors import UpstreamAuthError
from shared.upstream_auth.fields import COMMON_CHECKS, one_of
from shared.upstream_auth.kind import CredentialKind, Sources
from shared.upstream_auth.token_endpoint import Credential

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
# SMART allows at most 5 minutes; 4 leaves room for clock skew between us and the provider.
ASSERTION_LIFETIME = 240

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class SmartBackend(CredentialKind):
    name = "smart_backend"
    required = ("token_url", "client_id", "secret_name", "alg", "kid", "scope")
    checks = {**COMMON_CHECKS, "alg": one_of("alg", ALGORITHMS)}  # kid is opaque to us

    def fetch(self, config: dict, sources: Sources) -> Credential:
        key = signing_key(sources.secret(config["secret_name"]), config["alg"])
        form = {
            "grant_type": "client_credentials",
            "scope": config["scope"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(config, key, sources.clock()),
        }
        return sources.token_endpoint.request(config["token_url"], form, {})


def signing_key(pem: str, alg: str) -> SigningKey:
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise UpstreamAuthError(
            "the gateway's signing key for this provider is not an unencrypted PEM private key"
        ) from None
    if alg == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        return key
    if alg == "ES384" and isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    raise UpstreamAuthError(f"the gateway's signing key for this provider does not fit alg {alg}")


def client_assertion(config: dict, key: SigningKey, now: float) -> str:
    """RFC 7523 §3 / SMART Backend Services: iss = sub = client_id, aud = the token URL."""
    issued = int(now)
    claims = {
        "iss": config["client_id"],
        "sub": config["client_id"],
        "aud": config["token_url"],
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": str(uuid.uuid4()),
    }
    import jwt  # PyJWT loads on first use: the tenant API only validates configs

    return jwt.encode(claims, key, algorithm=config["alg"], headers={"kid": config["kid"], "typ": "JWT"})
