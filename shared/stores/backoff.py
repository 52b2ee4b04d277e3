"""Fail fast while a backing Azure service is down or has asked us to wait.

When a store call fails because the service asked us to wait (a 429 or 503 with Retry-After, as
Key Vault and Table Storage send when they throttle), further calls fail at once, without
touching the service, until that wait has passed; then calls go through again. A plain failure
(connection refused, timeout, a 5xx without Retry-After) closes no gate: the SDK has already
retried it, and the next request tries again, so recovery is noticed at once.

Why not let the SDK honour Retry-After by sleeping: it sleeps inside the request's thread, once
per retry, so a 30-second Retry-After would hold every worker for a minute while the gateway
keeps knocking (Key Vault's throttling guidance asks clients to back off, not to queue). Here a
throttled vault sees one call per Retry-After from each instance, and every client gets an
immediate 503 whose Retry-After says when to come back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from shared.errors import StoreUnavailable

MAX_SECONDS = 60.0  # the longest Retry-After we take at its word


class Backoff:
    def __init__(self, component: str, max_seconds: float = MAX_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._component, self._max, self._clock = component, max_seconds, clock
        self._until = float("-inf")
        self._throttled = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise StoreUnavailable at once while backing off."""
        with self._lock:
            remaining, throttled = self._until - self._clock(), self._throttled
        if remaining > 0:
            reason = "throttled; backing off" if throttled else "asked to wait; backing off"
            raise StoreUnavailable(self._component, reason, retry_after=remaining, throttled=throttled)

    def failed(self, exc: StoreUnavailable) -> None:
        if exc.retry_after is None:
            return
        wait = min(max(exc.retry_after, 0.0), self._max)
        with self._lock:
            self._until = max(self._until, self._clock() + wait)
            self._throttled = exc.throttled



def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 §10.2.3), if any."""
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
