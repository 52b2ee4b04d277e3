"""The gateway's one in-memory cache: bounded, thread-safe, and loading each key once at a time.

Why one class: every per-instance cache in the gateway sits in front of a store or a remote host
(Key Vault, Table Storage, an identity provider, a client's `jwks_uri`), and each one needs the same
three guarantees, which hand-rolled dicts kept getting wrong one at a time:

- *bounded*: keys come from requests (client ids, secret ids, URLs), so an unbounded dict is a
  memory leak an attacker can drive; the least recently stored entry goes first;
- *staleness bounded by a TTL*: a value is used for at most its TTL after it was loaded, so a
  revocation in the store reaches every instance within it;
- *single flight*: callers that miss together (a client's burst as its entry expires) wait for the
  first caller's load instead of each making their own store call. Loads are serialised per key
  (one slow identity provider never delays another tenant's load), and a key's lock lives only
  while someone loads or waits for it, so the lock table is bounded by the loads in flight.

Misses are cached like hits (a loader returns None for "absent"), for the TTL: that is what bounds
the store calls a flood of unknown keys can cause. A caller that knows a key just changed `drop`s it.
Failures are not cached unless the loader returns a value saying so: an exception leaves the key
unloaded and reaches every caller waiting on it in turn (each retries, one at a time).

Waiting for a load is blocking, so `get_or_load` calls `may_block()` first (shared/offloop.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.offloop import may_block

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """A cached value, when it was loaded and until when it may be used (clock seconds)."""

    value: V
    loaded_at: float
    expires_at: float

    def age(self, now: float) -> float:
        return now - self.loaded_at


class TtlCache(Generic[K, V]):
    """Values by key, each used for at most its TTL; at most `max_entries` held."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry")
        self._ttl, self._clock, self._max = ttl, clock, max_entries
        self._data: OrderedDict[K, Entry[V]] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight] = {}

    def __len__(self) -> int:
        return len(self._data)

    def entry(self, key: K) -> Entry[V] | None:
        """The live entry for `key`, or None when absent or expired."""
        with self._lock:
            held = self._data.get(key)
        if held is None or self._clock() >= held.expires_at:
            return None
        return held

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) for a live entry, else (False, None): a cached None is a hit."""
        held = self.entry(key)
        return (False, None) if held is None else (True, held.value)

    def put(self, key: K, value: V, ttl: float | None = None, loaded_at: float | None = None) -> None:
        """Store `value` for `ttl` seconds (the cache's TTL by default) from `loaded_at` (now)."""
        start = self._clock() if loaded_at is None else loaded_at
        held = Entry(value, start, start + (self._ttl if ttl is None else ttl))
        with self._lock:
            self._data[key] = held
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def drop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def drop_if(self, key: K, unwanted: Callable[[V], bool]) -> V | None:
        """Drop the value held for `key`, expired or not, if `unwanted(value)`; the dropped value, else None.

        Judged and dropped in one step, so a value another caller has just stored (a fresh token
        replacing the one a provider refused) is judged itself instead of being dropped unseen."""
        with self._lock:
            held = self._data.get(key)
            if held is None or not unwanted(held.value):
                return None
            del self._data[key]
            return held.value

    def get_or_load(self, key: K, load: Callable[[], V], *,
                    stale: Callable[[Entry[V]], bool] | None = None,
                    ttl_of: Callable[[V], float] | None = None) -> V:
        """The live value for `key`, else `load()`'s, stored and returned; one load per key at a time.

        `stale(entry)` lets a caller refuse a live entry early (a JWK Set lacking the `kid` an
        assertion names); `ttl_of(value)` sets the new entry's TTL from what was loaded (an access
        token's lifetime, a shorter hold for a failure)."""
        held = self.entry(key)
        if held is not None and not (stale and stale(held)):
            return held.value
        may_block()  # a store read, or a wait for another thread's
        with self._flight(key):
            held = self.entry(key)
            if held is not None and not (stale and stale(held)):
                return held.value  # another caller loaded it while we waited
            started = self._clock()
            value = load()
            self.put(key, value, ttl_of(value) if ttl_of else None, loaded_at=started)
            return value

    @contextmanager
    def _flight(self, key: K) -> Iterator[None]:
        """Hold `key`'s load lock; the lock is forgotten when its last holder or waiter leaves."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
            flight.users += 1
        try:
            with flight.lock:
                yield
        finally:
            with self._lock:
                flight.users -= 1
                if flight.users == 0:
                    del self._flights[key]


class _Flight:
    """One key's load lock and how many callers hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
