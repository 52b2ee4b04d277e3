"""Turns the measured figures into verdicts against the issue's targets, a Markdown table, and machine facts."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    baseline: str
    target: str
    met: bool | None  # None: reported, no target
    missed_part: str = ""  # which part of a two-part target was missed

    @property
    def verdict(self) -> str:
        text = {True: "met", False: "**missed**", None: "—"}[self.met]
        return f"{text} ({self.missed_part})" if self.missed_part and self.met is False else text


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def latency_rows(lat: dict) -> list[Row]:
    rows = []
    for key, m in lat.items():
        provider, kind = key.split("/")
        request = "GET Patient/{id}" if kind == "read" else "GET Patient?family="
        added, nginx = m["added"]["gateway"], m["added"]["nginx"]
        missed = [p for p, limit in (("p50", 1.0), ("p99", 5.0)) if added[f"{p}_ms"] > limit]
        rows.append(Row(
            f"hop latency, {request} ({_PROVIDER[provider]})",
            f"+{_ms(added['p50_ms'])} p50, +{_ms(added['p99_ms'])} p99 "
            f"(nginx: +{_ms(nginx['p50_ms'])}, +{_ms(nginx['p99_ms'])})",
            f"direct {_ms(m['direct']['p50_ms'])} p50, {_ms(m['direct']['p99_ms'])} p99",
            "≤ 1 ms p50, ≤ 5 ms p99 added", not missed, ", ".join(missed)))
    return rows


def throughput_rows(tp: dict) -> list[Row]:
    rows = []
    for key, m in tp.items():
        provider, connections = key.split("/")
        at_32 = connections == "32"
        rows.append(Row(
            f"throughput, {connections} client{'s' if connections != '1' else ''} ({_PROVIDER[provider]})",
            f"{m['gateway']['rps']:.0f} req/s = {m['vs_direct']:.2f}x direct, {m['vs_nginx']:.2f}x nginx; "
            f"CPU {m['gateway']['cpu_ms_per_request']:.2f} ms/req (nginx {m['nginx']['cpu_ms_per_request']:.3f})",
            f"direct {m['direct']['rps']:.0f}, nginx {m['nginx']['rps']:.0f} req/s",
            "≥ 0.8x direct" if at_32 else "report",
            m["vs_direct"] >= 0.8 if at_32 else None))
    return rows


def page_rows(pg: dict) -> list[Row]:
    return [Row(f"Patients app page, batch of 6 ({_PROVIDER[name]})",
                f"{_ms(m['batch_ms'])} = {m['speedup']:.2f}x faster",
                f"one after another {_ms(m['sequential_ms'])}", "≥ 2x faster", m["speedup"] >= 2.0)
            for name, m in pg.items()]


def token_rows(tok: dict) -> list[Row]:
    return [
        Row("token issuance, 8 clients, warm cache", f"{tok['tokens_per_s']:.0f} tokens/s = {tok['ratio']:.2f}x",
            f"signing alone {tok['signing_per_s']:.0f}/s", "≥ 0.5x", tok["ratio"] >= 0.5),
        Row("Key Vault calls while issuing (warm, default TTL)",
            f"{tok['vault_calls_warm']} in {tok['window_s']:.0f} s", "1 client, TTL 60 s", "≤ 1 per client per TTL",
            tok["vault_calls_warm"] <= 1),
    ]


def vault_rows(ttl: dict) -> list[Row]:
    return [Row(f"Key Vault calls, {ttl['clients']} clients x 4 connections, TTL {ttl['ttl_s']} s",
                f"{ttl['vault_calls']} in {ttl['window_s']:.1f} s = {ttl['per_client_per_ttl']:.2f} per client per TTL",
                f"{ttl['tokens']} tokens issued", "≤ 1 per client per TTL", ttl["per_client_per_ttl"] <= 1.0)]


def host_rows(host: dict) -> list[Row]:
    return [Row("local Functions host alone (trivial function, 8 clients)",
                f"{host['host']['cpu_ms_per_request']:.2f} ms CPU/req = {host['share']:.0%} of the hop's "
                f"{host['gateway']['cpu_ms_per_request']:.2f}", f"{host['host']['rps']:.0f} req/s",
                "< 50% of the hop (not the bottleneck)", host["share"] < 0.5)]


def cold_rows(cold: dict) -> list[Row]:
    base = f"python -c pass {cold['pass_ms']:.0f} ms"
    return [
        Row("cold start: import function_app", f"+{cold['added_ms']:.0f} ms ({cold['import_ms']:.0f} ms)", base,
            "≤ 300 ms added", cold["added_ms"] <= 300),
        Row("cold start: the app's own imports (azure.functions preloaded, as in Azure's worker)",
            f"+{cold['app_only_ms']:.0f} ms", f"import azure.functions {cold['azure_functions_ms']:.0f} ms", "report",
            None),
        Row("cold start: import + build services (paid by the first token or FHIR request)",
            f"+{cold['services_added_ms']:.0f} ms ({cold['services_ms']:.0f} ms)", base, "report", None),
    ]


def memory_rows(mem: dict) -> list[Row]:
    before = mem["runs"][0]["rss_before_mb"]
    return [Row(f"memory, proxying a {mem['bundle_bytes'] / 1e6:.0f} MB search Bundle",
                f"+{mem['extra_mb']:.1f} MB peak RSS", f"RSS before {before:.0f} MB", "< 30 MB extra",
                mem["extra_mb"] < 30)]


_PROVIDER = {"static": "nginx fixed-bytes provider", "ehr": "sample EHR",
             "wan": "nginx provider 20 ms away"}


def markdown(rows: list[Row]) -> str:
    lines = ["| figure | measured | baseline (same run) | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.measured} | {r.baseline} | {r.target} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> list[dict]:
    return [{**asdict(r), "verdict": r.verdict.strip("*")} for r in rows]


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {"cores": os.cpu_count(), "cpu_model": model.group(1) if model else platform.processor(),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "nginx": _version(["nginx", "-v"]), "wrk": _version(["wrk", "-v"]),
            "loadavg": os.getloadavg()}


def _version(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""
