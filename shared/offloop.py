"""Run blocking work inline when it will not block, on a thread when it would.

The proxy's "who and where" step (token, client, route, upstream credential) is answered from
in-memory caches on almost every request, but a miss means a Key Vault, Table Storage or identity
provider call, which must never run on the event loop. Handing every request to a thread costs
more CPU than the step itself (a thread hand-off per request showed as the largest single item in
the profile), so the step first runs inline with blocking forbidden: each place that is about to
do I/O, or to wait for another thread's load, calls `may_block()`, which then raises `WouldBlock`
and the step is run again on a thread, where blocking is fine.

`WouldBlock` is a BaseException on purpose: the stores translate `Exception`s into
`StoreUnavailable`, and this must pass through them untouched (and release every lock on its
way out, as any exception does).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_FORBIDDEN: contextvars.ContextVar[bool] = contextvars.ContextVar("blocking_forbidden", default=False)
_DEFERRED: contextvars.ContextVar[list[Callable[[], object]] | None] = contextvars.ContextVar("deferred", default=None)


class WouldBlock(BaseException):
    """Raised by `may_block()` where blocking is forbidden."""


def may_block() -> None:
    """Call right before anything that may block (network I/O, waiting on another thread's load)."""
    if _FORBIDDEN.get():
        raise WouldBlock


def if_completed(action: Callable[[], object]) -> None:
    """Run `action` now, or, inside an inline attempt, once the attempt completes (never, if it gives
    way to a thread): an attempt that is abandoned and run again leaves no trace (its trace spans)."""
    deferred = _DEFERRED.get()
    if deferred is None:
        action()
    else:
        deferred.append(action)


async def inline_or_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)`, inline if it completes without blocking, else on the default thread pool."""
    deferred: list[Callable[[], object]] = []
    token, pending = _FORBIDDEN.set(True), _DEFERRED.set(deferred)
    try:
        result = fn(*args, **kwargs)
    except WouldBlock:
        pass
    else:
        for action in deferred:
            action()
        return result
    finally:
        _FORBIDDEN.reset(token)
        _DEFERRED.reset(pending)
    return await asyncio.to_thread(fn, *args, **kwargs)


def inline_first(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a plain handler the HTTP layer may try inline on the event loop first.

    The contract: before its first `may_block()` it changes nothing that a second run would change
    again (no counter incremented, no audit line written, nothing stored), because after a
    `WouldBlock` it runs once more, from the start, on a thread.
    """
    fn.inline_first = True  # type: ignore[attr-defined]  # read by function_app.serve
    return fn


def is_inline_first(fn: object) -> bool:
    return getattr(fn, "inline_first", False) is True
