"""The FHIR proxy, as a pipeline: authorise → check → exchange → bridge → shape → audit.

Each step is its own module, and `FhirProxy` only orchestrates them:

1. authorise (shared/access.py): who is asking and where it goes, from the verified token alone
   (ROUTE-3): claims, the tenant's route, the upstream credential, the page-link key;
2. check (shared/request_shaping.py): the interaction, the tenant's allow-list and the token's SMART
   scopes, before anything is sent; then the request in the provider's dialect, its URL built from
   the tenant's configured base and validated path pieces, so the proxy cannot be pointed at any
   other host;
3. exchange (shared/provider_client.py `ProviderClient`: pools, deadlines, retries, bounded streaming
   reads), once more with fresh credentials when the provider refuses the ones held;
4. bridge and shape (shared/response_shaping.py): the R4 bridge, then status, headers and body for
   the client, provider URLs rewritten and system-level page links signed (`PageLinks`);
5. audit (shared/audit.py): one line when the answer ends.

Batches (FHIR-2) run each entry through steps 2-4 concurrently (`BatchRunner`: fair shares,
deadline, size cap), or, for providers that run batches well, send one validated Bundle.

Passthrough answers stream: once the first `HEAD_BYTES` (or the whole body, if smaller) are in and
look like FHIR JSON, status and headers go out and the rest follows chunk by chunk, rewritten as it
passes (`StreamRewriter`); memory stays at about one chunk per request whatever the Bundle's size.
An answer that is whole by then is checked as before (a complete JSON object) and can still become
a 502/504. R4 answers are bridged whole (the converters need whole resources), under the same size
limit.
"""

from __future__ import annotations

import asyncio

from shared import telemetry
from shared.access import Access, AccessCheck
from shared.audit import Audit
from shared.batch import BatchRunner
from shared.capability import CONTENT_TYPE
from shared.clients import ClientRegistry
from shared.errors import FhirError, StoreUnavailable
from shared.http import Request, Response
from shared.offloop import inline_or_thread
from shared.page_links import PagingKey
from shared.policy import Interaction, batch_entry_interaction
from shared.provider_client import ProviderClient, Upstream
from shared.request_shaping import (
    UpstreamRequest,
    batch_entries,
    bridged,
    passthrough_request,
    permit,
    provider_action,
    requested_action,
    upstream_request,
)
from shared.requestid import begin, current
from shared.response_shaping import batch_response_entry, bridge_answer, refused_entry, shape
from shared.routes import TenantRegistry, TenantRoute
from shared.settings import Settings
from shared.token_service import TokenService
from shared.upstream_auth import UpstreamAuthenticator
from shared.urls import Urls


class FhirProxy:
    def __init__(self, settings: Settings, tokens: TokenService, clients: ClientRegistry, tenants: TenantRegistry,
                 upstream_auth: UpstreamAuthenticator, paging_key: PagingKey) -> None:
        self._settings = settings
        self._access = AccessCheck(tokens, clients, tenants, upstream_auth, paging_key)
        self._auth = upstream_auth
        self._provider = ProviderClient(settings.upstream_connect_timeout_seconds,
                                        settings.upstream_read_timeout_seconds, settings.upstream_retries,
                                        settings.max_upstream_response_bytes)
        self._batches = BatchRunner(settings.batch_concurrency, settings.tenant_concurrency,
                                    settings.batch_deadline_seconds, settings.batch_max_response_bytes)

    # --- entry point: errors become OperationOutcomes, and every answer is audited ---------------------

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
        # Who and where: in-memory almost always; a cache miss blocks, and then the step runs on a thread.
        access = await inline_or_thread(self._access.check, req, version, urls)
        audit.client_id, audit.tenant_id = access.claims.client_id, access.claims.tenant_id
        if req.method.upper() == "POST" and not path.strip("/"):
            audit.interaction = "batch"
            return await self._batch(req, access, version, urls, audit)
        action = requested_action(req, path)
        audit.interaction, audit.resource_type = action.kind, action.resource_type
        permit(action, access.route, access.claims.grant)
        return await self._exchange(access, version, action, req, urls, audit, stream=True)

    # --- exchange: the provider's dialect, its answer, the client's ------------------------------------

    async def _exchange(self, access: Access, version: str, action: Interaction, req: Request, urls: Urls,
                        audit: Audit, *, stream: bool, limit: int | None = None) -> Response:
        """Ask the provider in its own dialect, answer the client in the facade's. A paging request
        goes on only as a link this tenant was handed (400 otherwise), without the gateway's MAC."""
        route = access.route
        asked = provider_action(route, version, access.pages.verified(action))
        bridging = bridged(route, version)
        request = upstream_request(route, version, asked, req.headers, audit.request_id)
        # A tenant with its own allow-list gets whole answers: entries of other types are filtered out
        # of the Bundle, which needs all of it (docs/streaming.md, docs/security.md).
        whole = bridging or not stream or route.resource_types is not None
        upstream = await self._send(access, request, audit, whole=whole, limit=limit)
        if bridging:
            upstream = bridge_answer(upstream, version, asked, route, audit)
        return shape(upstream, route, version, urls, audit, access.pages)

    async def _send(self, access: Access, request: UpstreamRequest, audit: Audit, *, whole: bool,
                    limit: int | None = None) -> Upstream:
        """One exchange with the tenant's upstream credentials; a 401 to credentials the gateway holds
        drops them and tries once more with fresh ones (a rotated secret, an expired token)."""
        authorization = access.authorization
        for retry_auth in (True, False):
            sent = {**request.headers, "Authorization": authorization} if authorization else request.headers
            upstream = await self._provider.exchange(request.method, request.url, sent, request.data, audit,
                                                     whole=whole, limit=limit)
            if upstream.status != 401 or not authorization or not retry_auth:
                return upstream
            upstream.close()
            authorization = await asyncio.to_thread(self._fresh_authorization, access.route, authorization)
        raise AssertionError("unreachable: the second attempt always returns")

    def _fresh_authorization(self, route: TenantRoute, rejected: str) -> str | None:
        self._auth.invalidate(route.tenant_id, rejected)
        return self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)

    # --- batch (FHIR-2) -------------------------------------------------------------------------

    async def _batch(self, req: Request, access: Access, version: str, urls: Urls, audit: Audit) -> Response:
        entries = batch_entries(req.body)
        audit.entries = len(entries)
        if access.route.batch_passthrough and not bridged(access.route, version):  # bridged: one by one
            return await self._batch_passthrough(entries, access, version, urls, audit)

        async def fetch(entry: object, budget: int) -> bytes:
            return await self._batch_entry(entry, req, access, version, urls, audit, budget)

        return Response(200, b"", {"Content-Type": CONTENT_TYPE[version]},
                        stream=self._batches.run(access.route.tenant_id, entries, fetch))

    async def _batch_entry(self, entry: object, req: Request, access: Access, version: str, urls: Urls,
                           audit: Audit, budget: int) -> bytes:
        """One batch-response entry: the entry's own exchange, whole and within its share of the budget."""
        try:
            action = batch_entry_interaction(entry)
            telemetry.annotate(interaction=action.kind, resource_type=action.resource_type)
            permit(action, access.route, access.claims.grant)
            response = await self._exchange(access, version, action, req, urls, audit, stream=False,
                                            limit=min(budget, self._provider.size_limit))
        except FhirError as exc:
            return refused_entry(exc)
        return batch_response_entry(response.status, response.headers, response.body)

    async def _batch_passthrough(self, entries: list, access: Access, version: str, urls: Urls,
                                 audit: Audit) -> Response:
        """For providers that run batches well: validate every entry (a paging entry must be a link
        this tenant was handed; a type the token's SMART scopes refuse fails the whole batch with
        403, as nothing was sent yet to answer the others with), then send the Bundle the gateway
        validated (never the client's raw bytes) and stream the provider's batch-response."""
        route, asked = access.route, []
        for entry in entries:
            action = batch_entry_interaction(entry)
            permit(action, route, access.claims.grant)
            asked.append(provider_action(route, version, access.pages.verified(action)))
        request = passthrough_request(route, version, asked, audit.request_id)
        upstream = await self._send(access, request, audit, whole=route.resource_types is not None)
        return shape(upstream, route, version, urls, audit, access.pages)
