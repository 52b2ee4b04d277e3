"""The small pieces every JSON dev server here shares (identity endpoint, upstream IdP, Key Vault emulator)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str]) -> None:
    """Answer with a JSON body, or an empty one when payload is None (e.g. 204)."""
    data = b"" if payload is None else json.dumps(payload).encode()
    handler.send_response(status)
    if payload is not None:
        handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


JsonAnswer = tuple[int, Any, Mapping[str, str]]


def json_handler(name: str, answer: Callable[[BaseHTTPRequestHandler, bytes], JsonAnswer],
                 log: logging.Logger) -> type[BaseHTTPRequestHandler]:
    """A handler that answers every method with `answer(handler, body)` as JSON and logs only the
    method, path and status: queries, headers and bodies carry client ids and credentials."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = name
        # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK
        # added ~40 ms to every request.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            status, payload, headers = answer(self, read_body(self))
            send_json(self, status, payload, headers)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(name + ": " + format, *args)

    return Handler


class BackgroundServer:
    """An HTTP server on 127.0.0.1 run from a daemon thread, for dev servers used in-process by tests.

    Subclasses say which handler serves them (`_handler`). A short poll interval keeps `stop()`, and
    so every test fixture's teardown, fast.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        """Binds and serves on a daemon thread; returns self so it can be chained."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and frees the port; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; only meaningful after `start`."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
