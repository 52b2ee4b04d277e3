"""`python -m bench`: start this revision's gateway and the baseline's (each on its own local stack)
and nginx, measure every figure on both in one run, print the table, write JSON."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import figures, report
from bench.load import wrk
from bench.rig import BASELINE_REV, Rig, add_worktree, remove_worktree, start_rig

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
FIGURES = ("latency", "cpu", "throughput", "page", "batch", "token", "vault_ttl", "host", "cold_start", "memory")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--samples", type=int, default=2000, help="latency samples per target and request")
    parser.add_argument("--seconds", type=int, default=2, help="duration of each wrk run (whole seconds)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per throughput point")
    parser.add_argument("--pages", type=int, default=30, help="pages per variant for the page figure")
    parser.add_argument("--baseline", default=BASELINE_REV, metavar="REV",
                        help="the revision measured beside this one (run from a temporary git worktree)")
    parser.add_argument("--bundle-mb", type=int, default=60,
                        help="the memory figure's headline Bundle (MB): single, concurrent, and on the baseline")
    parser.add_argument("--flat-mb", type=int, nargs="*", default=[6, 300],
                        help="more Bundle sizes (MB) through this revision's gateway: is its memory flat?")
    parser.add_argument("--concurrent", type=int, default=16, help="headline Bundles proxied at once")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, nginx configs)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES), help="measure only these")
    return parser.parse_args(argv)


def _timed(label: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    print(f"bench: {label} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    value = fn()
    timings[label] = round(time.monotonic() - started, 1)
    return value


def _warm(rig: Rig, seconds: int) -> None:
    """Connection pools, caches and the allocator settle before anything is measured."""
    for provider in rig.providers.values():
        for target in provider.targets(rig.reqs.search) + provider.targets(rig.reqs.read):
            wrk(target, 8, seconds)


def _figures(args: argparse.Namespace) -> dict[str, tuple[Callable[[Rig], Any], Callable[[Any], list[report.Row]]]]:
    """Each figure: how to measure it on the rig, and how it becomes table rows; in the order they run."""
    return {
        "latency": (lambda rig: figures.hop_latency(rig, args.samples), report.latency_rows),
        "cpu": (lambda rig: figures.hop_cpu(rig, args.seconds, args.rounds), report.cpu_rows),
        "throughput": (lambda rig: figures.proxy_throughput(rig, args.seconds, args.rounds), report.throughput_rows),
        "page": (lambda rig: figures.page(rig, args.pages), report.page_rows),
        "batch": (figures.batch_deadline, report.batch_rows),
        "token": (lambda rig: figures.token_rate(rig, args.seconds, args.rounds), report.token_rows),
        "vault_ttl": (lambda rig: figures.vault_calls_per_ttl(rig, ttl=2, clients=3, seconds=5), report.vault_rows),
        "host": (lambda rig: figures.host_share(rig, args.seconds, args.rounds), report.host_rows),
        "cold_start": (lambda rig: figures.cold_start(rig, rounds=7), report.cold_rows),
        "memory": (lambda rig: figures.memory(rig, args.bundle_mb, args.concurrent, repeats=2), report.memory_rows),
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every figure on a fresh rig; the baseline's worktree and every process are gone when it returns."""
    timings: dict[str, float] = {}
    tree = work / "baseline"
    try:
        commit = add_worktree(args.baseline, tree)
        sizes = tuple(sorted({args.bundle_mb, *args.flat_mb}))
        rig = _timed("start both stacks and nginx", timings,
                     lambda: start_rig(work, tree, commit, sizes, args.bundle_mb))
        measured: dict[str, Any] = {}
        try:
            _timed("warm up", timings, lambda: _warm(rig, 1))
            for name, (measure, _) in _figures(args).items():
                if name in args.only:
                    measured[name] = _timed(name, timings, lambda m=measure: m(rig))
        finally:
            rig.stop()
    finally:
        remove_worktree(tree)
    rows = [row for name, (_, rows_of) in _figures(args).items() if name in measured for row in rows_of(measured[name])]
    return {"rows": rows, "figures": measured, "sizes": rig.sizes, "baseline": commit, "phase_seconds": timings}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a timeout, a supervisor) unwinds like an error, so every `finally` stops the stacks and
    nginx and removes the baseline's worktree; Python's default would leave them all behind."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started, when = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    facts = report.machine()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        result = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = result.pop("rows")
    duration = time.monotonic() - started
    facts["loadavg_end"] = report.machine()["loadavg"]
    table = report.markdown(rows)
    print(f"\n{table}\n\nbaseline: {result['baseline']} (same run); "
          f"{sum(r.met is True for r in rows)} met, {sum(r.met is False for r in rows)} missed; "
          f"{duration:.0f} s on {facts['cores']} cores ({facts['cpu_model']}), Python {facts['python']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": when, "duration_s": round(duration, 1), "machine": facts,
                                    "settings": vars(args) | {"out": str(args.out)}, "table": report.rows_json(rows),
                                    **result}, indent=2, default=str) + "\n")
    print(f"JSON: {args.out}" + (f" (work dir kept: {work})" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
