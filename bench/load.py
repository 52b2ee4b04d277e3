"""Load generators: wrk (Debian) for throughput, and an interleaved keep-alive client for latency.

Latency is measured one request at a time, alternating between the targets (direct, nginx,
gateway) request by request, so that noise from other tenants of this shared machine lands on
every target alike; the differences of percentiles are then the hop's own cost.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")


@dataclass(frozen=True)
class Target:
    """One way to send the same request: a URL and the headers it needs (a bearer token for the gateway)."""

    name: str
    url: str
    authorization: str = ""
    body: str = ""
    pid: int | None = None  # the server process whose CPU time is counted per request


class WrkFailed(RuntimeError):
    """wrk saw errors or non-2xx answers: a figure built on failed requests would be meaningless."""


def _wrk_command(target: Target, connections: int, seconds: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "BENCH_AUTHORIZATION": target.authorization, "BENCH_BODY": target.body}
    args = [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), target.url]
    return args, env


def _wrk_result(target: Target, connections: int, out: str) -> dict:
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise WrkFailed(f"wrk printed no result for {target.name}:\n{out}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    if errors or not result["requests"]:
        raise WrkFailed(f"{target.name} at {connections} connections: {result}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def wrk(target: Target, connections: int, seconds: int) -> dict:
    """One wrk run; raises WrkFailed unless every request got a 2xx/3xx answer."""
    args, env = _wrk_command(target, connections, seconds)
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return _wrk_result(target, connections, out)


def wrk_together(targets: list[Target], connections: int, seconds: int) -> list[dict]:
    """One wrk per target, all at once (several clients hitting one server)."""
    runs = []
    for target in targets:
        args, env = _wrk_command(target, connections, seconds)
        runs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=seconds + 30)[0] for run in runs]
    return [_wrk_result(t, connections, out) for t, out in zip(targets, outputs, strict=True)]


def throughput(targets: list[Target], connections: int, seconds: int, rounds: int) -> dict[str, dict]:
    """Median requests/s per target over `rounds`, the targets taking turns within each round."""
    runs: dict[str, list[dict]] = {t.name: [] for t in targets}
    for r in range(rounds):
        for target in targets[r % len(targets):] + targets[:r % len(targets)]:
            before = cpu_seconds(target.pid)
            result = wrk(target, connections, seconds)
            result["cpu_ms_per_request"] = (cpu_seconds(target.pid) - before) * 1000 / result["requests"]
            runs[target.name].append(result)
    return {name: {"rps": statistics.median(x["rps"] for x in results),
                   "rps_rounds": [round(x["rps"], 1) for x in results],
                   "p50_ms": statistics.median(x["p50_us"] for x in results) / 1000,
                   "p99_ms": statistics.median(x["p99_us"] for x in results) / 1000,
                   "cpu_ms_per_request": statistics.median(x["cpu_ms_per_request"] for x in results)}
            for name, results in runs.items()}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far: CPU per request is steadier than wall time on a busy machine."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _KeepAlive:
    """One persistent HTTP/1.1 connection to one target."""

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Authorization": target.authorization} if target.authorization else {}
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self.name = target.name

    def timed(self) -> float:
        """Seconds from sending the request to having read the whole body."""
        started = time.perf_counter()
        self.conn.request("GET", self.path, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status}")
        return elapsed


def interleaved_latency(targets: list[Target], samples: int, warmup: int = 50) -> dict[str, dict]:
    """p50/p99 in ms per target; request i goes to every target before request i+1 goes to any."""
    clients = [_KeepAlive(t) for t in targets]
    times: dict[str, list[float]] = {c.name: [] for c in clients}
    gc.disable()
    try:
        for i in range(warmup + samples):
            for client in clients[i % len(clients):] + clients[:i % len(clients)]:
                elapsed = client.timed()
                if i >= warmup:
                    times[client.name].append(elapsed)
    finally:
        gc.enable()
        for client in clients:
            client.conn.close()
    return {name: {"p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000,
                   "samples": len(values)} for name, values in times.items()}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]
