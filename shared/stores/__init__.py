"""The two storage seams of the gateway.

`SecretStore` holds secret material (the verifier pepper, signing keys, upstream credentials)
and is implemented on Azure Key Vault. `EntityTable` holds plain records (tenant routes, client
metadata and peppered verifiers, change logs, shared counts) and is implemented on Azure Table
Storage. Each has exactly one real implementation, tested against Azurite and the local Key Vault
emulator; the unit tier (`scripts/test -m unit`) runs the core on in-memory fakes
(tests/fakes.py) held to the same contract.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class SecretRecord:
    """A secret's value (None in listings) and the Key Vault attributes the gateway relies on."""

    name: str
    value: str | None
    enabled: bool = True
    expires_on: datetime | None = None
    not_before: datetime | None = None
    created_on: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def usable_at(self, now: datetime) -> bool:
        if not self.enabled:
            return False
        if self.expires_on is not None and now >= self.expires_on:
            return False
        return not (self.not_before is not None and now < self.not_before)


class SecretStore(Protocol):
    def set_secret(self, name: str, value: str, *, expires_on: datetime | None = None,
                   tags: dict[str, str] | None = None, content_type: str | None = None) -> SecretRecord:
        """Create the secret or add a new version of it."""

    def get_secret(self, name: str) -> SecretRecord:
        """The latest version; raises NotFound when absent or deleted."""

    def list_secrets(self, prefix: str) -> list[SecretRecord]:
        """Properties (no values) of every live secret whose name starts with prefix."""

    def update_properties(self, name: str, *, enabled: bool | None = None,
                          expires_on: datetime | None = None,
                          tags: dict[str, str] | None = None) -> SecretRecord:
        """Change attributes of the latest version; raises NotFound."""

    def delete_secret(self, name: str) -> None:
        """Delete (Key Vault soft-delete); raises NotFound."""

    def ping(self) -> None:
        """Raise StoreUnavailable when the vault cannot be reached."""


@dataclass(frozen=True)
class Entity:
    key: str
    data: dict[str, Any]
    etag: str | None = None


class EntityTable(Protocol):
    def get(self, key: str) -> Entity:
        """Raises NotFound."""

    def list(self) -> list[Entity]:
        ...

    def list_prefix(self, prefix: str) -> builtins.list[Entity]:
        """Entities whose key starts with `prefix` (non-empty)."""

    def list_from(self, lowest: str) -> builtins.list[Entity]:
        """Entities whose key is `lowest` or sorts after it (a key-range query: a seek, not a scan)."""

    def insert(self, key: str, data: dict[str, Any]) -> Entity:
        """Create only; raises AlreadyExists."""

    def replace(self, key: str, data: dict[str, Any], etag: str | None = None) -> Entity:
        """Upsert; with etag, only if unchanged (raises PreconditionFailed, or NotFound if gone)."""

    def delete(self, key: str, etag: str | None = None) -> None:
        """Raises NotFound; with etag, PreconditionFailed when stale."""

    def ping(self) -> None:
        """Raise StoreUnavailable when the table service cannot be reached."""
