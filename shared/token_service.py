"""The OAuth 2.0 authorization server (client-credentials grant, RFC 6749 §4.4) and token verification.

`issue` turns a token request into a signed JWT for one tenant; `verify` is what the FHIR proxy
runs on every request. Which client is asking is the client-authentication step's to say
(shared/client_auth.py: a secret, post or Basic, or a SMART Backend Services assertion); `scope` is
the tenant id, optionally narrowed by SMART system scopes (shared/smart_scopes.py), which the token's
`scope` claim carries for the proxy to enforce. Verification follows RFC 8725: one allowed algorithm, keys only from our
own key ring by `kid` (never `jku`/`x5u`/embedded keys), and iss/aud/exp/nbf/iat all required.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from shared import telemetry
from shared.audit import TokenAudit
from shared.cache import TtlCache
from shared.client_assertion import ReplayStore
from shared.client_auth import ClientAuthenticator, ClientAuthThrottle
from shared.client_jwks import RemoteJwks
from shared.clientaddr import AddressSource
from shared.clients import Client, ClientRegistry
from shared.errors import OAuthError
from shared.http import FORM_TYPE, FormError, NotAForm, RepeatedField, parse_form
from shared.routes import TenantRegistry
from shared.signing import ALGORITHM, KeyRing
from shared.smart_scopes import Grant, grant, grant_from_claim, parse_scope, token_scope
from shared.urls import Urls

GRANT = "client_credentials"
LEEWAY_SECONDS = 30
_VERIFIED_MAX = 4096  # verified tokens remembered per instance (a few MB at most)
_SINGLE = ("grant_type", "grant-type", "client_id", "client_secret", "scope", "client_assertion",
           "client_assertion_type")


MAX_TOKEN_CHARS = 8192
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")


def _numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message is safe to return to the client."""


@dataclass(frozen=True)
class AccessClaims:
    client_id: str
    tenant_id: str
    jti: str
    expires_at: int
    grant: Grant | None = None  # the SMART system scopes the token was narrowed to; None: the whole tenant


def _token_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """The token request's fields; RFC 6749 §3.2: its own parameters must not repeat."""
    try:
        return parse_form(body, content_type, single=_SINGLE)
    except NotAForm:
        raise OAuthError("invalid_request", f"the token request must be {FORM_TYPE}") from None
    except RepeatedField as exc:
        raise OAuthError("invalid_request", f"parameter {exc.name!r} must not be repeated") from None
    except FormError as exc:
        raise OAuthError("invalid_request", "the request body is not a valid form") from exc


class TokenService:
    def __init__(self, keys: KeyRing, clients: ClientRegistry, tenants: TenantRegistry, lifetime: int,
                 clock: Callable[[], float] = time.time, throttle: ClientAuthThrottle | None = None,
                 address_source: AddressSource | None = None, replay: ReplayStore | None = None,
                 remote_jwks: RemoteJwks | None = None) -> None:
        """`throttle`, `address_source`, `replay` and `remote_jwks` are the client-authentication
        step's (shared/client_auth.py `ClientAuthenticator`)."""
        self._keys, self._tenants = keys, tenants
        self._client_auth = ClientAuthenticator(clients, throttle, address_source, replay, remote_jwks)
        self._lifetime, self._clock = lifetime, clock
        # Verified tokens by (token, audience, issuer): each held until it expires, by PyJWT's clock
        self._verified: TtlCache[tuple[str, str, str], tuple[str, AccessClaims]] = TtlCache(
            0, time.time, max_entries=_VERIFIED_MAX)

    @telemetry.token_issuance
    def issue(self, body: bytes, headers: Mapping[str, str], urls: Urls) -> dict:
        """Every outcome leaves one audit line (shared/audit.py `TokenAudit`); never a secret or token."""
        audit = TokenAudit()
        try:
            issued = self._issue(body, headers, urls, audit)
        except OAuthError as exc:
            audit.emit(exc.error)
            raise
        except Exception:
            audit.emit("error")
            raise
        # Not in a `finally`: an inline attempt interrupted by WouldBlock runs again and writes the line then.
        audit.emit("issued")
        return issued

    def _issue(self, body: bytes, headers: Mapping[str, str], urls: Urls, audit: TokenAudit) -> dict:
        form = _token_form(body, headers.get("content-type"))
        self._check_grant(form)
        client = self._client_auth.authenticate(form, headers, urls)
        audit.client_id = client.client_id
        tenant_id, scope = self._granted_scope(form.get("scope", ""), client)
        audit.tenant_id = tenant_id
        now = int(self._clock())
        jti = str(uuid.uuid4())
        claims = {"iss": urls.issuer, "aud": urls.audience, "sub": client.client_id,
                  "client_id": client.client_id, "tid": tenant_id, "scope": scope, "iat": now,
                  "nbf": now, "exp": now + self._lifetime, "jti": jti}
        audit.jti = jti
        key = self._keys.current()
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"})
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime, "scope": scope}

    @staticmethod
    def _check_grant(form: dict[str, str]) -> None:
        grant, alias = form.get("grant_type"), form.get("grant-type")
        if grant is not None and alias is not None and grant != alias:
            raise OAuthError("invalid_request", "grant_type and grant-type disagree")
        grant = grant if grant is not None else alias
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant != GRANT:
            raise OAuthError("unsupported_grant_type", f"only {GRANT} is supported")

    def _granted_scope(self, scope: str, client: Client) -> tuple[str, str]:
        """The tenant and the granted `scope`: the tenant id alone (unchanged for the Patients app), or
        followed by the SMART system scopes narrowed to the tenant's allow-list."""
        request = parse_scope(scope)
        route = self._tenants.resolve(request.tenant_id)
        if route is None or not route.allows(client.client_id):
            raise OAuthError("invalid_scope", "this client may not request tokens for that tenant")
        return route.tenant_id, token_scope(route.tenant_id, grant(request, route.resource_types))

    @telemetry.traced("token verification")
    def verify(self, token: str, urls: Urls) -> AccessClaims:
        """Verified once, then remembered until it expires: the ES256 check was the largest part of the
        proxy's per-request CPU. Only tokens that passed every check get in; a hit still needs the
        signing key to be live and the token unexpired, by the same clock and leeway as PyJWT's."""
        key = (token, urls.audience, urls.issuer)
        held = self._verified.entry(key)
        if held is not None and self._keys.find(held.value[0]) is not None:
            return held.value[1]
        # Not `get_or_load`: verifying is CPU only, so it runs inline on the loop with no single flight.
        kid, claims = self._verify_signed(token, urls)
        self._verified.put(key, (kid, claims), ttl=claims.expires_at + LEEWAY_SECONDS - time.time())
        return claims

    def _verify_signed(self, token: str, urls: Urls) -> tuple[str, AccessClaims]:
        # Compact JWS in strict base64url (no padding, no "+/"): one token, one spelling.
        if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.match(token):
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or len(kid) != 32:
            raise InvalidToken("token not signed by this gateway")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES:  # RFC 9068 §4, RFC 8725 §3.11
            raise InvalidToken("not an access token")
        key = self._keys.find(kid)
        if key is None:
            raise InvalidToken("token not signed by this gateway")
        try:
            claims = jwt.decode(token, key.private_key.public_key(), algorithms=[ALGORITHM], audience=urls.audience,
                                issuer=urls.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "tid", "jti"]})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        tenant, client_id, scope = claims.get("tid"), claims.get("client_id"), claims.get("scope")
        if not isinstance(tenant, str) or not isinstance(scope, str) or client_id != claims.get("sub"):
            raise InvalidToken("token rejected")
        try:
            granted = grant_from_claim(scope)
            if parse_scope(scope).tenant_id != tenant:
                raise InvalidToken("token rejected")
        except OAuthError as exc:
            raise InvalidToken("token rejected") from exc
        if not all(_numeric_date(claims[name]) for name in ("exp", "iat", "nbf")):  # RFC 7519 §2 (PyJWT takes "123")
            raise InvalidToken("token rejected")
        if claims["exp"] - claims["iat"] > self._lifetime + LEEWAY_SECONDS:
            # We never issue longer-lived tokens: one that claims so was minted with a stolen key
            # (or before the lifetime was lowered), and must not outlive what we would issue now.
            raise InvalidToken("token rejected")
        return kid, AccessClaims(str(client_id), tenant, str(claims["jti"]), int(claims["exp"]), granted)

