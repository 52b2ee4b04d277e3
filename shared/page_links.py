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

import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlencode

from shared.errors import FhirError
from shared.policy import Interaction, parse_query
from shared.stores import SecretStore
from shared.upstream_answers import sign_page_query, verified_page_query
from shared.vault_key import VaultHmacKey

KEY_NAME = "paging-link-key"


class PagingKey(VaultHmacKey):
    """The paging HMAC key (`paging-link-key`), created on first use: see shared.vault_key."""

    def __init__(self, store: SecretStore, clock: Callable[[], float] = time.time) -> None:
        super().__init__(store, KEY_NAME, "system-level page links handed out by the proxy", clock)


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
