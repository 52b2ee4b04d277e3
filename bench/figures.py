"""The figures of issues #6 and #12, each measured against its baseline in the same run.

Issue #12's baseline is the previous gateway (`rig.baseline`), measured beside this one: where a
figure alternates its targets (latency request by request, throughput run by run), the baseline is
one more target in the rotation. Every function returns a plain dict (it goes into the JSON as is);
`bench.report` turns them into the table and judges each against its target.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from bench.load import Target, interleaved_latency, throughput, wrk, wrk_together
from bench.rig import BIG_SEARCH, Rig, Route
from devtools.stack import ROOT

CONNECTIONS = (1, 8, 32)


def hop_latency(rig: Rig, samples: int) -> dict:
    """Added p50/p99 of each gateway (and of nginx) over direct, per provider and request."""
    result: dict[str, dict] = {}
    for provider in rig.providers.values():
        for kind, path in (("read", rig.reqs.read), ("search", rig.reqs.search)):
            measured = interleaved_latency(provider.targets(path), samples)
            direct = measured["direct"]
            result[f"{provider.name}/{kind}"] = {
                **measured,
                "added": {hop: {p: measured[hop][p] - direct[p] for p in ("p50_ms", "p99_ms")}
                          for hop in measured if hop != "direct"},
            }
    return result


def proxy_throughput(rig: Rig, seconds: int, rounds: int) -> dict:
    """Requests/s for the Patient search at 1, 8 and 32 connections: direct, through nginx, through
    each gateway, taking turns."""
    result: dict[str, dict] = {}
    for provider in rig.providers.values():
        for connections in CONNECTIONS:
            measured = throughput(provider.targets(rig.reqs.search), connections, seconds, rounds)
            gateway = measured["gateway"]["rps"]
            result[f"{provider.name}/{connections}"] = {
                **measured, "vs_direct": gateway / measured["direct"]["rps"],
                "vs_nginx": gateway / measured["nginx"]["rps"], "vs_baseline": gateway / measured["baseline"]["rps"],
                "baseline_vs_nginx": measured["baseline"]["rps"] / measured["nginx"]["rps"]}
    return result


def hop_cpu(rig: Rig, seconds: int, rounds: int, connections: int = 8) -> dict:
    """CPU time per proxied `GET Patient/{id}` on the fixed-bytes provider: each gateway's process and
    nginx's as a reverse proxy, taking turns under the same load (CPU per request, unlike wall time,
    barely depends on what else this shared machine is doing)."""
    static = rig.providers["static"]
    targets = [t for t in static.targets(rig.reqs.read) if t.name != "direct"]
    measured = throughput(targets, connections, seconds, rounds)
    cpu = {name: m["cpu_ms_per_request"] for name, m in measured.items()}
    return {**measured, "connections": connections, "cpu_ms": cpu, "ratio": cpu["baseline"] / cpu["gateway"]}


def _page_once(conn: http.client.HTTPConnection, base: str, token_form: str, searches: tuple[str, ...],
               batch: bool) -> float:
    """The Patients app's page on one keep-alive connection; seconds, after checking every answer."""
    path = urlsplit(base).path
    started = time.perf_counter()
    _call(conn, "GET", f"{path}/metadata")
    token = json.loads(_call(conn, "POST", "/api/oauth2/token", token_form.encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"}))["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    if batch:
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"request": {"method": "GET", "url": s}} for s in searches]}
        answer = json.loads(_call(conn, "POST", path, json.dumps(bundle).encode(),
                                  {**auth, "Content-Type": "application/fhir+json"}))
        if [e["response"]["status"][:3] for e in answer["entry"]] != ["200"] * len(searches):
            raise RuntimeError(f"batch entry failed: {[e['response'] for e in answer['entry']]}")
    else:
        for search in searches:
            _call(conn, "GET", f"{path}/{search}", headers=auth)
    return time.perf_counter() - started


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> bytes:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
    return data


def page(rig: Rig, pages: int) -> dict:
    """metadata + token + 6 searches one after another, against the same with the searches in one
    batch; on each gateway, page by page in turn."""
    result: dict[str, dict] = {}
    for name, provider in {**rig.providers, "wan": rig.wan}.items():
        conns = {g: _connection(route.url) for g, route in provider.routes.items()}
        forms = {g: urlencode(rig.gateways[g].token_form(route.tenant_id)) for g, route in provider.routes.items()}
        times: dict[str, dict[str, list[float]]] = {g: {"sequential": [], "batch": []} for g in provider.routes}
        for i in range(pages + 3):
            for batch in (i % 2 == 0, i % 2 == 1):
                for g, route in provider.routes.items():
                    elapsed = _page_once(conns[g], route.url, forms[g], rig.reqs.page, batch)
                    if i >= 3:
                        times[g]["batch" if batch else "sequential"].append(elapsed)
        for conn in conns.values():
            conn.close()
        result[name] = {}
        for g, variants in times.items():
            seq, bat = (statistics.median(variants[k]) * 1000 for k in ("sequential", "batch"))
            result[name][g] = {"sequential_ms": seq, "batch_ms": bat, "speedup": seq / bat, "pages": pages}
    return result


def _connection(url: str, timeout: float = 60) -> http.client.HTTPConnection:
    base = urlsplit(url)
    return http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=timeout)


def batch_deadline(rig: Rig, entries: int = 100, repeats: int = 3) -> dict:
    """A batch of `entries` searches on the provider 20 ms away, on each gateway in turn: wall time
    against the gateway's per-batch deadline (BATCH_DEADLINE_SECONDS; the baseline has none), and
    every entry must answer 200."""
    deadline = float({**os.environ, **rig.gateway.stack.gateway_env()}.get("BATCH_DEADLINE_SECONDS", 60))
    searches = [rig.reqs.page[i % len(rig.reqs.page)] for i in range(entries)]
    bundle = json.dumps({"resourceType": "Bundle", "type": "batch",
                         "entry": [{"request": {"method": "GET", "url": s}} for s in searches]}).encode()
    times: dict[str, list[float]] = {g: [] for g in rig.wan.routes}
    for _ in range(repeats):
        for g, route in rig.wan.routes.items():
            conn = _connection(route.url, timeout=deadline + 30)
            path = urlsplit(route.url).path
            started = time.perf_counter()
            answer = json.loads(_call(conn, "POST", path, bundle, {"Authorization": route.authorization,
                                                                   "Content-Type": "application/fhir+json"}))
            times[g].append(time.perf_counter() - started)
            conn.close()
            statuses = [e["response"]["status"][:3] for e in answer["entry"]]
            if statuses != ["200"] * entries:
                raise RuntimeError(f"{g}: batch of {entries}: statuses {sorted(set(statuses))}")
    return {"entries": entries, "deadline_s": deadline, "repeats": repeats,
            **{g: {"median_s": statistics.median(t), "max_s": max(t)} for g, t in times.items()}}


def signing_rate(seconds: int) -> float:
    """pyjwt ES256 signatures per second in a loop, with the gateway's claim and header shape."""
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {"iss": "http://127.0.0.1/api/oauth2", "aud": "http://127.0.0.1/api/fhir", "sub": str(uuid.uuid4()),
              "client_id": str(uuid.uuid4()), "tid": str(uuid.uuid4()), "scope": "", "iat": 0, "nbf": 0, "exp": 1,
              "jti": str(uuid.uuid4())}
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        jwt.encode(claims, key, algorithm="ES256", headers={"kid": "0" * 32, "typ": "at+jwt"})
        count += 1
    return count / (time.perf_counter() - started)


def _vault_stats(control_url: str, reset: bool = False) -> dict:
    if reset:
        return requests.post(f"{control_url}/reset-stats", timeout=10).json()
    return requests.get(f"{control_url}/stats", timeout=10).json()


def token_rate(rig: Rig, seconds: int, rounds: int, connections: int = 8) -> dict:
    """Each gateway's token endpoint at the same connection count (warm caches), and signing alone,
    taking turns; the Key Vault calls of this revision's gateway counted meanwhile."""
    targets = {g.name: Target(g.name, g.token_url, body=urlencode(g.token_form(rig.providers["static"].routes[
        g.name].tenant_id))) for g in rig.gateways.values()}
    for target in targets.values():
        wrk(target, connections, 1)  # warm: verifier, client row, route and signing key cached
    _vault_stats(rig.gateway.control_url, reset=True)
    signing: list[float] = []
    issued: dict[str, list[float]] = {name: [] for name in targets}
    started = time.monotonic()
    for r in range(rounds):
        signing.append(signing_rate(seconds))
        order = list(targets.values())
        for target in order[r % len(order):] + order[:r % len(order)]:
            issued[target.name].append(wrk(target, connections, seconds)["rps"])
    elapsed = time.monotonic() - started
    vault = _vault_stats(rig.gateway.control_url)
    rate, base, sign = (statistics.median(x) for x in (issued["gateway"], issued["baseline"], signing))
    return {"connections": connections, "tokens_per_s": rate, "baseline_tokens_per_s": base, "signing_per_s": sign,
            "ratio": rate / sign, "vs_baseline": rate / base, "vault_calls_warm": vault["total"],
            "vault_operations": vault["operations"], "window_s": elapsed}


def vault_calls_per_ttl(rig: Rig, ttl: int, clients: int, seconds: int) -> dict:
    """Another gateway of this revision with a short secret-cache TTL, hammered by several clients
    across several TTLs."""
    stack = rig.gateway.stack
    env = {**stack.gateway_env(), "SECRET_CACHE_TTL_SECONDS": str(ttl)}
    proc = stack.spawn("gateway-short-ttl", [sys.executable, "-m", "devtools.functions_host", "--port", "0"], env)
    try:
        token_url = f"{proc.ready['base_url']}/api/oauth2/token"
        tenant = rig.providers["static"].routes["gateway"].tenant_id
        forms = [rig.gateway.token_form(tenant)] + [_new_client_form(rig, tenant) for _ in range(clients - 1)]
        for form in forms:  # warm: signing keys, routes, and the managed-identity token are cached
            requests.post(token_url, data=form, timeout=30).raise_for_status()
        _vault_stats(rig.gateway.control_url, reset=True)
        started = time.monotonic()
        targets = [Target(f"client{i}", token_url, body=urlencode(form)) for i, form in enumerate(forms)]
        tokens = sum(r["requests"] for r in wrk_together(targets, 4, seconds))
        elapsed = time.monotonic() - started
        vault = _vault_stats(rig.gateway.control_url)
    finally:
        proc.stop()
        stack.processes.pop("gateway-short-ttl", None)
    windows = elapsed / ttl
    return {"ttl_s": ttl, "clients": clients, "window_s": elapsed, "vault_calls": vault["total"],
            "tokens": tokens,
            "vault_operations": vault["operations"], "per_client_per_ttl": vault["total"] / (clients * windows),
            "bound": clients * math.ceil(windows + 1)}


def _new_client_form(rig: Rig, tenant: str) -> dict[str, str]:
    """Another client allowed on the tenant (so each one has its own secret verifier to cache)."""
    stack = rig.gateway.stack
    created = stack.manage("POST", "/clients", json={"name": "Benchmark client"})
    created.raise_for_status()
    client = created.json()
    route = stack.manage("GET", f"/tenants/{tenant}")
    body = route.json()
    body["allowed_clients"].append(client["client_id"])
    stack.manage("PUT", f"/tenants/{tenant}", json=body, headers={"If-Match": route.headers["ETag"]}).raise_for_status()
    return rig.gateway.token_form(tenant, client["client_id"], client["client_secret"])


def host_share(rig: Rig, seconds: int, rounds: int) -> dict:
    """CPU per request of the local Functions host serving a trivial function, against the gateway's hop."""
    stack = rig.gateway.stack
    proc = stack.spawn("hello-host", [sys.executable, "-m", "devtools.functions_host", "--app",
                                      "bench.hello_app:app", "--port", "0"])
    try:
        host = Target("host", f"{proc.ready['base_url']}/api/hello", pid=proc.popen.pid)
        gateway = rig.providers["static"].routes["gateway"].target(rig.reqs.search)
        measured = throughput([host, gateway], 8, seconds, rounds)
    finally:
        proc.stop()
        stack.processes.pop("hello-host", None)
    host_cpu, gateway_cpu = (measured[n]["cpu_ms_per_request"] for n in ("host", "gateway"))
    return {**measured, "share": host_cpu / gateway_cpu}


def cold_start(rig: Rig, rounds: int) -> dict:
    """Fresh interpreters, taking turns: `pass`; `import azure.functions` (what Azure's Python worker
    has loaded before it imports an app); that plus the HTTP streams extension (which the worker also
    loads once the app enables streams, as this revision does); `import function_app`; that plus
    building the services; and the baseline's `import function_app` from its worktree (it has no
    streams, so its own cost is on top of `azure.functions` alone)."""
    scripts = {"pass": "pass", "azure_functions": "import azure.functions",
               "streams": "import azure.functions, azurefunctions.extensions.http.fastapi",
               "import": "import function_app",
               "services": "import function_app\nfrom shared.services import build_services\n"
                           "from shared.settings import Settings\nbuild_services(Settings.from_env())",
               "baseline_import": "import function_app"}
    cwd = {"baseline_import": rig.baseline.root}
    env = {"KEY_VAULT_URL": "https://127.0.0.1:9/", "GATEWAY_TABLES_CONNECTION_STRING":
           "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=YQ==;TableEndpoint=http://127.0.0.1:9/a;",
           "PATH": "/usr/bin:/bin"}
    times: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(rounds):
        for name, script in scripts.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], cwd=cwd.get(name, ROOT), env=env, check=True)
            times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {**{f"{name}_ms": value for name, value in med.items()}, "rounds": rounds,
            "added_ms": med["import"] - med["pass"], "app_only_ms": med["import"] - med["streams"],
            "baseline_added_ms": med["baseline_import"] - med["pass"],
            "baseline_app_only_ms": med["baseline_import"] - med["azure_functions"],
            "services_added_ms": med["services"] - med["pass"]}


def _rss_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def _proxy_bundle(route: Route) -> int:
    """Reads one big Bundle through a gateway in 1 MiB chunks (never held whole here); returns its bytes."""
    with requests.get(f"{route.url}/{BIG_SEARCH}", headers={"Authorization": route.authorization}, stream=True,
                      timeout=300) as response:
        response.raise_for_status()
        return sum(len(chunk) for chunk in response.iter_content(1024 * 1024))


def _peak_extra(route: Route, concurrent: int = 1) -> dict:
    """Peak RSS growth of the gateway process while `concurrent` clients each read the Bundle at once."""
    Path(f"/proc/{route.pid}/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
    before = _rss_kb(route.pid, "VmRSS")
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        sizes = list(pool.map(lambda _: _proxy_bundle(route), range(concurrent)))
    peak = _rss_kb(route.pid, "VmHWM")
    return {"rss_before_mb": before / 1024, "peak_mb": peak / 1024, "extra_mb": (peak - before) / 1024,
            "bytes": sum(sizes), "seconds": time.perf_counter() - started}


def memory(rig: Rig, headline_mb: int, concurrent: int, repeats: int) -> dict:
    """Peak RSS growth of each gateway while it proxies big search Bundles: this revision's at every
    size, then `concurrent` of the headline size at once; the baseline only at the headline size,
    one at a time (it holds each answer whole, twice: bigger sizes or many at once could exhaust
    this machine's memory). Worst of `repeats`; MB of RSS are MiB."""
    def worst(mb: int, gateway: str, concurrent: int = 1) -> dict:
        runs = [_peak_extra(rig.bundles[mb].routes[gateway], concurrent) for _ in range(repeats)]
        return {"bundle_bytes": rig.sizes[f"bundle_{mb}mb"], "concurrent": concurrent, "runs": runs,
                "extra_mb": max(r["extra_mb"] for r in runs)}

    return {"headline_mb": headline_mb, "sizes": {mb: worst(mb, "gateway") for mb in sorted(rig.bundles)},
            "baseline": worst(headline_mb, "baseline"), "concurrent": worst(headline_mb, "gateway", concurrent)}
