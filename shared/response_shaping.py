"""What the client gets: the provider's answer checked, shaped and rewritten, whole or streamed.

Decided on the answer's head: a redirect or a refusal of the gateway's credentials becomes a 502,
as does anything that is not FHIR JSON; provider 4xx pass through and 5xx become 502 (an
OperationOutcome body kept); a whole answer loses the Bundle entries of types the tenant may not
see and is rewritten in one go, a longer one streams through `StreamRewriter` chunk by chunk. In
both, provider URLs become gateway URLs and system-level page links are signed for the tenant
(shared/page_links.py). Before that, an answer from a provider of the other FHIR version is
converted whole by the R4 bridge (`bridge_answer`); after it, a batch entry's answer becomes one
batch-response entry (`batch_response_entry`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from shared.audit import Audit
from shared.bridge import convert_response
from shared.bridge.up import convert_response_up
from shared.capability import CONTENT_TYPE
from shared.errors import FhirError, operation_outcome
from shared.http import Response
from shared.page_links import PageLinks
from shared.policy import Interaction, drop_disallowed_entries, permitted_types
from shared.provider_client import Upstream
from shared.request_shaping import FHIR_JSON
from shared.rewrite import StreamRewriter, rewrite_body, rewrite_url
from shared.routes import TenantRoute
from shared.upstream_answers import check_not_redirect, client_location
from shared.urls import Urls

_PASS_RESPONSE = ("etag", "last-modified")
_PARSE_LIMIT = 16 * 1024 * 1024
_FAST_PARSE_LIMIT = 4 * 1024 * 1024
_RESOURCE_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_OBJECT = object()  # what a validated JSON object parses to in _is_json_object
_STATUS_TEXT = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 401: "401 Unauthorized",
                403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed", 410: "410 Gone",
                502: "502 Bad Gateway", 503: "503 Service Unavailable", 504: "504 Gateway Timeout"}


# --- status, headers and body ---------------------------------------------------------------------

def shape(upstream: Upstream, route: TenantRoute, version: str, urls: Urls, audit: Audit,
           pages: PageLinks) -> Response:
    """Status, headers and body for the client. Decided on the head alone: a streamed answer's
    status is committed here, before the rest of its body has arrived. System-level page links in
    the body are signed for the tenant on either path (whole or streamed)."""
    try:
        response = _shape_head(upstream, route, version, urls, audit, pages)
    except BaseException:
        upstream.close()
        raise
    if response is None:
        return _stream(upstream, route, version, urls, pages)
    upstream.close()
    return response


def _shape_head(upstream: Upstream, route: TenantRoute, version: str, urls: Urls, audit: Audit,
                pages: PageLinks) -> Response | None:
    """The whole response where it is decided by the head; None where the body streams through."""
    gateway_base = urls.fhir_base(version)
    headers = _response_headers(upstream, route, gateway_base)
    check_not_redirect(upstream.status)
    if upstream.status == 304:
        return Response(304, b"", headers)
    if upstream.status == 401:
        raise FhirError(502, "security", "the provider refused the gateway's credentials")
    if not _looks_like_fhir_json(upstream):
        raise FhirError(502, "exception", f"the provider answered HTTP {upstream.status} without FHIR JSON")
    if upstream.status >= 400:
        return _provider_error(upstream, version, route, gateway_base)
    if not upstream.complete:
        return None
    headers["Content-Type"] = CONTENT_TYPE[version]
    body = _only_allowed_entries(upstream.head, route, audit)
    return Response(upstream.status, rewrite_body(body, route.provider_base_url, gateway_base, pages.sign), headers)


def _only_allowed_entries(body: bytes, route: TenantRoute, audit: Audit) -> bytes:
    """Defence in depth behind the request checks: entries of types the tenant may not see leave a
    whole Bundle. A scan of the type names decides whether the (rarely needed) parse is needed."""
    permitted = permitted_types(route.resource_types) | {"OperationOutcome", "Bundle"}
    if all(name.decode() in permitted for name in _RESOURCE_TYPE.findall(body)):
        return body
    bundle = _loads(body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return body
    dropped = _drop_from_searchsets(bundle, route.resource_types)
    if not dropped:
        return body
    audit.count_dropped({f"entry:{rtype}": count for rtype, count in dropped.items()})
    return orjson.dumps(bundle)


def _stream(upstream: Upstream, route: TenantRoute, version: str, urls: Urls, pages: PageLinks) -> Response:
    gateway_base = urls.fhir_base(version)
    headers = _response_headers(upstream, route, gateway_base)
    headers["Content-Type"] = CONTENT_TYPE[version]
    rewriter = StreamRewriter(route.provider_base_url, gateway_base, pages.sign)
    return Response(upstream.status, b"", headers, stream=_rewritten(upstream, rewriter))


async def _rewritten(upstream: Upstream, rewriter: StreamRewriter) -> AsyncIterator[bytes]:
    """The provider's body as it arrives, rewritten; a provider failure mid-body raises
    UpstreamCutOff, which aborts the client's connection (never a truncated body ending cleanly)."""
    first = rewriter.feed(upstream.head)
    if first:
        yield first
    async for chunk in upstream.rest():
        out = rewriter.feed(chunk)
        if out:
            yield out
    last = rewriter.close()
    if last:
        yield last


def _drop_from_searchsets(bundle: dict, allowed: tuple[str, ...] | None) -> Counter[str]:
    """A searchset loses its disallowed entries; a batch-response, those of each searchset it carries."""
    if bundle.get("type") == "searchset":
        return drop_disallowed_entries(bundle, allowed)
    dropped: Counter[str] = Counter()
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            dropped += _drop_from_searchsets(resource, allowed)
    return dropped


def _response_headers(upstream: Upstream, route: TenantRoute, gateway_base: str) -> dict[str, str]:
    headers = {k.title(): v for k, v in upstream.headers.items() if k in _PASS_RESPONSE}
    for name in ("location", "content-location"):
        value = client_location(upstream.headers.get(name), route.provider_base_url,
                                lambda url: rewrite_url(url, route.provider_base_url, gateway_base))
        if value:
            headers[name.title()] = value
    return headers


def _looks_like_fhir_json(upstream: Upstream) -> bool:
    """The content type says JSON, and the body is one JSON object: checked whole when the answer is
    whole, by its first byte when it streams (the rest has not arrived yet)."""
    if not _json_media(upstream):
        return False
    if upstream.complete:
        return _is_json_object(upstream.head)
    return upstream.head.lstrip()[:1] == b"{"


def _json_media(upstream: Upstream) -> bool:
    media = upstream.media_type
    return media in FHIR_JSON or media.endswith("+json")


def _is_json_object(raw: bytes) -> bool:
    """A complete JSON object. Small bodies are parsed by orjson (C, microseconds); larger ones by a
    parse that only validates: every object becomes a marker as soon as it is read, so no tree is
    built (a tenth of `json.loads`'s memory)."""
    body = raw.strip()
    if len(body) <= _FAST_PARSE_LIMIT:
        return isinstance(_loads(body), dict)
    if len(body) > _PARSE_LIMIT:
        return body.startswith(b"{") and body.endswith(b"}")
    try:
        return json.loads(body, object_pairs_hook=_object_marker) is _OBJECT
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _object_marker(pairs: list) -> object:
    return _OBJECT


def _provider_error(upstream: Upstream, version: str, route: TenantRoute, gateway_base: str) -> Response:
    """Provider 4xx pass through; 5xx become 502. An OperationOutcome body is kept (its provider URLs
    rewritten like any other), anything else replaced."""
    status = upstream.status if upstream.status < 500 else 502
    parsed = _loads(upstream.head) if upstream.complete else None
    if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome":
        body = rewrite_body(upstream.head, route.provider_base_url, gateway_base)
        return Response(status, body, {"Content-Type": CONTENT_TYPE[version]})
    return Response.json(status, operation_outcome("exception", f"the provider answered HTTP {upstream.status}"),
                         CONTENT_TYPE[version])


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# --- the R4 bridge: a provider's answer in the facade's version -------------------------------------

def bridge_answer(upstream: Upstream, version: str, asked: Interaction, route: TenantRoute, audit: Audit) -> Upstream:
    """Convert a whole answer (resource, Bundle or OperationOutcome) to the facade version.

    Anything that is not a JSON object is left for `shape` to refuse; a 304 has no body to convert.
    The body is parsed once, here (a validity check first would parse a large Bundle twice)."""
    if upstream.status == 304 or not _json_media(upstream):
        return upstream
    body = _loads(upstream.head)
    if not isinstance(body, dict):
        return upstream
    if version == "r4":
        converted, dropped = convert_response_up(route.fhir_version, body, route.provider_base_url)
    else:
        converted, dropped = convert_response(version, asked, body, route.provider_base_url)
    audit.count_dropped(dropped)
    return Upstream(upstream.status, {**upstream.headers, "content-type": CONTENT_TYPE[version]},
                    orjson.dumps(converted))


# --- batch-response entries -------------------------------------------------------------------------

def batch_response_entry(status: int, headers: Mapping[str, str], resource: bytes) -> bytes:
    """One batch-response entry as JSON bytes. The resource is spliced in as the provider's bytes:
    `shape` has checked they are one JSON object, so parsing and re-serialising them is waste."""
    result: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
    for header, key in (("Etag", "etag"), ("Location", "location")):
        if header in headers:
            result[key] = headers[header]
    modified = _instant(headers.get("Last-Modified"))
    if modified:
        result["lastModified"] = modified
    head = b'{"response":' + json.dumps(result, separators=(",", ":")).encode()
    return head + (b',"resource":' + resource + b"}" if resource else b"}")


def refused_entry(exc: FhirError) -> bytes:
    """A batch entry refused by the gateway or failed at the provider: its OperationOutcome in the entry."""
    outcome = operation_outcome(exc.code, exc.diagnostics)
    return batch_response_entry(exc.status, {}, json.dumps(outcome, separators=(",", ":")).encode())


def _instant(http_date: str | None) -> str | None:
    """A batch entry's `lastModified` is a FHIR instant; the provider's Last-Modified is an HTTP date."""
    try:
        parsed = parsedate_to_datetime(http_date) if http_date else None
    except (TypeError, ValueError):
        return None
    return parsed.isoformat() if parsed is not None and parsed.tzinfo is not None else None
