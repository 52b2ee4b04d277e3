"""``main``: the authorization server as a process for the dev stack, configured from a JSON file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from devtools.upstream_idp.server import UpstreamIdp

_LOG = logging.getLogger("devtools.upstream_idp")
# The first line of the package docstring, for --help.
_DESCRIPTION = "A local OAuth 2.0 authorization server for a provider's side of upstream authentication."


def _configure(idp: UpstreamIdp, config: dict[str, Any]) -> None:
    for client in config.get("clients", []):
        idp.register_client(client["client_id"], client["secret"], scopes=client.get("scopes"))
    for client in config.get("backend_clients", []):
        idp.register_backend_client(client["client_id"], client["public_key"], kid=client["kid"],
                                    scopes=client.get("scopes"))


def _write_ready_file(path: Path, idp: UpstreamIdp) -> None:
    """Written whole then renamed, so a watcher never reads half a file."""
    info = {"pid": os.getpid(), "port": idp.port, "base_url": idp.base_url,
            "token_url": idp.token_url, "introspection_url": idp.introspection_url}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(info))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.upstream_idp", description=_DESCRIPTION)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--ready-file", type=Path, help="written with the URLs once listening")
    parser.add_argument("--config", type=Path, help="JSON: token_lifetime, clients, backend_clients")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else {}
    idp = UpstreamIdp(args.port, token_lifetime=int(config.get("token_lifetime", 3600)))
    _configure(idp, config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    idp.start()
    if args.ready_file:
        _write_ready_file(args.ready_file, idp)
    _LOG.info("upstream idp listening at %s", idp.base_url)
    while not stop.wait(0.5):
        pass
    idp.stop()
    return 0
