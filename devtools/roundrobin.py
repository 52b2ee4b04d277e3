"""A local round-robin front for several gateway instances (never deployed; `scripts/dev --instances N`).

In Azure the platform's front end spreads requests over the Function App's instances; locally this
plays that part: it listens on the gateway's usual port and hands each new TCP connection to the
next instance in turn (skipping one that refuses). It balances connections, not requests: bytes
are relayed untouched (the Host header included, so every instance derives the same public URLs
and tokens are good on all of them), and a keep-alive client stays on one instance, as it may in
Azure. Tests that want every request on the next instance open a connection per request.

Usage: python -m devtools.roundrobin --port 7071 --backend http://127.0.0.1:A --backend ... [--ready-file F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

_CHUNK = 65536


class RoundRobin:
    """Accept on one port, relay each connection to the next backend that accepts it."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._backends = backends
        self._next = itertools.cycle(range(len(backends)))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for _ in self._backends:
            host, port = self._backends[next(self._next)]
            try:
                upstream = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        if upstream is None:  # every instance is down: close, as a platform front end would fail the request
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            if sink.can_write_eof():
                sink.write_eof()
        sink.close()


async def serve(port: int, backends: list[str], ready_file: Path | None) -> None:
    targets = [(urlsplit(b).hostname or "127.0.0.1", urlsplit(b).port or 80) for b in backends]
    server = await asyncio.start_server(RoundRobin(targets).handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    if ready_file is not None:
        staged = ready_file.with_suffix(".tmp")
        staged.write_text(json.dumps({"base_url": f"http://127.0.0.1:{bound}", "pid": os.getpid(),
                                      "instance_urls": backends}))
        staged.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Round-robin TCP front for local gateway instances.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", action="append", required=True, help="an instance's base URL (repeat)")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.backend, args.ready_file))


if __name__ == "__main__":
    main()
