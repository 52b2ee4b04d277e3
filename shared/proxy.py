"""The FHIR proxy, as a pipeline: authenticate → route → classify → exchange → shape → audit.

The tenant comes only from the verified token (ROUTE-3); the upstream URL is built from the
tenant's configured base and validated path pieces, so the proxy cannot be pointed at any other
host. The pieces it orchestrates each stand alone: `ProviderClient` (pools, deadlines, retries,
bounded streaming reads), `BatchRunner` (concurrent entries, fair shares, deadline, size cap),
`StreamRewriter` (provider base → gateway base, chunk by chunk), `PageLinks` (system-level page
links signed for the tenant on the way out, verified on the way in) and the R4 bridge.

Passthrough answers stream: once the first `HEAD_BYTES` (or the whole body, if smaller) are in and
look like FHIR JSON, status and headers go out and the rest follows chunk by chunk, rewritten as it
passes; memory stays at about one chunk per request whatever the Bundle's size. An answer that is
whole by then is checked as before (a complete JSON object) and can still become a 502/504. R4
answers are bridged whole (the converters need whole resources), under the same size limit.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from shared import smart_scopes, telemetry
from shared.audit import Audit
from shared.batch import BatchRunner
from shared.bridge import convert_response, translate_request
from shared.bridge.up import convert_response_up, translate_request_up
from shared.capability import CONTENT_TYPE
from shared.clients import ClientRegistry
from shared.errors import FhirError, StoreUnavailable, operation_outcome
from shared.http import FORM_TYPE, Request, Response
from shared.jsonbody import InvalidJson, loads_strict
from shared.offloop import inline_or_thread
from shared.page_links import PageLinks, PagingKey
from shared.policy import (
    MAX_BATCH_ENTRIES,
    Interaction,
    batch_entry_interaction,
    check_resource_type,
    drop_disallowed_entries,
    interaction_for,
    permitted_types,
    stu3_sort,
)
from shared.provider_client import ProviderClient, Upstream
from shared.requestid import begin, current
from shared.rewrite import StreamRewriter, rewrite_body, rewrite_url
from shared.routes import TenantRegistry, TenantRoute
from shared.settings import Settings
from shared.token_service import AccessClaims, InvalidToken, TokenService
from shared.upstream_answers import check_not_redirect, client_location, passthrough_bundle
from shared.upstream_auth import UpstreamAuthenticator
from shared.urls import Urls

_PASS_REQUEST = ("accept", "prefer", "if-none-match", "if-modified-since")
_PASS_RESPONSE = ("etag", "last-modified")
_FHIR_JSON = ("application/fhir+json", "application/json+fhir", "application/json")
_PARSE_LIMIT = 16 * 1024 * 1024
_FAST_PARSE_LIMIT = 4 * 1024 * 1024
_RESOURCE_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_OBJECT = object()  # what a validated JSON object parses to in _is_json_object
_STATUS_TEXT = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 401: "401 Unauthorized",
                403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed", 410: "410 Gone",
                502: "502 Bad Gateway", 503: "503 Service Unavailable", 504: "504 Gateway Timeout"}


class FhirProxy:
    def __init__(self, settings: Settings, tokens: TokenService, clients: ClientRegistry, tenants: TenantRegistry,
                 upstream_auth: UpstreamAuthenticator, paging_key: PagingKey) -> None:
        self._settings = settings
        self._tokens, self._clients, self._tenants, self._auth = tokens, clients, tenants, upstream_auth
        self._paging_key = paging_key
        self._provider = ProviderClient(settings.upstream_connect_timeout_seconds,
                                        settings.upstream_read_timeout_seconds, settings.upstream_retries,
                                        settings.max_upstream_response_bytes)
        self._batches = BatchRunner(settings.batch_concurrency, settings.tenant_concurrency,
                                    settings.batch_deadline_seconds, settings.batch_max_response_bytes)

    # --- entry point ----------------------------------------------------------------------------

    async def handle(self, req: Request, version: str, path: str, urls: Urls) -> Response:
        context = current() or begin(req.headers)
        audit = Audit(context.request_id)
        try:
            response = await self._handle(req, version, path, urls, audit)
        except FhirError as exc:
            response = exc.to_response(CONTENT_TYPE[version])
        except StoreUnavailable as exc:
            response = FhirError(503, "transient", f"{exc.component} is unavailable; retry later",
                                 exc.retry_after_header()).to_response(CONTENT_TYPE[version])
        response.headers["X-Request-Id"] = audit.request_id
        response.headers.setdefault("Cache-Control", "no-store")
        if response.stream is None:
            audit.emit(response.status, len(response.body))
        else:
            response.stream = audit.tracked(response.stream, response.status)
        return response

    async def _handle(self, req: Request, version: str, path: str, urls: Urls, audit: Audit) -> Response:
        if len(req.body) > self._settings.max_request_body_bytes:
            raise FhirError(413, "too-costly", "request body too large")
        claims, route, authorization, pages = await inline_or_thread(self._who_and_where, req, version, urls)
        audit.client_id, audit.tenant_id = claims.client_id, claims.tenant_id
        if req.method.upper() == "POST" and not path.strip("/"):
            audit.interaction = "batch"
            return await self._batch(req, route, version, urls, audit, authorization, pages, claims.grant)
        form = req.body if req.method.upper() == "POST" else b""
        if form and not req.headers.get("content-type", "").lower().startswith(FORM_TYPE):
            raise FhirError(415, "not-supported", "POST _search needs an application/x-www-form-urlencoded body")
        try:
            action = interaction_for(req.method, path, urlsplit(req.url).query, form)
        except UnicodeDecodeError as exc:
            raise FhirError(400, "invalid", "the search body is not UTF-8") from exc
        audit.interaction, audit.resource_type = action.kind, action.resource_type
        check_resource_type(action.resource_type, route.resource_types)
        smart_scopes.check(claims.grant, action)
        return await self._exchange(route, version, action, req.headers, urls, audit, authorization, pages,
                                    stream=True)

    # --- who and where: in-memory almost always; a cache miss blocks (Table Storage, Key Vault, the
    # provider's IdP), and then the step runs on a thread (shared/offloop.py) ---------------------

    def _who_and_where(self, req: Request, version: str, urls: Urls
                       ) -> tuple[AccessClaims, TenantRoute, str | None, PageLinks]:
        """The paging key is read here too: answers stream on the event loop, where signing their page
        links must not wait for Key Vault."""
        claims = self._authenticate(req, urls)
        route = self._route(claims, version)
        authorization = self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)
        return claims, route, authorization, PageLinks(self._paging_key.current(), route.tenant_id)

    def _authenticate(self, req: Request, urls: Urls) -> AccessClaims:
        scheme, _, token = (req.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("a bearer token from the gateway's token endpoint is required")
        try:
            claims = self._tokens.verify(token.strip(), urls)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from exc
        client = self._clients.cached_client(claims.client_id)
        if client is None or not client.active:
            raise _unauthorized("the client of this token is disabled")
        return claims

    @telemetry.traced("route lookup")
    def _route(self, claims: AccessClaims, version: str) -> TenantRoute:
        route = self._tenants.resolve(claims.tenant_id)
        if route is None or not route.allows(claims.client_id):
            raise FhirError(403, "forbidden", "this client may not access this tenant (disabled or not allowed)")
        if route.fhir_version != version and "r4" not in (route.fhir_version, version):
            raise FhirError(400, "not-supported",
                            f"this tenant's provider speaks {route.fhir_version.upper()}; use the "
                            f"{route.fhir_version} or r4 FHIR base URL")
        return route

    # --- exchange ---------------------------------------------------------------------------------

    async def _exchange(self, route: TenantRoute, version: str, action: Interaction, headers: Any, urls: Urls,
                        audit: Audit, authorization: str | None, pages: PageLinks, *, stream: bool,
                        limit: int | None = None) -> Response:
        """Ask the provider in its own dialect, answer the client in the facade's. A paging request
        goes on only as a link this tenant was handed (400 otherwise), without the gateway's MAC."""
        asked = _provider_action(route, version, pages.verified(action))
        bridged = _bridged(route, version)
        url = f"{route.provider_base_url}/{asked.upstream_path}"
        out = {name: headers.get(name) for name in _PASS_REQUEST if headers.get(name)}
        out["Accept"] = CONTENT_TYPE[route.fhir_version] if bridged else _accept(headers.get("accept"), version)
        out["X-Request-Id"] = audit.request_id
        if asked.kind == "search-post":
            method, data = "POST", asked.query_string().encode()
            out["Content-Type"] = FORM_TYPE
        else:
            query = asked.query_string()
            method, data, url = "GET", None, url + (f"?{query}" if query else "")
        # A tenant with its own allow-list gets whole answers: entries of other types are filtered out
        # of the Bundle, which needs all of it (docs/streaming.md, docs/security.md).
        whole = bridged or not stream or route.resource_types is not None
        upstream = await self._send(route, method, url, out, data, audit, authorization, whole=whole, limit=limit)
        if bridged:
            upstream = _bridge(upstream, version, asked, route, audit)
        return _shape(upstream, route, version, urls, audit, pages)

    async def _send(self, route: TenantRoute, method: str, url: str, headers: dict[str, str], data: bytes | None,
                    audit: Audit, authorization: str | None, *, whole: bool, limit: int | None = None) -> Upstream:
        """One exchange with the tenant's upstream credentials; a 401 to credentials the gateway holds
        drops them and tries once more with fresh ones (a rotated secret, an expired token)."""
        for retry_auth in (True, False):
            sent = {**headers, "Authorization": authorization} if authorization else headers
            upstream = await self._provider.exchange(method, url, sent, data, audit, whole=whole, limit=limit)
            if upstream.status != 401 or not authorization or not retry_auth:
                return upstream
            upstream.close()
            authorization = await asyncio.to_thread(self._fresh_authorization, route, authorization)
        raise AssertionError("unreachable: the second attempt always returns")

    def _fresh_authorization(self, route: TenantRoute, rejected: str) -> str | None:
        self._auth.invalidate(route.tenant_id, rejected)
        return self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)

    # --- batch (FHIR-2) -------------------------------------------------------------------------

    async def _batch(self, req: Request, route: TenantRoute, version: str, urls: Urls, audit: Audit,
                     authorization: str | None, pages: PageLinks, granted: smart_scopes.Grant | None) -> Response:
        bundle = _parse_bundle(req.body)
        entries = bundle.get("entry") or []
        if not isinstance(entries, list) or len(entries) > MAX_BATCH_ENTRIES:
            raise FhirError(400, "invalid", f"a batch holds a list of at most {MAX_BATCH_ENTRIES} entries")
        audit.entries = len(entries)
        if route.batch_passthrough and not _bridged(route, version):  # bridged entries go one by one
            return await self._batch_passthrough(entries, route, version, urls, audit, authorization, pages,
                                                 granted)

        async def fetch(entry: object, budget: int) -> bytes:
            return await self._batch_entry(entry, req, route, version, urls, audit, authorization, pages, budget,
                                           granted)

        return Response(200, b"", {"Content-Type": CONTENT_TYPE[version]},
                        stream=self._batches.run(route.tenant_id, entries, fetch))

    async def _batch_entry(self, entry: object, req: Request, route: TenantRoute, version: str, urls: Urls,
                           audit: Audit, authorization: str | None, pages: PageLinks, budget: int,
                           granted: smart_scopes.Grant | None) -> bytes:
        """One batch-response entry as JSON bytes. The resource is spliced in as the provider's bytes:
        `_shape` has checked they are one JSON object, so parsing and re-serialising them is waste."""
        try:
            action = batch_entry_interaction(entry)
            telemetry.annotate(interaction=action.kind, resource_type=action.resource_type)
            check_resource_type(action.resource_type, route.resource_types)
            smart_scopes.check(granted, action)
            response = await self._exchange(route, version, action, req.headers, urls, audit, authorization,
                                            pages, stream=False, limit=min(budget, self._provider.size_limit))
            resource, status, headers = response.body, response.status, response.headers
        except FhirError as exc:
            outcome = operation_outcome(exc.code, exc.diagnostics)
            resource, status, headers = json.dumps(outcome, separators=(",", ":")).encode(), exc.status, {}
        result: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
        for header, key in (("Etag", "etag"), ("Location", "location")):
            if header in headers:
                result[key] = headers[header]
        modified = _instant(headers.get("Last-Modified"))
        if modified:
            result["lastModified"] = modified
        head = b'{"response":' + json.dumps(result, separators=(",", ":")).encode()
        return head + (b',"resource":' + resource + b"}" if resource else b"}")

    async def _batch_passthrough(self, entries: list, route: TenantRoute, version: str, urls: Urls,
                                 audit: Audit, authorization: str | None, pages: PageLinks,
                                 granted: smart_scopes.Grant | None) -> Response:
        """For providers that run batches well: validate every entry (a paging entry must be a link
        this tenant was handed; a type the token's SMART scopes refuse fails the whole batch with
        403, as nothing was sent yet to answer the others with), then send the Bundle the gateway
        validated (never the client's raw bytes) and stream the provider's batch-response."""
        actions = []
        for entry in entries:
            action = batch_entry_interaction(entry)
            check_resource_type(action.resource_type, route.resource_types)
            smart_scopes.check(granted, action)
            actions.append(_provider_action(route, version, pages.verified(action)))
        headers = {"Content-Type": CONTENT_TYPE[version], "Accept": CONTENT_TYPE[version],
                   "X-Request-Id": audit.request_id}
        upstream = await self._send(route, "POST", route.provider_base_url, headers, passthrough_bundle(actions),
                                    audit, authorization, whole=route.resource_types is not None)
        return _shape(upstream, route, version, urls, audit, pages)


# --- shaping the answer ---------------------------------------------------------------------------

def _shape(upstream: Upstream, route: TenantRoute, version: str, urls: Urls, audit: Audit,
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
    return media in _FHIR_JSON or media.endswith("+json")


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


def _bridged(route: TenantRoute, version: str) -> bool:
    """Exactly one side speaks R4 (`_route` admits no other mismatch): down from an R4 provider to
    the STU3/DSTU2 facade, or up from an STU3/DSTU2 provider to the R4 facade."""
    return route.fhir_version != version


def _bridge(upstream: Upstream, version: str, asked: Interaction, route: TenantRoute, audit: Audit) -> Upstream:
    """Convert a whole answer (resource, Bundle or OperationOutcome) to the facade version.

    Anything that is not a JSON object is left for `_shape` to refuse; a 304 has no body to convert.
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


# --- small helpers ----------------------------------------------------------------------------------

def _instant(http_date: str | None) -> str | None:
    """A batch entry's `lastModified` is a FHIR instant; the provider's Last-Modified is an HTTP date."""
    try:
        parsed = parsedate_to_datetime(http_date) if http_date else None
    except (TypeError, ValueError):
        return None
    return parsed.isoformat() if parsed is not None and parsed.tzinfo is not None else None


def _unauthorized(reason: str) -> FhirError:
    challenge = f'Bearer error="invalid_token", error_description="{reason}"'
    return FhirError(401, "login", reason, {"WWW-Authenticate": challenge})


def _accept(accept: str | None, version: str) -> str:
    if version == "r4":
        return "application/fhir+json"  # the facade's media type means nothing to an R4 server
    if accept and any(t in accept.lower() for t in _FHIR_JSON):
        return accept
    return CONTENT_TYPE.get(version, "application/fhir+json")


def _provider_action(route: TenantRoute, version: str, action: Interaction) -> Interaction:
    """Bridged requests are translated (down to an R4 provider, up from the R4 facade); STU3 providers
    get their own spelling of sort order."""
    if route.fhir_version == "r4" and version != "r4":
        return translate_request(version, action)
    if version == "r4" and route.fhir_version != "r4":
        return translate_request_up(route.fhir_version, action)
    if route.fhir_version == "stu3":
        return stu3_sort(action)
    return action


def _parse_bundle(body: bytes) -> dict:
    try:
        bundle = loads_strict(body)
    except InvalidJson as exc:
        raise FhirError(400, "structure", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "structure", "POST to the base URL needs a Bundle of type batch")
    if bundle.get("type") == "transaction":
        raise FhirError(405, "not-supported", "transactions are not supported: this gateway is read-only")
    if bundle.get("type") != "batch":
        raise FhirError(400, "invalid", "only Bundles of type batch can be posted to the base URL")
    return bundle
