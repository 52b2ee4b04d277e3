"""System-level page links (HAPI's `[base]?_getpages=...`): signed on the way out, verified on the way in.

A system-level GET reaches the provider with the gateway's credentials for the tenant, and its
parameters (`_getpages` ids, offsets) are the provider's, not a search the policy can judge. So the
gateway accepts one only as a link it handed out to this tenant: every such link in an answer gets
an HMAC over (tenant, query) as its last parameter (`shared/rewrite.py` finds the links,
`shared/upstream_answers.py` computes and checks the MAC), and a paging request without a valid one
is a 400 before anything is sent.

The key is its own HMAC secret, `paging-link-key` in Key Vault, created on first use, like the
portal's (`shared/portal/sessions.py`): separate from the token-signing keys and the portal key so
that none of them can stand in for another, and outside the `upstream-` name space, so no route can
ever name it as an upstream credential. Two instances starting at once may both create it; each
re-reads the latest version after writing and every instance re-reads it every few minutes, so they
converge (a link signed with the losing key answers 400 until then; the client searches again).
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlencode

from shared.errors import FhirError, NotFound
from shared.offloop import may_block
from shared.policy import Interaction, parse_query
from shared.stores import SecretStore
from shared.upstream_answers import sign_page_query, verified_page_query

KEY_NAME = "paging-link-key"
KEY_TTL_SECONDS = 300.0


class PagingKey:
    """The paging HMAC key, cached per process: read from the cache on the hot path, and from Key
    Vault (after `may_block()`, so never on the event loop) once every `KEY_TTL_SECONDS`."""

    def __init__(self, store: SecretStore, clock: Callable[[], float] = time.time) -> None:
        self._store, self._clock = store, clock
        self._key: bytes | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> bytes:
        if self._key is None or self._clock() - self._loaded_at >= KEY_TTL_SECONDS:
            may_block()  # a vault read, or a wait for another thread's
            with self._lock:
                if self._key is None or self._clock() - self._loaded_at >= KEY_TTL_SECONDS:
                    self._key, self._loaded_at = self._load_or_create(), self._clock()
        return self._key

    def _load_or_create(self) -> bytes:
        try:
            value = self._store.get_secret(KEY_NAME).value
        except NotFound:
            fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            self._store.set_secret(KEY_NAME, fresh, content_type="hmac-sha256-key",
                                   tags={"purpose": "system-level page links handed out by the proxy"})
            value = self._store.get_secret(KEY_NAME).value  # the latest version, should another instance race
        if not value:
            raise RuntimeError(f"the Key Vault secret {KEY_NAME} is empty")
        return base64.urlsafe_b64decode(value)


class PageLinks:
    """One tenant's page links under one key: what the proxy signs in answers and checks in requests."""

    def __init__(self, key: bytes, tenant_id: str) -> None:
        self._key, self._tenant_id = key, tenant_id

    def sign(self, query: str) -> str | None:
        """A page link's query with the MAC appended, URL-encoded; None when the query is not one the
        gateway would accept anyway (malformed, too many parameters), so the link is left unsigned
        and fails closed when followed."""
        try:
            return urlencode(sign_page_query(self._key, self._tenant_id, parse_query(query)))
        except (FhirError, ValueError):  # ValueError: a lone surrogate from a JSON `\ud800` escape
            return None

    def verified(self, action: Interaction) -> Interaction:
        """A paging request as the provider wrote it (MAC removed), if this tenant was handed it; else 400."""
        if action.kind != "page":
            return action
        return replace(action, query=verified_page_query(self._key, self._tenant_id, action.query))
