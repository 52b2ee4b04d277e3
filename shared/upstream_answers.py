"""Pure checks on what a provider answers and on what the gateway forwards, for the proxy.

The proxy's shaping steps (shared/request_shaping.py, shared/response_shaping.py) call these; they
hold no state and do no I/O, so each rule is tested on its own. Each answers one question from issue #13's review:

- a `Location` / `Content-Location` header naming another host must not reach the client
  (`client_location`);
- a provider redirect must not be relayed or followed with the gateway's credentials: 3xx other
  than 304 becomes 502 (`check_not_redirect`);
- a batch passed through to the provider is rebuilt from the entries the gateway validated, never
  the client's raw bytes (`passthrough_bundle`);
- a system-level paging request is accepted only as a next link the gateway itself handed out for
  this tenant (`sign_page_query`, `verified_page_query`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

from shared.errors import FhirError
from shared.policy import PAGE_SIGNATURE, Interaction


def client_location(value: str | None, provider_base: str, rewrite: Callable[[str], str]) -> str | None:
    """The header value to send on, or None to drop it: only URLs under the provider's own base
    survive (rewritten to the gateway by `rewrite`); another host, or a relative path that could be
    resolved against the gateway, is the provider pointing the client somewhere we do not vouch for."""
    if not value:
        return None
    base = provider_base.rstrip("/")
    if value == base or value.startswith((base + "/", base + "?")):
        return rewrite(value)
    return None


def check_not_redirect(status: int) -> None:
    """Provider 3xx (except 304 Not Modified) is a 502: relaying it would send the client, and
    following it would send the gateway's upstream credentials, to a URL nobody configured."""
    if 300 <= status < 400 and status != 304:
        raise FhirError(502, "exception", f"the provider answered with a redirect (HTTP {status})")


def passthrough_bundle(actions: list[Interaction]) -> bytes:
    """The batch Bundle to POST to the provider, built only from validated interactions (in the
    provider's dialect, e.g. after `stu3_sort`): duplicate keys, extra fields or entry bodies the
    client sent can never reach the provider, because none of its bytes are forwarded."""
    entries = []
    for action in actions:
        query = action.query_string()
        url = action.upstream_path + (f"?{query}" if query else "")
        entries.append({"request": {"method": "GET", "url": url}})
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}, separators=(",", ":")).encode()


def _page_mac(key: bytes, tenant_id: str, query: tuple[tuple[str, str], ...]) -> str:
    message = json.dumps([tenant_id, [list(pair) for pair in query]], separators=(",", ":")).encode()
    return hmac.new(key, b"page\n" + message, hashlib.sha256).hexdigest()


def sign_page_query(key: bytes, tenant_id: str, query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The query of a system-level next link, with a MAC that binds it to this tenant."""
    return (*query, (PAGE_SIGNATURE, _page_mac(key, tenant_id, query)))


def verified_page_query(key: bytes, tenant_id: str,
                        query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The query to forward (without the MAC) if the client sent back a next link exactly as the
    gateway signed it for this tenant; otherwise 400. The MAC is the LAST parameter, once."""
    if not query or query[-1][0] != PAGE_SIGNATURE or any(n == PAGE_SIGNATURE for n, _ in query[:-1]):
        raise FhirError(400, "not-supported", "paging requests must be the next links the gateway returned")
    rest, mac = query[:-1], query[-1][1]
    if not hmac.compare_digest(mac.encode(), _page_mac(key, tenant_id, rest).encode()):
        raise FhirError(400, "not-supported", "paging requests must be the next links the gateway returned")
    return rest
