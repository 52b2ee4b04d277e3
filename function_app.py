"""The gateway's HTTP surface: one Azure Functions HTTP trigger per concern, read top to bottom.

Every function is async and typed with the HTTP streams extension's FastAPI request and response
types (azurefunctions-extensions-http-fastapi; docs/streaming.md): with streams enabled, the
platform serves all of an app's HTTP functions this way. Each function converts the request into a
plain `shared.http.Request`, calls one handler in `shared/`, and converts the plain response back,
streamed when the handler streams. Management routes use auth level FUNCTION (a function or host
key, `x-functions-key`); everything the Patients app calls is anonymous at the host and
authorised by the gateway's own OAuth tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from shared import handlers, manage_api, telemetry
from shared.http import Headers
from shared.http import Request as PlainRequest
from shared.http import Response as PlainResponse
from shared.offloop import inline_or_thread, is_inline_first
from shared.portal import handlers as portal
from shared.settings import get_settings

telemetry.configure(get_settings())  # Application Insights in Azure; console or OTLP locally, if asked
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ANON, KEY = func.AuthLevel.ANONYMOUS, func.AuthLevel.FUNCTION
Handler = Callable[..., PlainResponse | Awaitable[PlainResponse]]
_SMALLEST_BODY_CAP = 64 * 1024  # the management API's own limit, whatever MAX_REQUEST_BODY_BYTES says


async def serve(handler: Handler, req: Request, *route_keys: str) -> Response:
    """Async handlers (the proxy) run on the event loop. The others may block on Key Vault and Table
    Storage, so they run on the thread pool and never stall the loop; those marked `inline_first`
    (token, discovery, health: answered from caches almost always) are tried on the loop first
    (shared/offloop.py). Each request is one server span (shared/telemetry.py), whose trace id is
    the X-Request-Id."""
    plain = PlainRequest(req.method, str(req.url), Headers(req.headers), dict(req.query_params),
                         dict(req.path_params), await _body(req))
    span = telemetry.server_span(plain.method, handler.__name__, plain.headers, plain.route_params)
    args = (plain, *(plain.route_params.get(k, "") for k in route_keys))
    try:
        if inspect.iscoroutinefunction(handler):
            result = await handler(*args)
        elif is_inline_first(handler):  # cache hits answer on the loop; a miss runs it again on a thread
            result = await inline_or_thread(handler, *args)
        else:
            result = await run_in_threadpool(handler, *args)
    except BaseException as exc:
        span.failed(exc)
        raise
    headers = {**result.headers, "X-Request-Id": span.request_id}
    stream = span.answer(result.status, result.stream)
    if stream is not None:
        return StreamingResponse(stream, status_code=result.status, headers=headers)
    return Response(result.body, status_code=result.status, headers=headers)


async def _body(req: Request) -> bytes:
    """At most one byte past the largest body any endpoint accepts: enough for each handler to refuse
    an oversized body in its own error style, without holding an attacker's gigabyte in memory."""
    if "content-length" not in req.headers and "transfer-encoding" not in req.headers:
        return b""  # no body announced (every GET the Patients app sends): nothing to wait for
    cap = max(get_settings().max_request_body_bytes, _SMALLEST_BODY_CAP) + 1
    chunks, size = [], 0
    async for chunk in req.stream():
        chunks.append(chunk[: cap - size])
        size += len(chunks[-1])
        if size >= cap:
            break
    return b"".join(chunks)


# --- discovery and OAuth (anonymous: AUTH-4) --------------------------------------------------

@app.route(route="fhir/{version}/metadata", methods=["GET"], auth_level=ANON)
async def fhir_metadata(req: Request) -> Response:
    return await serve(handlers.metadata, req, "version")


@app.route(route="fhir/{version}/.well-known/smart-configuration", methods=["GET"], auth_level=ANON)
async def smart_configuration(req: Request) -> Response:
    return await serve(handlers.smart_config, req, "version")


@app.route(route="oauth2/jwks", methods=["GET"], auth_level=ANON)
async def oauth_jwks(req: Request) -> Response:
    return await serve(handlers.jwks, req)


@app.route(route="oauth2/token", methods=["POST"], auth_level=ANON)
async def oauth_token(req: Request) -> Response:
    return await serve(handlers.token, req)


@app.route(route="health", methods=["GET"], auth_level=ANON)
async def health(req: Request) -> Response:
    return await serve(handlers.health, req)


@app.route(route="health/deep", methods=["GET"], auth_level=KEY)
async def health_deep(req: Request) -> Response:
    return await serve(handlers.health_deep, req)


# --- the FHIR proxy (gateway bearer token, checked by the proxy: ROUTE-3) -------------------

@app.route(route="fhir/{version}", methods=["POST"], auth_level=ANON)
async def fhir_batch(req: Request) -> Response:
    return await serve(handlers.fhir, req, "version", "path")


# Overlaps the discovery routes above: Azure tries routes in registration order (by function name), not by
# precedence, so handlers.fhir answers the discovery paths too.
@app.route(route="fhir/{version}/{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], auth_level=ANON)
async def fhir_proxy(req: Request) -> Response:
    return await serve(handlers.fhir, req, "version", "path")


# --- management API (function key): one trigger per row of shared/manage_api.py, the same rows its
# OpenAPI document is made from (GET /api/manage/openapi.json) --------------------------------------

def _manage_function(operation: manage_api.Operation) -> Callable[[Request], Awaitable[Response]]:
    async def function(req: Request) -> Response:
        return await serve(operation.handler, req, *operation.route_keys)
    function.__name__ = function.__qualname__ = operation.function_name  # Azure's function name
    return function


for _operation in manage_api.OPERATIONS:
    app.route(route=_operation.route, methods=[_operation.method], auth_level=KEY)(_manage_function(_operation))


# --- consumer portal (AUTH-5, AUTH-6; anonymous at the host: sessions, CSRF and rate limits in shared/portal) ---

@app.route(route="portal", methods=["GET"], auth_level=ANON)
async def portal_home(req: Request) -> Response:
    return await serve(portal.home, req)


@app.route(route="portal/signin", methods=["GET"], auth_level=ANON)
async def portal_signin_form(req: Request) -> Response:
    return await serve(portal.signin_form, req)


@app.route(route="portal/signin", methods=["POST"], auth_level=ANON)
async def portal_signin(req: Request) -> Response:
    return await serve(portal.signin, req)


@app.route(route="portal/register", methods=["GET"], auth_level=ANON)
async def portal_register_form(req: Request) -> Response:
    return await serve(portal.register_form, req)


@app.route(route="portal/register", methods=["POST"], auth_level=ANON)
async def portal_register(req: Request) -> Response:
    return await serve(portal.register, req)


@app.route(route="portal/signout", methods=["POST"], auth_level=ANON)
async def portal_signout(req: Request) -> Response:
    return await serve(portal.signout, req)


@app.route(route="portal/secrets", methods=["GET"], auth_level=ANON)
async def portal_secrets(req: Request) -> Response:
    return await serve(portal.secrets, req)


@app.route(route="portal/secrets", methods=["POST"], auth_level=ANON)
async def portal_add_secret(req: Request) -> Response:
    return await serve(portal.add_secret, req)


@app.route(route="portal/secrets/{secret_id}/delete", methods=["POST"], auth_level=ANON)
async def portal_delete_secret(req: Request) -> Response:
    return await serve(portal.delete_secret, req, "secret_id")


@app.route(route="portal/jwks", methods=["POST"], auth_level=ANON)
async def portal_set_jwks(req: Request) -> Response:
    return await serve(portal.set_jwks, req)


@app.route(route="portal/static/{name}", methods=["GET"], auth_level=ANON)
async def portal_static(req: Request) -> Response:
    return await serve(portal.static, req, "name")

