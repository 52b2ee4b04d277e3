"""The OAuth 2.0 authorization server (client-credentials grant, RFC 6749 §4.4) and token verification.

`issue` turns a token request into a signed JWT for one tenant; `verify` is what the FHIR proxy
runs on every request. Verification follows RFC 8725: one allowed algorithm, keys only from our
own key ring by `kid` (never `jku`/`x5u`/embedded keys), and iss/aud/exp/nbf/iat all required.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote_plus

import jwt

from shared.clients import Client, ClientRegistry, InvalidClient
from shared.errors import OAuthError
from shared.routes import TenantRegistry, is_guid
from shared.signing import ALGORITHM, KeyRing
from shared.urls import Urls

GRANT = "client_credentials"
LEEWAY_SECONDS = 30
_FORM_TYPE = "application/x-www-form-urlencoded"
_SINGLE = ("grant_type", "grant-type", "client_id", "client_secret", "scope")


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message is safe to return to the client."""


@dataclass(frozen=True)
class AccessClaims:
    client_id: str
    tenant_id: str
    jti: str
    expires_at: int


def _parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    if (content_type or "").split(";")[0].strip().lower() != _FORM_TYPE:
        raise OAuthError("invalid_request", f"the token request must be {_FORM_TYPE}")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the request body is not a valid form") from exc
    repeated = sorted(k for k, v in fields.items() if len(v) > 1 and k in _SINGLE)
    if repeated:
        raise OAuthError("invalid_request", f"parameter {repeated[0]!r} must not be repeated")
    return {k: v[0] for k, v in fields.items()}


def _basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: Basic with form-urlencoded client_id and secret."""
    challenge = {"WWW-Authenticate": 'Basic realm="token", charset="UTF-8"'}
    scheme, _, encoded = header.strip().partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic authorization header", 401, challenge) from exc
    client_id, sep, secret = decoded.partition(":")
    if scheme.lower() != "basic" or not sep or not client_id:
        raise OAuthError("invalid_client", "malformed Basic authorization header", 401, challenge)
    return unquote_plus(client_id), unquote_plus(secret)


class TokenService:
    def __init__(self, keys: KeyRing, clients: ClientRegistry, tenants: TenantRegistry, lifetime: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys, self._clients, self._tenants = keys, clients, tenants
        self._lifetime, self._clock = lifetime, clock

    def issue(self, body: bytes, headers: Mapping[str, str], urls: Urls) -> dict:
        form = _parse_form(body, headers.get("content-type"))
        self._check_grant(form)
        client = self._authenticate(form, headers.get("authorization"))
        tenant_id = self._granted_tenant(form.get("scope", ""), client)
        now = int(self._clock())
        claims = {"iss": urls.issuer, "aud": urls.audience, "sub": client.client_id,
                  "client_id": client.client_id, "tid": tenant_id, "scope": tenant_id, "iat": now,
                  "nbf": now, "exp": now + self._lifetime, "jti": str(uuid.uuid4())}
        key = self._keys.current()
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"})
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime, "scope": tenant_id}

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

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> Client:
        if authorization:
            if "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method, not two")
            client_id, secret = _basic_credentials(authorization)
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials")
            challenge = {"WWW-Authenticate": 'Basic realm="token", charset="UTF-8"'}
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if not client_id or not secret:
                raise OAuthError("invalid_client", "client authentication is required", 401)
            challenge = {}
        try:
            client = self._clients.authenticate(client_id, secret)
        except InvalidClient as exc:
            raise OAuthError("invalid_client", "client authentication failed", 401, challenge) from exc
        if not client.active:
            raise OAuthError("unauthorized_client", "this client is disabled")
        return client

    def _granted_tenant(self, scope: str, client: Client) -> str:
        parts = scope.split()
        if len(parts) != 1 or not is_guid(parts[0]):
            raise OAuthError("invalid_scope", "scope must be exactly one Azure AD tenant id (a GUID)")
        route = self._tenants.resolve(parts[0])
        if route is None or not route.allows(client.client_id):
            raise OAuthError("invalid_scope", "this client may not request tokens for that tenant")
        return route.tenant_id

    def verify(self, token: str, urls: Urls) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or len(kid) != 32:
            raise InvalidToken("token not signed by this gateway")
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
        tenant, client_id = claims.get("tid"), claims.get("client_id")
        if not isinstance(tenant, str) or claims.get("scope") != tenant or client_id != claims.get("sub"):
            raise InvalidToken("token rejected")
        return AccessClaims(str(client_id), tenant, str(claims["jti"]), int(claims["exp"]))

