"""Table rows held per instance and kept fresh through a change log, not re-read per TTL.

Why: reading each tenant (or client, or secret) once per TTL per instance makes Table Storage load
grow with instances x records (issue #14). Here an instance reads a row the first time it needs it
and then keeps it (a row found absent too) for as long as it follows the *change log*: every write
through the registries appends a row to a log partition beside the data, keyed by the time of the
write, and once per TTL each instance asks for the log rows from (newest seen - margin) on. That is
one key-range query (a seek, not a scan, whatever the table's size) that normally returns nothing;
each key it names is forgotten and read again on next use. So steady-state load is one query per
TTL per instance, and a change (a disabled client, a changed route, a deleted secret) reaches every
instance within the TTL.

Why not load whole partitions: a cold instance would read every row, and hundreds of instances
starting within a minute (a Flex Consumption burst) would read a 20,000-row partition hundreds of
times over, far past a partition's 2,000 entities/s; this way a cold instance reads only what its
requests touch. Why not `Timestamp ge ...` on the data partition: Table Storage has no index on
Timestamp, so that filter scans the whole partition on the server at every refresh.

Deletions: the registries never delete rows that are served from here; they write a tombstone
(`deleted: true`) and log it; a tombstone reads as absent.

The log's keys come from the writers' clocks: a refresh re-reads the last `LOG_MARGIN` of the log,
so a row written by a writer whose clock is behind (or whose write was in flight) is not missed;
log rows already applied are skipped. Writers' clocks must agree within that margin (NTP does).

Staleness is bounded, never traded for availability: if the log cannot be read when due, nothing
held is used (the caller fails closed with 503), exactly like the per-item TTL caches this replaces.
Log queries and row reads are single-flight: concurrent callers wait for one store call.
"""

from __future__ import annotations

import enum
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from shared.errors import NotFound
from shared.offloop import may_block
from shared.stores import Entity, EntityTable

LOG_MARGIN = 60.0  # seconds of the change log re-read at each refresh (writers' clock skew, writes in flight)
TOMBSTONE = "deleted"
T = TypeVar("T")
_READ_STRIPES = 64
_CHANGED_KEPT = 100  # refreshes a key's change is remembered for (a read in flight that long is not held)


class _Unknown(enum.Enum):
    """Not held at all (unlike None, a row known to be absent)."""

    UNKNOWN = 0


_UNKNOWN = _Unknown.UNKNOWN


def is_tombstone(entity: Entity) -> bool:
    return bool(entity.data.get(TOMBSTONE))


def _log_key(at: float) -> str:
    return f"{at:020.6f}"


class TableSnapshot(Generic[T]):
    """Rows of one partition, each parsed once by `parse`, read on first use and held while the
    change log (`log`) is followed at least every `ttl` seconds; thread-safe and bounded."""

    def __init__(self, table: EntityTable, log: EntityTable, ttl: float, parse: Callable[[Entity], T],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 max_entries: int = 200_000) -> None:
        self._table, self._log, self._ttl, self._parse = table, log, ttl, parse
        self._clock, self._wall, self._max = clock, wall, max_entries
        self._rows: OrderedDict[str, T | None] = OrderedDict()  # None: known absent
        self._from: float | None = None  # wall time the next log query starts at
        self._applied: dict[str, float] = {}  # log rows already applied (within the margin) -> their time
        self._changed: dict[str, int] = {}  # key -> refresh that last saw it change (guards reads in flight)
        self._refreshes = 0
        self._followed_at = float("-inf")
        self._lock = threading.Lock()
        self._read_locks = [threading.Lock() for _ in range(_READ_STRIPES)]

    # --- writers ----------------------------------------------------------------------------------

    def changed(self, key: str) -> None:
        """Log a write to `key` (after the write itself): every instance re-reads it within its TTL,
        this one at once."""
        self._log.insert(f"{_log_key(self._wall())}-{secrets.token_hex(4)}", {"key": key})
        with self._lock:
            self._rows.pop(key, None)
            self._refreshes += 1
            self._changed[key] = self._refreshes

    # --- readers ----------------------------------------------------------------------------------

    def get(self, key: str) -> T | None:
        """The row (None when absent), at most one TTL behind the store."""
        self._follow()
        held = self._rows.get(key, _UNKNOWN)
        if held is not _UNKNOWN:
            return held
        may_block()  # a Table read, or a wait for another thread's (shared/offloop.py)
        with self._read_locks[hash(key) % _READ_STRIPES]:  # single flight per key
            held = self._rows.get(key, _UNKNOWN)
            if held is not _UNKNOWN:
                return held
            started = self._refreshes
            value = self._read(key)
            with self._lock:
                if self._changed.get(key, -1) <= started:  # not changed while we read: safe to hold
                    self._rows[key] = value
                    while len(self._rows) > self._max:
                        self._rows.popitem(last=False)  # forgetting only costs a re-read
            return value

    def _read(self, key: str) -> T | None:
        try:
            entity = self._table.get(key)
        except NotFound:
            return None
        return None if is_tombstone(entity) else self._parse(entity)

    def _follow(self) -> None:
        if self._clock() - self._followed_at < self._ttl:
            return
        may_block()
        with self._lock:  # single flight: whoever holds the lock queries the log, the others then find it done
            if self._clock() - self._followed_at >= self._ttl:
                self._apply_log()

    def _apply_log(self) -> None:
        started = self._clock()
        if self._from is None:  # nothing held yet: the log from here on is what matters
            self._from = self._wall() - LOG_MARGIN
        self._refreshes += 1
        for change in self._log.list_from(_log_key(self._from)):
            if change.key in self._applied:
                continue
            at = float(change.key.partition("-")[0])
            key = str(change.data.get("key", ""))
            self._rows.pop(key, None)
            self._changed[key] = self._refreshes
            self._applied[change.key] = at
            self._from = max(self._from, at - LOG_MARGIN)
        self._applied = {k: at for k, at in self._applied.items() if at >= self._from}
        self._changed = {k: n for k, n in self._changed.items() if n >= self._refreshes - _CHANGED_KEPT}
        self._followed_at = started
