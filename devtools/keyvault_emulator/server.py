"""The vault's HTTPS server, its lifecycle next to the identity endpoint, and the command line.

Sockets, TLS and threads only: each request goes to :class:`VaultService` as plain values.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools.identity_endpoint import IdentityEndpoint, write_json_atomically
from devtools.jsonhttp import read_body, send_json
from devtools.keyvault_emulator.control import ControlApi, FaultInjector, RequestStats
from devtools.keyvault_emulator.protocol import HOST, MAX_PAGE_SIZE
from devtools.keyvault_emulator.service import VaultService
from devtools.keyvault_emulator.storage import VaultStore
from devtools.keyvault_emulator.tls import ensure_certificate

_LOG = logging.getLogger("devtools.keyvault_emulator")


class _TLSServer(ThreadingHTTPServer):
    """Handshakes happen in the handler threads, so one stalled client cannot block accept()."""

    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__((HOST, port), _VaultRequestHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        # Set once the port is known (the challenge resource depends on it), before serving.
        self.service: VaultService | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Typically a client that rejected our certificate or hung up; not worth a traceback.
        _LOG.debug("vault connection from %s failed: %s", client_address, sys.exc_info()[1])


class _VaultRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keyvault-emulator"
    # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK
    # added ~40 ms to every request.
    disable_nagle_algorithm = True
    server: _TLSServer

    def _serve(self) -> None:
        body = read_body(self)
        parts = urlsplit(self.path)
        service = self.server.service
        assert service is not None
        response = service.handle(self.command, parts.path, parts.query, self.headers.get("Authorization"), body)
        send_json(self, response.status, response.body, response.headers)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The query and body can carry values; method, path and status are enough to debug.
        _LOG.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        _LOG.debug("vault: " + format, *args)


class EmulatorHandle:
    """A running emulator: the fields of the ready JSON as attributes, plus :meth:`stop`."""

    def __init__(self, server: _TLSServer, identity: IdentityEndpoint, ca_bundle: Path) -> None:
        assert server.service is not None
        self._server = server
        self._identity = identity
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="keyvault-emulator", daemon=True
        )
        self.vault_url = server.service.vault_url
        self.challenge_resource = server.service.resource
        self.identity_endpoint = identity.url
        self.identity_header = identity.header
        self.control_url = identity.base_url + "/_control"
        self.ca_bundle = str(ca_bundle.resolve())

    def ready_info(self) -> dict[str, str]:
        return {
            "vault_url": self.vault_url,
            "identity_endpoint": self.identity_endpoint,
            "identity_header": self.identity_header,
            "control_url": self.control_url,
            "ca_bundle": self.ca_bundle,
        }

    def _start(self) -> EmulatorHandle:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops both servers; connections still open are dropped with the process."""
        self._server.shutdown()
        self._server.server_close()
        self._identity.stop()


def start_emulator(
    data_dir: Path | str,
    port: int = 0,
    identity_port: int = 0,
    *,
    identity_header: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> EmulatorHandle:
    """Starts the vault (HTTPS) and identity/control (HTTP) servers on 127.0.0.1 in this process.

    Pass the previous ``port``, ``identity_port`` and ``identity_header`` to restart without
    disturbing clients: their cached challenge and tokens stay valid.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = ensure_certificate(data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    faults, stats = FaultInjector(), RequestStats()
    identity = IdentityEndpoint(
        identity_port,
        header=identity_header,
        extra_route=ControlApi(faults, stats).route,
        grants_path=data / "identity.json",
    ).start()
    try:
        server = _TLSServer(port, context)
    except OSError:
        identity.stop()
        raise
    vault_url = f"https://{HOST}:{server.server_address[1]}"
    store = VaultStore(data / "vault.json")
    server.service = VaultService(store, identity, vault_url, faults, stats, page_size)
    return EmulatorHandle(server, identity, cert_path)._start()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.keyvault_emulator",
        description="Local Azure Key Vault (secrets) emulator with a managed identity endpoint.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="state, certificate and token digests")
    parser.add_argument("--port", type=int, default=0, help="vault HTTPS port (0: any free port)")
    parser.add_argument("--identity-port", type=int, default=0, help="identity/control HTTP port (0: any)")
    parser.add_argument("--identity-header", help="fixed X-IDENTITY-HEADER secret (default: random)")
    parser.add_argument("--ready-file", type=Path, help="also write the ready JSON here (removed on exit)")
    parser.add_argument("--page-size", type=int, default=MAX_PAGE_SIZE, help="default list page size")
    parser.add_argument("--log-level", default="INFO", help="logging level for stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs until SIGTERM or SIGINT; prints the ready JSON on one stdout line once listening."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    handle = start_emulator(
        args.data_dir,
        args.port,
        args.identity_port,
        identity_header=args.identity_header,
        page_size=args.page_size,
    )
    info = handle.ready_info()
    if args.ready_file:
        write_json_atomically(args.ready_file, info)
    # stdout usually ends up in a log file: everything but the identity header (a credential).
    print(json.dumps({k: v for k, v in info.items() if k != "identity_header"}), flush=True)
    try:
        stop.wait()
    finally:
        handle.stop()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    return 0
