"""The benchmark rig: the real local stack plus nginx, tenants routed to each provider, and tokens.

Providers, each reachable three ways (direct, through nginx as a plain reverse proxy, through the
gateway): the fixed-bytes nginx provider (`static`, the figure that isolates the hop) and the
sample EHR (`ehr`, realistic searches). Two more tenants: `wan`, the same files one simulated
network round trip away (for the page figure), and `big`, the 50 MB Bundle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from bench.load import Target
from bench.nginx import Nginx, reverse_proxy, static_provider
from bench.provider import PageRequests, page_requests, write_static_tree
from devtools.stack import Stack

TIMEOUT = 30


@dataclass
class Provider:
    """One provider and the tenant routed to it: its base URL direct, through nginx, through the gateway."""

    name: str
    direct: str
    nginx: str
    gateway: str
    authorization: str
    pids: dict[str, int] = field(default_factory=dict)  # direct, nginx, gateway: the server processes

    def targets(self, path: str) -> list[Target]:
        return [Target("direct", f"{self.direct}/{path}", pid=self.pids.get("direct")),
                Target("nginx", f"{self.nginx}/{path}", pid=self.pids.get("nginx")),
                Target("gateway", f"{self.gateway}/{path}", self.authorization, pid=self.pids.get("gateway"))]


@dataclass
class Rig:
    stack: Stack
    work: Path
    reqs: PageRequests
    providers: dict[str, Provider]
    wan: Provider
    big: Provider
    sizes: dict[str, int]
    nginx: list[Nginx] = field(default_factory=list)

    @property
    def facts(self) -> dict[str, Any]:
        return self.stack.facts

    @property
    def gateway_pid(self) -> int:
        return self.stack.processes["gateway"].popen.pid

    @property
    def control_url(self) -> str:
        return self.stack.processes["keyvault"].ready["control_url"]

    def token_form(self, tenant_id: str, client_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        return _token_form(self.facts, tenant_id, client_id, secret)

    def stop(self) -> None:
        for server in self.nginx:
            server.stop()
        self.stack.stop()


def _token_form(facts: dict[str, Any], tenant_id: str, client_id: str | None = None,
                secret: str | None = None) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id or facts["demo_client_id"],
            "client_secret": secret or facts["demo_client_secret"], "scope": tenant_id}


def _token(facts: dict[str, Any], tenant_id: str) -> str:
    response = requests.post(facts["token_url"], data=_token_form(facts, tenant_id), timeout=TIMEOUT)
    response.raise_for_status()
    return "Bearer " + response.json()["access_token"]


def _onboard(stack: Stack, provider_base_url: str) -> str:
    """A tenant routed to the provider, allowed for the demo client; returns its id."""
    tenant_id = str(uuid.uuid4())
    body = {"display_name": "Benchmark hospital", "provider_base_url": provider_base_url, "fhir_version": "stu3",
            "upstream_auth": {"kind": "none"}, "allowed_clients": [stack.facts["demo_client_id"]]}
    stack.manage("PUT", f"/tenants/{tenant_id}", json=body).raise_for_status()
    return tenant_id


def start_rig(work: Path) -> Rig:
    """Starts everything; on failure stops what it started."""
    stack = Stack(work / "stack")
    servers: list[Nginx] = []
    try:
        facts = stack.start_all(versions=("stu3",))
        ehr = facts["provider_base_urls"]["stu3"]
        reqs = page_requests(ehr)
        provider, port = static_provider(work / "nginx-provider", work / "www")
        static, wan, big = (f"http://127.0.0.1:{port}/{tree}/fhir" for tree in ("static", "wan", "big"))
        sizes = write_static_tree(work / "www", ehr, {"static": static, "wan": wan}, big, reqs)
        proxy, ports = reverse_proxy(work / "nginx-proxy", {"static": f"127.0.0.1:{port}", "ehr": urlsplit(ehr).netloc})
        servers += [provider.start(), proxy.start()]
        gateway = facts["fhir_base_urls"]["stu3"]
        ehr_tenant = facts["demo_tenants"][0]["tenant_id"]
        pids = {"nginx": proxy.pid, "gateway": stack.processes["gateway"].popen.pid}
        providers = {
            "static": Provider("static", static, f"http://127.0.0.1:{ports['static']}/static/fhir", gateway,
                               _token(facts, _onboard(stack, static)), {**pids, "direct": provider.pid}),
            "ehr": Provider("ehr", ehr, f"http://127.0.0.1:{ports['ehr']}/fhir", gateway, _token(facts, ehr_tenant),
                            {**pids, "direct": stack.processes["ehr-stu3"].popen.pid}),
        }
        wan_provider = Provider("wan", wan, wan, gateway, _token(facts, _onboard(stack, wan)))
        big_provider = Provider("big", big, big, gateway, _token(facts, _onboard(stack, big)))
        return Rig(stack, work, reqs, providers, wan_provider, big_provider, sizes, servers)
    except BaseException:
        for server in servers:
            server.stop()
        stack.stop()
        raise
