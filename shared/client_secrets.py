"""How a client secret is kept: as a verifier, never as itself.

Each client secret is a row in the client table's `secrets` partition holding only a verifier:
HMAC-SHA-256 keyed with a *pepper*, a 256-bit key that lives only in Key Vault
(`client-secret-pepper-<id>`; the row names its pepper's id, a `meta` row names the one new secrets
use). A copy of the tables alone therefore verifies nothing: every secret-verifying key is still in
Key Vault, and disabling or deleting the pepper there kills every verifier made with it within the
cache TTL. The secret itself is shown once, at creation, and never stored.

Why an HMAC verifier and not a slow password hash: the gateway generates every secret with 256 bits
from `secrets`, so there is nothing to brute-force offline; a slow KDF would only burn CPU on every
token request. The message binds the verifier to its client and secret id, so a verifier copied to
another row verifies nothing.

Secrets made before issue #14 may still be Key Vault verifiers (`client-<client_id>-<secret_id>`,
unpeppered HMAC: `legacy_verifier`); shared/clients.py copies one to a peppered row the first time
its secret is presented.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.cache import TtlCache
from shared.errors import AlreadyExists, NotFound, VerifierKeyUnavailable
from shared.stores import Entity, EntityTable, SecretRecord, SecretStore

_LEGACY_VERIFIER_KEY = b"fhir-gateway/client-secret-verifier/v1"
PEPPER_PREFIX = "client-secret-pepper-"
PEPPER_ROW = "pepper"
_SECRET_RE = re.compile(r"^([0-9a-f]{16})~([A-Za-z0-9_-]{43})$")
_PEPPER_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


def new_secret() -> tuple[str, str]:
    """A secret id and the secret: `<id>~<256 random bits>`, so the id travels with the secret."""
    secret_id = secrets.token_hex(8)
    return secret_id, f"{secret_id}~{secrets.token_urlsafe(32)}"


def secret_id_of(secret: str) -> str | None:
    """The id a presented secret claims; None when it is not of the gateway's form at all."""
    match = _SECRET_RE.match(secret)
    return match.group(1) if match else None


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


def verifies(expected: str | None, pepper: bytes | None, client_id: str, secret_id: str, secret: str) -> bool:
    """One HMAC and one constant-time compare even when there is nothing to compare with (no row, no
    pepper): how long a refusal takes says nothing about which check refused."""
    candidate = verifier(pepper or _LEGACY_VERIFIER_KEY, client_id, secret_id, secret)
    # Bytes, not str: compare_digest refuses non-ASCII str, and a row's value is not ours to trust.
    same = hmac.compare_digest(candidate.encode(), (expected or "0" * len(candidate)).encode())
    return same and expected is not None


def legacy_name(client_id: str, secret_id: str) -> str:
    return f"client-{client_id}-{secret_id}"


def legacy_info(record: SecretRecord) -> SecretInfo:
    """What a legacy Key Vault verifier says about its secret (its tags, else the vault's own dates)."""
    tags = record.tags
    return SecretInfo(tags.get("secret_id", record.name.rsplit("-", 1)[-1]), tags.get("hint", ""),
                      tags.get("created", iso(record.created_on) or ""), iso(record.expires_on), record.enabled)


def row_key(client_id: str, secret_id: str) -> str:
    return f"{client_id}-{secret_id}"


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


class PepperRing:
    """The verifier HMAC keys, read from Key Vault once per TTL per instance (whatever the number of
    clients), so a pepper disabled or deleted in the vault stops verifying everywhere within the TTL.
    A missing pepper is remembered as missing for the TTL too; a vault failure propagates (fail closed)."""

    def __init__(self, store: SecretStore, meta: EntityTable, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`meta`: the partition whose `pepper` row names the pepper new verifiers use."""
        self._store, self._meta = store, meta
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

    def row(self, client_id: str, secret_id: str, secret: str, hint: str, created: str,
            expires_on: str | None) -> VerifierRow:
        """The secret's row, its verifier made with the current pepper; VerifierKeyUnavailable when
        the vault no longer holds that pepper (an operator disabled or deleted it)."""
        pepper_id = self._current_id()
        pepper = self.get(pepper_id)
        if pepper is None:
            raise VerifierKeyUnavailable(PEPPER_PREFIX + pepper_id)
        return VerifierRow(client_id, secret_id, verifier(pepper, client_id, secret_id, secret), pepper_id, hint,
                           created, expires_on)

    def _current_id(self) -> str:
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


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
