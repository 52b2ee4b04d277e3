"""Rate limits that hold across every instance: counts shared through Table Storage.

Why Table Storage and not a distributed engine in front (API Management, Front Door WAF rate rules):
the gateway already depends on the storage account, the counts needed are failures (rare when
nobody attacks), and a front engine could not see them: whether a client secret was wrong is only
known inside the gateway. Each instance still keeps its in-memory limiter (`RateLimiter`) as a free
first gate; the shared count is what makes N instances admit the configured limit, not N times it.

Storage: one entity per (limit, key) holding this fixed window's count and the previous one's,
updated read-modify-write under its ETag (optimistic concurrency: two instances never both write
over the same value; a racer that loses re-reads and is refused if the last place went meanwhile).
An attempt is admitted while two tests pass: the sliding-window estimate
`previous x (1 - elapsed share of this window) + current` is under the limit (the usual rate: the
limit per window when attempts are spread), and `previous + current` stays within 1.5x the limit.
Any sliding window lies inside those two fixed windows, so it never holds more than 1.5x the
limit, even when attempts bunch at a window's end (where the estimate alone would allow nearly
2x). Both tests free up by the end of the current window at the latest after an attack stops
admitting, so no key stays blocked longer than one window after its last admitted attempt. Keys
are stored as a SHA-256 (no source address or client id in clear in the table) and spread over 16
partitions per limit, so a flood on one limit cannot make one partition hot for all of them.

Fail closed: when the counts cannot be read or written, the attempt is refused with 503 by the
caller (`StoreUnavailable` propagates). Only attempts that are counted touch the table: the token
endpoint counts failures only, so successful token requests never pay a Table round trip here.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import AlreadyExists, NotFound, PreconditionFailed, StoreUnavailable
from shared.ratelimit import DEFAULT_MAX_KEYS, RateLimiter
from shared.stores import Entity, EntityTable

_CEILING = 1.5  # no sliding window may hold more than this times the limit
_CONFLICT_RETRIES = 5
_PARTITIONS = 16


@dataclass(frozen=True)
class _Count:
    """A key's shared count as read: the store entity (None when absent) and the counts it implies now."""

    row: str
    entity: Entity | None
    window: int
    current: int
    previous: int


class SharedCounts:
    """Sliding-window counts of one limit, kept in a table every instance shares."""

    def __init__(self, name: str, limit: int, window_seconds: float, partition: Callable[[str], EntityTable],
                 clock: Callable[[], float] = time.time) -> None:
        self._name, self._limit, self._window, self._clock = name, limit, float(window_seconds), clock
        self._partition = partition

    def _locate(self, key: str) -> tuple[EntityTable, str]:
        row = hashlib.sha256(f"{self._name}\n{key}".encode()).hexdigest()[:40]
        return self._partition(f"{self._name}-{int(row[0], 16) % _PARTITIONS:x}"), row

    def read(self, key: str) -> _Count:
        table, row = self._locate(key)
        try:
            entity: Entity | None = table.get(row)
        except NotFound:
            entity = None
        window = int(self._clock() // self._window)
        data = entity.data if entity is not None else {}
        stored, count, previous = int(data.get("window", -2)), int(data.get("count", 0)), int(data.get("prev", 0))
        if stored == window:
            return _Count(row, entity, window, count, previous)
        return _Count(row, entity, window, 0, count if stored == window - 1 else 0)

    def wait(self, count: _Count) -> int:
        """0 when one more attempt is admitted, else whole seconds until it would be."""
        elapsed = min(1.0, max(0.0, self._clock() / self._window - count.window))  # share of this window gone
        estimate_ok = count.previous * (1 - elapsed) + count.current < self._limit
        union_ok = count.previous + count.current + 1 <= _CEILING * self._limit
        if estimate_ok and union_ok:
            return 0
        free_at = 1.0 if not union_ok else elapsed  # the union frees when this window ends
        if not estimate_ok and count.current < self._limit:  # as the previous window's weight decays
            free_at = max(free_at, 1 - (self._limit - count.current) / count.previous)
        elif not estimate_ok:  # in the next window, once this one's weight decays
            free_at = max(free_at, 2 - self._limit / count.current)
        return max(1, math.ceil((free_at - elapsed) * self._window))

    def add(self, key: str, count: _Count) -> int:
        """Count one attempt, read-modify-write under the ETag: 0 when counted, else the wait. A lost
        race re-reads, and if the other writer filled the count, this attempt is refused instead:
        concurrent instances cannot all slip in under the same last free place."""
        table, _ = self._locate(key)
        for _ in range(_CONFLICT_RETRIES):
            # The window index as text: an Int32 property would overflow for short windows.
            data = {"window": str(count.window), "count": count.current + 1, "prev": count.previous}
            try:
                if count.entity is None:
                    table.insert(count.row, data)
                else:
                    table.replace(count.row, data, etag=count.entity.etag)
                return 0
            except (AlreadyExists, PreconditionFailed):
                count = self.read(key)
                wait = self.wait(count)
                if wait:
                    return wait
        raise StoreUnavailable("table-storage", "rate-limit count contention")

    def clear(self, key: str) -> None:
        table, row = self._locate(key)
        with contextlib.suppress(NotFound):
            table.delete(row)


class AggregateLimiter(RateLimiter):
    """A `RateLimiter` (the same calls, the same local sliding window as a free first gate) whose
    admissions are also counted in `SharedCounts`, so the limit holds over all instances together."""

    def __init__(self, shared: SharedCounts, limit: int, window_seconds: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(limit, window_seconds, clock, max_keys)
        self._shared = shared

    def hit(self, key: str) -> int:
        local = super().retry_after(key)
        count = self._shared.read(key)
        if local:  # the shared count frees no earlier (it holds every instance's attempts): say when it does
            return max(local, self._shared.wait(count))
        wait = self._shared.wait(count)
        if wait:  # refused: counted nowhere, so a block ends at most one window after the attack
            return wait
        return self._shared.add(key, count) or super().hit(key)

    def retry_after(self, key: str) -> int:
        return super().retry_after(key) or self._shared.wait(self._shared.read(key))

    def reset(self, key: str) -> None:
        super().reset(key)
        self._shared.clear(key)
