"""`python -m bench.clients`: which async HTTP client the proxy should use, measured (issue #12).

One loopback HTTP/1.1 server (uvicorn + httptools, answering a fixed ~24 KB FHIR Bundle) and, in
the same run, the same number of keep-alive GETs through aiohttp and through httpx at the same
concurrency, each in a fresh process so neither warms the other. Printed: CPU microseconds per
request (the client process's user+sys time) and requests per second, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

BODY = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": [
    {"fullUrl": f"http://127.0.0.1/fhir/Patient/{i}", "resource": {"resourceType": "Patient", "id": str(i),
                                                                  "text": {"div": "x" * 150}}}
    for i in range(100)]}).encode()


async def _app(scope: dict, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})  # type: ignore[operator]


def _server(port: int) -> None:
    import uvicorn
    uvicorn.run(_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="error",
                access_log=False, lifespan="off")


def _client(kind: str, url: str, requests: int, concurrency: int) -> None:
    import asyncio

    async def run() -> None:
        if kind == "aiohttp":
            import aiohttp
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=concurrency)) as session:
                async def one() -> None:
                    async with session.get(url) as response:
                        await response.read()
                await _drive(one, requests, concurrency)
        else:
            import httpx
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(limits=limits) as client:
                async def one() -> None:
                    response = await client.get(url)
                    response.read()
                await _drive(one, requests, concurrency)

    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


async def _drive(one: object, requests: int, concurrency: int) -> None:
    import asyncio
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await one()  # type: ignore[operator]
    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the loopback server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", f"from bench.clients import _server; _server({port})"],
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        _wait(port)
        results = {}
        for kind in ("aiohttp", "httpx", "aiohttp", "httpx"):  # alternated: neither always runs on a cold cache
            out = subprocess.run([sys.executable, "-c", f"from bench.clients import _client; _client({kind!r}, "
                                  f"'http://127.0.0.1:{port}/', {args.requests}, {args.concurrency})"],
                                 check=True, capture_output=True, text=True).stdout
            measured = json.loads(out)
            best = results.get(kind)
            if best is None or measured["cpu"] < best["cpu"]:
                results[kind] = measured
    finally:
        server.terminate()
        server.wait()
    print(f"{args.requests} GETs of a {len(BODY)} B Bundle, {args.concurrency} at once, loopback (best of 2)")
    for kind, measured in results.items():
        print(f"  {kind:8} {measured['cpu'] / args.requests * 1e6:7.1f} µs CPU/request  "
              f"{args.requests / measured['seconds']:8.0f} req/s")
    ratio = results["httpx"]["cpu"] / results["aiohttp"]["cpu"]
    print(f"  httpx / aiohttp CPU per request: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
