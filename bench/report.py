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


def _added(added: dict) -> str:
    return f"{added['p50_ms']:+.2f} ms p50, {added['p99_ms']:+.2f} ms p99"


def latency_rows(lat: dict) -> list[Row]:
    rows = []
    for key, m in lat.items():
        provider, kind = key.split("/")
        request = "GET Patient/{id}" if kind == "read" else "GET Patient?family="
        added = m["added"]["gateway"]
        missed = [p for p, limit in (("p50", 0.5), ("p99", 2.0)) if added[f"{p}_ms"] > limit]
        rows.append(Row(
            f"added latency, {request} ({_PROVIDER[provider]})",
            f"{_added(added)} (nginx: {_added(m['added']['nginx'])})",
            f"{_added(m['added']['baseline'])}; direct {_ms(m['direct']['p50_ms'])} p50, "
            f"{_ms(m['direct']['p99_ms'])} p99", "≤ 0.5 ms p50, ≤ 2 ms p99 added", not missed, ", ".join(missed)))
    return rows


def cpu_rows(cpu: dict) -> list[Row]:
    ms = cpu["cpu_ms"]
    return [Row(f"gateway CPU per proxied GET Patient/{{id}} ({_PROVIDER['static']}, {cpu['connections']} clients)",
                f"{ms['gateway']:.3f} ms (nginx {ms['nginx']:.3f} ms)",
                f"{ms['baseline']:.3f} ms = {cpu['ratio']:.1f}x this one", "≤ 0.4 ms", ms["gateway"] <= 0.4)]


def throughput_rows(tp: dict) -> list[Row]:
    rows = []
    for key, m in tp.items():
        provider, connections = key.split("/")
        judged = provider == "static" and connections == "32"
        rows.append(Row(
            f"throughput, {connections} client{'s' if connections != '1' else ''} ({_PROVIDER[provider]})",
            f"{m['gateway']['rps']:.0f} req/s = {m['vs_baseline']:.1f}x baseline, {m['vs_nginx']:.2f}x nginx, "
            f"{m['vs_direct']:.2f}x direct; CPU {m['gateway']['cpu_ms_per_request']:.2f} ms/req",
            f"{m['baseline']['rps']:.0f} req/s = {m['baseline_vs_nginx']:.2f}x nginx, CPU "
            f"{m['baseline']['cpu_ms_per_request']:.2f} ms/req; nginx {m['nginx']['rps']:.0f}, direct "
            f"{m['direct']['rps']:.0f} req/s",
            "≥ 4x baseline" if judged else "report", m["vs_baseline"] >= 4.0 if judged else None))
    return rows


def page_rows(pg: dict) -> list[Row]:
    rows = []
    for name, m in pg.items():
        new, old = m["gateway"], m["baseline"]
        least = 4.0 if name == "wan" else 2.0  # #12 for the provider 20 ms away; #6 for the others
        rows.append(Row(f"Patients app page, batch of 6 ({_PROVIDER[name]})",
                        f"{_ms(new['batch_ms'])} = {new['speedup']:.2f}x faster than one after another "
                        f"({_ms(new['sequential_ms'])})",
                        f"batch {_ms(old['batch_ms'])} = {old['speedup']:.2f}x (one after another "
                        f"{_ms(old['sequential_ms'])})", f"≥ {least:.0f}x faster", new["speedup"] >= least))
    return rows


def batch_rows(batch: dict) -> list[Row]:
    new, old = batch["gateway"], batch["baseline"]
    return [Row(f"batch of {batch['entries']} entries ({_PROVIDER['wan']})",
                f"{new['median_s']:.2f} s median, {new['max_s']:.2f} s worst of {batch['repeats']}; every entry 200",
                f"{old['median_s']:.2f} s median (no deadline)", f"within its deadline ({batch['deadline_s']:.0f} s)",
                new["max_s"] <= batch["deadline_s"])]


def token_rows(tok: dict) -> list[Row]:
    return [
        Row(f"token issuance, {tok['connections']} clients, warm caches",
            f"{tok['tokens_per_s']:.0f} tokens/s = {tok['vs_baseline']:.2f}x baseline "
            f"({tok['ratio']:.2f}x signing alone)",
            f"{tok['baseline_tokens_per_s']:.0f} tokens/s; signing alone {tok['signing_per_s']:.0f}/s",
            "≥ 2x baseline", tok["vs_baseline"] >= 2.0),
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
        Row("cold start: the app's own imports (azure.functions and the streams extension preloaded, as in "
            "Azure's worker)", f"+{cold['app_only_ms']:.0f} ms",
            f"+{cold['baseline_app_only_ms']:.0f} ms on azure.functions alone (no streams); azure.functions + "
            f"extension {cold['streams_ms']:.0f} ms", "≤ 150 ms", cold["app_only_ms"] <= 150),
        Row("cold start: import function_app", f"+{cold['added_ms']:.0f} ms ({cold['import_ms']:.0f} ms)",
            f"+{cold['baseline_added_ms']:.0f} ms; {base}", "≤ 300 ms added", cold["added_ms"] <= 300),
        Row("cold start: import + build services (paid by the first token or FHIR request)",
            f"+{cold['services_added_ms']:.0f} ms ({cold['services_ms']:.0f} ms)", base, "report", None),
    ]


def memory_rows(mem: dict) -> list[Row]:
    headline, old, many = mem["sizes"][mem["headline_mb"]], mem["baseline"], mem["concurrent"]
    sizes = mem["sizes"]
    worst = max(m["extra_mb"] for m in sizes.values())
    return [
        Row(f"memory, proxying a {headline['bundle_bytes'] / 1e6:.0f} MB search Bundle",
            f"+{headline['extra_mb']:.1f} MB peak RSS (RSS before {headline['runs'][0]['rss_before_mb']:.0f} MB)",
            f"+{old['extra_mb']:.1f} MB (RSS before {old['runs'][0]['rss_before_mb']:.0f} MB)", "≤ 20 MB extra",
            headline["extra_mb"] <= 20),
        Row("memory, flat across Bundle sizes",
            ", ".join(f"{m['bundle_bytes'] / 1e6:.0f} MB: +{m['extra_mb']:.1f}" for m in sizes.values()) + " MB",
            f"{mem['headline_mb']} MB only (holds each answer whole, twice: bigger sizes could exhaust memory)",
            "≤ 20 MB extra at every size", worst <= 20),
        Row(f"memory, {many['concurrent']} concurrent {many['bundle_bytes'] / 1e6:.0f} MB Bundles",
            f"+{many['extra_mb']:.1f} MB peak RSS",
            f"not run ({many['concurrent']} x 2 x {mem['headline_mb']} MB buffered could exhaust memory)",
            "≤ 100 MB extra", many["extra_mb"] <= 100),
    ]


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
