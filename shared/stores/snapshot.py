"""A whole-partition copy of a table, held per instance and kept fresh by delta queries.

Why: reading one entity per tenant (or client, or secret) per TTL makes Table Storage load grow
with instances x records. A snapshot costs one paged query when an instance starts, then one delta
query per TTL (`Timestamp ge <newest timestamp seen - margin>`) that normally returns nothing, so
steady-state load grows with instances only, and every change (a disabled client, a changed route,
a deleted secret) is seen by every instance within the TTL.

Deletions are invisible to a delta query, so the registries never delete rows that a snapshot
serves: they replace them with a tombstone (`deleted: true`), which the snapshot drops.

A key the snapshot lacks is read on its own (once per TTL per key, the answer remembered, absent
included): a record created on another instance a moment ago (a new secret, client or tenant) must
work at once everywhere, as it did when every read was a point read. A made-up key therefore costs
one read per TTL; at the token endpoint such a key is a failed attempt, which the failure limits
bound and which pays for its counting anyway.

Staleness is bounded, never traded for availability: a snapshot older than its TTL is not used;
the refresh's failure propagates (the caller fails closed with 503), exactly like the per-item TTL
caches this replaces. Refreshes are single-flight: concurrent callers at expiry wait for one query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from shared.errors import NotFound
from shared.stores import Entity, EntityTable

# How far back each delta query reaches before the newest timestamp seen: a write committed with a
# slightly older timestamp than one already seen (in flight when the previous query ran) is not lost.
DELTA_MARGIN = timedelta(seconds=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISS_STRIPES = 64
_MISSES_MAX = 100_000
TOMBSTONE = "deleted"
T = TypeVar("T")


def is_tombstone(entity: Entity) -> bool:
    return bool(entity.data.get(TOMBSTONE))


class TableSnapshot(Generic[T]):
    """Every live entity of one partition, parsed once by `parse` (not per request), at most `ttl`
    seconds old when read; thread-safe."""

    def __init__(self, table: EntityTable, ttl: float, parse: Callable[[Entity], T],
                 clock: Callable[[], float] = time.monotonic, max_entities: int = 1_000_000) -> None:
        self._table, self._ttl, self._parse, self._clock, self._max = table, ttl, parse, clock, max_entities
        self._rows: dict[str, T] = {}
        self._newest: datetime | None = None
        self._refreshed_at = float("-inf")
        self._loaded = False
        self._lock = threading.Lock()
        self._misses: dict[str, tuple[float, T | None]] = {}
        self._miss_locks = [threading.Lock() for _ in range(_MISS_STRIPES)]
        self.queries = 0  # store round trips made (full pages count as one; the scale model reads this)

    def get(self, key: str) -> T | None:
        """From the snapshot; else from this key's own read, remembered for the TTL."""
        hit = self._fresh().get(key)
        if hit is not None:
            return hit
        miss = self._misses.get(key)
        if miss is not None and self._clock() - miss[0] < self._ttl:
            return miss[1]
        with self._miss_locks[hash(key) % _MISS_STRIPES]:  # single flight per key
            miss = self._misses.get(key)
            if miss is None or self._clock() - miss[0] >= self._ttl:
                started = self._clock()
                try:
                    entity = self._table.get(key)
                    value = None if is_tombstone(entity) else self._parse(entity)
                except NotFound:
                    value = None
                self.queries += 1
                miss = (started, value)
                with self._lock:
                    if len(self._misses) >= _MISSES_MAX:
                        self._misses.clear()  # bounded; forgetting only costs a re-read
                    self._misses[key] = miss
            return miss[1]

    def values(self) -> list[T]:
        return list(self._fresh().values())

    def _fresh(self) -> dict[str, T]:
        if self._clock() - self._refreshed_at < self._ttl:
            return self._rows
        with self._lock:  # single flight: whoever holds the lock refreshes, the others then find it fresh
            if self._clock() - self._refreshed_at >= self._ttl:
                self._refresh()
            return self._rows

    def _refresh(self) -> None:
        started = self._clock()
        if not self._loaded:
            changed = self._table.list()
        else:
            since = (self._newest - DELTA_MARGIN) if self._newest is not None else _EPOCH
            changed = self._table.changed_since(since)
        self.queries += 1
        rows = dict(self._rows) if self._loaded else {}
        for entity in changed:
            if is_tombstone(entity):
                rows.pop(entity.key, None)
            else:
                rows[entity.key] = self._parse(entity)
            if entity.timestamp is not None and (self._newest is None or entity.timestamp > self._newest):
                self._newest = entity.timestamp
        if len(rows) > self._max:
            raise RuntimeError(f"snapshot over {self._max} entities: raise the bound or partition the table")
        self._rows, self._loaded, self._refreshed_at = rows, True, started

    def expire(self) -> None:
        """Refresh on next use: this instance just wrote, and must see its own write at once."""
        with self._lock:
            self._refreshed_at = float("-inf")
            self._misses.clear()
