"""The authorization server itself: registered clients, issued tokens, used jtis, and its HTTP handler.

The wire rules are in :mod:`.protocol` and the assertion checks in :mod:`.keys`; this module
decides who the caller is, what it may have, and remembers what tests may observe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from devtools.jsonhttp import BackgroundServer, json_handler
from devtools.upstream_idp.keys import (
    CLOCK_SKEW,
    PublicKey,
    alg_for,
    load_public_key,
    unverified_parts,
    verified_claims,
)
from devtools.upstream_idp.protocol import (
    ASSERTION_TYPE,
    CREDENTIAL_FIELDS,
    INTROSPECTION_PATH,
    NO_STORE,
    TOKEN_PATH,
    Refusal,
    Result,
    basic_credentials,
    client_auth_method,
    granted_scope,
    parse_form,
    scope_set,
)

_LOG = logging.getLogger("devtools.upstream_idp")


@dataclass(frozen=True)
class _SecretClient:
    secret: str
    scopes: frozenset[str] | None


@dataclass
class _BackendClient:
    keys: dict[str, tuple[PublicKey, str]] = field(default_factory=dict)  # kid -> (key, alg)
    scopes: frozenset[str] | None = None


@dataclass(frozen=True)
class _Grant:
    client_id: str
    scope: str
    issued_at: int
    expires_at: int


def _digest(token: str) -> str:
    """Issued tokens are kept as digests, so a dump of this object reveals no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


class UpstreamIdp(BackgroundServer):
    """The authorization server; see the package docstring for what it checks.

    :param port: TCP port on 127.0.0.1; 0 picks a free one.
    :param token_lifetime: ``expires_in`` of issued tokens (settable later, e.g. short for tests).
    :param response_delay: seconds to stall before answering the token endpoint (timeout tests).
    """

    def __init__(self, port: int = 0, *, token_lifetime: int = 3600, response_delay: float = 0.0) -> None:
        self.token_lifetime = token_lifetime
        self.response_delay = response_delay
        super().__init__(port)
        self._lock = threading.Lock()
        self._secret_clients: dict[str, _SecretClient] = {}
        self._backend_clients: dict[str, _BackendClient] = {}
        self._grants: dict[str, _Grant] = {}
        self._jtis: dict[str, int] = {}  # jti -> exp, forgotten once exp has passed
        self._token_requests = 0
        self._last_form: dict[str, str] = {}
        self._last_client_auth: str | None = None
        self._last_assertion: dict[str, Any] | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def token_url(self) -> str:
        """Also the only ``aud`` an assertion may carry."""
        return self.base_url + TOKEN_PATH

    @property
    def introspection_url(self) -> str:
        return self.base_url + INTROSPECTION_PATH

    # -- registration

    def register_client(self, client_id: str, secret: str, *, scopes: Iterable[str] | None = None) -> None:
        """A confidential client with a secret; `scopes` limits what it may ask for (None: anything)."""
        with self._lock:
            self._secret_clients[client_id] = _SecretClient(secret, scope_set(scopes))

    def register_backend_client(self, client_id: str, public_key: str | bytes | dict, *, kid: str,
                                scopes: Iterable[str] | None = None) -> None:
        """A SMART backend client; call again with another kid to add a key (rotation)."""
        key = load_public_key(public_key)
        with self._lock:
            client = self._backend_clients.setdefault(client_id, _BackendClient())
            client.keys[kid] = (key, alg_for(key))
            client.scopes = scope_set(scopes)

    # -- observations for tests (copies; never a secret, an assertion or a token)

    @property
    def token_requests(self) -> int:
        """Every POST to the token endpoint, refused ones included."""
        with self._lock:
            return self._token_requests

    @property
    def last_form(self) -> dict[str, str]:
        """Form fields of the last token request without client_secret and client_assertion."""
        with self._lock:
            return dict(self._last_form)

    @property
    def last_client_auth(self) -> str | None:
        """client_secret_basic, client_secret_post or private_key_jwt, once authentication passed."""
        with self._lock:
            return self._last_client_auth

    @property
    def last_assertion(self) -> dict[str, Any] | None:
        """``{"header": ..., "claims": ...}`` of the last verified client assertion."""
        with self._lock:
            return json.loads(json.dumps(self._last_assertion))

    def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 answer for `token`; inactive tokens get no other member (§2.2)."""
        with self._lock:
            grant = self._grants.get(_digest(token))
        if grant is None or grant.expires_at <= time.time():
            return {"active": False}
        return {
            "active": True, "client_id": grant.client_id, "scope": grant.scope, "token_type": "Bearer",
            "exp": grant.expires_at, "iat": grant.issued_at, "sub": grant.client_id, "iss": self.base_url,
        }

    def revoke_tokens(self) -> None:
        """Makes every issued token inactive, as a provider does when it rotates or revokes."""
        with self._lock:
            self._grants.clear()

    # -- endpoints

    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Result:
        endpoints = {TOKEN_PATH: self._token, INTROSPECTION_PATH: self._introspection}
        endpoint = endpoints.get(urlsplit(path).path.rstrip("/"))
        if endpoint is None:
            return 404, {"error": "not_found"}, {}
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "use POST"}, {"Allow": "POST"}
        try:
            return endpoint(headers, body)
        except Refusal as refusal:
            return refusal.result()

    def _token(self, headers: dict[str, str], body: bytes) -> Result:
        if self.response_delay:
            time.sleep(self.response_delay)
        with self._lock:
            self._token_requests += 1
            self._last_client_auth = self._last_assertion = None
            self._last_form = {}
        form = parse_form(headers.get("content-type"), body)
        with self._lock:
            self._last_form = {k: v for k, v in form.items() if k not in CREDENTIAL_FIELDS}
        if "grant_type" not in form:
            raise Refusal("invalid_request", "grant_type is required")
        client_id, method, allowed = self._authenticate(form, headers.get("authorization"))
        if form["grant_type"] != "client_credentials":
            raise Refusal("unsupported_grant_type", "only client_credentials is supported")
        scope = granted_scope(form.get("scope"), allowed, required=method == "private_key_jwt")
        return 200, self._issue(client_id, scope), dict(NO_STORE)

    def _introspection(self, headers: dict[str, str], body: bytes) -> Result:
        token = parse_form(headers.get("content-type"), body).get("token")
        if not token:
            raise Refusal("invalid_request", "token is required")
        return 200, self.introspect(token), dict(NO_STORE)

    def _issue(self, client_id: str, scope: str) -> dict[str, Any]:
        token, now = secrets.token_urlsafe(32), int(time.time())
        grant = _Grant(client_id, scope, now, now + self.token_lifetime)
        with self._lock:
            self._grants[_digest(token)] = grant
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        if scope:
            answer["scope"] = scope
        return answer

    # -- client authentication

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> tuple[str, str, frozenset | None]:
        """(client_id, method, allowed scopes); exactly one method is allowed (RFC 6749 §2.3)."""
        method = client_auth_method(form, authorization)
        if method == "private_key_jwt":
            client_id, allowed = self._verify_assertion(form)
        else:
            client_id, allowed = self._verify_secret(form, authorization, method)
        with self._lock:
            self._last_client_auth = method
        return client_id, method, allowed

    def _verify_secret(self, form: dict[str, str], authorization: str | None,
                       method: str) -> tuple[str, frozenset | None]:
        basic = method == "client_secret_basic"
        if basic:
            client_id, secret = basic_credentials(authorization or "")
            if form.get("client_id", client_id) != client_id:
                raise Refusal("invalid_request", "client_id in the body differs from the Basic user")
        else:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        with self._lock:
            client = self._secret_clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
            raise Refusal("invalid_client", "client authentication failed", 401, basic=basic)
        return client_id, client.scopes

    def _verify_assertion(self, form: dict[str, str]) -> tuple[str, frozenset | None]:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise Refusal("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise Refusal("invalid_request", "client_assertion is required")
        header, issuer = unverified_parts(assertion)
        with self._lock:
            client = self._backend_clients.get(issuer)
        if client is None or form.get("client_id", issuer) != issuer:
            raise Refusal("invalid_client", "unknown client (iss)", 401)
        registered = client.keys.get(header["kid"])
        if registered is None or registered[1] != header["alg"]:
            raise Refusal("invalid_client", "no registered key has this kid and alg", 401)
        key, alg = registered
        claims = verified_claims(assertion, key, alg, issuer, self.token_url)
        self._consume_jti(claims["jti"], claims["exp"])
        with self._lock:
            self._last_assertion = {"header": header, "claims": claims}
        return issuer, client.scopes

    def _consume_jti(self, jti: str, exp: int) -> None:
        """RFC 7523 §3 item 7: a jti is accepted once while its assertion could still be valid."""
        now = time.time()
        with self._lock:
            self._jtis = {k: v for k, v in self._jtis.items() if v + CLOCK_SKEW > now}
            if jti in self._jtis:
                raise Refusal("invalid_client", "jti was already used (replayed assertion)", 401)
            self._jtis[jti] = exp


def _handler_for(idp: UpstreamIdp) -> type[BaseHTTPRequestHandler]:
    return json_handler("upstream-idp", lambda request, body: idp.route(
        request.command, request.path, {name.lower(): value for name, value in request.headers.items()}, body),
        _LOG)
