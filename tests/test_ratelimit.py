"""The sliding-window limiter, on a hand-moved clock: admission, Retry-After, recovery, reset, bounds."""

from __future__ import annotations

import threading

import pytest

from shared.ratelimit import RateLimiter
from tests.fakes import Clock

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)


def test_admits_up_to_the_limit_then_says_how_long_to_wait() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(3, 60, clock)
    assert [limiter.hit("k") for _ in range(3)] == [0, 0, 0]
    clock.now += 10
    assert limiter.hit("k") == 50  # the oldest attempt leaves the window 50 s from now


def test_the_window_slides_and_a_refused_attempt_does_not_extend_the_lock() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(2, 60, clock)
    limiter.hit("k")
    clock.now += 30
    limiter.hit("k")
    for _ in range(100):  # hammering while locked out is not recorded
        assert limiter.hit("k") > 0
    clock.now += 30  # the first attempt has left the window: one more is admitted
    assert limiter.hit("k") == 0
    assert limiter.hit("k") == 30
    clock.now += 60
    assert limiter.hit("k") == 0


def test_keys_are_independent_and_reset_forgets_one() -> None:
    limiter = RateLimiter(1, 60, Clock(1000.0))
    assert limiter.hit("a") == 0
    assert limiter.hit("a") > 0
    assert limiter.hit("b") == 0
    limiter.reset("a")
    assert limiter.hit("a") == 0
    limiter.reset("never-seen")


def test_retry_after_is_at_least_one_second() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(1, 1, clock)
    limiter.hit("k")
    clock.now += 0.999
    assert limiter.hit("k") == 1


def test_memory_is_bounded_by_evicting_the_least_recently_used_key() -> None:
    limiter = RateLimiter(1, 60, Clock(1000.0), max_keys=2)
    limiter.hit("a")
    limiter.hit("b")
    limiter.hit("a")  # refused, but touches "a"
    limiter.hit("c")  # evicts "b", the least recently used
    assert limiter.hit("a") > 0
    assert limiter.hit("b") == 0


def test_concurrent_hits_never_admit_more_than_the_limit() -> None:
    limiter = RateLimiter(50, 60, Clock(1000.0))
    admitted: list[int] = []

    def worker() -> None:
        for _ in range(20):
            if limiter.hit("shared") == 0:
                admitted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 50


@pytest.mark.parametrize(("limit", "window"), [(0, 60), (1, 0), (-1, 10)])
def test_nonsense_limits_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(limit, window)
