"""Loading the app (settings first, then the import) and serving it with uvicorn; the command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import azure.functions as func
import uvicorn

from devtools.functions_host.asgi import DEFAULT_MAX_BODY_BYTES, DEFAULT_ROUTE_PREFIX, build_asgi_app

# Longer than the idle gaps of the stack's pooled clients, so a server-side close never races a reused
# connection's next request; the same 120 s waitress used before.
KEEP_ALIVE_SECONDS = 120
# Requests in progress get this long after SIGTERM; devtools.stack kills after 10 s.
GRACEFUL_STOP_SECONDS = 5


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
    """A clean exit 0: before uvicorn runs, and when uvicorn re-raises the signal after its graceful stop
    (it installs its own handler while serving and hands the signal back to this one afterwards)."""
    raise SystemExit(0)


def _write_atomically(path: Path, text: str) -> None:
    """A reader polling for the ready file never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _bound_socket(host: str, port: int) -> socket.socket:
    """Bound here rather than by uvicorn so that the port chosen for ``--port 0`` is known before serving."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if len({info[4][0] for info in infos}) != 1:
        raise SystemExit(f"--host {host!r} resolves to several addresses; name one")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


class _AnnouncingServer(uvicorn.Server):
    """Announces readiness only once uvicorn listens on the socket."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._announce()


def serve(
    app: func.FunctionApp,
    *,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    host: str = "127.0.0.1",
    port: int = 7071,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ready_file: Path | None = None,
    function_keys: Sequence[str] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then finish requests in progress (for up to GRACEFUL_STOP_SECONDS)."""
    asgi_app = build_asgi_app(app, route_prefix, function_keys=function_keys, max_body_bytes=max_body_bytes)
    sock = _bound_socket(host, port)
    bound, bound_port = sock.getsockname()[:2]
    shown = f"[{bound}]" if ":" in bound else bound
    announcement = json.dumps({"base_url": f"http://{shown}:{bound_port}", "pid": os.getpid()})

    def announce() -> None:
        print(announcement, flush=True)
        if ready_file is not None:  # last: once it exists, everything above has happened
            _write_atomically(ready_file, announcement + "\n")

    config = uvicorn.Config(
        asgi_app,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        log_config=None,  # uvicorn's loggers go through this process's logging setup
        access_log=False,  # uvicorn's would log the query string, which carries patient data
        proxy_headers=False,  # request.client is the socket peer; X-Forwarded-For reaches functions as a header
        server_header=False,
        date_header=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        _AnnouncingServer(config, announce).run(sockets=[sock])
    finally:
        sock.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _app_directory(module_name: str) -> Path:
    """Found without importing the module, so settings can be loaded before its import-time code runs."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"cannot find module {module_name!r} on sys.path (run from the repo root)")
    return Path(spec.origin).resolve().parent


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.functions_host", description="Serve the HTTP functions of a FunctionApp locally."
    )
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port; 0 picks a free one")
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies get 413 (default: Azure's 100 MB)",
    )
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
        max_body_bytes=args.max_body_bytes,
        ready_file=args.ready_file,
    )
