"""The client registry: consumers, their secrets, and client authentication at the token endpoint.

Client metadata (name, status, created) is a Table Storage row (partition `p`). Each client secret
is a row in the same table's `secrets` partition holding only a verifier: HMAC-SHA-256 keyed with
a *pepper*, a 256-bit key that lives only in Key Vault (`client-secret-pepper-<id>`; the row names
its pepper's id, a `meta` row names the one new secrets use). A copy of the tables alone therefore
verifies nothing: every secret-verifying key is still in Key Vault, and disabling or deleting the
pepper there kills every verifier made with it within the cache TTL. The secret itself is shown
once, at creation, and never stored.

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

Why an HMAC verifier and not a slow password hash: the gateway generates every secret with 256 bits
from `secrets`, so there is nothing to brute-force offline; a slow KDF would only burn CPU on every
token request. The message binds the verifier to its client and secret id, so a verifier copied to
another row verifies nothing.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from shared.cache import TtlCache
from shared.errors import AlreadyExists, NotFound, ProblemError
from shared.guid import is_canonical_guid
from shared.stores import Entity, EntityTable, SecretRecord, SecretStore
from shared.stores.snapshot import TOMBSTONE, TableSnapshot

_LEGACY_VERIFIER_KEY = b"fhir-gateway/client-secret-verifier/v1"
PEPPER_PREFIX = "client-secret-pepper-"
PEPPER_ROW = "pepper"
MIGRATED = "table"  # the client row's `verifiers` value once its secrets are rows (set at creation)
_SECRET_RE = re.compile(r"^([0-9a-f]{16})~([A-Za-z0-9_-]{43})$")
_PEPPER_ID_RE = re.compile(r"^[0-9a-f]{16}$")
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


def verifier(pepper: bytes, client_id: str, secret_id: str, secret: str) -> str:
    return hmac.new(pepper, f"{client_id}\n{secret_id}\n{secret}".encode(), hashlib.sha256).hexdigest()


def legacy_verifier(client_id: str, secret_id: str, secret: str) -> str:
    """The pre-#14 verifier kept in Key Vault; only read to migrate a secret to a peppered row."""
    return verifier(_LEGACY_VERIFIER_KEY, client_id, secret_id, secret)


@dataclass(frozen=True)
class VerifierRow:
    """One secret's row in the `secrets` partition: its verifier, the pepper it needs, listing facts."""

    client_id: str
    secret_id: str
    verifier: str
    pepper_id: str
    hint: str
    created: str
    expires_on: str | None

    def live_at(self, now: datetime) -> bool:
        return self.expires_on is None or datetime.fromisoformat(self.expires_on) > now

    def info(self) -> SecretInfo:
        return SecretInfo(self.secret_id, self.hint, self.created, self.expires_on, True)

    def to_entity(self) -> dict[str, str]:
        return {"client_id": self.client_id, "secret_id": self.secret_id, "verifier": self.verifier,
                "pepper_id": self.pepper_id, "hint": self.hint, "created": self.created,
                "expires_on": self.expires_on or ""}

    @classmethod
    def from_entity(cls, entity: Entity) -> VerifierRow:
        d = entity.data
        return cls(d.get("client_id", ""), d.get("secret_id", ""), d.get("verifier", ""), d.get("pepper_id", ""),
                   d.get("hint", ""), d.get("created", ""), d.get("expires_on") or None)


def _row_key(client_id: str, secret_id: str) -> str:
    return f"{client_id}-{secret_id}"


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
        raise ProblemError(400, "Invalid JWK Set", f"the JWK Set must be at most {MAX_JWKS_CHARS} characters "
                                                   "of JSON", "jwks")
    return {"jwks": text}


def _legacy_name(client_id: str, secret_id: str) -> str:
    return f"client-{client_id}-{secret_id}"


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


class PepperRing:
    """The verifier HMAC keys, read from Key Vault once per TTL per instance (whatever the number of
    clients), so a pepper disabled or deleted in the vault stops verifying everywhere within the TTL.
    A missing pepper is remembered as missing for the TTL too; a vault failure propagates (fail closed)."""

    def __init__(self, store: SecretStore, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._cache: TtlCache[str, bytes | None] = TtlCache(ttl, clock)

    def get(self, pepper_id: str) -> bytes | None:
        if not _PEPPER_ID_RE.match(pepper_id):
            return None
        return self._cache.get_or_load(pepper_id, lambda: self._read(pepper_id))

    def _read(self, pepper_id: str) -> bytes | None:
        try:
            record = self._store.get_secret(PEPPER_PREFIX + pepper_id)
        except NotFound:
            return None
        return _unb64(record.value) if record.value and record.usable_at(datetime.now(UTC)) else None


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class ClientRegistry:
    def __init__(self, partition: Callable[[str], EntityTable], store: SecretStore, cache_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        """`partition(name)`: the client table's partitions: `p` client rows, `secrets` verifier rows,
        `meta` the row naming the current pepper, and each snapshot's change log; `store`: Key
        Vault (peppers, legacy verifiers)."""
        self._table, self._rows, self._meta = partition("p"), partition("secrets"), partition("meta")
        self._store, self._clock = store, clock
        self._clients: TableSnapshot[Client] = TableSnapshot(self._table, partition("p-changes"), cache_ttl, _client)
        self._secrets: TableSnapshot[VerifierRow] = TableSnapshot(self._rows, partition("secrets-changes"),
                                                                  cache_ttl, VerifierRow.from_entity)
        self._peppers = PepperRing(store, cache_ttl)
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
        client = Client(str(uuid.uuid4()), name, "active", _iso(self._now()) or "", jwks=jwks, jwks_uri=jwks_uri)
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

    def _pepper_id(self) -> str:
        """The pepper new verifiers use. The first caller creates it in Key Vault, then claims the
        `meta` row (insert-only, atomic): of two racing instances one wins, the loser deletes its
        own pepper and uses the winner's. The vault write comes first, so the row never names a
        pepper that does not exist."""
        try:
            return str(self._meta.get(PEPPER_ROW).data["pepper_id"])
        except NotFound:
            pass
        pepper_id = secrets.token_hex(8)
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        self._store.set_secret(PEPPER_PREFIX + pepper_id, key, content_type="hmac-sha256-key",
                               tags={"purpose": "client-secret verifier pepper"})
        try:
            self._meta.insert(PEPPER_ROW, {"pepper_id": pepper_id})
            return pepper_id
        except AlreadyExists:
            self._store.delete_secret(PEPPER_PREFIX + pepper_id)
            return str(self._meta.get(PEPPER_ROW).data["pepper_id"])

    def add_secret(self, client_id: str, expires_on: datetime | None = None) -> tuple[str, SecretInfo]:
        self.get(client_id)
        if expires_on is not None and expires_on <= self._now():
            raise ProblemError(400, "Invalid secret expiry", "expires_on must be in the future", "expires_on")
        secret_id = secrets.token_hex(8)
        secret = f"{secret_id}~{secrets.token_urlsafe(32)}"
        row = self._peppered_row(client_id, secret_id, secret, secret[17:20], _iso(self._now()) or "",
                                 _iso(expires_on))
        self._rows.insert(_row_key(client_id, secret_id), row.to_entity())
        self._secrets.changed(_row_key(client_id, secret_id))
        return secret, row.info()

    def _peppered_row(self, client_id: str, secret_id: str, secret: str, hint: str, created: str,
                      expires_on: str | None) -> VerifierRow:
        pepper_id = self._pepper_id()
        pepper = self._peppers.get(pepper_id)
        if pepper is None:
            raise ProblemError(503, "Verifier key unavailable",
                               f"Key Vault secret {PEPPER_PREFIX}{pepper_id} is missing or disabled")
        return VerifierRow(client_id, secret_id, verifier(pepper, client_id, secret_id, secret), pepper_id, hint,
                           created, expires_on)

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
                info = self._legacy_info(record)
                if info.secret_id not in gone:
                    infos[info.secret_id] = info
        return infos

    @staticmethod
    def _legacy_info(record: SecretRecord) -> SecretInfo:
        tags = record.tags
        return SecretInfo(tags.get("secret_id", record.name.rsplit("-", 1)[-1]), tags.get("hint", ""),
                          tags.get("created", _iso(record.created_on) or ""), _iso(record.expires_on),
                          record.enabled)

    def delete_secret(self, client_id: str, secret_id: str) -> None:
        client = self.get(client_id)
        infos = self._secret_infos(client)
        target = infos.get(secret_id)
        if target is None:
            raise NotFound()
        now = self._now()
        others_live = [i for i in infos.values() if i.secret_id != secret_id and i.live_at(now)]
        if client.active and target.live_at(now) and not others_live:
            raise ProblemError(409, "Last live secret",
                               "refusing to delete the client's last live secret: add a new secret first, "
                               "or disable the client", "secret_id")
        if client.legacy:  # the vault copy first, so no later fallback can copy a deleted secret back
            with contextlib.suppress(NotFound):
                self._store.delete_secret(_legacy_name(client_id, secret_id))
            self._legacy.drop(_legacy_name(client_id, secret_id))
        # A tombstone, not a delete: every instance's delta query must see the secret go.
        self._rows.replace(_row_key(client_id, secret_id), {TOMBSTONE: True, "client_id": client_id,
                                                            "secret_id": secret_id})
        self._secrets.changed(_row_key(client_id, secret_id))

    # --- authentication (token endpoint hot path) ---------------------------------------------

    def authenticate(self, client_id: str, secret: str, before_vault: Callable[[], None] | None = None) -> Client:
        """Verify a client secret in constant time against the rows held in memory (no store call once
        they are held and the change log is followed). Only a legacy client's secret that has no row
        yet costs a Key Vault read, and `before_vault` runs first (the token endpoint's failure
        limits: made-up secret ids must not turn into unlimited vault reads)."""
        match = _SECRET_RE.match(secret)
        if not is_canonical_guid(client_id) or match is None:
            raise InvalidClient()
        secret_id = match.group(1)
        client = self._clients.get(client_id)
        row = self._secrets.get(_row_key(client_id, secret_id))
        if row is None and client is not None and client.legacy:
            if before_vault is not None:
                before_vault()
            row = self._migrate(client_id, secret_id, secret)
        pepper = self._peppers.get(row.pepper_id) if row is not None and row.live_at(self._now()) else None
        expected = row.verifier if row is not None and pepper is not None else None
        candidate = verifier(pepper or _LEGACY_VERIFIER_KEY, client_id, secret_id, secret)
        # Bytes, not str: compare_digest refuses non-ASCII str, and a row's value is not ours to trust.
        if not hmac.compare_digest(candidate.encode(), (expected or "0" * len(candidate)).encode()) \
                or expected is None or client is None:
            raise InvalidClient()
        return client

    def _migrate(self, client_id: str, secret_id: str, secret: str) -> VerifierRow | None:
        """A legacy Key Vault verifier that matches the presented secret becomes a peppered row."""
        name = _legacy_name(client_id, secret_id)
        record = self._legacy.get_or_load(name, lambda: self._read_legacy(name))
        if record is None or record.value is None or not record.usable_at(self._now()):
            return None
        if not hmac.compare_digest(legacy_verifier(client_id, secret_id, secret).encode(), record.value.encode()):
            return None
        info = self._legacy_info(record)
        row = self._peppered_row(client_id, secret_id, secret, info.hint, info.created, info.expires_on)
        try:
            self._rows.insert(_row_key(client_id, secret_id), row.to_entity())
        except AlreadyExists:  # another instance copied it first, or it was deleted: the row decides
            existing = self._rows.get(_row_key(client_id, secret_id))
            return None if existing.data.get(TOMBSTONE) else VerifierRow.from_entity(existing)
        self._secrets.changed(_row_key(client_id, secret_id))
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
