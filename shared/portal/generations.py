"""Server-side state behind portal sessions: a session generation per client.

A portal session cookie is signed, so without state on the server it stays valid until it
expires, whatever happens. Each session therefore carries the generation its client had when it
was issued, and is honoured only while that is still the client's current generation. Signing out
and disabling the client both move the generation on, which ends every portal session of that
client at once, on every instance (the row lives in Table Storage, read on each portal request).
"""

from __future__ import annotations

from shared.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.stores import EntityTable

_ATTEMPTS = 5  # concurrent bumps of one client's row retry on the ETag; more than a few is a bug


class SessionGenerations:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def current(self, client_id: str) -> int:
        try:
            return int(self._table.get(client_id).data.get("generation", 0))
        except NotFound:
            return 0

    def end_all(self, client_id: str) -> None:
        """Ends every portal session of the client (sign-out, client disabled)."""
        for _ in range(_ATTEMPTS):
            try:
                self._bump(client_id)
                return
            except (PreconditionFailed, AlreadyExists, NotFound):
                continue  # another instance bumped it first: read again
        raise RuntimeError(f"could not end the portal sessions of {client_id} after {_ATTEMPTS} attempts")

    def _bump(self, client_id: str) -> None:
        try:
            entity = self._table.get(client_id)
        except NotFound:
            self._table.insert(client_id, {"generation": 1})
            return
        generation = int(entity.data.get("generation", 0)) + 1
        self._table.replace(client_id, {"generation": generation}, etag=entity.etag)
