"""Upstream authentication modes, so the gateway's provider credentials can be tested end to end.

* ``none``: every request is let through.
* ``bearer:<token>``: exactly that bearer token is required.
* ``introspect:<url>``: the bearer token must be ``active`` according to an RFC 7662 token
  introspection endpoint at ``<url>``; answers are cached for a few seconds (never past the
  token's ``exp``) so a benchmark does not measure the introspection endpoint.

A missing token is a 401 with ``WWW-Authenticate: Bearer``; a wrong one adds
``error="invalid_token"`` (RFC 6750 §3). Tokens are never logged or kept in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from typing import Protocol

import requests

from devtools.sample_ehr.outcome import FhirError

REALM = 'Bearer realm="sample-ehr"'
CACHE_SECONDS = 5.0
CACHE_LIMIT = 1024


class Authenticator(Protocol):
    """What the app needs of an auth mode: a check per request and a line for the metadata."""

    @property
    def description(self) -> str | None:
        """The metadata line, or None for no auth (read-only: a plain attribute satisfies it)."""

    def check(self, authorization: str | None) -> None:
        """Return if the Authorization header is acceptable, else raise a 401 FhirError."""


class NoAuth:
    """Lets every request through."""

    description: str | None = None

    def check(self, authorization: str | None) -> None:
        """Nothing to check."""


class StaticBearer:
    """Requires one fixed bearer token."""

    description = "Requires one fixed bearer token (RFC 6750)."

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("bearer mode needs a token: --auth bearer:<token>")
        self._token = token.encode()

    def check(self, authorization: str | None) -> None:
        if not hmac.compare_digest(bearer_token(authorization).encode(), self._token):
            raise invalid_token()


class Introspecting:
    """Requires a bearer token that an RFC 7662 introspection endpoint calls active."""

    description = "Requires a bearer token that the configured RFC 7662 introspection endpoint calls active."

    def __init__(self, url: str, cache_seconds: float = CACHE_SECONDS) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("introspect mode needs an http(s) URL: --auth introspect:<url>")
        self._url, self._ttl = url, cache_seconds
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._http = requests.Session()

    def check(self, authorization: str | None) -> None:
        token = bearer_token(authorization)
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached[0] <= now:
            cached = self._introspect(token, now)
            with self._lock:
                if len(self._cache) >= CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = cached
        if not cached[1]:
            raise invalid_token()

    def _introspect(self, token: str, now: float) -> tuple[float, bool]:
        """(cache until, active) from the endpoint's answer."""
        try:
            answer = self._http.post(self._url, data={"token": token, "token_type_hint": "access_token"},
                                     headers={"Accept": "application/json"}, timeout=5)
            answer.raise_for_status()
            claims = answer.json()
        except (requests.RequestException, ValueError) as exc:
            raise FhirError(503, "transient", "Token introspection is unavailable") from exc
        lifetime = self._ttl
        if isinstance(claims.get("exp"), int | float):
            lifetime = min(lifetime, claims["exp"] - time.time())
        return now + max(lifetime, 0.0), claims.get("active") is True and lifetime > 0


def parse_auth(spec: str) -> Authenticator:
    """``none`` | ``bearer:<token>`` | ``introspect:<url>``, as given to ``--auth``."""
    mode, _, argument = spec.partition(":")
    if mode == "none" and not argument:
        return NoAuth()
    if mode == "bearer":
        return StaticBearer(argument)
    if mode == "introspect":
        return Introspecting(argument)
    raise ValueError(f"unknown auth mode {spec!r}; expected none, bearer:<token> or introspect:<url>")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; 401 when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FhirError(401, "login", "A bearer token is required", {"WWW-Authenticate": REALM})
    return token.strip()


def invalid_token() -> FhirError:
    return FhirError(401, "login", "The bearer token is not valid",
                     {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
