"""The figures of issue #6, each measured against its baseline in the same run.

Every function returns a plain dict (it goes into the JSON as is); `bench.report` turns them into
the table and judges each against its target.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from bench.load import Target, interleaved_latency, throughput, wrk, wrk_together
from bench.rig import Rig
from devtools.stack import ROOT

CONNECTIONS = (1, 8, 32)


def hop_latency(rig: Rig, samples: int) -> dict:
    """Added p50/p99 of the gateway (and of nginx) over direct, per provider and request."""
    result: dict[str, dict] = {}
    for provider in rig.providers.values():
        for kind, path in (("read", rig.reqs.read), ("search", rig.reqs.search)):
            measured = interleaved_latency(provider.targets(path), samples)
            direct = measured["direct"]
            result[f"{provider.name}/{kind}"] = {
                **measured,
                "added": {hop: {p: measured[hop][p] - direct[p] for p in ("p50_ms", "p99_ms")}
                          for hop in ("nginx", "gateway")},
            }
    return result


def proxy_throughput(rig: Rig, seconds: int, rounds: int) -> dict:
    """Requests/s for the Patient search at 1, 8 and 32 connections: direct, through nginx, through the gateway."""
    result: dict[str, dict] = {}
    for provider in rig.providers.values():
        for connections in CONNECTIONS:
            measured = throughput(provider.targets(rig.reqs.search), connections, seconds, rounds)
            gateway = measured["gateway"]["rps"]
            result[f"{provider.name}/{connections}"] = {
                **measured, "vs_direct": gateway / measured["direct"]["rps"],
                "vs_nginx": gateway / measured["nginx"]["rps"]}
    return result


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
    """metadata + token + 6 searches one after another, against the same with the searches in one batch."""
    result: dict[str, dict] = {}
    for name, provider in {**rig.providers, "wan": rig.wan}.items():
        tenant = _tenant_of(rig, provider.authorization)
        form = urlencode(rig.token_form(tenant))
        base = urlsplit(provider.gateway)
        conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=60)
        times: dict[str, list[float]] = {"sequential": [], "batch": []}
        for i in range(pages + 3):
            for batch in (i % 2 == 0, i % 2 == 1):
                elapsed = _page_once(conn, provider.gateway, form, rig.reqs.page, batch)
                if i >= 3:
                    times["batch" if batch else "sequential"].append(elapsed)
        conn.close()
        seq, bat = (statistics.median(times[k]) * 1000 for k in ("sequential", "batch"))
        result[name] = {"sequential_ms": seq, "batch_ms": bat, "speedup": seq / bat, "pages": pages}
    return result


def _tenant_of(rig: Rig, authorization: str) -> str:
    return jwt.decode(authorization.removeprefix("Bearer "), options={"verify_signature": False})["tid"]


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


def token_rate(rig: Rig, seconds: int, rounds: int) -> dict:
    """Token endpoint at 8 connections (warm caches) against signing alone, alternating; vault calls counted."""
    tenant = _tenant_of(rig, rig.providers["static"].authorization)
    target = Target("token", rig.facts["token_url"], body=urlencode(rig.token_form(tenant)))
    wrk(target, 8, 1)  # warm: verifier, client row, route and signing key cached
    _vault_stats(rig.control_url, reset=True)
    signing, issued = [], []
    started = time.monotonic()
    for _ in range(rounds):
        signing.append(signing_rate(seconds))
        issued.append(wrk(target, 8, seconds)["rps"])
    elapsed = time.monotonic() - started
    vault = _vault_stats(rig.control_url)
    rate, sign = statistics.median(issued), statistics.median(signing)
    return {"tokens_per_s": rate, "signing_per_s": sign, "ratio": rate / sign,
            "vault_calls_warm": vault["total"], "vault_operations": vault["operations"], "window_s": elapsed}


def vault_calls_per_ttl(rig: Rig, ttl: int, clients: int, seconds: int) -> dict:
    """A second gateway with a short secret-cache TTL, hammered by several clients across several TTLs."""
    stack = rig.stack
    env = {**stack.gateway_env(), "SECRET_CACHE_TTL_SECONDS": str(ttl)}
    proc = stack.spawn("gateway-short-ttl", [sys.executable, "-m", "devtools.functions_host", "--port", "0"], env)
    try:
        token_url = f"{proc.ready['base_url']}/api/oauth2/token"
        tenant = _tenant_of(rig, rig.providers["static"].authorization)
        forms = [rig.token_form(tenant)] + [_new_client_form(rig, tenant) for _ in range(clients - 1)]
        for form in forms:  # warm: signing keys, routes, and the managed-identity token are cached
            requests.post(token_url, data=form, timeout=30).raise_for_status()
        _vault_stats(rig.control_url, reset=True)
        started = time.monotonic()
        targets = [Target(f"client{i}", token_url, body=urlencode(form)) for i, form in enumerate(forms)]
        tokens = sum(r["requests"] for r in wrk_together(targets, 4, seconds))
        elapsed = time.monotonic() - started
        vault = _vault_stats(rig.control_url)
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
    created = rig.stack.manage("POST", "/clients", json={"name": "Benchmark client"})
    created.raise_for_status()
    client = created.json()
    route = rig.stack.manage("GET", f"/tenants/{tenant}")
    body = route.json()
    body["allowed_clients"].append(client["client_id"])
    rig.stack.manage("PUT", f"/tenants/{tenant}", json=body,
                     headers={"If-Match": route.headers["ETag"]}).raise_for_status()
    return rig.token_form(tenant, client["client_id"], client["client_secret"])


def host_share(rig: Rig, seconds: int, rounds: int) -> dict:
    """CPU per request of the local Functions host serving a trivial function, against the gateway's hop."""
    proc = rig.stack.spawn("hello-host", [sys.executable, "-m", "devtools.functions_host", "--app",
                                          "bench.hello_app:app", "--port", "0"])
    try:
        host = Target("host", f"{proc.ready['base_url']}/api/hello", pid=proc.popen.pid)
        gateway = rig.providers["static"].targets(rig.reqs.search)[2]
        measured = throughput([host, gateway], 8, seconds, rounds)
    finally:
        proc.stop()
        rig.stack.processes.pop("hello-host", None)
    host_cpu, gateway_cpu = (measured[n]["cpu_ms_per_request"] for n in ("host", "gateway"))
    return {**measured, "share": host_cpu / gateway_cpu}


def cold_start(rounds: int) -> dict:
    """Fresh interpreters, alternating: `pass`; `import azure.functions` (what Azure's Python worker has
    loaded before it imports the app); `import function_app`; and that plus building the services."""
    scripts = {"pass": "pass", "azure_functions": "import azure.functions", "import": "import function_app",
               "services": "import function_app\nfrom shared.services import build_services\n"
                           "from shared.settings import Settings\nbuild_services(Settings.from_env())"}
    env = {"KEY_VAULT_URL": "https://127.0.0.1:9/", "GATEWAY_TABLES_CONNECTION_STRING":
           "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=YQ==;TableEndpoint=http://127.0.0.1:9/a;",
           "PATH": "/usr/bin:/bin"}
    times: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(rounds):
        for name, script in scripts.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True)
            times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {**{f"{name}_ms": value for name, value in med.items()}, "rounds": rounds,
            "added_ms": med["import"] - med["pass"], "app_only_ms": med["import"] - med["azure_functions"],
            "services_added_ms": med["services"] - med["pass"]}


def _rss_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def memory(rig: Rig, repeats: int) -> dict:
    """Peak RSS growth of the gateway process while it proxies the ~50 MB search Bundle."""
    pid, big = rig.gateway_pid, rig.big
    runs = []
    for _ in range(repeats):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM, the peak RSS
        before = _rss_kb(pid, "VmRSS")
        with requests.get(f"{big.gateway}/Patient?_count=large", headers={"Authorization": big.authorization},
                          stream=True, timeout=120) as response:
            response.raise_for_status()
            size = sum(len(chunk) for chunk in response.iter_content(1024 * 1024))
        runs.append({"rss_before_mb": before / 1024, "peak_mb": _rss_kb(pid, "VmHWM") / 1024,
                     "extra_mb": (_rss_kb(pid, "VmHWM") - before) / 1024, "bytes": size})
    return {"bundle_bytes": rig.sizes["big"], "runs": runs, "extra_mb": max(r["extra_mb"] for r in runs)}

