"""A whole-partition copy of a table, held per instance and kept fresh through a change log.

Why: reading one entity per tenant (or client, or secret) per TTL makes Table Storage load grow
with instances x records (issue #14). A snapshot costs one paged query when an instance starts;
after that, one query per TTL on a *change log*: every write through the registries appends a row
to the `changes` partition beside the data, keyed by the time of the write, and a refresh asks for
the log rows from (newest seen - margin) on. That is a key-range query (a seek, never a scan of the
data partition, whatever its size) which normally returns nothing; each row it does return names a
key, which is then read on its own. So steady-state load grows with instances only, and every change
(a disabled client, a changed route, a deleted secret) reaches every instance within the TTL.

Why a log and not `Timestamp ge ...` on the data partition: Table Storage has no index on
Timestamp, so such a filter scans the whole partition on the server at every refresh of every
instance (10,000 tenants x 1,000 instances per TTL), far past a partition's throughput target.

Deletions: the registries never delete rows that a snapshot serves; they write a tombstone
(`deleted: true`) and log it, and the snapshot drops the key.

The log's keys come from the writers' clocks: a refresh re-reads the last `LOG_MARGIN` of the log
so that a row written by a writer whose clock is behind (or whose write was in flight) is not
missed; rows already applied are skipped. Writers' clocks must agree within that margin (NTP).

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

import secrets
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from shared.errors import NotFound
from shared.stores import Entity, EntityTable

LOG_MARGIN = 60.0  # seconds of the change log re-read at each refresh (writers' clock skew, writes in flight)
TOMBSTONE = "deleted"
T = TypeVar("T")
_MISS_STRIPES = 64
_MISSES_MAX = 100_000


def is_tombstone(entity: Entity) -> bool:
    return bool(entity.data.get(TOMBSTONE))


def _log_key(at: float) -> str:
    return f"{at:020.6f}"


class TableSnapshot(Generic[T]):
    """Every live entity of one partition, parsed once by `parse` (not per request), at most `ttl`
    seconds old when read; `log` is the partition that records which keys changed. Thread-safe."""

    def __init__(self, table: EntityTable, log: EntityTable, ttl: float, parse: Callable[[Entity], T],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 max_entities: int = 1_000_000) -> None:
        self._table, self._log, self._ttl, self._parse = table, log, ttl, parse
        self._clock, self._wall, self._max = clock, wall, max_entities
        self._rows: dict[str, T] = {}
        self._from = 0.0  # wall time the next log query starts at
        self._applied: dict[str, float] = {}  # log rows already applied (within the margin) -> their time
        self._refreshed_at = float("-inf")
        self._loaded = False
        self._lock = threading.Lock()
        self._misses: dict[str, tuple[float, T | None]] = {}
        self._miss_locks = [threading.Lock() for _ in range(_MISS_STRIPES)]

    # --- writers ----------------------------------------------------------------------------------

    def changed(self, key: str) -> None:
        """Log a write to `key` (after the write itself): every instance re-reads it within its TTL,
        this one at once."""
        self._log.insert(f"{_log_key(self._wall())}-{secrets.token_hex(4)}", {"key": key})
        with self._lock:
            self._refreshed_at = float("-inf")
            self._misses.pop(key, None)

    # --- readers ----------------------------------------------------------------------------------

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
                miss = (self._clock(), self._read(key))
                with self._lock:
                    if len(self._misses) >= _MISSES_MAX:
                        self._misses.clear()  # bounded; forgetting only costs a re-read
                    self._misses[key] = miss
            return miss[1]

    def values(self) -> list[T]:
        return list(self._fresh().values())

    def _read(self, key: str) -> T | None:
        try:
            entity = self._table.get(key)
        except NotFound:
            return None
        return None if is_tombstone(entity) else self._parse(entity)

    def _fresh(self) -> dict[str, T]:
        if self._clock() - self._refreshed_at < self._ttl:
            return self._rows
        with self._lock:  # single flight: whoever holds the lock refreshes, the others then find it fresh
            if self._clock() - self._refreshed_at >= self._ttl:
                self._refresh()
            return self._rows

    def _refresh(self) -> None:
        started, wall = self._clock(), self._wall()
        if not self._loaded:  # the log from before the load is replayed: nothing written meanwhile is lost
            self._from = wall - LOG_MARGIN
            rows = {e.key: self._parse(e) for e in self._table.list() if not is_tombstone(e)}
        else:
            rows = dict(self._rows)
        for change in self._log.list_from(_log_key(self._from)):
            if change.key in self._applied:
                continue
            at = float(change.key.partition("-")[0])
            key = str(change.data.get("key", ""))
            value = self._read(key)
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
            self._misses.pop(key, None)
            self._applied[change.key] = at
            self._from = max(self._from, at - LOG_MARGIN)
        self._applied = {k: at for k, at in self._applied.items() if at >= self._from}
        if len(rows) > self._max:
            raise RuntimeError(f"snapshot over {self._max} entities: raise the bound or partition the table")
        self._rows, self._loaded, self._refreshed_at = rows, True, started
