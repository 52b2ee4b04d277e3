"""`gatewayctl doctor`, run as a subprocess against the real local stack, as an operator would.

A healthy stack passes with every check timed; a tenant whose provider is down (a closed loopback
port) fails its Patient search and the command, while the other tenants still pass; a probe client
with a wrong secret fails its token checks; the probe client comes from flags, the environment or the
stack file, never mixed. Only HTTP: the doctor reads nothing of the gateway's own code or storage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("GATEWAY_MANAGE_", "GATEWAY_PROBE_")


def doctor(facts: dict[str, Any] | None, *args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """With `facts`, the management URL and key and the probe client come from the environment, as an
    operator would set them; without, only what `env` adds (and the stack file in `cwd`)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    environ["PYTHONPATH"] = str(ROOT)
    if facts is not None:
        environ |= {"GATEWAY_MANAGE_URL": facts["manage_url"], "GATEWAY_MANAGE_KEY": facts["manage_key"],
                    "GATEWAY_PROBE_CLIENT_ID": facts["demo_client_id"],
                    "GATEWAY_PROBE_CLIENT_SECRET": facts["demo_client_secret"]}
    return subprocess.run([sys.executable, "-m", "gatewayctl", "doctor", *args], capture_output=True, text=True,
                          cwd=cwd, env={**environ, **env}, timeout=120, check=False)


def report(result: subprocess.CompletedProcess) -> dict[str, Any]:
    return json.loads(result.stdout)


def rows(report_: dict[str, Any], check: str) -> dict[str, dict[str, Any]]:
    return {row["target"]: row for row in report_["checks"] if row["check"] == check}


def demo_tenant_args(facts: dict[str, Any]) -> list[str]:
    """--tenant for each demo tenant: other tests share the session's stack and leave tenants of their own."""
    return [arg for tenant in facts["demo_tenants"] for arg in ("--tenant", tenant["tenant_id"])]


def closed_port() -> int:
    """A loopback port nothing listens on: the provider of a hospital whose EHR is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def down_tenant(facts: dict[str, Any], manage: Any) -> Iterator[str]:
    """A tenant onboarded through the management API whose provider refuses connections; deleted after."""
    tenant_id = str(uuid.uuid4())
    created = manage("PUT", f"/tenants/{tenant_id}", json={
        "display_name": "Hospital with its EHR down", "provider_base_url": f"http://127.0.0.1:{closed_port()}/fhir",
        "fhir_version": "stu3", "upstream_auth": {"kind": "none"}, "allowed_clients": [facts["demo_client_id"]],
        "enabled": True})
    assert created.status_code == 201, created.text
    yield tenant_id
    assert manage("DELETE", f"/tenants/{tenant_id}").status_code == 204


def test_a_healthy_stack_passes_every_check_with_timings(facts: dict[str, Any]) -> None:
    result = doctor(facts, *demo_tenant_args(facts))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "TARGET", "RESULT", "MS", "DETAIL"]
    for tenant in facts["demo_tenants"]:
        search = [line for line in lines if line.startswith("patient-search") and tenant["tenant_id"] in line]
        assert len(search) == 1 and search[0].split()[2] == "ok", search
        assert float(search[0].split()[3]) > 0, "each search is timed"
        assert f"to the {tenant['fhir_version']} provider: Bundle" in search[0]
    assert lines[-1].endswith("0 failed, 0 skipped"), "every facade, the R4 one included (issue #16), answers"
    assert result.stderr == ""


def test_json_report_covers_discovery_keys_health_and_each_tenant(facts: dict[str, Any]) -> None:
    result = doctor(facts, "--json", *demo_tenant_args(facts))
    assert result.returncode == 0, result.stderr
    found = report(result)
    assert found["ok"] is True and found["gateway"] == facts["gateway_base_url"]
    metadata = rows(found, "metadata")
    assert {v: metadata[v]["result"] for v in metadata} == {"stu3": "ok", "dstu2": "ok", "r4": "ok"}
    assert facts["token_url"] in metadata["stu3"]["detail"], "the token URL the Patients app will use"
    assert {row["result"] for row in rows(found, "smart-configuration").values()} == {"ok"}
    assert len(rows(found, "smart-configuration")) == 3
    assert [row["result"] for row in rows(found, "jwks").values()] == ["ok"]
    assert [row["result"] for row in rows(found, "health").values()] == ["ok"]
    demo = {t["tenant_id"] for t in facts["demo_tenants"]}
    for check in ("token", "patient-search"):
        assert set(rows(found, check)) == demo
        assert all(row["result"] == "ok" and row["ms"] > 0 for row in rows(found, check).values())


def test_a_provider_that_is_down_fails_its_tenant_and_the_command(facts: dict[str, Any], down_tenant: str) -> None:
    healthy = facts["demo_tenants"][0]["tenant_id"]
    result = doctor(facts, "--json", "--tenant", down_tenant, "--tenant", healthy)
    assert result.returncode == 1, result.stdout + result.stderr
    found = report(result)
    assert found["ok"] is False
    assert rows(found, "token")[down_tenant]["result"] == "ok", "the gateway itself still issues tokens"
    failed = rows(found, "patient-search")[down_tenant]
    assert failed["result"] == "FAIL" and "HTTP 502" in failed["detail"], failed
    assert rows(found, "patient-search")[healthy]["result"] == "ok", "one hospital down does not fail the others"
    assert [row for row in found["checks"] if row["result"] == "FAIL"] == [failed]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"gatewayctl: error: 1 of {len(found['checks'])} checks failed: patient-search {down_tenant}"]
    table = doctor(facts, "--tenant", down_tenant)
    assert table.returncode == 1 and "Traceback" not in table.stderr
    assert any(line.startswith("patient-search") and "FAIL" in line for line in table.stdout.splitlines())


def test_a_wrong_probe_secret_fails_the_token_checks_and_skips_the_searches(facts: dict[str, Any]) -> None:
    tenant = facts["demo_tenants"][0]["tenant_id"]
    result = doctor(facts, "--json", "--tenant", tenant, GATEWAY_PROBE_CLIENT_SECRET="not-the-secret")
    assert result.returncode == 1
    found = report(result)
    assert rows(found, "token")[tenant]["result"] == "FAIL"
    assert "HTTP 401: invalid_client" in rows(found, "token")[tenant]["detail"]
    assert "not-the-secret" not in result.stdout + result.stderr, "the report never echoes a secret"
    assert rows(found, "patient-search") == {}, "no search without a token"
    unknown = str(uuid.uuid4())
    missing = report(doctor(facts, "--json", "--tenant", unknown))
    assert rows(missing, "tenants")[unknown] == {"check": "tenants", "target": unknown, "result": "FAIL", "ms": None,
                                                 "detail": "no such tenant"}


def test_probe_client_from_flags_environment_or_the_stack_file(facts: dict[str, Any], tmp_path: Path) -> None:
    tenant = ["--tenant", facts["demo_tenants"][0]["tenant_id"]]
    manage = {"GATEWAY_MANAGE_URL": facts["manage_url"], "GATEWAY_MANAGE_KEY": facts["manage_key"]}
    flags = ["--client-id", facts["demo_client_id"], "--client-secret", facts["demo_client_secret"]]
    assert doctor(None, *tenant, *flags, cwd=tmp_path, **manage).returncode == 0
    refused = doctor(None, *tenant, cwd=tmp_path, **manage)
    assert refused.returncode == 1 and refused.stderr.startswith("gatewayctl: error: no probe client")
    half = doctor(None, *tenant, cwd=tmp_path, GATEWAY_PROBE_CLIENT_ID=facts["demo_client_id"], **manage)
    assert half.returncode == 1 and "no probe client" in half.stderr, "an id without its secret is refused"
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.json").write_text(json.dumps({key: facts[key] for key in (
        "manage_url", "manage_key", "demo_client_id", "demo_client_secret")}))
    from_file = doctor(None, *tenant, cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
