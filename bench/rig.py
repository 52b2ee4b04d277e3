"""The benchmark rig: this revision's gateway and the baseline's side by side, nginx, the providers,
tenants routed to each provider on both gateways, and their tokens.

Gateways: `gateway` runs from this tree; `baseline` is issue #12's "today" (by default commit
e20264e, the last synchronous revision: waitress host, urllib3 upstream, buffered answers), run
from a temporary detached git worktree with the same interpreter. Each has its own stack (Azurite
and Key Vault emulator: the two versions' storage schemas differ, so nothing is shared), and both
are routed to the same providers, so every figure compares them in one run on one machine state.

Providers, each reachable three ways (direct, through nginx as a plain reverse proxy, through each
gateway): the fixed-bytes nginx provider (`static`, the figure that isolates the hop) and the
sample EHR (`ehr`, realistic searches). More tenants: `wan`, the same files one simulated network
round trip away (page and batch figures), and one per big search Bundle size (memory figure).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from bench.load import Target
from bench.nginx import Nginx, reverse_proxy, static_provider
from bench.provider import PageRequests, page_requests, write_big_bundles, write_static_tree
from devtools.stack import ROOT, Stack

TIMEOUT = 30
BASELINE_REV = "e20264e"
GATEWAYS = ("gateway", "baseline")
BIG_SEARCH = "Patient?_count=1000"  # the big Bundle trees answer any Patient search with their file


@dataclass
class Gateway:
    """One gateway version on its own stack: `rev` is what it runs (a commit, or HEAD for this tree)."""

    name: str
    rev: str
    stack: Stack

    @property
    def facts(self) -> dict[str, Any]:
        return self.stack.facts

    @property
    def pid(self) -> int:
        return self.stack.processes["gateway"].popen.pid

    @property
    def root(self) -> Path:
        return self.stack.gateway_root

    @property
    def fhir_base(self) -> str:
        return self.facts["fhir_base_urls"]["stu3"]

    @property
    def token_url(self) -> str:
        return self.facts["token_url"]

    @property
    def control_url(self) -> str:
        """The control API of this gateway's Key Vault emulator (call statistics)."""
        return self.stack.processes["keyvault"].ready["control_url"]

    def token_form(self, tenant_id: str, client_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": client_id or self.facts["demo_client_id"],
                "client_secret": secret or self.facts["demo_client_secret"], "scope": tenant_id}

    def route(self, provider_base_url: str, tenant_id: str | None = None) -> Route:
        """A tenant routed to the provider (created through this gateway's management API unless given),
        allowed for the demo client, with a token from this gateway's own token endpoint."""
        if tenant_id is None:
            tenant_id = str(uuid.uuid4())
            body = {"display_name": "Benchmark hospital", "provider_base_url": provider_base_url,
                    "fhir_version": "stu3", "upstream_auth": {"kind": "none"},
                    "allowed_clients": [self.facts["demo_client_id"]]}
            self.stack.manage("PUT", f"/tenants/{tenant_id}", json=body).raise_for_status()
        response = requests.post(self.token_url, data=self.token_form(tenant_id), timeout=TIMEOUT)
        response.raise_for_status()
        return Route(self.name, self.fhir_base, "Bearer " + response.json()["access_token"], tenant_id, self.pid)


@dataclass(frozen=True)
class Route:
    """A tenant on one gateway: the FHIR base URL to call with its bearer token."""

    gateway: str
    url: str
    authorization: str
    tenant_id: str
    pid: int

    def target(self, path: str) -> Target:
        return Target(self.gateway, f"{self.url}/{path}", self.authorization, pid=self.pid)


@dataclass
class Provider:
    """One provider: its base URL direct, through nginx (if a reverse proxy stands in front of it), and
    its tenant on each gateway that is routed to it."""

    name: str
    direct: str
    routes: dict[str, Route]
    nginx: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # direct, nginx: the server processes

    def targets(self, path: str) -> list[Target]:
        """Direct, nginx (if any), then each gateway: the order the alternating helpers start from."""
        hops = [Target("direct", f"{self.direct}/{path}", pid=self.pids.get("direct"))]
        if self.nginx:
            hops.append(Target("nginx", f"{self.nginx}/{path}", pid=self.pids.get("nginx")))
        return hops + [route.target(path) for route in self.routes.values()]


@dataclass
class Rig:
    work: Path
    gateway: Gateway
    baseline: Gateway
    reqs: PageRequests
    providers: dict[str, Provider]
    wan: Provider
    bundles: dict[int, Provider]  # by size in MB; the baseline is routed only to `baseline_bundle_mb`
    sizes: dict[str, int]
    nginx: list[Nginx] = field(default_factory=list)

    @property
    def gateways(self) -> dict[str, Gateway]:
        return {"gateway": self.gateway, "baseline": self.baseline}

    def stop(self) -> None:
        _stop(self.nginx, [self.gateway.stack, self.baseline.stack])


def add_worktree(rev: str, path: Path) -> str:
    """A detached worktree of `rev` at `path` (nothing is ever committed from it); returns the short
    commit id, so the report names exactly what the baseline was."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"], check=False,
                           capture_output=True, text=True)
    if found.returncode:
        raise SystemExit(f"bench: --baseline {rev}: not a commit of this repository")
    commit = found.stdout.strip()
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                   capture_output=True)
    return commit


def remove_worktree(path: Path) -> None:
    """Removes the worktree and git's record of it (nothing to do if it was never created). A failure
    is only reported: it runs in a `finally`, and must not hide the error that got there."""
    if path.exists():
        done = subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False,
                              capture_output=True, text=True)
        if done.returncode:
            print(f"bench: could not remove the baseline worktree {path}: {done.stderr.strip()}", file=sys.stderr)


def start_rig(work: Path, baseline_tree: Path, baseline_rev: str, bundle_mb: tuple[int, ...],
              baseline_bundle_mb: int) -> Rig:
    """Starts everything; on failure stops what it started. The baseline runs from `baseline_tree`
    (a worktree of `baseline_rev` that the caller creates and removes)."""
    # Every gateway may proxy the biggest Bundle: its default upstream limit (100 MB) would cut it off.
    limit = {"MAX_UPSTREAM_RESPONSE_BYTES": str(max(bundle_mb) * 1_000_000 + 10_000_000)}
    stack = Stack(work / "stack", extra_env=limit)
    old = Stack(work / "baseline-stack", extra_env=limit, gateway_root=baseline_tree)
    servers: list[Nginx] = []
    try:
        facts = stack.start_all(versions=("stu3",))
        ehr = facts["provider_base_urls"]["stu3"]
        old.start_all(providers={"stu3": ehr})
        new, base = Gateway("gateway", "HEAD", stack), Gateway("baseline", baseline_rev, old)
        gateways = (new, base)
        reqs = page_requests(ehr)
        provider, port = static_provider(work / "nginx-provider", work / "www")
        static, wan = (f"http://127.0.0.1:{port}/{tree}/fhir" for tree in ("static", "wan"))
        big = {mb: (f"big{mb}", f"http://127.0.0.1:{port}/big{mb}/fhir") for mb in bundle_mb}
        sizes = write_static_tree(work / "www", ehr, {"static": static, "wan": wan}, reqs)
        written = write_big_bundles(work / "www", ehr, {tree: (url, mb * 1_000_000) for mb, (tree, url) in big.items()})
        sizes |= {f"bundle_{mb}mb": written[tree] for mb, (tree, _) in big.items()}
        proxy, ports = reverse_proxy(work / "nginx-proxy", {"static": f"127.0.0.1:{port}", "ehr": urlsplit(ehr).netloc})
        servers += [provider.start(), proxy.start()]
        providers = {
            "static": Provider("static", static, {g.name: g.route(static) for g in gateways},
                               f"http://127.0.0.1:{ports['static']}/static/fhir",
                               {"nginx": proxy.pid, "direct": provider.pid}),
            "ehr": Provider("ehr", ehr, {g.name: g.route(ehr, g.facts["demo_tenants"][0]["tenant_id"])
                                         for g in gateways},
                            f"http://127.0.0.1:{ports['ehr']}/fhir",
                            {"nginx": proxy.pid, "direct": stack.processes["ehr-stu3"].popen.pid}),
        }
        wan_provider = Provider("wan", wan, {g.name: g.route(wan) for g in gateways})
        bundles = {mb: Provider(f"big{mb}", url, {g.name: g.route(url) for g in gateways
                                                  if g is new or mb == baseline_bundle_mb})
                   for mb, (_, url) in big.items()}
        return Rig(work, new, base, reqs, providers, wan_provider, bundles, sizes, servers)
    except BaseException:
        _stop(servers, [stack, old])
        raise


def _stop(servers: list[Nginx], stacks: list[Stack]) -> None:
    """Stops every nginx and every stack process."""
    for server in servers:
        server.stop()
    for stack in stacks:
        stack.stop()
