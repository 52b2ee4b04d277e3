"""A FHIR "provider" that misbehaves on purpose, for the gateway's fault tests; never deployed.

Real HTTP/1.1 on 127.0.0.1. Each fault has its own base URL, ``http://127.0.0.1:PORT/<mode>/fhir``,
so a test routes one tenant per fault and every fault can run side by side. Modes:

``ok``              a searchset Bundle of ``?_count=N`` (default 2) Patients (or a Patient for a read);
                    fullUrls under this base
``delay``           sleeps ``--delay`` seconds before answering (beyond the gateway's read timeout)
``reset-before``    reads the request, then resets the connection before any response byte
``reset-mid-body``  sends headers and half of the declared body, then resets the connection (RST)
``truncated-body``  declares a Content-Length, sends part of it, then closes cleanly (FIN)
``truncated-json``  a complete response whose JSON body is cut off (Content-Length matches)
``non-json``        200 with an HTML page
``status-<code>-json|html|empty``  e.g. ``status-503-json``: that status, with an OperationOutcome,
                    an HTML page, or no body at all (500, 502, 503 and 504)
``huge``            ``--huge-bytes`` of JSON with a Content-Length
``huge-chunked``    the same, chunked (no Content-Length, so only counting can stop it)
``drip-body``       headers at once, then one body byte every ``--drip-interval`` seconds
``drip-headers``    the status line and headers one byte every ``--drip-interval`` seconds
``slow``            ``ok``, after ``--slow-delay`` seconds (within the gateway's timeouts: batch bounds)
``stream``          a valid searchset Bundle of ``?_count=N`` entries (fullUrls under this base),
                    chunked: the first ~256 KiB, a pause of ``--stream-pause`` seconds, then the rest
``stream-reset``    the same, but the connection is reset after the pause instead of finishing
``redirect``        302 to another host
``foreign-location`` ``ok``, with Location and Content-Location headers naming another host
``outcome-404``     404 with an OperationOutcome that names this base's URLs
``extra-types``     a Patient searchset that also carries an Observation and a Condition entry
``pages``           HAPI-style paging: a search answers ``?_count=N`` (default 2) Patients and a
                    system-level next link ``{base}?_getpages=abc&_getpagesoffset=N``, written with
                    JSON escapes (``\\u0026``, ``\\/``) and after the entries (so it streams when large);
                    a GET of the base with ``_getpages`` answers the last page (no next link)

``GET /_admin/requests`` lists what was asked (method, mode, path, query, body, trace headers; never credentials)
``POST /_admin/requests/clear`` empties it, so tests can count requests, including retries.

Command line: ``python -m devtools.faulty_provider [--port 0] [--ready-file F]``; once listening it
prints ``{"base_url": "http://127.0.0.1:PORT", "modes": [...]}`` (also to the ready file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOG = logging.getLogger("devtools.faulty_provider")
FHIR_JSON = "application/fhir+json"
HTML = b"<html><body><h1>Bad Gateway</h1><p>upstream proxy error</p></body></html>"
STATUSES = (500, 502, 503, 504)
BODIES = ("json", "html", "empty")
MODES = ("ok", "delay", "reset-before", "reset-mid-body", "truncated-body", "truncated-json", "non-json", "huge",
         "huge-chunked", "drip-body", "drip-headers", "slow", "stream", "stream-reset",
         "redirect", "foreign-location", "outcome-404", "extra-types", "pages",
         *(f"status-{code}-{body}" for code in STATUSES for body in BODIES))


class Options:
    def __init__(self, delay: float = 10.0, drip_interval: float = 0.25, drip_bytes: int = 400,
                 huge_bytes: int = 100 * 1024 * 1024, slow_delay: float = 0.3, stream_pause: float = 1.5) -> None:
        self.delay, self.drip_interval, self.drip_bytes, self.huge_bytes = delay, drip_interval, drip_bytes, huge_bytes
        self.slow_delay, self.stream_pause = slow_delay, stream_pause


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)
            del self._entries[:-5000]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def bundle(base: str, count: int = 2) -> bytes:
    entries = [{"fullUrl": f"{base}/Patient/p{i}", "resource": {"resourceType": "Patient", "id": f"p{i}"}}
               for i in range(count)]
    return json.dumps({"resourceType": "Bundle", "type": "searchset", "total": count,
                       "link": [{"relation": "self", "url": f"{base}/Patient"}], "entry": entries}).encode()


def outcome(text: str) -> bytes:
    return json.dumps({"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": "transient", "diagnostics": text}]}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faulty-provider"
    server: FaultyServer

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug(format, *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    # --- plumbing ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/_admin/"):
            self._admin(parts.path)
            return
        segments = parts.path.strip("/").split("/")
        mode = segments[0] if segments else ""
        if mode not in MODES or segments[1:2] != ["fhir"]:
            self._send(404, outcome("unknown mode"), FHIR_JSON)
            return
        self.server.log.record({"method": self.command, "mode": mode, "path": "/" + "/".join(segments[2:]),
                                "query": parts.query, "body_bytes": len(body), "time": time.time(),
                                "body": body[:4096].decode("utf-8", "replace"),
                                "traceparent": self.headers.get("traceparent"),
                                "x_request_id": self.headers.get("X-Request-Id")})
        base = f"http://{self.headers.get('Host', '127.0.0.1')}/{mode}/fhir"
        self.closing = mode != "ok"
        handler = self._handler(mode)
        # A gateway that gives up on us mid-answer is exactly what several modes are for.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler(base, segments[2:])

    def _handler(self, mode: str) -> Callable[[str, list[str]], None]:
        if mode.startswith("status-"):
            _, code, kind = mode.split("-")
            return lambda base, path: self._status(int(code), kind)
        return getattr(self, "_mode_" + mode.replace("-", "_"))

    def end_headers(self) -> None:
        if getattr(self, "closing", False):
            self.send_header("Connection", "close")  # polite: say so before closing (no stale pooled connection)
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str | None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), not a clean FIN."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _admin(self, path: str) -> None:
        if path == "/_admin/requests" and self.command == "GET":
            self._send(200, json.dumps(self.server.log.snapshot()).encode(), "application/json")
        elif path == "/_admin/requests/clear" and self.command == "POST":
            self.server.log.clear()
            self._send(200, b"{}", "application/json")
        else:
            self._send(404, b"{}", "application/json")

    # --- modes ------------------------------------------------------------------------------------

    def _mode_ok(self, base: str, path: list[str]) -> None:
        if len(path) == 2 and path[1] != "_search":
            self._send(200, json.dumps({"resourceType": "Patient", "id": path[1]}).encode(), FHIR_JSON)
        else:
            count = dict(parse_qsl(urlsplit(self.path).query)).get("_count", "2")
            self._send(200, bundle(base, int(count) if count.isdigit() else 2), FHIR_JSON)

    def _mode_redirect(self, base: str, path: list[str]) -> None:
        self._send(302, b"", None, {"Location": "https://elsewhere.example/fhir/Patient"})

    def _mode_foreign_location(self, base: str, path: list[str]) -> None:
        self._send(200, bundle(base), FHIR_JSON, {"Location": "https://elsewhere.example/fhir/Patient/p0",
                                                  "Content-Location": f"{base}/Patient?page=2"})

    def _mode_outcome_404(self, base: str, path: list[str]) -> None:
        self._send(404, json.dumps({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "not-found", "diagnostics": f"{base}/Patient/x",
            "location": [f"{base}/Patient/x"]}]}).encode(), FHIR_JSON)

    def _mode_extra_types(self, base: str, path: list[str]) -> None:
        found = json.loads(bundle(base, 1))
        found["entry"] += [{"fullUrl": f"{base}/Observation/o1", "resource": {"resourceType": "Observation",
                                                                             "id": "o1", "status": "final"}},
                           {"fullUrl": f"{base}/Condition/c1", "resource": {"resourceType": "Condition", "id": "c1"}}]
        self._send(200, json.dumps(found).encode(), FHIR_JSON)

    def _mode_pages(self, base: str, path: list[str]) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query))
        if not path and "_getpages" in query:
            page = {"resourceType": "Bundle", "type": "searchset", "total": 3, "entry": [
                {"fullUrl": f"{base}/Patient/last", "resource": {"resourceType": "Patient", "id": "last"}}]}
            self._send(200, json.dumps(page).encode(), FHIR_JSON)
            return
        count = int(query["_count"]) if query.get("_count", "").isdigit() else 2
        entries = [{"fullUrl": f"{base}/Patient/p{i}", "resource": {"resourceType": "Patient", "id": f"p{i}",
                                                                   "text": {"div": "x" * 400}}} for i in range(count)]
        found = {"resourceType": "Bundle", "type": "searchset", "total": count + 1, "entry": entries,
                 "link": [{"relation": "self", "url": f"{base}/Patient?_count={count}"},
                          {"relation": "next", "url": f"{base}?_getpages=abc&_getpagesoffset={count}"}]}
        body = json.dumps(found).replace("&", "\\u0026").replace("/", "\\/")
        self._send(200, body.encode(), FHIR_JSON)

    def _mode_delay(self, base: str, path: list[str]) -> None:
        time.sleep(self.server.options.delay)
        self._send(200, bundle(base), FHIR_JSON)

    def _mode_slow(self, base: str, path: list[str]) -> None:
        started = time.time()
        time.sleep(self.server.options.slow_delay)
        self.server.log.record({"mode": "slow-span", "start": started, "end": time.time()})
        self._mode_ok(base, path)

    def _mode_stream(self, base: str, path: list[str], reset: bool = False) -> None:
        """A large Bundle, sent as a server streams it; the pause proves who waits for whom."""
        count = int(dict(parse_qsl(urlsplit(self.path).query)).get("_count") or 1000)
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(b'{"resourceType":"Bundle","type":"searchset","total":%d,"entry":[' % count)
        sent, paused, batch = 0, False, []
        for index in range(count):
            batch.append(json.dumps({"fullUrl": f"{base}/Patient/s{index}", "resource": {
                "resourceType": "Patient", "id": f"s{index}", "link": [{"other": {
                    "reference": f"{base}/Patient/s{index + 1}"}}], "text": {"div": "x" * 400}}}).encode())
            if len(batch) == 200 or index == count - 1:
                piece = (b"," if sent else b"") + b",".join(batch)
                self._chunk(piece)
                sent, batch = sent + len(piece), []
            if not paused and sent >= 256 * 1024:
                self.wfile.flush()
                time.sleep(self.server.options.stream_pause)
                paused = True
                if reset:
                    self._reset()
                    return
        self._chunk(b"]}")
        self.wfile.write(b"0\r\n\r\n")
        self.server.log.record({"mode": "stream-end", "time": time.time()})

    def _mode_stream_reset(self, base: str, path: list[str]) -> None:
        self._mode_stream(base, path, reset=True)

    def _mode_reset_before(self, base: str, path: list[str]) -> None:
        self._reset()

    def _mode_reset_mid_body(self, base: str, path: list[str]) -> None:
        body = bundle(base, 200)
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        time.sleep(0.05)
        self._reset()

    def _mode_truncated_body(self, base: str, path: list[str]) -> None:
        body = bundle(base, 50)
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True

    def _mode_truncated_json(self, base: str, path: list[str]) -> None:
        body = bundle(base, 5)
        self._send(200, body[: len(body) - 40], FHIR_JSON)

    def _mode_non_json(self, base: str, path: list[str]) -> None:
        self._send(200, HTML, "text/html; charset=utf-8")

    def _status(self, code: int, kind: str) -> None:
        if kind == "json":
            self._send(code, outcome(f"provider failure {code}"), FHIR_JSON)
        elif kind == "html":
            self._send(code, HTML, "text/html")
        else:
            self._send(code, b"", None)

    def _huge_chunks(self) -> tuple[bytes, int]:
        head = b'{"resourceType":"Bundle","type":"searchset","entry":[],"padding":"'
        return head, self.server.options.huge_bytes - len(head) - 2

    def _mode_huge(self, base: str, path: list[str]) -> None:
        head, filler = self._huge_chunks()
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(head) + filler + 2))
        self.end_headers()
        self._write_filler(head, filler, chunked=False)

    def _mode_huge_chunked(self, base: str, path: list[str]) -> None:
        head, filler = self._huge_chunks()
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._write_filler(head, filler, chunked=True)

    def _write_filler(self, head: bytes, filler: int, *, chunked: bool) -> None:
        block = b"x" * (256 * 1024)
        remaining = filler
        write = self._chunk if chunked else self.wfile.write
        write(head)
        while remaining > 0:
            piece = block[: min(len(block), remaining)]
            write(piece)
            remaining -= len(piece)
        write(b'"}')
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _mode_drip_body(self, base: str, path: list[str]) -> None:
        body = bundle(base, 1).ljust(self.server.options.drip_bytes)
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        self._drip(body)

    def _mode_drip_headers(self, base: str, path: list[str]) -> None:
        body = bundle(base, 1)
        padding = "p" * self.server.options.drip_bytes
        head = (f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {FHIR_JSON}\r\nX-Padding: {padding}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self._drip(head)
        self.wfile.write(body)

    def _drip(self, data: bytes) -> None:
        for index in range(len(data)):
            self.wfile.write(data[index:index + 1])
            self.wfile.flush()
            time.sleep(self.server.options.drip_interval)


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: two dozen connections opened at once (the async
    # gateway opens them all together) overflow it, and a dropped SYN is retried only after 1 s,
    # past the fault tests' 1 s connect timeout. Real servers listen with far more (waitress 1024).
    request_queue_size = 128

    def __init__(self, port: int, options: Options) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.options = options
        self.log = RequestLog()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def start(port: int = 0, options: Options | None = None) -> FaultyServer:
    """In-process: serve on a daemon thread; call ``shutdown()`` and ``server_close()`` to stop."""
    server = FaultyServer(port, options or Options())
    threading.Thread(target=server.serve_forever, args=(0.05,), name="faulty-provider", daemon=True).start()
    return server


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.faulty_provider", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=10.0, help="seconds the delay mode waits")
    parser.add_argument("--drip-interval", type=float, default=0.25, help="seconds between dripped bytes")
    parser.add_argument("--drip-bytes", type=int, default=400, help="how many bytes the drip modes send")
    parser.add_argument("--huge-bytes", type=int, default=100 * 1024 * 1024, help="size of the huge modes' body")
    parser.add_argument("--slow-delay", type=float, default=0.3, help="seconds the slow mode waits")
    parser.add_argument("--stream-pause", type=float, default=1.5, help="seconds the stream modes pause")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = FaultyServer(args.port, Options(args.delay, args.drip_interval, args.drip_bytes, args.huge_bytes,
                                                   args.slow_delay, args.stream_pause))
    signal.signal(signal.SIGTERM, _stop)
    ready = json.dumps({"base_url": server.base_url, "modes": list(MODES)})
    print(ready, flush=True)
    if args.ready_file:
        partial = args.ready_file.with_name(args.ready_file.name + ".partial")
        partial.write_text(ready + "\n", encoding="utf-8")
        os.replace(partial, args.ready_file)
    try:
        server.serve_forever(0.05)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
