"""The gateway's own HMAC keys in Key Vault (page links, portal sessions and CSRF tokens).

Each is one secret, created on first use by whichever instance gets there first, cached per process
and read again every KEY_TTL_SECONDS, so every instance signs with the vault's latest version.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable

from shared.cache import TtlCache
from shared.errors import NotFound
from shared.stores import SecretStore

KEY_TTL_SECONDS = 300.0


class VaultHmacKey:
    """One HMAC-SHA256 key: read from the cache on the hot path, and from Key Vault (after
    `may_block()`, so never on the event loop: `TtlCache.get_or_load`) once every KEY_TTL_SECONDS."""

    def __init__(self, store: SecretStore, name: str, purpose: str, clock: Callable[[], float] = time.time) -> None:
        self._store, self._name, self._purpose = store, name, purpose
        self._cache: TtlCache[str, bytes] = TtlCache(KEY_TTL_SECONDS, clock, max_entries=1)

    def current(self) -> bytes:
        return self._cache.get_or_load(self._name, self._load_or_create)

    def _load_or_create(self) -> bytes:
        try:
            value = self._store.get_secret(self._name).value
        except NotFound:
            fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            self._store.set_secret(self._name, fresh, content_type="hmac-sha256-key", tags={"purpose": self._purpose})
            value = self._store.get_secret(self._name).value  # the latest version, should another instance race
        if not value:
            raise RuntimeError(f"the Key Vault secret {self._name} is empty")
        # base64url, padded or not (the portal's key was once written without padding)
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
