"""Health of the gateway's Azure dependencies, cheap enough to leave anonymous.

`/api/health` is anonymous (load balancers and uptime monitors call it without keys), so each
call must not cost a Key Vault or Table Storage request: 100 calls would be 100 vault reads,
feeding the vault's throttling, and a throttled vault takes token signing down. Each dependency
is therefore probed at most once per `ttl` seconds per instance, by one caller at a time; every
other caller gets the last result. The deep check (behind the function key) probes live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from shared.errors import StoreUnavailable
from shared.offloop import may_block

Ping = Callable[[], None]


def probe(ping: Ping) -> str:
    """"ok", "unavailable", or "throttled" while the dependency asks us to wait; never raises."""
    try:
        ping()
    except StoreUnavailable as exc:
        return "throttled" if exc.throttled else "unavailable"
    except Exception:  # any failure means "down" for a health probe
        return "unavailable"
    return "ok"


class CachedProbe:
    """One dependency's status, probed at most once per `ttl` seconds (single flight)."""

    def __init__(self, ping: Ping, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ping, self._ttl, self._clock = ping, ttl, clock
        self._lock = threading.Lock()
        self._last: tuple[float, str] | None = None

    def status(self) -> str:
        last = self._last
        if last is not None and self._clock() - last[0] < self._ttl:
            return last[1]
        if last is not None and not self._lock.acquire(blocking=False):
            return last[1]  # another caller is probing right now: its result is as fresh as ours
        if last is None:
            may_block()  # the first probe, or a wait for another caller's (shared/offloop.py)
            self._lock.acquire()
        try:
            last = self._last
            if last is None or self._clock() - last[0] >= self._ttl:
                self._last = last = (self._clock(), probe(self._ping))
            return last[1]
        finally:
            self._lock.release()


def report(statuses: Mapping[str, str]) -> tuple[int, dict[str, object]]:
    """HTTP status and body: names and states only, no endpoints or secrets."""
    healthy = all(v == "ok" for v in statuses.values())
    return 200 if healthy else 503, {"status": "ok" if healthy else "degraded", "components": dict(statuses)}
