"""Bundles assembled from stored resource bytes, so a search never re-encodes a resource.

Paging is stateless: ``next``/``previous`` links repeat the search with ``_offset`` (and the
original ``_count``), so following them walks the same ordered result without duplicates.
"""

from __future__ import annotations

from urllib.parse import urlencode

from devtools.sample_ehr.search import Query
from devtools.sample_ehr.store import Stored, dumps


def with_raw(head: dict, key: str, raw: bytes | None) -> bytes:
    """``head`` encoded, with ``key`` set to already-encoded JSON (when there is any)."""
    encoded = dumps(head)
    if raw is None:
        return encoded
    separator = b"," if head else b""
    return encoded[:-1] + separator + b'"' + key.encode() + b'":' + raw + b"}"


def searchset(base: str, kind: str, pairs: list[tuple[str, str]], matches: list[Stored],
              query: Query) -> bytes:
    """A searchset Bundle with total, one page of entries, and self/first/previous/next links."""
    total = len(matches)
    page = [] if query.summary_count else matches[query.offset:query.offset + query.count]
    head = {"resourceType": "Bundle", "type": "searchset", "total": total,
            "link": _links(f"{base}/{kind}", pairs, query, total)}
    if not page:
        return dumps(head)
    entries = b",".join(
        with_raw({"fullUrl": f"{base}/{kind}/{stored.id}", "search": {"mode": "match"}}, "resource", stored.raw)
        for stored in page
    )
    return dumps(head)[:-1] + b',"entry":[' + entries + b"]}"


def batch_response(results: list[tuple[dict, bytes | None]]) -> bytes:
    """A batch-response Bundle: one entry per request, in order, with its response and resource."""
    entries = b",".join(with_raw({"response": response}, "resource", raw) for response, raw in results)
    head = dumps({"resourceType": "Bundle", "type": "batch-response"})
    return head[:-1] + b',"entry":[' + entries + b"]}" if results else head


def _links(url: str, pairs: list[tuple[str, str]], query: Query, total: int) -> list[dict]:
    kept = [(k, v) for k, v in pairs if k != "_offset"]

    def page(offset: int) -> str:
        params = kept + ([("_offset", str(offset))] if offset else [])
        return f"{url}?{urlencode(params)}" if params else url

    links = [{"relation": "self", "url": page(query.offset)}, {"relation": "first", "url": page(0)}]
    if query.summary_count or not query.count:
        return links
    if query.offset > 0:
        links.append({"relation": "previous", "url": page(max(0, query.offset - query.count))})
    if query.offset + query.count < total:
        links.append({"relation": "next", "url": page(query.offset + query.count)})
    return links
