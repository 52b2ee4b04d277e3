"""JWK Sets a client publishes at its `jwks_uri` (SMART Backend Services), fetched and cached.

A client may register a URL instead of the keys themselves, so it can rotate without calling us.
The URL passed `shared.outbound.normalise_url` at registration (https only, no credentials; the
same rules as provider URLs). Fetching is the gateway talking to a host the client chose, on an
unauthenticated request's behalf, so it is bounded every way: no redirects, the upstream
timeouts, at most `MAX_BYTES`, the same `validate_jwks` as registration (a set with a private
member is unusable), and at most one fetch per URL per `REFRESH_SECONDS` however many assertions
arrive, failures included (a failure is remembered, so a flood of bad assertions cannot turn into
a flood of requests to the client's host). A set is used for `TTL_SECONDS`; an assertion naming
a `kid` the cached set lacks refreshes it early (the client has just rotated), within the same
one-per-`REFRESH_SECONDS` bound.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import requests

from shared.cache import Entry, TtlCache
from shared.client_assertion import validate_jwks
from shared.errors import InvalidField

TTL_SECONDS = 300
REFRESH_SECONDS = 30
MAX_BYTES = 64 * 1024
_LOG = logging.getLogger("gateway.jwks")


class RemoteJwks:
    def __init__(self, timeout: tuple[float, float], session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout, self._clock = timeout, clock
        self._session = session or requests.Session()
        self._cache: TtlCache[str, dict | None] = TtlCache(TTL_SECONDS, clock)

    def get(self, uri: str, want_kid: str | None = None) -> dict | None:
        """The set at `uri` (None when it cannot be fetched or is unusable); fetched again when older
        than the TTL, or when it lacks `want_kid` and the last fetch is older than REFRESH_SECONDS."""
        return self._cache.get_or_load(uri, lambda: self._fetch(uri),
                                       stale=lambda held: _lacks(held, want_kid, self._clock()))

    def _fetch(self, uri: str) -> dict | None:
        try:
            with self._session.get(uri, headers={"Accept": "application/jwk-set+json, application/json"},
                                   timeout=self._timeout, allow_redirects=False, stream=True) as response:
                if response.status_code != 200:
                    _LOG.warning("jwks_uri answered HTTP %s", response.status_code)
                    return None
                body = bytearray()
                for chunk in response.iter_content(16 * 1024):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        _LOG.warning("jwks_uri sent more than %s bytes", MAX_BYTES)
                        return None
            return validate_jwks(json.loads(bytes(body)))
        except requests.RequestException as exc:
            _LOG.warning("jwks_uri could not be fetched: %s", type(exc).__name__)
        except (ValueError, InvalidField):
            _LOG.warning("jwks_uri did not serve a usable JWK Set")
        return None


def _lacks(held: Entry[dict | None], want_kid: str | None, now: float) -> bool:
    """A set fetched over REFRESH_SECONDS ago that is unusable or lacks the `kid` asked for."""
    if held.age(now) < REFRESH_SECONDS:
        return False
    return held.value is None or want_kid not in {k.get("kid") for k in held.value.get("keys", [])}
