"""Helpers the reliability and security modules share (issue #7): stacks of their own, process
restarts on the same port, the gateway's thread count, provider request logs, token forging.

Everything here talks real HTTP to processes on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.stack import PYTHON, Stack
from tests.gateway_calls import TIMEOUT, access_token, create_client, onboard, remember

# --- processes ------------------------------------------------------------------------------------

def gateway_pid(stack: Stack) -> int:
    return stack.processes["gateway"].popen.pid


def thread_count(pid: int) -> int:
    """Threads of a live process, from /proc (Linux)."""
    return len(os.listdir(f"/proc/{pid}/task"))


def settle_threads(pid: int, ceiling: int, within: float = 5.0) -> int:
    """Waits until the process has at most `ceiling` threads; returns the last count seen."""
    deadline = time.monotonic() + within
    count = thread_count(pid)
    while count > ceiling and time.monotonic() < deadline:
        time.sleep(0.1)
        count = thread_count(pid)
    return count


def _port(url: str) -> str:
    return str(urlsplit(url).port)


def stop(stack: Stack, name: str) -> None:
    """Stops one part of the stack. Azurite gets SIGINT, the only signal on which it saves its data
    (SIGTERM ends it before its periodic save): to the gateway either is the same outage."""
    proc = stack.processes[name]
    if name == "azurite" and proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
    proc.stop()


def restart(stack: Stack, name: str) -> None:
    """Starts a stopped process again with the same arguments and the same ports, so every client
    (the gateway's SDK clients above all) finds it where it was; its log file continues."""
    old = stack.processes[name]
    args = [str(a) for a in old.popen.args]
    if "--ready-file" in args:
        index = args.index("--ready-file")
        del args[index:index + 2]
        ready_file = True
    else:
        ready_file = False
    if name == "keyvault":
        args[args.index("--port") + 1] = _port(old.ready["vault_url"])
        args[args.index("--identity-port") + 1] = _port(old.ready["identity_endpoint"])
    stop(stack, name)
    previous = dict(old.ready)
    proc = stack.spawn(name, args, ready_file=ready_file)
    if name == "azurite":
        port = int(previous["port"])
        deadline = time.monotonic() + 30
        while not _port_open(port):
            if time.monotonic() > deadline:
                raise RuntimeError(proc.failure())
            time.sleep(0.05)
        proc.ready = previous


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_faulty_provider(stack: Stack, *args: str) -> str:
    """The fault-injecting provider (devtools/faulty_provider.py) as a stack process; returns its root URL."""
    ready = stack.spawn("faulty-provider", [PYTHON, "-m", "devtools.faulty_provider", "--port", "0", *args]).ready
    return ready["base_url"]


# --- a client with tenants --------------------------------------------------------------------------

class Consumer:
    """One registered client of a stack, with helpers to onboard tenants and get tokens."""

    def __init__(self, stack: Stack, name: str = "Reliability test client") -> None:
        self.stack = stack
        created = create_client(stack.manage, name)
        self.client_id: str = created["client_id"]
        self.secret: str = created["client_secret"]
        self.secret_id: str = created["secret"]["secret_id"]

    @property
    def token_url(self) -> str:
        return self.stack.facts["token_url"]

    def onboard(self, provider_base: str, version: str = "stu3", also: tuple[str, ...] = ()) -> str:
        return onboard(self.stack.manage, provider_base, [self.client_id, *also], version)

    def token(self, tenant_id: str) -> str:
        return access_token(self.token_url, self.client_id, self.secret, tenant_id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read_one_patient(base: str, token: str) -> requests.Response:
    """A small STU3 search through the gateway at `base` (one instance, or the front)."""
    return requests.get(f"{base}/api/fhir/stu3/Patient", params={"_count": "1"}, headers=bearer(token),
                        timeout=TIMEOUT)


# --- provider request logs ---------------------------------------------------------------------------

def admin_url(provider_base: str) -> str:
    """`/_admin/requests` of a sample EHR (base .../fhir) or of the faulty provider (base .../<mode>/fhir)."""
    parts = urlsplit(provider_base)
    return f"{parts.scheme}://{parts.netloc}/_admin/requests"


def provider_log(provider_base: str) -> list[dict[str, Any]]:
    response = requests.get(admin_url(provider_base), timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def clear_provider_log(provider_base: str) -> None:
    requests.post(admin_url(provider_base) + "/clear", timeout=TIMEOUT).raise_for_status()


# --- tokens ----------------------------------------------------------------------------------------

def b64url(data: bytes | dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split_token(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def signing_keys_from_vault(stack: Stack) -> dict[str, ec.EllipticCurvePrivateKey]:
    """The gateway's signing keys (kid -> private key), read from the Key Vault emulator's state file:
    the tests forge tokens with the real key to prove each claim check on its own."""
    state = json.loads((stack.state / "keyvault" / "vault.json").read_text())
    keys: dict[str, ec.EllipticCurvePrivateKey] = {}
    for entry in state["secrets"].values():
        name = entry["name"]
        if name.startswith("signing-key-"):
            pem = entry["versions"][-1]["value"]
            key = serialization.load_pem_private_key(pem.encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            keys[name[len("signing-key-"):]] = key
    return keys


def remember_all(*values: str) -> None:
    for value in values:
        remember(value)


def log_files(stack: Stack) -> list[Path]:
    return sorted(p for p in (stack.state / "logs").rglob("*") if p.is_file())


def operator_vault(stack: Stack, act: Callable[[Any], object]) -> None:
    """`act` on the Key Vault an operator reaches out of band (`az keyvault secret ...`): the stack's
    emulator, with the managed identity its stack hands the gateway. The credential reads its
    environment when it asks for a token, so `act` runs inside; the environment is restored afterwards."""
    import pytest
    from azure.identity import ManagedIdentityCredential

    from shared.stores.keyvault import KeyVaultSecretStore

    vault = stack.processes["keyvault"].ready
    with pytest.MonkeyPatch.context() as env:
        for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "MSI_ENDPOINT", "MSI_SECRET"):
            env.delenv(variable, raising=False)
        env.setenv("IDENTITY_ENDPOINT", vault["identity_endpoint"])
        env.setenv("IDENTITY_HEADER", vault["identity_header"])
        act(KeyVaultSecretStore.connect(vault["vault_url"], ManagedIdentityCredential(), vault["ca_bundle"]))


def put_vault_secret(stack: Stack, name: str, value: str) -> None:
    """An operator's out-of-band `az keyvault secret set` (upstream credentials)."""
    operator_vault(stack, lambda store: store.set_secret(name, value))
