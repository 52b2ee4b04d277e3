"""Blocking work runs inline only when it does not block (issue #12, shared/offloop.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shared.errors import StoreUnavailable
from shared.offloop import WouldBlock, inline_or_thread, may_block

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)


def where(blocks: bool) -> str:
    if blocks:
        may_block()
    return threading.current_thread().name


def test_a_call_that_does_not_block_runs_on_the_event_loops_thread() -> None:
    async def run() -> tuple[str, str]:
        return threading.current_thread().name, await inline_or_thread(where, False)
    loop_thread, ran_on = asyncio.run(run())
    assert ran_on == loop_thread


def test_a_call_that_would_block_runs_again_on_another_thread() -> None:
    async def run() -> tuple[str, str]:
        return threading.current_thread().name, await inline_or_thread(where, True)
    loop_thread, ran_on = asyncio.run(run())
    assert ran_on != loop_thread


def test_may_block_is_a_no_op_outside_inline_or_thread() -> None:
    assert where(True) == threading.current_thread().name


def test_would_block_passes_through_code_that_translates_every_exception() -> None:
    """The stores turn `Exception`s into StoreUnavailable; the signal must reach inline_or_thread."""
    def store_call() -> str:
        try:
            may_block()
        except Exception as exc:  # what a store's error translation does
            raise StoreUnavailable("Table Storage", "translated") from exc
        return threading.current_thread().name

    async def run() -> str:
        return await inline_or_thread(store_call)
    assert asyncio.run(run()) != "MainThread"
    assert not issubclass(WouldBlock, Exception)


def test_a_lock_taken_before_the_signal_is_released() -> None:
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            may_block()

    async def run() -> None:
        await inline_or_thread(locked)
    asyncio.run(run())
    assert lock.acquire(blocking=False)


def test_errors_other_than_the_signal_propagate_from_the_inline_run() -> None:
    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        asyncio.run(inline_or_thread(fails))


def test_only_handlers_without_side_effects_before_their_first_io_are_tried_inline() -> None:
    """Token, discovery and health are safe to run twice; management and portal handlers count
    attempts or write before they would block, so they always go to the thread pool."""
    from shared import handlers
    from shared.offloop import is_inline_first
    from shared.portal import handlers as portal

    assert all(is_inline_first(h) for h in (handlers.token, handlers.metadata, handlers.smart_config,
                                            handlers.jwks, handlers.health))
    assert not any(is_inline_first(h) for h in (handlers.create_client, handlers.put_tenant, handlers.health_deep,
                                                portal.signin, portal.register))

