"""Sliding-window rate limits against brute force (portal sign-in and registration; reusable elsewhere).

Limits are per instance: the counts live in this process's memory, so N instances of the Function
App admit up to N times the limit. That still turns unlimited guessing into a few hundred tries per
window, and keeps a storage write off every attempt's path; the secrets being guessed carry 256
bits, so the limits mostly stop noise and credential stuffing, not a feasible search.

The limiter keeps, per key, the times of the attempts it admitted during the last window. A refused
attempt is not recorded, so every key is free again at most one window after its last admitted
attempt: hammering someone else's key cannot lock them out for longer than the attack lasts plus
one window. Keys are kept in least-recently-used order and bounded, so a flood of made-up keys
costs bounded memory (evicting a key only forgets its count early).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

DEFAULT_MAX_KEYS = 100_000


class RateLimiter:
    """At most `limit` admitted attempts per key in any `window_seconds`; thread-safe."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit < 1 or window_seconds <= 0 or max_keys < 1:
            raise ValueError("limit, window_seconds and max_keys must be positive")
        self._limit, self._window, self._clock, self._max_keys = limit, float(window_seconds), clock, max_keys
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> int:
        """Count one attempt for `key`: 0 when admitted, else whole seconds until one would be (for Retry-After)."""
        now = self._clock()
        with self._lock:
            times = self._attempts.setdefault(key, deque())
            self._attempts.move_to_end(key)
            while times and now - times[0] >= self._window:
                times.popleft()
            if len(times) >= self._limit:
                return max(1, math.ceil(times[0] + self._window - now))
            times.append(now)
            while len(self._attempts) > self._max_keys:
                self._attempts.popitem(last=False)
            return 0

    def retry_after(self, key: str) -> int:
        """Like `hit` but counts nothing: 0 when `key` would be admitted now, else whole seconds until it would.

        For limits on failures (the token endpoint): check before the attempt, `hit` only when it failed.
        """
        now = self._clock()
        with self._lock:
            times = self._attempts.get(key)
            while times and now - times[0] >= self._window:
                times.popleft()
            if not times or len(times) < self._limit:
                return 0
            return max(1, math.ceil(times[0] + self._window - now))

    def reset(self, key: str) -> None:
        """Forget `key`'s attempts, e.g. after the rightful owner proved itself."""
        with self._lock:
            self._attempts.pop(key, None)
