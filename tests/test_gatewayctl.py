"""The operator CLI, run as `python -m gatewayctl` in a subprocess against the local stack.

Onboarding a tenant with the CLI alone (and getting a token for it), ETag concurrency surfaced as
one clear line, list/show/disable/remove, clients, invitations, signing-key rotation, where the
URL and key come from, and failures that exit non-zero with one line and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from portal_client import PortalUser, error_text

from shared.portal.handlers import INVITATION_FAILED

ROOT = Path(__file__).resolve().parents[1]
DEMO_NAME = "Demo hospital (STU3)"
STALE = "changed by someone else since you read it; run show and retry"
LEAVES = [["tenants", a] for a in ("add", "update", "list", "show", "disable", "remove")] + \
         [["clients", a] for a in ("list", "create", "set-jwks", "show", "disable")] + \
         [["invitations", a] for a in ("create", "list", "revoke")] + [["signing-key", "rotate"], ["doctor"]]


def ctl(facts: dict[str, Any] | None, *args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI; with `facts`, the URL and key come from the environment as an operator would set them."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_MANAGE_")}
    environ["PYTHONPATH"] = str(ROOT)
    if facts is not None:
        environ |= {"GATEWAY_MANAGE_URL": facts["manage_url"], "GATEWAY_MANAGE_KEY": facts["manage_key"]}
    return subprocess.run([sys.executable, "-m", "gatewayctl", *args], capture_output=True, text=True,
                          cwd=cwd, env={**environ, **env}, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 1 with exactly one line on stderr, naming the problem, and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gatewayctl: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def as_json(result: subprocess.CompletedProcess) -> Any:
    return json.loads(ok(result))


def token_response(facts: dict[str, Any], tenant_id: str, client_id: str | None = None,
                   secret: str | None = None) -> requests.Response:
    return requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_id": client_id or facts["demo_client_id"],
        "client_secret": secret or facts["demo_client_secret"], "scope": tenant_id}, timeout=30)


@pytest.fixture()
def tenant(facts: dict[str, Any]) -> str:
    """A tenant onboarded with the CLI alone, allowing the demo client."""
    tenant_id = str(uuid.uuid4())
    out = ok(ctl(facts, "tenants", "add", tenant_id, "--display-name", "CLI hospital", "--provider-base-url",
                 facts["provider_base_urls"]["stu3"], "--fhir-version", "stu3",
                 "--allow-client", facts["demo_client_id"]))
    assert f"added tenant {tenant_id}" in out
    return tenant_id


@pytest.mark.parametrize("command", [[], ["tenants"], ["clients"], ["invitations"], ["signing-key"], *LEAVES],
                         ids=lambda c: " ".join(c) or "gatewayctl")
def test_help_everywhere(command: list[str]) -> None:
    out = ok(ctl(None, *command, "--help"))
    assert out.startswith("usage: gatewayctl")


def test_a_tenant_onboarded_with_the_cli_alone_takes_traffic(facts: dict[str, Any], tenant: str) -> None:
    response = token_response(facts, tenant)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    patients = requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient?_count=1", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})
    assert patients.status_code == 200 and patients.json()["resourceType"] == "Bundle"
    table = ok(ctl(facts, "tenants", "list"))
    assert table.splitlines()[0].split() == ["TENANT", "ID", "NAME", "VERSION", "ENABLED", "CLIENTS", "PROVIDER"]
    assert any(tenant in line and "CLI hospital" in line for line in table.splitlines())
    listed = as_json(ctl(facts, "tenants", "list", "--json"))["tenants"]
    assert tenant in [t["tenant_id"] for t in listed]
    shown = as_json(ctl(facts, "--json", "tenants", "show", tenant))
    assert shown["allowed_clients"] == [facts["demo_client_id"]] and shown["etag"]
    failed(ctl(facts, "tenants", "add", tenant, "--provider-base-url", "https://fhir.example.org/stu3",
               "--fhir-version", "stu3"), "already exists")


def test_update_with_a_stale_etag_says_so_and_changes_nothing(facts: dict[str, Any], tenant: str) -> None:
    read = as_json(ctl(facts, "tenants", "show", tenant, "--json"))["etag"]
    updated = as_json(ctl(facts, "tenants", "update", tenant, "--display-name", "Renamed", "--json"))
    assert updated["display_name"] == "Renamed" and updated["etag"] != read
    failed(ctl(facts, "tenants", "update", tenant, "--display-name", "Lost update", "--if-match", read), STALE)
    assert as_json(ctl(facts, "tenants", "show", tenant, "--json"))["display_name"] == "Renamed"
    failed(ctl(facts, "tenants", "disable", tenant, "--if-match", read), STALE)
    failed(ctl(facts, "tenants", "update", tenant), "nothing to change")
    other = str(uuid.uuid4())
    changed = as_json(ctl(facts, "tenants", "update", tenant, "--allow-client", other, "--disallow-client",
                          facts["demo_client_id"], "--resource-types", "Patient,Observation", "--json"))
    assert changed["allowed_clients"] == [other] and changed["resource_types"] == ["Patient", "Observation"]
    assert changed["display_name"] == "Renamed", "options not given keep their values"


def test_disable_then_remove(facts: dict[str, Any], tenant: str) -> None:
    out = ok(ctl(facts, "tenants", "disable", tenant))
    assert f"disabled tenant {tenant}" in out and any(line.split() == ["enabled", "no"] for line in out.splitlines())
    assert token_response(facts, tenant).status_code == 400, "a disabled tenant gets no tokens"
    failed(ctl(facts, "tenants", "remove", tenant), "--yes")
    assert f"removed tenant {tenant}" in ok(ctl(facts, "tenants", "remove", tenant, "--yes"))
    failed(ctl(facts, "tenants", "show", tenant), f"tenant {tenant} not found")
    failed(ctl(facts, "tenants", "remove", tenant, "--yes"), "not found")


def test_clients_list_show_disable(facts: dict[str, Any], manage: Any, tenant: str) -> None:
    created = manage("POST", "/clients", json={"name": "CLI-managed client"}).json()
    client_id, secret = created["client_id"], created["client_secret"]
    ok(ctl(facts, "tenants", "update", tenant, "--allow-client", client_id))
    assert token_response(facts, tenant, client_id, secret).status_code == 200
    assert any(client_id in line and "CLI-managed client" in line
               for line in ok(ctl(facts, "clients", "list")).splitlines())
    shown = ok(ctl(facts, "clients", "show", client_id))
    assert client_id in shown and secret.split("~")[0] in shown and secret not in shown
    assert as_json(ctl(facts, "clients", "show", client_id, "--json"))["secrets"][0]["secret_id"] == \
        secret.split("~")[0]
    assert "disabled client" in ok(ctl(facts, "clients", "disable", client_id))
    assert as_json(ctl(facts, "clients", "show", client_id, "--json"))["status"] == "disabled"
    assert token_response(facts, tenant, client_id, secret).status_code in (400, 401)
    failed(ctl(facts, "clients", "show", str(uuid.uuid4())), "not found")


def test_clients_create_with_jwks_and_set_jwks(facts: dict[str, Any], tmp_path: Path) -> None:
    """A JWK Set client gets no secret; set-jwks replaces the set; a private key is refused naming the field."""
    key = ec.generate_private_key(ec.SECP384R1())
    public = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "cli-1"}
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public]}))
    created = as_json(ctl(facts, "clients", "create", "CLI backend service", "--jwks", str(jwks_file), "--json"))
    assert "client_secret" not in created and created["jwks"]["keys"][0]["kid"] == "cli-1"
    jwks_file.write_text(json.dumps({"keys": [{**public, "kid": "cli-2"}]}))
    replaced = ok(ctl(facts, "clients", "set-jwks", created["client_id"], str(jwks_file)))
    assert "replaced the JWK Set" in replaced and "cli-2 (EC)" in replaced and "cli-1" not in replaced
    jwks_file.write_text(json.dumps({"keys": [{**ECAlgorithm.to_jwk(key, as_dict=True), "kid": "leak"}]}))
    failed(ctl(facts, "clients", "set-jwks", created["client_id"], str(jwks_file)), "jwks.keys[0].d: private key")
    failed(ctl(facts, "clients", "create", "x", "--jwks", str(tmp_path / "missing.json")), "cannot read")
    published = as_json(ctl(facts, "clients", "create", "CLI publisher", "--jwks-uri",
                            "https://keys.example.org/jwks.json", "--json"))
    assert published["jwks_uri"] == "https://keys.example.org/jwks.json" and "client_secret" not in published
    failed(ctl(facts, "clients", "create", "x", "--jwks-uri", "http://keys.example.org/jwks"),
           "jwks_uri must use https")
    with_secret = ok(ctl(facts, "clients", "create", "CLI secret client"))
    assert "shown once" in with_secret and "client_secret" in with_secret


def test_invitations_create_list_revoke(facts: dict[str, Any]) -> None:
    out = ok(ctl(facts, "invitations", "create", "--note", "for Fabrikam", "--expires-in-hours", "2"))
    code = out.splitlines()[0].rsplit(" ", 1)[1]
    invitation_id = code.split(".")[0]
    assert "shown once" in out.splitlines()[0]
    listing = ok(ctl(facts, "invitations", "list"))
    assert code not in listing
    assert any(invitation_id in line and "pending" in line and "for Fabrikam" in line
               for line in listing.splitlines())
    assert f"revoked invitation {invitation_id}" in ok(ctl(facts, "invitations", "revoke", invitation_id))
    statuses = {i["invitation_id"]: i["status"] for i in as_json(ctl(facts, "invitations", "list", "--json"))[
        "invitations"]}
    assert statuses[invitation_id] == "revoked"
    refused = PortalUser(facts["portal_url"]).register(code)
    assert refused.status_code == 400 and error_text(refused.text) == INVITATION_FAILED
    failed(ctl(facts, "invitations", "revoke", "0000000000000000"), "not found")
    created = as_json(ctl(facts, "invitations", "create", "--json"))
    assert set(created) >= {"code", "invitation_id", "expires", "status"}
    failed(ctl(facts, "invitations", "create", "--expires-in-hours", "0"), "expires_in_hours")


def test_signing_key_rotate(facts: dict[str, Any]) -> None:
    key = as_json(ctl(facts, "signing-key", "rotate", "--json"))
    jwks = requests.get(f"{facts['gateway_base_url']}/api/oauth2/jwks", timeout=30).json()
    assert key["kid"] in [k["kid"] for k in jwks["keys"]]
    assert "new signing key" in ok(ctl(facts, "signing-key", "rotate"))


def test_url_and_key_from_flags_environment_or_the_stack_file(facts: dict[str, Any], tmp_path: Path) -> None:
    flags = ["--url", facts["manage_url"], "--key", facts["manage_key"]]
    ok(ctl(None, *flags, "tenants", "list"))
    ok(ctl(facts, "tenants", "list", "--key", facts["manage_key"], GATEWAY_MANAGE_KEY="wrong"))
    failed(ctl(None, "tenants", "list", cwd=tmp_path), "no management URL")
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.json").write_text(json.dumps(
        {"manage_url": facts["manage_url"], "manage_key": facts["manage_key"]}))
    assert DEMO_NAME in ok(ctl(None, "tenants", "list", cwd=tmp_path))
    failed(ctl(None, "tenants", "list", cwd=tmp_path, GATEWAY_MANAGE_URL=facts["manage_url"]),
           "no management key")


def test_failures_exit_nonzero_with_one_line(facts: dict[str, Any]) -> None:
    failed(ctl(facts, "tenants", "list", GATEWAY_MANAGE_KEY="wrong"), "refused the key (HTTP 401)")
    failed(ctl(facts, "tenants", "list", GATEWAY_MANAGE_URL="http://127.0.0.1:9/api/manage"), "cannot reach")
    failed(ctl(facts, "tenants", "add", "not-a-guid", "--provider-base-url", "https://fhir.example.org/stu3",
               "--fhir-version", "stu3"), "tenant_id must be a GUID")
    failed(ctl(facts, "tenants", "add", str(uuid.uuid4()), "--provider-base-url", "http://fhir.example.org",
               "--fhir-version", "stu3"), "https")
    failed(ctl(facts, "tenants", "add", str(uuid.uuid4()), "--provider-base-url", "https://fhir.example.org",
               "--fhir-version", "stu3", "--upstream-auth", "{nope"), "--upstream-auth is not valid JSON")
    usage = ctl(facts, "tenants", "frobnicate")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
