"""The one cache (shared/cache.py): bounded, TTL-limited, single-flight, misses held, failures not."""

from __future__ import annotations

import threading
import time

import pytest

from shared.cache import TtlCache
from shared.offloop import WouldBlock, inline_or_thread
from tests.fakes import Clock

pytestmark = pytest.mark.unit


def test_a_value_is_used_for_the_ttl_and_loaded_again_after_it() -> None:
    clock, loads = Clock(1000.0), []
    cache: TtlCache[str, int] = TtlCache(10, clock)
    load = lambda: loads.append(1) or len(loads)  # noqa: E731 - counts its calls
    assert cache.get_or_load("k", load) == 1
    clock.now += 9.99
    assert cache.get_or_load("k", load) == 1
    clock.now += 0.01
    assert cache.get_or_load("k", load) == 2
    assert len(loads) == 2


def test_a_miss_is_held_like_a_hit_so_unknown_keys_cost_one_load_per_ttl() -> None:
    clock, loads = Clock(1000.0), []
    cache: TtlCache[str, int | None] = TtlCache(10, clock)
    for _ in range(5):
        assert cache.get_or_load("absent", lambda: loads.append(1)) is None
    assert cache.get("absent") == (True, None)
    assert len(loads) == 1


def test_a_failed_load_is_not_held_and_the_next_caller_loads_again() -> None:
    cache: TtlCache[str, int] = TtlCache(10, Clock(1000.0))

    def failing() -> int:
        raise OSError("store down")

    with pytest.raises(OSError):
        cache.get_or_load("k", failing)
    assert cache.get("k") == (False, None)
    assert cache.get_or_load("k", lambda: 7) == 7


def test_the_oldest_stored_entry_goes_first_past_the_bound() -> None:
    cache: TtlCache[int, int] = TtlCache(10, Clock(1000.0), max_entries=3)
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 3
    assert [cache.get(k)[0] for k in range(5)] == [False, False, True, True, True]


def test_a_dropped_key_is_loaded_afresh() -> None:
    cache: TtlCache[str, int] = TtlCache(10, Clock(1000.0))
    cache.put("k", 1)
    cache.drop("k")
    assert cache.get_or_load("k", lambda: 2) == 2


def test_drop_if_judges_the_held_value_even_after_its_ttl() -> None:
    clock = Clock(1000.0)
    cache: TtlCache[str, int] = TtlCache(10, clock)
    cache.put("k", 1)
    assert cache.drop_if("k", lambda value: value == 2) is None
    clock.now += 11
    assert cache.drop_if("k", lambda value: value == 1) == 1
    assert cache.drop_if("k", lambda value: True) is None
    assert cache.get_or_load("k", lambda: 3) == 3


def test_ttl_of_sets_each_entrys_lifetime_from_what_was_loaded() -> None:
    clock = Clock(1000.0)
    cache: TtlCache[str, int] = TtlCache(100, clock)
    cache.get_or_load("short", lambda: 5, ttl_of=float)
    clock.now += 5
    assert cache.get("short") == (False, None)


def test_stale_refuses_a_live_entry_and_reloads_it() -> None:
    clock = Clock(1000.0)
    cache: TtlCache[str, int] = TtlCache(100, clock)
    cache.put("k", 1)
    clock.now += 1
    assert cache.get_or_load("k", lambda: 2, stale=lambda held: held.age(clock()) >= 1) == 2
    assert cache.get_or_load("k", lambda: 3, stale=lambda held: held.age(clock()) >= 1) == 2


def test_callers_that_miss_together_share_one_load() -> None:
    cache: TtlCache[str, int] = TtlCache(10)
    started, release, loads = threading.Event(), threading.Event(), []

    def slow() -> int:
        loads.append(1)
        started.set()
        release.wait(5)
        return 42

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow))) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(5)
    time.sleep(0.05)  # let the others reach the stripe lock
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == [42] * 8
    assert len(loads) == 1


def test_a_miss_inside_an_inline_attempt_gives_way_to_a_thread() -> None:
    import asyncio

    cache: TtlCache[str, int] = TtlCache(10)
    ran_on: list[str] = []

    def lookup() -> int:
        return cache.get_or_load("k", lambda: ran_on.append(threading.current_thread().name) or 1)

    assert asyncio.run(inline_or_thread(lookup)) == 1
    assert ran_on and ran_on[0] != threading.main_thread().name
    assert asyncio.run(inline_or_thread(lookup)) == 1  # now a hit: no second load
    assert len(ran_on) == 1
    assert issubclass(WouldBlock, BaseException)


def test_a_slow_load_of_one_key_never_delays_another_keys_load() -> None:
    cache: TtlCache[str, int] = TtlCache(10)
    slow_started, release = threading.Event(), threading.Event()

    def slow() -> int:
        slow_started.set()
        release.wait(5)
        return 1

    stuck = threading.Thread(target=lambda: cache.get_or_load("slow tenant", slow))
    stuck.start()
    try:
        assert slow_started.wait(5)
        done: list[int] = []
        other = threading.Thread(target=lambda: done.append(cache.get_or_load("other tenant", lambda: 2)))
        other.start()
        other.join(2)
        assert done == [2]  # answered while the slow load still holds its own key
    finally:
        release.set()
        stuck.join(5)


def test_load_locks_are_forgotten_once_nobody_loads_or_waits() -> None:
    cache: TtlCache[int, int] = TtlCache(10)
    for key in range(1000):
        cache.get_or_load(key, lambda: 0)
    with pytest.raises(OSError):
        cache.get_or_load(-1, lambda: (_ for _ in ()).throw(OSError()))
    assert cache._flights == {}  # private on purpose: the bound is the point of this test
