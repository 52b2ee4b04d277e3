"""The vault's secrets, their versions and the soft-deleted ones, persisted to one JSON file.

Knows nothing of HTTP: misses and conflicts are the domain errors below, which the service turns
into Key Vault's error bodies. Every method is one locked transaction and hands back copies, so a
caller never sees (or changes) a record another request is changing.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.identity_endpoint import write_json_atomically

# Soft delete is always on; deleted secrets are purged once this many days have passed.
RECOVERABLE_DAYS = 90

Record = dict[str, Any]


class StoreError(Exception):
    """A request the state cannot satisfy; ``name`` is how the error message names the secret."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class SecretNotFound(StoreError):
    """No live secret by that name (``name``), or no such version of it (``name/version``)."""


class DeletedSecretNotFound(StoreError):
    """No soft-deleted secret by that name."""


class NameDeletedButRecoverable(StoreError):
    """The name belongs to a soft-deleted secret, which must be recovered or purged first."""


class VaultStore:
    """All vault state, kept in memory and written through to one JSON file after each change.

    Layout: ``{"secrets": {lower_name: {"name", "versions": [...]}}, "deleted": {lower_name:
    {"name", "versions", "deletedDate", "scheduledPurgeDate"}}}``; versions oldest first. Names
    are case-insensitive and keep the spelling of their first set.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = {"secrets": {}, "deleted": {}}
        if path.exists():
            self._state = json.loads(path.read_text(encoding="utf-8"))

    # -- live secrets

    def add_version(self, name: str, record: Record) -> tuple[str, Record]:
        """Appends ``record`` as the newest version; answers the stored name and the record."""
        key = name.lower()
        with self._transaction(write=True) as state:
            if key in state["deleted"]:
                raise NameDeletedButRecoverable(state["deleted"][key]["name"])
            entry = state["secrets"].setdefault(key, {"name": name, "versions": []})
            entry["versions"].append(record)
            return entry["name"], copy.deepcopy(record)

    def find(self, name: str, version: str) -> tuple[str, Record]:
        """The stored name and the given version (the newest when ``version`` is empty)."""
        with self._transaction(write=False) as state:
            stored_name, record = _find_version(state, name, version)
            return stored_name, copy.deepcopy(record)

    def update(self, name: str, version: str, changes: Record) -> tuple[str, Record]:
        with self._transaction(write=True) as state:
            stored_name, record = _find_version(state, name, version)
            record.update(changes)
            record["updated"] = int(time.time())
            return stored_name, copy.deepcopy(record)

    def latest_versions(self) -> list[tuple[str, str, Record]]:
        """``(key, name, newest version)`` of every live secret, in key order (the paging cursor)."""
        with self._transaction(write=False) as state:
            return [
                (key, entry["name"], copy.deepcopy(entry["versions"][-1]))
                for key, entry in sorted(state["secrets"].items())
            ]

    def versions(self, name: str) -> tuple[str, list[Record]]:
        """The stored name and every version, oldest first."""
        with self._transaction(write=False) as state:
            entry = state["secrets"].get(name.lower())
            if entry is None:
                raise SecretNotFound(name)
            return entry["name"], copy.deepcopy(entry["versions"])

    def delete(self, name: str) -> Record:
        """Soft-deletes every version; answers the deleted entry."""
        key = name.lower()
        with self._transaction(write=True) as state:
            entry = state["secrets"].pop(key, None)
            if entry is None:
                raise SecretNotFound(name)
            now = int(time.time())
            entry.update(deletedDate=now, scheduledPurgeDate=now + RECOVERABLE_DAYS * 86400)
            state["deleted"][key] = entry
            return copy.deepcopy(entry)

    # -- soft-deleted secrets

    def deleted(self, name: str) -> Record:
        with self._transaction(write=False) as state:
            entry = state["deleted"].get(name.lower())
            if entry is None:
                raise DeletedSecretNotFound(name)
            return copy.deepcopy(entry)

    def all_deleted(self) -> list[tuple[str, Record]]:
        """``(key, deleted entry)`` in key order (the paging cursor)."""
        with self._transaction(write=False) as state:
            return [(key, copy.deepcopy(entry)) for key, entry in sorted(state["deleted"].items())]

    def purge(self, name: str) -> None:
        with self._transaction(write=True) as state:
            if state["deleted"].pop(name.lower(), None) is None:
                raise DeletedSecretNotFound(name)

    def recover(self, name: str) -> tuple[str, Record]:
        """Makes a deleted secret live again; answers its name and newest version."""
        key = name.lower()
        with self._transaction(write=True) as state:
            entry = state["deleted"].pop(key, None)
            if entry is None:
                raise DeletedSecretNotFound(name)
            del entry["deletedDate"], entry["scheduledPurgeDate"]
            state["secrets"][key] = entry
            return entry["name"], copy.deepcopy(entry["versions"][-1])

    # -- locking and persistence

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[dict[str, dict[str, Any]]]:
        """Serialises all access; a write is persisted only if the block finishes without error,
        so callers must validate before they mutate."""
        with self._lock:
            purged = self._purge_due()
            yield self._state
            if write or purged:
                write_json_atomically(self._path, self._state)

    def _purge_due(self) -> bool:
        now = int(time.time())
        deleted = self._state["deleted"]
        due = [key for key, entry in deleted.items() if entry["scheduledPurgeDate"] <= now]
        for key in due:
            del deleted[key]
        return bool(due)


def _find_version(state: dict[str, Any], name: str, version: str) -> tuple[str, Record]:
    entry = state["secrets"].get(name.lower())
    if entry is None:
        raise SecretNotFound(name)
    if not version:
        return entry["name"], entry["versions"][-1]
    for record in entry["versions"]:
        if record["version"] == version.lower():
            return entry["name"], record
    raise SecretNotFound(f"{name}/{version}")
