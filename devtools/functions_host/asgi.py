"""The ASGI application: match a route, check the key and the body size, await the function, send its answer.

What the Python worker does under HTTP streams, minus the gRPC hop: the function gets a Starlette
``Request`` over the connection's own ``scope`` and ``receive`` (route values in ``path_params``), and
the ``Response`` it returns is called with the connection's ``send``, so a ``StreamingResponse``
reaches the client chunk by chunk.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, quote

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from devtools.functions_host.routes import Route, path_parts, route_for

# Named explicitly: under ``python -m`` the entry module's __name__ is "__main__".
_LOG = logging.getLogger("devtools.functions_host")
_ACCESS_LOG = logging.getLogger("devtools.functions_host.access")

KEY_ENV = "LOCAL_FUNCTION_KEY"
KEY_HEADER = b"x-functions-key"
KEY_PARAM = "code"
DEFAULT_ROUTE_PREFIX = "api"
# Azure's FUNCTIONS_REQUEST_BODY_SIZE_LIMIT default; the app enforces its own, tighter limits itself.
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024


class BodyTooLarge(Exception):
    """Raised from ``receive()`` once a body passes the limit (chunked bodies declare no length up front)."""


class _Exchange:
    """The send side of one request: remembers the status and whether the response started and completed."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None
        self.complete = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self._send(message)

    async def empty(self, status: int) -> None:
        """The host's own answers carry nothing: details stay in the log."""
        await self.send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await self.send({"type": "http.response.body", "body": b""})


class FunctionsHost:
    """Routes an ASGI request to a function, checks its key and the body size, and runs the function."""

    def __init__(self, routes: Iterable[Route], keys: Sequence[str], max_body_bytes: int) -> None:
        self._routes = sorted(routes, key=Route.sort_key)
        self._keys = tuple(key.encode() for key in keys)
        self._max_body_bytes = max_body_bytes
        self._warned: set[tuple[str, ...]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        exchange = _Exchange(send)
        route = await self._handle(scope, receive, exchange)
        elapsed_ms = (time.perf_counter() - started) * 1000
        name = route.function_name if route else "-"
        status = exchange.status or "-"
        cut = "" if exchange.complete else " incomplete"  # aborted, or the client went away
        # Neither path nor query: route values and query values are patient data.
        _ACCESS_LOG.info("%s %s %s %.1fms%s", scope["method"], name, status, elapsed_ms, cut)

    async def _handle(self, scope: Scope, receive: Receive, exchange: _Exchange) -> Route | None:
        raw_path = scope.get("raw_path")
        path = raw_path.decode("utf-8", "replace") if raw_path is not None else quote(scope["path"])
        found = self._match(scope["method"], path_parts(path))
        if found is None:
            await exchange.empty(404)
            return None
        route, route_params = found
        if not self._authorized(route.auth_level, scope):
            await exchange.empty(401)
        elif _declared_length(scope) > self._max_body_bytes:
            await exchange.empty(413)  # before the function runs, as the Functions host does
        else:
            scope["path_params"] = route_params  # what the worker's sync_route_params leaves in the request
            scope["headers"] = _with_front_end_hop(scope)
            await self._run(route, scope, _limited(receive, self._max_body_bytes), exchange)
        return route

    async def _run(self, route: Route, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        name = route.function_name
        try:
            result = await route.handler(**{route.arg_name: Request(scope, receive)})
            if not isinstance(result, Response):
                _LOG.error("function %s returned %s, not a Starlette Response; answering 500", name,
                           type(result).__name__)
                await exchange.empty(500)
                return
            await result(scope, receive, exchange.send)
        except BodyTooLarge:
            _LOG.warning("function %s: request body over %d bytes", name, self._max_body_bytes)
            if exchange.status is None:
                await exchange.empty(413)
        except ClientDisconnect:
            _LOG.info("function %s: the client went away while sending the body", name)
        except Exception:
            if exchange.status is None:
                _LOG.exception("function %s raised; answering 500", name)
                await exchange.empty(500)
            else:
                # Returning with the response unfinished makes uvicorn close the connection, so the client
                # sees a truncated body instead of a cleanly ended one it could take for complete.
                _LOG.exception("function %s raised after its response started; aborting the connection", name)

    def _match(self, method: str, parts: Sequence[str]) -> tuple[Route, dict[str, str]] | None:
        matches = [(r, values) for r in self._routes if (values := r.match(method, parts)) is not None]
        if len(matches) > 1:
            self._warn_overlap(tuple(route.function_name for route, _ in matches))
        return matches[0] if matches else None

    def _warn_overlap(self, names: tuple[str, ...]) -> None:
        """Azure does not rank routes by precedence (it tries them in registration order, which follows
        the function names), so code that relies on precedence breaks there; say so once."""
        if names in self._warned:
            return
        self._warned.add(names)
        _LOG.warning(
            "routes of %s all match one request: this host picks %s by route precedence, but Azure "
            "tries routes in registration order (by function name) and may pick another; make the routes disjoint",
            ", ".join(names),
            names[0],
        )

    def _authorized(self, level: str, scope: Scope) -> bool:
        """As the Functions host: the header wins over ?code= (first value); no key configured, no access."""
        if level == "anonymous":
            return True
        supplied = next((value for name, value in scope["headers"] if name == KEY_HEADER), None)
        if supplied is None:
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            supplied = next((value.encode() for key, value in query if key.lower() == KEY_PARAM), None)
        if not supplied:
            return False
        return any([hmac.compare_digest(supplied, key) for key in self._keys])  # no short cut


def _declared_length(scope: Scope) -> int:
    """Content-Length, or 0 without one (the server has already refused a malformed one)."""
    value = next((value for name, value in scope["headers"] if name == b"content-length"), b"0")
    return int(value) if value.isdigit() else 0


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises BodyTooLarge once more than ``limit`` body bytes have arrived."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return limited


def build_asgi_app(
    app: func.FunctionApp,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    *,
    function_keys: Sequence[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FunctionsHost:
    """The app's HTTP functions as one ASGI application (HTTP scopes only: no lifespan, no websockets).

    ``function_keys`` defaults to ``LOCAL_FUNCTION_KEY``, read now. A FunctionApp's
    ``get_functions()`` refuses to run twice, so build once per app object.
    """
    if function_keys is None:
        function_keys = os.environ.get(KEY_ENV, "").split(",")
    keys = [key.strip() for key in function_keys if key.strip()]
    routes = [
        route_for(function, trigger, route_prefix)
        for function in app.get_functions()
        if isinstance(trigger := function.get_trigger(), HttpTrigger)
    ]
    for route in routes:
        methods = ",".join(sorted(route.methods)) if route.methods is not None else "ALL"
        _LOG.info("%s: [%s] /%s (%s)", route.function_name, methods, route.template, route.auth_level)
    if not keys and any(route.auth_level != "anonymous" for route in routes):
        _LOG.warning("%s is not set: FUNCTION and ADMIN functions answer 401 to every request", KEY_ENV)
    return FunctionsHost(routes, keys, max_body_bytes)


def _with_front_end_hop(scope: Scope) -> list[tuple[bytes, bytes]]:
    """Append the socket peer to X-Forwarded-For, as Azure's front end does before the Functions
    host sees a request: the gateway keys per-source limits on that trusted, right-most hop
    (shared/clientaddr.py), never on what the client wrote to its left."""
    client = scope.get("client")
    if not client:
        return list(scope["headers"])
    hop = f"{client[0]}:{client[1]}".encode()
    headers = [(name, value) for name, value in scope["headers"] if name != b"x-forwarded-for"]
    sent = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return [*headers, (b"x-forwarded-for", b", ".join([*sent, hop]))]
