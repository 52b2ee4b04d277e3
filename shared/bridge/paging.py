"""Paging links for providers that send none (Medplum's searches carry no `link` at all).

When a searchset has no paging link but its `total` says more matches exist past this page,
`self`, `next` (and `previous`) links are added on the PROVIDER's base with `_count`/`_offset`,
which such providers understand. The proxy rewrites provider-base URLs to the gateway's facade
base, so the app follows them through the gateway like any provider's own links; the R4 query
in them (typed references, `_sort=-date`) is accepted by `translate_request` as it stands.

POST searches get no synthesized links: their parameters (names, birth dates) would move into
GET URLs, which end up in logs along the way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from shared.policy import Interaction

_PAGING_RELATIONS = frozenset({"next", "previous", "prev", "first", "last"})
_SAFE = ":/,"


def add_paging_links(bundle: dict[str, Any], action: Interaction, provider_base: str) -> None:
    """Adds the links a provider left out; leaves the Bundle alone if it has any paging link."""
    links = bundle.get("link") or []
    total = bundle.get("total")
    if (bundle.get("type") != "searchset" or action.kind != "search" or not isinstance(total, int)
            or any(isinstance(link, dict) and link.get("relation") in _PAGING_RELATIONS for link in links)):
        return
    matches = sum(1 for entry in bundle.get("entry") or []
                  if (entry.get("search") or {}).get("mode", "match") == "match")
    offset = _number(action.query, "_offset", 0)
    count = _number(action.query, "_count", matches)
    base = f"{provider_base.rstrip('/')}/{action.resource_type}"
    added = []
    if not any(isinstance(link, dict) and link.get("relation") == "self" for link in links):
        added.append({"relation": "self", "url": _url(base, list(action.query))})
    if matches and total > offset + matches:
        added.append({"relation": "next", "url": _page(base, action.query, offset + matches, count)})
    if offset > 0 and count > 0:
        added.append({"relation": "previous", "url": _page(base, action.query, max(0, offset - count), count)})
    if added:
        bundle["link"] = [*links, *added]


def _number(query: tuple[tuple[str, str], ...], name: str, default: int) -> int:
    values = [value for key, value in query if key == name]
    return int(values[-1]) if values and values[-1].isascii() and values[-1].isdigit() else default


def _page(base: str, query: tuple[tuple[str, str], ...], offset: int, count: int) -> str:
    kept = [(key, value) for key, value in query if key not in ("_count", "_offset")]
    return _url(base, [*kept, ("_count", str(count)), ("_offset", str(offset))])


def _url(base: str, query: list[tuple[str, str]]) -> str:
    return f"{base}?{urlencode(query, safe=_SAFE)}" if query else base
