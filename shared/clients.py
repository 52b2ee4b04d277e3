"""The client registry: consumers, their secrets, and client authentication at the token endpoint.

Client metadata (name, status, created) is a Table Storage row. Each client secret is one Key
Vault secret `client-<client_id>-<secret_id>` holding only a verifier, with Key Vault's own
`expires_on`/`enabled` attributes doing expiry and disabling, and tags carrying the listing
facts (hint, created). The secret itself is shown once, at creation, and never stored.

Why an HMAC-SHA-256 verifier and not a slow password hash: the gateway generates every secret
with 256 bits from `secrets`, so there is nothing to brute-force offline; a slow KDF would only
burn CPU on every token request. The HMAC key separates this use from any other hash, and the
message binds the verifier to its client and secret id, so a verifier copied to another name
verifies nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.errors import NotFound, ProblemError
from shared.offloop import may_block
from shared.stores import EntityTable, SecretRecord, SecretStore

_VERIFIER_KEY = b"fhir-gateway/client-secret-verifier/v1"
_SECRET_RE = re.compile(r"^([0-9a-f]{16})~([A-Za-z0-9_-]{43})$")
_CLIENT_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CACHE_MAX = 10_000
_LOAD_STRIPES = 64


class InvalidClient(Exception):
    """Client authentication failed; deliberately says nothing about why."""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    status: str
    created: str

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict:
        return {"client_id": self.client_id, "name": self.name, "status": self.status, "created": self.created}


@dataclass(frozen=True)
class SecretInfo:
    secret_id: str
    hint: str
    created: str
    expires_on: str | None
    enabled: bool

    def live_at(self, now: datetime) -> bool:
        return self.enabled and (self.expires_on is None or datetime.fromisoformat(self.expires_on) > now)

    def to_json(self) -> dict:
        return {"secret_id": self.secret_id, "hint": self.hint, "created": self.created,
                "expires_on": self.expires_on, "enabled": self.enabled}


def verifier(client_id: str, secret_id: str, secret: str) -> str:
    return hmac.new(_VERIFIER_KEY, f"{client_id}\n{secret_id}\n{secret}".encode(), hashlib.sha256).hexdigest()


def _secret_name(client_id: str, secret_id: str) -> str:
    return f"client-{client_id}-{secret_id}"


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


class _TtlCache:
    """Small bounded TTL cache; entries remember when they were fetched so a TTL bounds staleness."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl, self._clock = ttl, clock
        self._data: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading = [threading.Lock() for _ in range(_LOAD_STRIPES)]

    def get(self, key: str) -> tuple[bool, object]:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or self._clock() - hit[0] >= self._ttl:
                return False, None
            return True, hit[1]

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._data[key] = (self._clock(), value)
            self._data.move_to_end(key)
            while len(self._data) > _CACHE_MAX:
                self._data.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def get_or_load(self, key: str, load: Callable[[], object]) -> object:
        """One load per key per TTL: requests that miss together (a client's burst as its entry
        expires) wait for the first one's Key Vault or Table call instead of each making their own."""
        hit, value = self.get(key)
        if hit:
            return value
        may_block()  # a store read, or a wait for another thread's
        with self._loading[hash(key) % _LOAD_STRIPES]:
            hit, value = self.get(key)
            if not hit:
                value = load()
                self.put(key, value)
            return value


class ClientRegistry:
    def __init__(self, table: EntityTable, store: SecretStore, cache_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._table, self._store, self._clock = table, store, clock
        self._verifiers = _TtlCache(cache_ttl, clock)
        self._clients = _TtlCache(cache_ttl, clock)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- management ---------------------------------------------------------------------------

    def create(self, name: str, expires_on: datetime | None = None) -> tuple[Client, str, SecretInfo]:
        client = Client(str(uuid.uuid4()), name, "active", _iso(self._now()) or "")
        self._table.insert(client.client_id, {"name": name, "status": "active", "created": client.created})
        secret, info = self.add_secret(client.client_id, expires_on)
        return client, secret, info

    def get(self, client_id: str) -> Client:
        if not _CLIENT_ID_RE.match(client_id):
            raise NotFound()
        entity = self._table.get(client_id)
        return Client(client_id, entity.data.get("name", ""), entity.data.get("status", "disabled"),
                      entity.data.get("created", ""))

    def list(self) -> list[Client]:
        return [Client(e.key, e.data.get("name", ""), e.data.get("status", "disabled"), e.data.get("created", ""))
                for e in self._table.list()]

    def disable(self, client_id: str) -> Client:
        client = self.get(client_id)
        self._table.replace(client_id, {"name": client.name, "status": "disabled", "created": client.created})
        self._clients.drop(client_id)
        return self.get(client_id)

    def add_secret(self, client_id: str, expires_on: datetime | None = None) -> tuple[str, SecretInfo]:
        self.get(client_id)
        if expires_on is not None and expires_on <= self._now():
            raise ProblemError(400, "Invalid secret expiry", "expires_on must be in the future", "expires_on")
        secret_id = secrets.token_hex(8)
        secret = f"{secret_id}~{secrets.token_urlsafe(32)}"
        created = _iso(self._now()) or ""
        hint = secret[17:20]
        self._store.set_secret(
            _secret_name(client_id, secret_id), verifier(client_id, secret_id, secret), expires_on=expires_on,
            content_type="hmac-sha256-verifier",
            tags={"client_id": client_id, "secret_id": secret_id, "hint": hint, "created": created})
        return secret, SecretInfo(secret_id, hint, created, _iso(expires_on), True)

    def list_secrets(self, client_id: str) -> list[SecretInfo]:
        self.get(client_id)
        infos = [self._info(r) for r in self._store.list_secrets(f"client-{client_id}-")]
        return sorted(infos, key=lambda i: i.created)

    @staticmethod
    def _info(record: SecretRecord) -> SecretInfo:
        tags = record.tags
        return SecretInfo(tags.get("secret_id", record.name.rsplit("-", 1)[-1]), tags.get("hint", ""),
                          tags.get("created", _iso(record.created_on) or ""), _iso(record.expires_on),
                          record.enabled)

    def delete_secret(self, client_id: str, secret_id: str) -> None:
        client = self.get(client_id)
        infos = self.list_secrets(client_id)
        target = next((i for i in infos if i.secret_id == secret_id), None)
        if target is None:
            raise NotFound()
        now = self._now()
        others_live = [i for i in infos if i.secret_id != secret_id and i.live_at(now)]
        if client.active and target.live_at(now) and not others_live:
            raise ProblemError(409, "Last live secret",
                               "refusing to delete the client's last live secret: add a new secret first, "
                               "or disable the client", "secret_id")
        self._store.delete_secret(_secret_name(client_id, secret_id))
        self._verifiers.drop(_secret_name(client_id, secret_id))

    # --- authentication (token endpoint hot path) ---------------------------------------------

    def authenticate(self, client_id: str, secret: str) -> Client:
        """Verify a client secret in constant time; cached for the TTL (a deleted secret dies within it)."""
        match = _SECRET_RE.match(secret)
        if not _CLIENT_ID_RE.match(client_id) or match is None:
            raise InvalidClient()
        secret_id = match.group(1)
        record = self._verifier(client_id, secret_id)
        expected = record.value if record is not None and record.usable_at(self._now()) else None
        candidate = verifier(client_id, secret_id, secret)
        if not hmac.compare_digest(candidate, expected or "0" * len(candidate)) or expected is None:
            raise InvalidClient()
        client = self.cached_client(client_id)
        if client is None:
            raise InvalidClient()
        return client

    def _verifier(self, client_id: str, secret_id: str) -> SecretRecord | None:
        name = _secret_name(client_id, secret_id)
        return self._verifiers.get_or_load(name, lambda: self._read_verifier(name))  # type: ignore[return-value]

    def _read_verifier(self, name: str) -> SecretRecord | None:
        try:
            return self._store.get_secret(name)
        except NotFound:
            return None

    def cached_client(self, client_id: str) -> Client | None:
        """The client's row, cached for the TTL: a disabled client loses access within it."""
        return self._clients.get_or_load(client_id, lambda: self._read_client(client_id))  # type: ignore[return-value]

    def _read_client(self, client_id: str) -> Client | None:
        try:
            return self.get(client_id)
        except NotFound:
            return None
