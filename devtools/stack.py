"""Starts the whole local stack on 127.0.0.1: Azurite, the Key Vault emulator, sample EHRs, the gateway.

Used by `scripts/dev` (command 1) and by the test suite, so the tests run exactly what a
developer runs. Every part is a real subprocess speaking its real protocol; logs go to
`<state>/logs/` (the tests scan them for leaked secrets and patient data).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AZURITE_ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
DEMO_TENANTS = {"stu3": "7c3a2f10-5b8e-4d21-9a6f-3e1b0c9d2a01", "dstu2": "7c3a2f10-5b8e-4d21-9a6f-3e1b0c9d2a02",
                "r4": "7c3a2f10-5b8e-4d21-9a6f-3e1b0c9d2a04"}
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def azurite_connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


@dataclass
class Process:
    """One child process with its log file; `ready` holds what it wrote to its ready file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    log: IO[bytes]
    ready: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def failure(self) -> str:
        self.log.flush()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        return f"{self.name} exited with {self.popen.returncode}; last log lines:\n{tail}"


class Stack:
    def __init__(self, state_dir: Path, *, persistent: bool = False, gateway_port: int = 0,
                 extra_env: dict[str, str] | None = None, gateway_root: Path = ROOT) -> None:
        self.state = state_dir
        # The source tree the gateway runs from: the benchmark runs an older revision's gateway from a
        # temporary git worktree beside this one, on the same interpreter and the same emulators.
        self.gateway_root = gateway_root
        self.persistent = persistent
        self.gateway_port = gateway_port
        self.extra_env = dict(extra_env or {})
        self.processes: dict[str, Process] = {}
        self.manage_key = secrets.token_urlsafe(24)
        self.facts: dict[str, Any] = {}
        (self.state / "logs").mkdir(parents=True, exist_ok=True)

    # --- processes ----------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
              ready_file: bool = True, cwd: Path = ROOT) -> Process:
        log_path = self.state / "logs" / f"{name}.log"
        log = log_path.open("ab")
        ready_path = self.state / f"{name}.ready.json"
        ready_path.unlink(missing_ok=True)
        full = args + (["--ready-file", str(ready_path)] if ready_file else [])
        popen = subprocess.Popen(full, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})})
        proc = Process(name, popen, log_path, log)
        self.processes[name] = proc
        if ready_file:
            proc.ready = self._wait_ready(proc, ready_path)
        return proc

    @staticmethod
    def _wait_ready(proc: Process, path: Path) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(proc.failure())
            try:
                return json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        raise RuntimeError(f"{proc.name} did not become ready in {READY_TIMEOUT:.0f} s\n{proc.failure()}")

    def start_azurite(self, port: int = 0) -> str:
        port = port or free_port()
        args = [str(ROOT / "node_modules/.bin/azurite-table"), "--tableHost", "127.0.0.1", "--tablePort",
                str(port), "--skipApiVersionCheck", "--disableProductStyleUrl", "--disableTelemetry"]
        if self.persistent:
            args += ["--location", str(self.state / "azurite")]
        else:
            args += ["--inMemoryPersistence"]
        proc = self.spawn("azurite", args, ready_file=False)
        deadline = time.monotonic() + READY_TIMEOUT
        while not port_open(port):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.failure())
            time.sleep(0.05)
        proc.ready = {"port": port, "connection_string": azurite_connection_string(port)}
        return proc.ready["connection_string"]

    def start_keyvault(self, port: int = 0, identity_port: int = 0) -> dict[str, Any]:
        if not self.persistent:
            shutil.rmtree(self.state / "keyvault", ignore_errors=True)
        args = [PYTHON, "-m", "devtools.keyvault_emulator", "--data-dir", str(self.state / "keyvault"),
                "--port", str(port), "--identity-port", str(identity_port)]
        header = self.facts.setdefault("identity_header", secrets.token_hex(16))
        return self.spawn("keyvault", [*args, f"--identity-header={header}"]).ready

    def start_ehr(self, version: str, extra_args: list[str] | None = None, name: str = "") -> dict[str, Any]:
        """A provider: our sample EHR for STU3/DSTU2; for R4 an independent server (Medplum's router)."""
        if version == "r4":
            args = ["node", str(ROOT / "devtools/r4_server/server.mjs"), "--port", "0", *(extra_args or [])]
        else:
            args = [PYTHON, "-m", "devtools.sample_ehr", "--version", version, "--port", "0", *(extra_args or [])]
        return self.spawn(name or f"ehr-{version}", args).ready

    def gateway_env(self) -> dict[str, str]:
        vault = self.processes["keyvault"].ready
        return {
            "GATEWAY_TABLES_CONNECTION_STRING": self.processes["azurite"].ready["connection_string"],
            "KEY_VAULT_URL": vault["vault_url"],
            "KEY_VAULT_CA_BUNDLE": vault["ca_bundle"],
            "IDENTITY_ENDPOINT": vault["identity_endpoint"],
            "IDENTITY_HEADER": vault["identity_header"],
            "LOCAL_FUNCTION_KEY": self.manage_key,
            "GATEWAY_PUBLIC_BASE_URL": "",
            # The EHRs and IdPs of the local stack speak plain http on 127.0.0.1; Azure never allows this.
            "GATEWAY_ALLOW_LOOPBACK_HTTP": "1",
            **self.extra_env,
        }

    @staticmethod
    def gateway_command(port: int) -> list[str]:
        """The one place that says how a gateway process starts (every instance, every caller)."""
        return [PYTHON, "-m", "devtools.functions_host", "--port", str(port)]

    def start_gateway(self, instances: int = 1) -> str:
        """One gateway on `gateway_port`; or N instances sharing Azurite and the vault, each on its
        own port, behind a round-robin front (devtools/roundrobin.py) on `gateway_port`, as the
        platform's front end spreads a scaled-out Function App. `facts["instance_urls"]` lists them.
        Gateways run from `gateway_root` (the benchmark's baseline runs an older checkout)."""
        if instances <= 1:
            base = self.spawn("gateway", self.gateway_command(self.gateway_port), self.gateway_env(),
                              cwd=self.gateway_root).ready["base_url"]
            self.facts["instance_urls"] = [base]
            return base
        urls = [self.spawn(f"gateway-{n}", self.gateway_command(0), self.gateway_env(),
                           cwd=self.gateway_root).ready["base_url"] for n in range(1, instances + 1)]
        front = [PYTHON, "-m", "devtools.roundrobin", "--port", str(self.gateway_port),
                 *itertools.chain.from_iterable(("--backend", url) for url in urls)]
        self.facts["instance_urls"] = urls
        return self.spawn("gateway", front).ready["base_url"]

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        self.processes.clear()

    # --- seeding ------------------------------------------------------------------------------

    def manage(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        base = self.processes["gateway"].ready["base_url"]
        headers = {"x-functions-key": self.manage_key, **kwargs.pop("headers", {})}
        return requests.request(method, f"{base}/api/manage{path}", headers=headers, timeout=30, **kwargs)

    def seed_demo(self, providers: dict[str, str]) -> dict[str, Any]:
        """A demo client allowed on one demo tenant per sample EHR."""
        created = self.manage("POST", "/clients", json={"name": "Demo Patients app"})
        created.raise_for_status()
        client = created.json()
        tenants = []
        for version, base_url in providers.items():
            body = {"display_name": f"Demo hospital ({version.upper()})", "provider_base_url": base_url,
                    "fhir_version": version, "upstream_auth": {"kind": "none"},
                    "allowed_clients": [client["client_id"]], "enabled": True}
            self.manage("PUT", f"/tenants/{DEMO_TENANTS[version]}", json=body).raise_for_status()
            tenants.append({"tenant_id": DEMO_TENANTS[version], "fhir_version": version})
        return {"demo_client_id": client["client_id"], "demo_client_secret": client["client_secret"],
                "demo_tenants": tenants}

    def seed_invitation(self) -> str:
        """One invitation code for the consumer portal (single use, valid for a week)."""
        created = self.manage("POST", "/invitations", json={"note": "demo invitation", "expires_in_hours": 168})
        created.raise_for_status()
        return created.json()["code"]

    def start_all(self, versions: tuple[str, ...] = ("stu3", "dstu2", "r4"), instances: int = 1,
                  providers: dict[str, str] | None = None) -> dict[str, Any]:
        """Everything, seeded; `providers` (version -> base URL) routes the demo tenants to EHRs that are
        already running (another stack's) instead of starting new ones."""
        self.start_azurite()
        self.start_keyvault()
        if providers is None:
            providers = {v: self.start_ehr(v)["base_url"] for v in versions}
        base = self.start_gateway(instances)
        facts = {
            "gateway_base_url": base,
            "instance_urls": self.facts["instance_urls"],
            "fhir_base_urls": {v: f"{base}/api/fhir/{v}" for v in ("stu3", "dstu2", "r4")},
            "token_url": f"{base}/api/oauth2/token",
            "manage_url": f"{base}/api/manage",
            "manage_key": self.manage_key,
            "provider_base_urls": providers,
            **self.seed_demo(providers),
            "portal_url": f"{base}/api/portal",
            "demo_invitation": self.seed_invitation(),
        }
        self.facts.update(facts)
        return facts


def walkthrough(facts: dict[str, Any]) -> str:
    tenant = facts["demo_tenants"][0]
    base = facts["fhir_base_urls"][tenant["fhir_version"]]
    return f"""
FHIR gateway local stack is up (Ctrl-C stops everything).

  FHIR base URLs:  {json.dumps(facts['fhir_base_urls'])}
  Token URL:       {facts['token_url']}
  Management API:  {facts['manage_url']}   (header x-functions-key: {facts['manage_key']})
  Demo client:     {facts['demo_client_id']}
  Demo secret:     {facts['demo_client_secret']}
  Demo tenants:    {', '.join(f"{t['tenant_id']} ({t['fhir_version']})" for t in facts['demo_tenants'])}
  Consumer portal: {facts['portal_url']}   (invitation code: {facts['demo_invitation']})
  Instances:       {', '.join(facts['instance_urls'])}
  Operator CLI:    .venv/bin/python -m gatewayctl --help   (reads .local/stack.json)
  Facts as JSON:   .local/stack.json

Walkthrough (the Patients app's first steps):
  curl -s {base}/metadata
  TOKEN=$(curl -s -X POST {facts['token_url']} \\
      -d grant_type=client_credentials -d client_id={facts['demo_client_id']} \\
      --data-urlencode 'client_secret={facts['demo_client_secret']}' -d scope={tenant['tenant_id']} \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" '{base}/Patient?_count=2'
"""


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the FHIR gateway's whole local stack on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=7071, help="gateway port (0 = any free port)")
    parser.add_argument("--state-dir", default=str(ROOT / ".local"))
    parser.add_argument("--instances", type=int, default=1,
                        help="gateway processes sharing Azurite and the vault, behind a round-robin front on --port")
    args = parser.parse_args()
    state = Path(args.state_dir)
    (state / "stack.json").unlink(missing_ok=True)
    stack = Stack(state, gateway_port=args.port if args.port and not port_open(args.port) else 0)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        facts = stack.start_all(instances=max(1, args.instances))
        staged = state / "stack.json.tmp"
        staged.write_text(json.dumps(facts, indent=2))
        staged.replace(state / "stack.json")
        print(walkthrough(facts), flush=True)
        while not stopping and all(p.popen.poll() is None for p in stack.processes.values()):
            time.sleep(0.5)
        dead = [p for p in stack.processes.values() if p.popen.poll() is not None]
        for proc in dead:
            print(proc.failure(), file=sys.stderr)
        return 1 if dead and not stopping else 0
    finally:
        (state / "stack.json").unlink(missing_ok=True)  # its URLs and secrets die with the stack
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
