"""In-memory fakes of the two storage seams (`shared.stores.SecretStore`, `shared.stores.EntityTable`).

Why fakes at all: the unit tier (`scripts/test -m unit`) runs the core (token service, registries,
proxy, policy, bridge) in seconds, without Azurite or the Key Vault emulator. The emulator tier
(tests/test_azure_stores.py and the end-to-end suites) still pins the real SDKs down; these fakes
copy the semantics those tests prove, and tests/unit/test_unit_fake_stores.py holds the fakes to the
same contract, so a fake that drifts from the real store fails there, not in a registry test.

What is copied from the real implementations (shared/stores/tables.py, shared/stores/keyvault.py):

* Tables: rows per (table, partition); `sibling` shares the rows, ETags and failure state of its
  table; `insert` is create-only (AlreadyExists); `replace` without an ETag upserts and with one
  is If-Match (PreconditionFailed when stale, NotFound when the row is gone); `delete` is NotFound
  for a missing row and PreconditionFailed for a stale ETag; listings come in RowKey order, as
  Table Storage returns them; None values are not stored (the SDK skips them); values the SDK
  cannot serialise (lists, dicts, ints outside Int32) raise TypeError; a key Table Storage refuses
  is a 400, which the real store turns into StoreUnavailable.
* Key Vault: names are case-insensitive and keep their first spelling; `set_secret` adds an
  enabled version and returns properties without the value; a disabled secret reads as NotFound
  (the real store maps the vault's 403 so); expired and not-yet-valid secrets still read (Key Vault
  does not enforce exp/nbf on secrets); deletion is soft, so a deleted name cannot be set again
  (AlreadyExists) until purged; times have one-second resolution; tags must be string values.
* Both call `may_block()` before every operation, as the real stores do before network I/O, so the
  proxy's inline-then-thread step (shared/offloop.py) behaves as it does in production.

Test controls the real stores lack: `outage` (every call raises that StoreUnavailable, as a
stopped or throttling service does) and `calls` (operations counted, to prove cache hits).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.errors import AlreadyExists, NotFound, PreconditionFailed, StoreUnavailable
from shared.offloop import may_block
from shared.stores import Entity, SecretRecord

_INT32 = range(-(2**31), 2**31)
_SCALARS = (str, bool, float, bytes, datetime)
_BAD_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def _outage_copy(exc: StoreUnavailable) -> StoreUnavailable:
    """A fresh exception per call: one instance raised in many threads would share its traceback."""
    return StoreUnavailable(exc.component, exc.reason, exc.retry_after, exc.throttled)


# --- EntityTable ----------------------------------------------------------------------------------------

@dataclass
class _TableState:
    """What siblings share: the rows of every partition, the ETag counter, failures and counts."""

    rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = field(default_factory=dict)
    serial: int = 0
    outage: StoreUnavailable | None = None
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _stored(data: dict[str, Any]) -> dict[str, Any]:
    """The properties as Table Storage keeps them (azure.data.tables._serialize): None is skipped,
    unsupported types are the SDK's TypeError before anything is sent."""
    kept: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in _INT32:
                raise TypeError(f"{name}: {value} does not fit Edm.Int32")
        elif not isinstance(value, _SCALARS):
            raise TypeError(f"{name}: type {type(value).__name__} is not supported by Table Storage")
        kept[name] = value
    return kept


class FakeTable:
    """`EntityTable` in memory; `sibling(partition)` is the same table's other partition."""

    def __init__(self, partition: str = "p", *, _state: _TableState | None = None) -> None:
        self._partition = partition
        self._state = _state or _TableState()

    def sibling(self, partition: str) -> FakeTable:
        return FakeTable(partition, _state=self._state)

    # --- test controls ---------------------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        """Operations made on the whole table (every partition), by name."""
        return self._state.calls

    @property
    def outage(self) -> StoreUnavailable | None:
        return self._state.outage

    @outage.setter
    def outage(self, exc: StoreUnavailable | None) -> None:
        self._state.outage = exc

    def keys(self) -> list[str]:
        """This partition's row keys, without counting a call (for assertions)."""
        with self._state.lock:
            return sorted(k for p, k in self._state.rows if p == self._partition)

    # --- EntityTable -------------------------------------------------------------------------------

    def _enter(self, operation: str, key: str | None = None) -> None:
        may_block()  # the real store's network I/O: never on the event loop
        self._state.calls[operation] += 1
        if self._state.outage is not None:
            raise _outage_copy(self._state.outage)
        if key is not None and (not isinstance(key, str) or _BAD_KEY.search(key) or len(key.encode()) > 1024):
            raise StoreUnavailable("table-storage", "HTTP 400")  # what tables.py makes of the service's 400

    def _etag(self) -> str:
        self._state.serial += 1
        return f'W/"{self._state.serial}"'

    def _list(self, keep: Callable[[str], bool]) -> list[Entity]:
        with self._state.lock:
            found = [Entity(k, dict(data), etag) for (p, k), (data, etag) in self._state.rows.items()
                     if p == self._partition and keep(k)]
        return sorted(found, key=lambda e: e.key)

    def get(self, key: str) -> Entity:
        self._enter("get", key)
        with self._state.lock:
            held = self._state.rows.get((self._partition, key))
        if held is None:
            raise NotFound()
        return Entity(key, dict(held[0]), held[1])

    def list(self) -> list[Entity]:
        self._enter("list")
        return self._list(lambda _: True)

    def list_prefix(self, prefix: str) -> list[Entity]:
        if not prefix:
            raise ValueError("list_prefix needs a non-empty prefix")  # tables.py indexes prefix[-1]
        self._enter("list_prefix")
        return self._list(lambda k: k.startswith(prefix))

    def list_from(self, lowest: str) -> list[Entity]:
        self._enter("list_from")
        return self._list(lambda k: k >= lowest)

    def insert(self, key: str, data: dict[str, Any]) -> Entity:
        self._enter("insert", key)
        row = _stored(data)
        with self._state.lock:
            if (self._partition, key) in self._state.rows:
                raise AlreadyExists()
            etag = self._etag()
            self._state.rows[(self._partition, key)] = (row, etag)
        return Entity(key, dict(data), etag)

    def replace(self, key: str, data: dict[str, Any], etag: str | None = None) -> Entity:
        self._enter("replace", key)
        row = _stored(data)
        with self._state.lock:
            held = self._state.rows.get((self._partition, key))
            if etag is not None:
                if held is None:
                    raise NotFound()
                if held[1] != etag and etag != "*":
                    raise PreconditionFailed()
            fresh = self._etag()
            self._state.rows[(self._partition, key)] = (row, fresh)
        return Entity(key, dict(data), fresh)

    def delete(self, key: str, etag: str | None = None) -> None:
        self._enter("delete", key)
        with self._state.lock:
            held = self._state.rows.get((self._partition, key))
            if held is None:
                raise NotFound()
            if etag is not None and etag != "*" and held[1] != etag:
                raise PreconditionFailed()
            del self._state.rows[(self._partition, key)]

    def ping(self) -> None:
        self._enter("ping")


# --- SecretStore ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Version:
    value: str
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None
    created_on: datetime
    tags: dict[str, str]
    content_type: str | None


@dataclass
class _Secret:
    name: str  # the spelling of the first set
    versions: list[_Version]
    deleted: bool = False


def _seconds(value: datetime | None) -> datetime | None:
    """Key Vault keeps attribute times as whole epoch seconds (UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise TypeError("Key Vault attribute times must be timezone-aware")
    return datetime.fromtimestamp(int(value.timestamp()), UTC)


class FakeSecretStore:
    """`SecretStore` in memory, with Key Vault's versions, soft delete and disabled-secret reads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._secrets: dict[str, _Secret] = {}
        self._lock = threading.Lock()
        self.outage: StoreUnavailable | None = None
        self.calls: Counter[str] = Counter()

    def _enter(self, operation: str, name: str | None = None) -> None:
        may_block()
        self.calls[operation] += 1
        if self.outage is not None:
            raise _outage_copy(self.outage)
        if name is not None and not _SECRET_NAME.match(name):
            raise StoreUnavailable("key-vault", "HTTP 400")  # BadParameter, as keyvault.py translates it

    def _live(self, name: str) -> _Secret:
        secret = self._secrets.get(name.lower())
        if secret is None or secret.deleted:
            raise NotFound()
        return secret

    @staticmethod
    def _record(secret: _Secret, with_value: bool) -> SecretRecord:
        latest = secret.versions[-1]
        return SecretRecord(secret.name, latest.value if with_value else None, latest.enabled, latest.expires_on,
                            latest.not_before, latest.created_on, dict(latest.tags))

    def set_secret(self, name: str, value: str, *, expires_on: datetime | None = None,
                   tags: dict[str, str] | None = None, content_type: str | None = None) -> SecretRecord:
        self._enter("set_secret", name)
        if tags is not None and not all(isinstance(v, str) for v in tags.values()):
            raise StoreUnavailable("key-vault", "HTTP 400")
        version = _Version(value, True, _seconds(expires_on), None,
                           datetime.fromtimestamp(int(self._clock()), UTC), dict(tags or {}), content_type)
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is not None and secret.deleted:
                raise AlreadyExists()  # 409 ObjectIsDeletedButRecoverable
            if secret is None:
                secret = self._secrets[name.lower()] = _Secret(name, [])
            secret.versions.append(version)
            return self._record(secret, with_value=False)

    def get_secret(self, name: str) -> SecretRecord:
        self._enter("get_secret", name)
        with self._lock:
            secret = self._live(name)
            if not secret.versions[-1].enabled:
                raise NotFound()  # the vault's 403 SecretDisabled, as keyvault.py translates it
            return self._record(secret, with_value=True)

    def list_secrets(self, prefix: str) -> list[SecretRecord]:
        self._enter("list_secrets")
        with self._lock:
            return [self._record(s, with_value=False) for _, s in sorted(self._secrets.items())
                    if not s.deleted and s.name.startswith(prefix)]

    def update_properties(self, name: str, *, enabled: bool | None = None,
                          expires_on: datetime | None = None,
                          tags: dict[str, str] | None = None) -> SecretRecord:
        self._enter("update_properties", name)
        with self._lock:
            secret = self._live(name)
            latest = secret.versions[-1]
            secret.versions[-1] = replace(
                latest, enabled=latest.enabled if enabled is None else enabled,
                expires_on=latest.expires_on if expires_on is None else _seconds(expires_on),
                tags=latest.tags if tags is None else dict(tags))
            return self._record(secret, with_value=False)

    def delete_secret(self, name: str) -> None:
        self._enter("delete_secret", name)
        with self._lock:
            self._live(name).deleted = True

    def purge(self, name: str) -> None:
        """Test control: what Key Vault does when the retention period ends."""
        with self._lock:
            self._secrets.pop(name.lower(), None)

    def ping(self) -> None:
        self._enter("ping")


class Clock:
    """A clock the test moves by hand (seconds), for every class that accepts one: steps across
    TTLs, windows and expiry margins without sleeping. Starts at `start`, or at the wall clock."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
