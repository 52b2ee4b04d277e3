"""The client registry: consumers, their keys and secrets, and client authentication at the token endpoint.

Client metadata (name, status, created, public keys) is a Table Storage row (partition `p`); each
secret is a verifier row beside it (`secrets` partition), made with a Key Vault pepper
(shared/client_secrets.py says how and why).

Why not one Key Vault secret per client secret (the previous design): each instance read each
verifier once per TTL, so vault load grew with instances x clients (issue #14). Now each instance
holds the rows it has used, kept fresh by one change-log query per TTL per partition
(`shared/stores/snapshot.py`), and reads the pepper once per TTL: once warm, the token endpoint's
hot path makes no store call at all.

Existing clients migrate without downtime and without a migration step: a client row without the
`verifiers: table` marker is a legacy client, whose secrets may still be Key Vault verifiers
(`client-<client_id>-<secret_id>`, unpeppered HMAC). A presented secret with no row is checked
against that legacy verifier and, when it matches, copied as a peppered row (the presented secret
is in hand, so the pepper can be applied), after which the vault is never asked for it again.
"""

from __future__ import annotations

import builtins
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from shared.cache import TtlCache
from shared.client_secrets import (
    PepperRing,
    SecretInfo,
    VerifierRow,
    iso,
    legacy_info,
    legacy_name,
    legacy_verifier,
    new_secret,
    row_key,
    secret_id_of,
    verifies,
)
from shared.errors import AlreadyExists, InvalidField, LastLiveSecret, NotFound
from shared.guid import is_canonical_guid
from shared.stores import Entity, EntityTable, SecretRecord, SecretStore
from shared.stores.snapshot import TOMBSTONE, TableSnapshot

MIGRATED = "table"  # the client row's `verifiers` value once its secrets are rows (set at creation)
# A JWK Set lives in the client's row (one Table property holds 64 KiB): ten 4096-bit RSA keys fit.
MAX_JWKS_CHARS = 16 * 1024


class InvalidClient(Exception):
    """Client authentication failed; deliberately says nothing about why."""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    status: str
    created: str
    legacy: bool = False  # secrets may still be Key Vault verifiers (created before issue #14)
    jwks: dict | None = None  # public keys for private_key_jwt (SMART Backend Services), if registered
    jwks_uri: str | None = None  # or where the client publishes them (shared/client_jwks.py)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict:
        out: dict[str, Any] = {"client_id": self.client_id, "name": self.name, "status": self.status,
                               "created": self.created}
        if self.jwks is not None:
            out["jwks"] = self.jwks
        if self.jwks_uri is not None:
            out["jwks_uri"] = self.jwks_uri
        return out


def _client(entity: Entity) -> Client:
    d = entity.data
    return Client(entity.key, d.get("name", ""), d.get("status", "disabled"), d.get("created", ""),
                  d.get("verifiers") != MIGRATED, _stored_jwks(d.get("jwks")), d.get("jwks_uri") or None)


def _stored_jwks(raw: object) -> dict | None:
    """The row's JWK Set (validated when it was registered); an unreadable one authenticates nobody."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _key_properties(jwks: dict | None, jwks_uri: str | None) -> dict[str, str]:
    """The row's key properties: the set as compact JSON, bounded so the row stays far below Table
    Storage's limits, or the (already validated) URL where the client publishes it."""
    if jwks_uri is not None:
        return {"jwks_uri": jwks_uri}
    if jwks is None:
        return {}
    text = json.dumps(jwks, separators=(",", ":"))
    if len(text) > MAX_JWKS_CHARS:
        raise InvalidField("jwks", f"the JWK Set must be at most {MAX_JWKS_CHARS} characters of JSON",
                           subject="JWK Set")
    return {"jwks": text}


class ClientRegistry:
    def __init__(self, partition: Callable[[str], EntityTable], store: SecretStore, cache_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        """`partition(name)`: the client table's partitions: `p` client rows, `secrets` verifier rows,
        `meta` the row naming the current pepper, and each snapshot's change log; `store`: Key
        Vault (peppers, legacy verifiers)."""
        self._table, self._rows = partition("p"), partition("secrets")
        self._store, self._clock = store, clock
        self._clients: TableSnapshot[Client] = TableSnapshot(self._table, partition("p-changes"), cache_ttl, _client)
        self._secrets: TableSnapshot[VerifierRow] = TableSnapshot(self._rows, partition("secrets-changes"),
                                                                  cache_ttl, VerifierRow.from_entity)
        self._peppers = PepperRing(store, partition("meta"), cache_ttl)
        self._legacy: TtlCache[str, SecretRecord | None] = TtlCache(cache_ttl, clock)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- management ---------------------------------------------------------------------------

    @overload
    def create(self, name: str, expires_on: datetime | None = None, jwks: None = None,
               jwks_uri: None = None) -> tuple[Client, str, SecretInfo]: ...

    @overload
    def create(self, name: str, expires_on: datetime | None = None, jwks: dict | None = None,
               jwks_uri: str | None = None) -> tuple[Client, str | None, SecretInfo | None]: ...

    def create(self, name: str, expires_on: datetime | None = None, jwks: dict | None = None,
               jwks_uri: str | None = None) -> tuple[Client, str | None, SecretInfo | None]:
        """A client with a JWK Set or a `jwks_uri` (validated by the caller) authenticates with
        `private_key_jwt` and gets no secret: one nobody asked for would only be a credential to leak."""
        client = Client(str(uuid.uuid4()), name, "active", iso(self._now()) or "", jwks=jwks, jwks_uri=jwks_uri)
        row = {"name": name, "status": "active", "created": client.created, "verifiers": MIGRATED,
               **_key_properties(jwks, jwks_uri)}
        self._table.insert(client.client_id, row)
        self._clients.changed(client.client_id)
        if jwks is not None or jwks_uri is not None:
            return client, None, None
        secret, info = self.add_secret(client.client_id, expires_on)
        return client, secret, info

    def set_jwks(self, client_id: str, jwks: dict | None, jwks_uri: str | None = None) -> Client:
        """Replace the client's keys (a set or a URL, validated by the caller; the other is dropped);
        every instance follows within the TTL."""
        entity = self._entity(client_id)
        kept = {k: v for k, v in entity.data.items() if k not in ("jwks", "jwks_uri")}
        self._table.replace(client_id, {**kept, **_key_properties(jwks, jwks_uri)}, entity.etag)
        self._clients.changed(client_id)
        return self.get(client_id)

    def _entity(self, client_id: str) -> Entity:
        if not is_canonical_guid(client_id):
            raise NotFound()
        return self._table.get(client_id)

    def get(self, client_id: str) -> Client:
        return _client(self._entity(client_id))

    def list(self) -> list[Client]:
        return [_client(e) for e in self._table.list() if is_canonical_guid(e.key)]

    def disable(self, client_id: str) -> Client:
        entity = self._entity(client_id)
        self._table.replace(client_id, {**entity.data, "status": "disabled"})
        self._clients.changed(client_id)
        return self.get(client_id)

    def add_secret(self, client_id: str, expires_on: datetime | None = None) -> tuple[str, SecretInfo]:
        self.get(client_id)
        if expires_on is not None and expires_on <= self._now():
            raise InvalidField("expires_on", "expires_on must be in the future", subject="secret expiry")
        secret_id, secret = new_secret()
        row = self._peppers.row(client_id, secret_id, secret, secret[17:20], iso(self._now()) or "", iso(expires_on))
        self._rows.insert(row_key(client_id, secret_id), row.to_entity())
        self._secrets.changed(row_key(client_id, secret_id))
        return secret, row.info()

    def list_secrets(self, client_id: str) -> builtins.list[SecretInfo]:
        return sorted(self._secret_infos(self.get(client_id)).values(), key=lambda i: i.created)

    def _secret_infos(self, client: Client) -> dict[str, SecretInfo]:
        """Rows, read directly (management wants the truth, not a snapshot); for a legacy client also
        its Key Vault verifiers not yet copied (a tombstone row hides one that was deleted)."""
        rows = self._rows.list_prefix(client.client_id + "-")
        infos = {e.data.get("secret_id", ""): VerifierRow.from_entity(e).info()
                 for e in rows if not e.data.get(TOMBSTONE)}
        if client.legacy:
            gone = {e.data.get("secret_id", "") for e in rows}
            for record in self._store.list_secrets(f"client-{client.client_id}-"):
                info = legacy_info(record)
                if info.secret_id not in gone:
                    infos[info.secret_id] = info
        return infos

    def delete_secret(self, client_id: str, secret_id: str) -> None:
        client = self.get(client_id)
        infos = self._secret_infos(client)
        target = infos.get(secret_id)
        if target is None:
            raise NotFound()
        now = self._now()
        others_live = [i for i in infos.values() if i.secret_id != secret_id and i.live_at(now)]
        if client.active and target.live_at(now) and not others_live:
            raise LastLiveSecret()
        if client.legacy:  # the vault copy first, so no later fallback can copy a deleted secret back
            with contextlib.suppress(NotFound):
                self._store.delete_secret(legacy_name(client_id, secret_id))
            self._legacy.drop(legacy_name(client_id, secret_id))
        # A tombstone, not a delete: every instance's delta query must see the secret go.
        self._rows.replace(row_key(client_id, secret_id), {TOMBSTONE: True, "client_id": client_id,
                                                            "secret_id": secret_id})
        self._secrets.changed(row_key(client_id, secret_id))

    # --- authentication (token endpoint hot path) ---------------------------------------------

    def authenticate(self, client_id: str, secret: str, before_vault: Callable[[], None] | None = None) -> Client:
        """Verify a client secret in constant time against the rows held in memory (no store call once
        they are held and the change log is followed). Only a legacy client's secret that has no row
        yet costs a Key Vault read, and `before_vault` runs first (the token endpoint's failure
        limits: made-up secret ids must not turn into unlimited vault reads)."""
        secret_id = secret_id_of(secret)
        if not is_canonical_guid(client_id) or secret_id is None:
            raise InvalidClient()
        client = self._clients.get(client_id)
        row = self._secrets.get(row_key(client_id, secret_id))
        if row is None and client is not None and client.legacy:
            if before_vault is not None:
                before_vault()
            row = self._migrate(client_id, secret_id, secret)
        pepper = self._peppers.get(row.pepper_id) if row is not None and row.live_at(self._now()) else None
        expected = row.verifier if row is not None and pepper is not None else None
        if not verifies(expected, pepper, client_id, secret_id, secret) or client is None:
            raise InvalidClient()
        return client

    def _migrate(self, client_id: str, secret_id: str, secret: str) -> VerifierRow | None:
        """A legacy Key Vault verifier that matches the presented secret becomes a peppered row."""
        name = legacy_name(client_id, secret_id)
        record = self._legacy.get_or_load(name, lambda: self._read_legacy(name))
        if record is None or record.value is None or not record.usable_at(self._now()):
            return None
        if not hmac.compare_digest(legacy_verifier(client_id, secret_id, secret).encode(), record.value.encode()):
            return None
        info = legacy_info(record)
        row = self._peppers.row(client_id, secret_id, secret, info.hint, info.created, info.expires_on)
        try:
            self._rows.insert(row_key(client_id, secret_id), row.to_entity())
        except AlreadyExists:  # another instance copied it first, or it was deleted: the row decides
            existing = self._rows.get(row_key(client_id, secret_id))
            return None if existing.data.get(TOMBSTONE) else VerifierRow.from_entity(existing)
        self._secrets.changed(row_key(client_id, secret_id))
        return row

    def _read_legacy(self, name: str) -> SecretRecord | None:
        try:
            return self._store.get_secret(name)
        except NotFound:
            return None

    def cached_client(self, client_id: str) -> Client | None:
        """The client's row, held while the change log is followed: a disabled client loses access
        everywhere within the TTL."""
        return self._clients.get(client_id)
