"""Runs a batch's entries concurrently on the event loop and streams the batch-response in order.

Bounds, and why each exists:
* **Per batch** (`BATCH_CONCURRENCY`): at most that many of one batch's entries talk to the
  provider at once, as before the async rewrite (a provider sees the same pressure).
* **Per tenant** (`TENANT_CONCURRENCY`): all of one tenant's batches together hold at most that
  many upstream exchanges, so a tenant posting many slow batches waits on its own share and
  never delays another tenant's entries.
* **Memory**: an entry is started only while fewer than twice the batch concurrency are waiting
  to be written, so a slow first entry cannot make the other 99 pile up in memory.
* **Time** (`BATCH_DEADLINE_SECONDS`): entries not answered by the batch's deadline are answered
  504 in their place; the batch-response is always complete and well-formed.
* **Size** (`BATCH_MAX_RESPONSE_BYTES`): an entry that would take the batch-response past the cap
  is answered 502 too-costly in its place, so the total stays bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from shared import telemetry
from shared.errors import operation_outcome

Fetch = Callable[[object, int], Awaitable[bytes]]  # (entry, byte budget) -> one batch-response entry's JSON
HEAD = b'{"resourceType":"Bundle","type":"batch-response","entry":['
TAIL = b"]}"


def outcome_entry(status: str, code: str, diagnostics: str) -> bytes:
    """A batch-response entry that carries an OperationOutcome in place of the provider's answer, as
    `resource` like every failed entry (DSTU2's entry.response has no `outcome` element)."""
    return json.dumps({"response": {"status": status}, "resource": operation_outcome(code, diagnostics)},
                      separators=(",", ":")).encode()


def _late() -> bytes:
    return outcome_entry("504 Gateway Timeout", "timeout", "the batch's deadline passed before this entry was answered")


def _too_large() -> bytes:
    return outcome_entry("502 Bad Gateway", "too-costly", "the batch-response would exceed the gateway's size limit")


class BatchRunner:
    """One per process: the per-tenant shares must be seen by every batch of the tenant."""

    def __init__(self, per_batch: int, per_tenant: int, deadline_seconds: float, max_response_bytes: int) -> None:
        self._per_batch, self._deadline, self._max_bytes = per_batch, deadline_seconds, max_response_bytes
        self._tenant_shares: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_tenant))

    async def run(self, tenant_id: str, entries: list, fetch: Fetch) -> AsyncIterator[bytes]:
        """The batch-response Bundle's bytes: head, each entry in order as soon as it and those
        before it are done, tail. Entries still running when the consumer stops are cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        window = asyncio.Semaphore(2 * self._per_batch)
        running = asyncio.Semaphore(self._per_batch)
        share = self._tenant_shares[tenant_id]
        remaining = [self._max_bytes - len(HEAD) - len(TAIL) - len(entries)]  # commas between entries

        async def one(index: int, entry: object) -> bytes:
            """One entry, as its own span (its wait for a share included): a child of the request's."""
            with telemetry.span("batch entry", {"gateway.batch.entry_index": index}):
                async with running, share:
                    return await fetch(entry, remaining[0])

        slots: list[asyncio.Future[asyncio.Task[bytes]]] = [loop.create_future() for _ in entries]

        async def feed() -> None:
            for index, (entry, slot) in enumerate(zip(entries, slots, strict=True)):
                await window.acquire()
                slot.set_result(asyncio.ensure_future(one(index, entry)))

        feeder = asyncio.ensure_future(feed())
        try:
            yield HEAD
            for index, slot in enumerate(slots):
                body = await _answer(slot, deadline)
                window.release()
                if len(body) > remaining[0]:
                    body = _too_large()
                remaining[0] -= len(body)
                yield (b"," if index else b"") + body
            yield TAIL
        finally:
            feeder.cancel()
            for slot in slots:
                if slot.done() and not slot.cancelled():
                    slot.result().cancel()


async def _answer(slot: asyncio.Future[asyncio.Task[bytes]], deadline: float) -> bytes:
    """An entry's answer, or the late answer once the batch's deadline has passed (a finished entry
    is still used: `timeout_at` only interrupts a wait)."""
    try:
        async with asyncio.timeout_at(deadline):
            task = await asyncio.shield(slot)
            return await asyncio.shield(task)
    except TimeoutError:
        if slot.done():
            slot.result().cancel()
        return _late()
