"""A local host for the HTTP functions of an Azure Functions v2 (Python) app; development only.

Why it exists: Azure Functions Core Tools cannot be installed on these machines, yet the functions
must be exercised over real HTTP with exactly the code that runs in Azure. So this host imports
the app's ``FunctionApp`` unchanged (``func start`` keeps working wherever Core Tools exists),
introspects it with ``get_functions()`` and serves its HTTP triggers with waitress. It is never
deployed (``.funcignore`` excludes ``devtools/``).

What it copies from Azure, and where it knowingly differs:

* Routes are ``{routePrefix}/{route}`` (``extensions.http.routePrefix`` in the app's ``host.json``,
  ``api`` by default) in ASP.NET Core template syntax; a function without a route is served at
  its name. A method the trigger does not allow only makes the route not match, so the answer is
  404, as in Azure (not 405).
* Overlapping routes: this host ranks them by ASP.NET Core route precedence; Azure tries them in
  registration order. Whenever more than one route matches a request the host logs a warning,
  because Azure may then pick a different function.
* Query parameters reach the function as the Functions host hands them to the Python worker:
  keys case-insensitive, repeated values joined with ``,``, empty values dropped, and ``code``
  passed on like any other parameter.
* FUNCTION and ADMIN functions need a key from ``LOCAL_FUNCTION_KEY`` (comma-separated) in
  ``x-functions-key`` (which wins) or ``?code=``; with no key configured they answer 401 to every
  request. Core Tools switches keys off locally; this host keeps them so auth is exercised.
* An exception, or a result that is not an ``HttpResponse``, answers 500 with an empty body;
  the details go to the log only. (Azure would accept a plain ``str`` result; this host does not.)
* ``local.settings.json`` ``Values`` become environment variables before the app is imported, as
  ``func start`` does it: a non-empty variable already in the environment wins, and an empty value
  leaves the variable unset.

Usage::

    python -m devtools.functions_host [--app function_app:app] [--host 127.0.0.1] [--port 7071]
        [--threads 16] [--max-body-bytes 8388608] [--settings local.settings.json] [--ready-file F]
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import responses
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from wsgiref.util import is_hop_by_hop

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from waitress import create_server

__all__ = ["build_wsgi_app", "load_settings", "main", "read_route_prefix", "serve"]

# Named explicitly: under ``python -m`` the module's __name__ is "__main__".
_LOG = logging.getLogger("devtools.functions_host")
_ACCESS_LOG = logging.getLogger("devtools.functions_host.access")

KEY_ENV = "LOCAL_FUNCTION_KEY"
KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
DEFAULT_ROUTE_PREFIX = "api"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Constraint = Callable[[str], bool]
QueryPairs = Sequence[tuple[str, str]]

# --- route templates (the ASP.NET Core syntax the Functions host uses) ---------------------------

_PARAMETER = re.compile(
    r"\{(?P<star>\*{1,2})?(?P<name>\w+)(?P<constraints>(?::\w+(?:\(.*?\))?)*)(?P<optional>\?)?\}"
)
_CONSTRAINT = re.compile(r":(?P<name>\w+)(?:\((?P<arg>.*?)\))?(?=:\w|$)")
_ALPHA = re.compile(r"[a-z]+", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_GUID_D = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_GUID = re.compile(rf"[0-9a-f]{{32}}|{_GUID_D}|\{{{_GUID_D}\}}|\({_GUID_D}\)", re.IGNORECASE)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _integer_between(low: int, high: int) -> Constraint:
    return lambda value: _INTEGER.fullmatch(value) is not None and low <= int(value) <= high


def _length_between(low: int, high: int) -> Constraint:
    return lambda value: low <= len(value) <= high


def _regex(pattern: str) -> Constraint:
    """Unanchored and case-insensitive like ASP.NET's; braces arrive doubled, as templates escape them."""
    compiled = re.compile(pattern.replace("{{", "{").replace("}}", "}"), re.IGNORECASE)
    return lambda value: compiled.search(value) is not None


def _constraint(name: str, arg: str | None) -> Constraint:
    """One inline route constraint; an unknown one is refused rather than silently ignored."""
    name = name.lower()
    if name == "regex" and arg:
        return _regex(arg)
    unsupported = ValueError(f"unsupported route constraint :{name}({arg or ''})")
    try:
        numbers = [int(part) for part in arg.split(",")] if arg else []
    except ValueError:
        raise unsupported from None
    match name, numbers:
        case "alpha", []:
            return lambda value: _ALPHA.fullmatch(value) is not None
        case "bool", []:
            return lambda value: value.lower() in ("true", "false")
        case "guid", []:
            return lambda value: _GUID.fullmatch(value) is not None
        case "int", []:
            return _integer_between(-(2**31), 2**31 - 1)
        case "long", []:
            return _integer_between(_LONG_MIN, _LONG_MAX)
        case "min", [low]:
            return _integer_between(low, _LONG_MAX)
        case "max", [high]:
            return _integer_between(_LONG_MIN, high)
        case "range", [low, high]:
            return _integer_between(low, high)
        case "length", [exact]:
            return _length_between(exact, exact)
        case "length", [low, high]:
            return _length_between(low, high)
        case "minlength", [low]:
            return _length_between(low, sys.maxsize)
        case "maxlength", [high]:
            return _length_between(0, high)
    raise unsupported


@dataclass(frozen=True)
class _Segment:
    literal: str | None  # case-folded literal text; None for a parameter
    name: str = ""
    optional: bool = False
    catch_all: bool = False
    constraints: tuple[Constraint, ...] = ()

    @property
    def precedence(self) -> int:
        """ASP.NET Core's inbound precedence digit: lower wins (literal, constrained, plain, catch-all)."""
        if self.literal is not None:
            return 1
        digit = 5 if self.catch_all else 3
        return digit - 1 if self.constraints else digit

    def accepts(self, value: str) -> bool:
        if self.literal is not None:
            return value.casefold() == self.literal
        return all(check(value) for check in self.constraints)


def _parse_segment(text: str) -> _Segment:
    if not text:
        raise ValueError("empty path segment")
    if "{" not in text and "}" not in text:
        return _Segment(literal=text.casefold())
    found = _PARAMETER.fullmatch(text)
    if found is None:
        raise ValueError(f"unsupported segment {text!r} (one literal or one parameter per segment)")
    spec = found["constraints"]
    tokens = list(_CONSTRAINT.finditer(spec))
    if "".join(token[0] for token in tokens) != spec:
        raise ValueError(f"cannot parse the constraints of {text!r}")
    constraints = tuple(_constraint(token["name"], token["arg"]) for token in tokens)
    return _Segment(None, found["name"], bool(found["optional"]), bool(found["star"]), constraints)


def _parse_template(template: str) -> tuple[_Segment, ...]:
    segments = tuple(_parse_segment(part) for part in template.split("/"))
    names = [segment.name for segment in segments if segment.literal is None]
    if len(names) != len(set(names)):
        raise ValueError("a route parameter name appears more than once")
    for index, segment in enumerate(segments):
        if segment.catch_all and (segment.optional or index != len(segments) - 1):
            raise ValueError("a catch-all parameter must be the last segment and cannot be optional")
        if index and segments[index - 1].optional and not segment.optional:
            raise ValueError("only optional parameters may follow an optional parameter")
    return segments


@dataclass(frozen=True)
class _Route:
    function_name: str
    template: str
    segments: tuple[_Segment, ...]
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    handler: Callable[..., Any]
    arg_name: str

    def sort_key(self) -> tuple[tuple[int, ...], str, str]:
        """Precedence first; the rest only makes ties deterministic."""
        return tuple(s.precedence for s in self.segments), self.template.casefold(), self.function_name

    def match(self, method: str, parts: Sequence[str]) -> dict[str, str] | None:
        """Route values for decoded path segments, or None; a disallowed method is a mismatch."""
        if self.methods is not None and method not in self.methods:
            return None
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                return _bound(segment, rest, values) if rest else values
            if index >= len(parts):
                return values if segment.optional else None  # what follows is optional too
            if not parts[index] or _bound(segment, parts[index], values) is None:
                return None
        return values if len(parts) == len(self.segments) else None


def _bound(segment: _Segment, value: str, values: dict[str, str]) -> dict[str, str] | None:
    if not segment.accepts(value):
        return None
    if segment.literal is None:
        values[segment.name] = value
    return values


# --- the WSGI application ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Length", "0")])
    body: bytes = b""


class _FunctionsHost:
    """Routes a WSGI request to a function, checks its key, converts request and response."""

    def __init__(self, routes: Iterable[_Route], keys: Sequence[str]) -> None:
        self._routes = sorted(routes, key=_Route.sort_key)
        self._keys = tuple(key.encode() for key in keys)
        self._warned: set[tuple[str, ...]] = set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        route, reply = self._handle(environ)
        start_response(f"{reply.status} {responses.get(reply.status, 'Unknown')}", reply.headers)
        elapsed_ms = (time.perf_counter() - started) * 1000
        name = route.function_name if route else "-"
        _ACCESS_LOG.info("%s %s %d %.1fms", environ["REQUEST_METHOD"], name, reply.status, elapsed_ms)
        return [reply.body]

    def _handle(self, environ: dict[str, Any]) -> tuple[_Route | None, _Reply]:
        method = environ["REQUEST_METHOD"].upper()
        path, query = _raw_target(environ)
        found = self._match(method, _path_parts(path))
        if found is None:
            return None, _Reply(404)
        route, route_params = found
        pairs = parse_qsl(query, keep_blank_values=True)
        headers = _request_headers(environ)
        if not self._authorized(route.auth_level, headers, pairs):
            return route, _Reply(401)
        request = func.HttpRequest(
            method,
            _url(environ, path, query),
            headers=headers,
            params=_query_params(pairs),
            route_params=route_params,
            body=_read_body(environ),
        )
        return route, _invoke(route, request)

    def _match(self, method: str, parts: Sequence[str]) -> tuple[_Route, dict[str, str]] | None:
        matches = [(r, values) for r in self._routes if (values := r.match(method, parts)) is not None]
        if len(matches) > 1:
            self._warn_overlap(tuple(route.function_name for route, _ in matches))
        return matches[0] if matches else None

    def _warn_overlap(self, names: tuple[str, ...]) -> None:
        """Azure does not rank routes by precedence, so code that relies on it breaks there; say so once."""
        if names in self._warned:
            return
        self._warned.add(names)
        _LOG.warning(
            "routes of %s all match one request: this host picks %s by route precedence, but Azure "
            "tries routes in registration order and may pick another; make the routes disjoint",
            ", ".join(names),
            names[0],
        )

    def _authorized(self, level: str, headers: Mapping[str, str], pairs: QueryPairs) -> bool:
        """As the Functions host: the header wins over ?code= (first value); no key configured, no access."""
        if level == "anonymous":
            return True
        supplied = headers[KEY_HEADER] if KEY_HEADER in headers else _first(pairs, KEY_PARAM)
        if not supplied:
            return False
        candidate = supplied.encode()
        return any([hmac.compare_digest(candidate, key) for key in self._keys])  # no short cut


def _invoke(route: _Route, request: func.HttpRequest) -> _Reply:
    try:
        result = route.handler(**{route.arg_name: request})
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Exception:
        _LOG.exception("function %s raised; answering 500", route.function_name)
        return _Reply(500)
    if not isinstance(result, func.HttpResponse):
        _LOG.error(
            "function %s returned %s, not an azure.functions.HttpResponse; answering 500",
            route.function_name,
            type(result).__name__,
        )
        return _Reply(500)
    return _reply_from(result)


def _reply_from(response: func.HttpResponse) -> _Reply:
    """Headers as the Python worker sends them: Content-Type from mimetype/charset unless set explicitly."""
    body = response.get_body() or b""
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if not is_hop_by_hop(name) and name.lower() != "content-length"
    ]
    if "content-type" not in response.headers:
        mimetype = response.mimetype
        content_type = f"{mimetype}; charset={response.charset}" if mimetype.startswith("text/") else mimetype
        headers.append(("Content-Type", content_type))
    headers.append(("Content-Length", str(len(body))))
    return _Reply(response.status_code, headers, body)


def _raw_target(environ: Mapping[str, Any]) -> tuple[str, str]:
    """Path and query still percent-encoded, so that route values are decoded per segment."""
    uri = environ.get("REQUEST_URI")  # waitress: the request target exactly as sent
    if uri is None:
        return quote(environ.get("PATH_INFO", "").encode("latin-1")), environ.get("QUERY_STRING", "")
    path, _, query = uri.encode("latin-1").decode("utf-8", "replace").partition("?")
    if not path.startswith("/"):  # absolute-form target
        path = urlsplit(path).path
    return path or "/", query


def _path_parts(path: str) -> list[str]:
    path = path.removeprefix("/").removesuffix("/")
    return [unquote(part) for part in path.split("/")] if path else []


def _request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _first(pairs: QueryPairs, name: str) -> str | None:
    return next((value for key, value in pairs if key.lower() == name), None)


def _query_params(pairs: QueryPairs) -> dict[str, str]:
    """ASP.NET groups keys case-insensitively and the host joins repeats with ','; the Python worker
    does not ask for nullable values, so the host drops the empty ones."""
    grouped: dict[str, tuple[str, list[str]]] = {}
    for key, value in pairs:
        grouped.setdefault(key.lower(), (key, []))[1].append(value)
    joined = {key: ",".join(values) for key, values in grouped.values()}
    return {key: value for key, value in joined.items() if value}


def _url(environ: Mapping[str, Any], path: str, query: str) -> str:
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    return f"{environ['wsgi.url_scheme']}://{host}{path}" + (f"?{query}" if query else "")


def _read_body(environ: Mapping[str, Any]) -> bytes:
    length = environ.get("CONTENT_LENGTH")
    return environ["wsgi.input"].read(int(length)) if length else b""


# --- loading the app and serving it --------------------------------------------------------------


def _route_for(function: Any, trigger: HttpTrigger, route_prefix: str) -> _Route:
    name = function.get_function_name()
    route = (trigger.route or name).strip("/")
    template = "/".join(part for part in (route_prefix.strip("/"), route) if part)
    if route.lower().startswith("admin"):
        reserved = "routes starting with 'admin' are reserved by the Functions host"
        raise ValueError(f"function {name}, route {route!r}: {reserved}")
    try:
        segments = _parse_template(template)
    except ValueError as error:
        raise ValueError(f"function {name}, route {route!r}: {error}") from error
    methods = None
    if trigger.methods is not None:
        methods = frozenset(str(getattr(method, "value", method)).upper() for method in trigger.methods)
    level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
    return _Route(name, template, segments, methods, level, function.get_user_function(), trigger.name)


def build_wsgi_app(
    app: func.FunctionApp,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    *,
    function_keys: Sequence[str] | None = None,
) -> WsgiApp:
    """The app's HTTP functions as one WSGI application.

    ``function_keys`` defaults to ``LOCAL_FUNCTION_KEY``, read now. A FunctionApp's
    ``get_functions()`` refuses to run twice, so build once per app object.
    """
    if function_keys is None:
        function_keys = os.environ.get(KEY_ENV, "").split(",")
    keys = [key.strip() for key in function_keys if key.strip()]
    routes = [
        _route_for(function, trigger, route_prefix)
        for function in app.get_functions()
        if isinstance(trigger := function.get_trigger(), HttpTrigger)
    ]
    for route in routes:
        methods = ",".join(sorted(route.methods)) if route.methods is not None else "ALL"
        _LOG.info("%s: [%s] /%s (%s)", route.function_name, methods, route.template, route.auth_level)
    if not keys and any(route.auth_level != "anonymous" for route in routes):
        _LOG.warning("%s is not set: FUNCTION and ADMIN functions answer 401 to every request", KEY_ENV)
    return _FunctionsHost(routes, keys)


def read_route_prefix(app_dir: Path) -> str:
    """``extensions.http.routePrefix`` from the app's host.json; an empty string removes the prefix."""
    host_json = app_dir / "host.json"
    if not host_json.is_file():
        return DEFAULT_ROUTE_PREFIX
    config = json.loads(host_json.read_text(encoding="utf-8"))
    return config.get("extensions", {}).get("http", {}).get("routePrefix", DEFAULT_ROUTE_PREFIX)


def load_settings(path: Path) -> None:
    """Put ``Values`` into os.environ the way ``func start`` does, so app code reads the same settings."""
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("IsEncrypted"):
        raise ValueError(f"{path}: encrypted settings are not supported")
    for name, value in (settings.get("Values") or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"{path}: Values.{name} must be a string")
        if os.environ.get(name):
            continue  # Core Tools: a non-empty variable from the real environment wins
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)  # .NET's SetEnvironmentVariable(name, "") unsets it


def _stop(signum: int, frame: FrameType | None) -> None:
    """waitress leaves its loop cleanly (finishing requests in progress) on SystemExit."""
    raise SystemExit(0)


def _write_atomically(path: Path, text: str) -> None:
    """A reader polling for the ready file never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def serve(
    app: func.FunctionApp,
    *,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    host: str = "127.0.0.1",
    port: int = 7071,
    threads: int = 16,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ready_file: Path | None = None,
    function_keys: Sequence[str] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; readiness is announced only once the socket is listening."""
    wsgi_app = build_wsgi_app(app, route_prefix, function_keys=function_keys)
    # Headers reach functions as sent, X-Forwarded-For included, as in Azure (where the front end sets
    # it); waitress 3 would otherwise strip proxy headers, having no trusted proxy configured.
    server = create_server(
        wsgi_app, host=host, port=port, threads=threads, max_request_body_size=max_body_bytes,
        clear_untrusted_proxy_headers=False,
    )
    if not hasattr(server, "effective_port"):
        server.close()
        raise SystemExit(f"--host {host!r} resolves to several addresses; name one")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    bound = server.effective_host
    shown = f"[{bound}]" if ":" in bound else bound
    announcement = json.dumps({"base_url": f"http://{shown}:{server.effective_port}", "pid": os.getpid()})
    try:
        print(announcement, flush=True)
        if ready_file is not None:  # last: once it exists, everything above has happened
            _write_atomically(ready_file, announcement + "\n")
        server.run()
    finally:
        server.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _app_directory(module_name: str) -> Path:
    """Found without importing the module, so settings can be loaded before its import-time code runs."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"cannot find module {module_name!r} on sys.path (run from the repo root)")
    return Path(spec.origin).resolve().parent


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the HTTP functions of a FunctionApp locally.")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port; 0 picks a free one")
    parser.add_argument("--threads", type=int, default=16, help="worker threads")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--settings", type=Path, help="default: local.settings.json beside the app, if any")
    parser.add_argument("--ready-file", type=Path, help="write {base_url, pid} here once listening")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = args.app.partition(":")
    app_dir = _app_directory(module_name)
    settings = args.settings or app_dir / "local.settings.json"
    if args.settings or settings.is_file():
        load_settings(settings)
    app = getattr(importlib.import_module(module_name), attribute or "app")
    serve(
        app,
        route_prefix=read_route_prefix(app_dir),
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_body_bytes=args.max_body_bytes,
        ready_file=args.ready_file,
    )


if __name__ == "__main__":
    main()
