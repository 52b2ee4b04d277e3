"""The FHIR proxy: verify the token, route by its tenant, apply policy, forward, rewrite, audit.

The tenant comes only from the verified token (ROUTE-3); the upstream URL is built from the
tenant's configured base and validated path pieces, so the proxy cannot be pointed at any other
host. Responses are buffered (bounded by MAX_UPSTREAM_RESPONSE_BYTES): the Python Functions HTTP
binding takes a bytes body, and Bundles need their URLs rewritten anyway.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any
from urllib.parse import urlsplit

from urllib3 import BaseHTTPResponse, HTTPConnectionPool

from shared.bridge import convert_response, translate_request
from shared.capability import CONTENT_TYPE
from shared.clients import ClientRegistry
from shared.errors import FhirError, StoreUnavailable, operation_outcome
from shared.http import Request, Response
from shared.policy import (
    MAX_BATCH_ENTRIES,
    Interaction,
    batch_entry_interaction,
    check_resource_type,
    interaction_for,
    stu3_sort,
)
from shared.rewrite import rewrite_body, rewrite_url
from shared.routes import TenantRegistry, TenantRoute
from shared.settings import Settings
from shared.token_service import AccessClaims, InvalidToken, TokenService
from shared.upstream_auth import UpstreamAuthenticator
from shared.upstream_http import bounded_exchange, new_pool, request
from shared.urls import Urls

audit_log = logging.getLogger("gateway.audit")
# urllib3 logs each retry with the request URL, whose query holds search values (PHI): keep it quiet.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_PASS_REQUEST = ("accept", "prefer", "if-none-match", "if-modified-since")
_PASS_RESPONSE = ("etag", "last-modified")
_FHIR_JSON = ("application/fhir+json", "application/json+fhir", "application/json")
_PARSE_LIMIT = 16 * 1024 * 1024
_OBJECT = object()  # what a validated JSON object parses to in _is_json
_STATUS_TEXT = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 401: "401 Unauthorized",
                403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed", 410: "410 Gone",
                502: "502 Bad Gateway", 503: "503 Service Unavailable", 504: "504 Gateway Timeout"}


@dataclass
class Audit:
    """One structured line per request; ids, names and parameter values never go in here (no PHI)."""

    request_id: str
    started: float = field(default_factory=time.monotonic)
    client_id: str | None = None
    tenant_id: str | None = None
    interaction: str | None = None
    resource_type: str | None = None
    upstream_ms: float = 0.0
    entries: int | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_upstream_time(self, seconds: float) -> None:
        """Batch entries run on several threads; their upstream times add up under the lock."""
        with self._lock:
            self.upstream_ms += seconds * 1000

    def count_dropped(self, dropped: dict[str, int]) -> None:
        """What the R4 bridge could not represent (element paths only, never values)."""
        with self._lock:
            self.dropped.update(dropped)

    def emit(self, status: int, size: int) -> None:
        record = {"event": "fhir-request", "request_id": self.request_id, "client_id": self.client_id,
                  "tenant_id": self.tenant_id, "interaction": self.interaction,
                  "resource_type": self.resource_type, "status": status,
                  "upstream_ms": round(self.upstream_ms, 1), "bytes": size,
                  "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if self.entries is not None:
            record["entries"] = self.entries
        if self.dropped:
            record["dropped"] = dict(self.dropped)
        audit_log.info(json.dumps(record, separators=(",", ":")))


@dataclass
class Upstream:
    status: int
    body: bytes
    headers: dict[str, str]


class FhirProxy:
    def __init__(self, settings: Settings, tokens: TokenService, clients: ClientRegistry, tenants: TenantRegistry,
                 upstream_auth: UpstreamAuthenticator) -> None:
        self._settings = settings
        self._tokens, self._clients, self._tenants, self._auth = tokens, clients, tenants, upstream_auth
        self._pools: dict[str, HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._timeout = (settings.upstream_connect_timeout_seconds, settings.upstream_read_timeout_seconds)
        # Shared by all batches: a pool per batch started its threads one by one, and each start
        # waited for the GIL behind the entries already running (about a millisecond each under load).
        self._batch_pool = ThreadPoolExecutor(max_workers=8 * settings.batch_concurrency, thread_name_prefix="batch")

    # --- entry point ----------------------------------------------------------------------------

    def handle(self, req: Request, version: str, path: str, urls: Urls) -> Response:
        audit = Audit(_request_id(req.headers.get("x-request-id")))
        try:
            response = self._handle(req, version, path, urls, audit)
        except FhirError as exc:
            response = exc.to_response(CONTENT_TYPE[version])
        except StoreUnavailable as exc:
            response = FhirError(503, "transient", f"{exc.component} is unavailable; retry later",
                                 exc.retry_after_header()).to_response(CONTENT_TYPE[version])
        response.headers["X-Request-Id"] = audit.request_id
        response.headers.setdefault("Cache-Control", "no-store")
        audit.emit(response.status, len(response.body))
        return response

    def _handle(self, req: Request, version: str, path: str, urls: Urls, audit: Audit) -> Response:
        claims = self._authenticate(req, urls)
        audit.client_id, audit.tenant_id = claims.client_id, claims.tenant_id
        route = self._route(claims, version)
        if len(req.body) > self._settings.max_request_body_bytes:
            raise FhirError(413, "too-costly", "request body too large")
        if req.method.upper() == "POST" and not path.strip("/"):
            audit.interaction = "batch"
            return self._batch(req, route, version, urls, audit)
        form = req.body if req.method.upper() == "POST" else b""
        if form and not req.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            raise FhirError(415, "not-supported", "POST _search needs an application/x-www-form-urlencoded body")
        try:
            action = interaction_for(req.method, path, urlsplit(req.url).query, form)
        except UnicodeDecodeError as exc:
            raise FhirError(400, "invalid", "the search body is not UTF-8") from exc
        audit.interaction, audit.resource_type = action.kind, action.resource_type
        check_resource_type(action.resource_type, route.resource_types)
        return self._exchange(route, version, action, req.headers, urls, audit)

    def _exchange(self, route: TenantRoute, version: str, action: Interaction, headers: Any, urls: Urls,
                  audit: Audit) -> Response:
        """Ask the provider in its own dialect, answer the client in the facade's."""
        asked = _provider_action(route, version, action)
        upstream = self._forward(route, asked, headers, audit)
        if route.fhir_version == "r4":
            upstream = _bridge(upstream, version, asked, route, audit)
        return self._shape(upstream, route, version, urls)

    # --- who and where --------------------------------------------------------------------------

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

    def _route(self, claims: AccessClaims, version: str) -> TenantRoute:
        route = self._tenants.resolve(claims.tenant_id)
        if route is None or not route.allows(claims.client_id):
            raise FhirError(403, "forbidden", "this client may not access this tenant (disabled or not allowed)")
        if route.fhir_version not in (version, "r4"):
            raise FhirError(400, "not-supported",
                            f"this tenant's provider speaks {route.fhir_version.upper()}; use the "
                            f"{route.fhir_version} FHIR base URL")
        return route

    # --- forwarding -----------------------------------------------------------------------------

    def _pool(self, base: str) -> HTTPConnectionPool:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(base))
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools.get(origin)
                if pool is None:
                    pool = new_pool(origin, self._settings.upstream_retries)
                    self._pools[origin] = pool
        return pool

    def _forward(self, route: TenantRoute, action: Interaction, headers: Any, audit: Audit,
                 retry_auth: bool = True) -> Upstream:
        url = f"{route.provider_base_url}/{action.upstream_path}"
        out = {name: headers.get(name) for name in _PASS_REQUEST if headers.get(name)}
        out["Accept"] = _accept(headers.get("accept"), route.fhir_version)
        out["X-Request-Id"] = audit.request_id
        authorization = self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)
        if authorization:
            out["Authorization"] = authorization
        if action.kind == "search-post":
            method, params, data = "POST", None, action.query_string().encode()
            out["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            method, params, data = "GET", action.query_string() or None, None
        upstream = self._send(route, method, url + (f"?{params}" if params else ""), out, data, audit)
        if upstream.status == 401 and authorization and retry_auth:
            self._auth.invalidate(route.tenant_id, authorization)
            return self._forward(route, action, headers, audit, retry_auth=False)
        return upstream

    def _send(self, route: TenantRoute, method: str, url: str, headers: dict[str, str], data: bytes | None,
              audit: Audit) -> Upstream:
        started = time.monotonic()
        limit = self._settings.max_upstream_response_bytes
        try:
            # The whole answer (every attempt, headers and body) within connect + read timeout: a
            # provider that drips bytes cannot hold a worker past it (shared/upstream_http.py).
            with bounded_exchange(sum(self._timeout)) as exchange, request(
                    self._pool(route.provider_base_url), method, url, headers, data, self._timeout) as resp:
                body = _read_bounded(resp, limit)
                exchange.finish()
                result = Upstream(resp.status, body, {k.lower(): resp.headers[k] for k in resp.headers})
        finally:
            audit.add_upstream_time(time.monotonic() - started)
        return result

    # --- responses ------------------------------------------------------------------------------

    def _shape(self, upstream: Upstream, route: TenantRoute, version: str, urls: Urls) -> Response:
        gateway_base = urls.fhir_base(version)
        headers = {k.title(): v for k, v in upstream.headers.items() if k in _PASS_RESPONSE}
        for name in ("location", "content-location"):
            if name in upstream.headers:
                headers[name.title()] = rewrite_url(upstream.headers[name], route.provider_base_url, gateway_base)
        if upstream.status == 304:
            return Response(304, b"", headers)
        if upstream.status == 401:
            raise FhirError(502, "security", "the provider refused the gateway's credentials")
        if not _is_json(upstream):
            raise FhirError(502, "exception", f"the provider answered HTTP {upstream.status} without FHIR JSON")
        if upstream.status >= 400:
            return _provider_error(upstream, version)
        headers["Content-Type"] = CONTENT_TYPE[version]
        return Response(upstream.status, rewrite_body(upstream.body, route.provider_base_url, gateway_base), headers)

    # --- batch (FHIR-2) -------------------------------------------------------------------------

    def _batch(self, req: Request, route: TenantRoute, version: str, urls: Urls, audit: Audit) -> Response:
        bundle = _parse_bundle(req.body)
        entries = bundle.get("entry") or []
        if not isinstance(entries, list) or len(entries) > MAX_BATCH_ENTRIES:
            raise FhirError(400, "invalid", f"a batch holds a list of at most {MAX_BATCH_ENTRIES} entries")
        audit.entries = len(entries)
        if route.batch_passthrough and route.fhir_version != "r4":  # R4 entries must be bridged one by one
            return self._batch_passthrough(req, route, version, urls, entries, audit)
        results = self._batch_entries(entries, req, route, version, urls, audit)
        body = b'{"resourceType":"Bundle","type":"batch-response","entry":[' + b",".join(results) + b"]}"
        return Response(200, body, {"Content-Type": CONTENT_TYPE[version]})

    def _batch_entries(self, entries: list, req: Request, route: TenantRoute, version: str, urls: Urls,
                       audit: Audit) -> list[bytes]:
        """Every entry, in order, at most BATCH_CONCURRENCY of this batch's at a time; returns when all are done."""
        todo: SimpleQueue[tuple[int, object]] = SimpleQueue()
        for item in enumerate(entries):
            todo.put(item)
        results = [b""] * len(entries)

        def work() -> None:
            while True:
                try:
                    index, entry = todo.get_nowait()
                except Empty:
                    return
                results[index] = self._batch_entry(entry, req, route, version, urls, audit)

        workers = max(1, min(self._settings.batch_concurrency, len(entries)))
        futures = [self._batch_pool.submit(work) for _ in range(workers)]
        wait(futures)
        for future in futures:
            future.result()  # an unexpected error in any entry fails the batch, as before
        return results

    def _batch_entry(self, entry: object, req: Request, route: TenantRoute, version: str, urls: Urls,
                     audit: Audit) -> bytes:
        """One batch-response entry as JSON bytes. The resource is spliced in as the provider's bytes:
        `_shape` has checked they are one JSON object, so parsing and re-serialising them is waste."""
        try:
            action = batch_entry_interaction(entry)
            check_resource_type(action.resource_type, route.resource_types)
            response = self._exchange(route, version, action, req.headers, urls, audit)
            resource, status, headers = response.body, response.status, response.headers
        except FhirError as exc:
            outcome = operation_outcome(exc.code, exc.diagnostics)
            resource, status, headers = json.dumps(outcome, separators=(",", ":")).encode(), exc.status, {}
        result: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
        for header, key in (("Etag", "etag"), ("Last-Modified", "lastModified"), ("Location", "location")):
            if header in headers:
                result[key] = headers[header]
        head = b'{"response":' + json.dumps(result, separators=(",", ":")).encode()
        return head + (b',"resource":' + resource + b"}" if resource else b"}")

    def _batch_passthrough(self, req: Request, route: TenantRoute, version: str, urls: Urls, entries: list,
                           audit: Audit) -> Response:
        """For providers that run batches well: validate every entry, then send the Bundle as is."""
        for entry in entries:
            action = batch_entry_interaction(entry)
            check_resource_type(action.resource_type, route.resource_types)
        headers = {"Content-Type": CONTENT_TYPE[version], "Accept": CONTENT_TYPE[version],
                   "X-Request-Id": audit.request_id}
        authorization = self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)
        if authorization:
            headers["Authorization"] = authorization
        upstream = self._send(route, "POST", route.provider_base_url, headers, req.body, audit)
        return self._shape(upstream, route, version, urls)


def _request_id(incoming: str | None) -> str:
    return incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex


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
    """R4 providers get the bridged request; STU3 providers their own spelling of sort order."""
    if route.fhir_version == "r4":
        return translate_request(version, action)
    if route.fhir_version == "stu3":
        return stu3_sort(action)
    return action


def _bridge(upstream: Upstream, version: str, asked: Interaction, route: TenantRoute, audit: Audit) -> Upstream:
    """Convert an R4 answer (resource, Bundle or OperationOutcome) to the facade version.

    Anything that is not JSON is left for `_shape` to refuse; a 304 has no body to convert."""
    if upstream.status == 304 or not _is_json(upstream):
        return upstream
    converted, dropped = convert_response(version, asked, json.loads(upstream.body), route.provider_base_url)
    audit.count_dropped(dropped)
    body = json.dumps(converted, separators=(",", ":")).encode()
    return Upstream(upstream.status, body, {**upstream.headers, "content-type": CONTENT_TYPE[version]})


def _read_bounded(resp: BaseHTTPResponse, limit: int) -> bytes:
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError(502, "too-costly", "the provider's response exceeds the gateway's size limit")
    body = io.BytesIO()  # getvalue() hands its buffer over: one copy of a large body, not two (a join)
    for chunk in resp.stream(64 * 1024, decode_content=True):
        if body.tell() + len(chunk) > limit:
            raise FhirError(502, "too-costly", "the provider's response exceeds the gateway's size limit")
        body.write(chunk)
    return body.getvalue()


def _is_json(upstream: Upstream) -> bool:
    """Content type says JSON and the body is a JSON object (fully parsed up to a size, then shape-checked).

    The parse only validates: every object becomes a marker as soon as it is read, so no tree is
    built (a tenth of the memory of `json.loads` for a large Bundle, and faster)."""
    media = upstream.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _FHIR_JSON and not media.endswith("+json"):
        return False
    body = upstream.body.strip()
    if len(body) <= _PARSE_LIMIT:
        try:
            return json.loads(body, object_pairs_hook=_object_marker) is _OBJECT
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
    return body.startswith(b"{") and body.endswith(b"}")


def _object_marker(pairs: list) -> object:
    return _OBJECT


def _provider_error(upstream: Upstream, version: str) -> Response:
    """Provider 4xx pass through; 5xx become 502. An OperationOutcome body is kept, anything else replaced."""
    status = upstream.status if upstream.status < 500 else 502
    try:
        parsed = json.loads(upstream.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = None
    if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome":
        return Response(status, upstream.body, {"Content-Type": CONTENT_TYPE[version]})
    return Response.json(status, operation_outcome("exception", f"the provider answered HTTP {upstream.status}"),
                         CONTENT_TYPE[version])


def _parse_bundle(body: bytes) -> dict:
    try:
        bundle = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FhirError(400, "structure", "the body is not valid JSON") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "structure", "POST to the base URL needs a Bundle of type batch")
    if bundle.get("type") == "transaction":
        raise FhirError(405, "not-supported", "transactions are not supported: this gateway is read-only")
    if bundle.get("type") != "batch":
        raise FhirError(400, "invalid", "only Bundles of type batch can be posted to the base URL")
    return bundle


