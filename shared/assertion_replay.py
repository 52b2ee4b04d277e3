"""The `ReplayStore` of `private_key_jwt` (shared/client_assertion.py) on Table Storage.

Every instance must refuse a `jti` any instance has accepted, so the claim is an insert-only row:
PartitionKey = the client id, RowKey = SHA-256 of the jti (a client chooses its jti freely: hashing
keeps row keys within Table Storage's character rules and size, and one client's ids apart from
another's by the partition). Table Storage's insert is atomic, so of two instances racing with one
assertion exactly one wins. A row whose `exp` has passed no longer protects anything (the
assertion itself is refused as expired, past the verifier's leeway), so it may be taken over, under its ETag so that two
takers cannot both win.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from shared.client_assertion import CLOCK_SKEW_SECONDS
from shared.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.stores import EntityTable


class TableReplayStore:
    """`partition(client_id)` gives the assertions table's partition of one client."""

    def __init__(self, partition: Callable[[str], EntityTable], clock: Callable[[], float] = time.time) -> None:
        self._partition, self._clock = partition, clock

    def claim(self, client_id: str, jti: str, exp: int) -> bool:
        table = self._partition(client_id)
        key = hashlib.sha256(jti.encode()).hexdigest()
        try:
            table.insert(key, {"exp": int(exp)})
            return True
        except AlreadyExists:
            pass
        try:
            existing = table.get(key)
        except NotFound:  # removed between the two calls: nothing to take over, the next try decides
            return False
        # The assertion stays acceptable until exp plus the verifier's leeway: so does its row.
        if int(existing.data.get("exp", 0)) + CLOCK_SKEW_SECONDS >= self._clock():
            return False
        try:
            table.replace(key, {"exp": int(exp)}, existing.etag)
        except (PreconditionFailed, NotFound):
            return False
        return True
