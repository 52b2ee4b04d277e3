"""Health reporting, failing closed when an Azure part is down, and log hygiene.

`/api/health` names each Azure part the gateway depends on and whether it answers (names only).
With Table Storage or Key Vault down, the token endpoint answers RFC 6749 error JSON with 503
`temporarily_unavailable` and discovery keeps working. Finally, after everything else in the
session has run, no client secret or access token the suite obtained appears in any log file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import (
    SENSITIVE,
    TIMEOUT,
    access_token,
    add_secret,
    assert_oauth_error,
    assert_problem,
    basic,
    client_credentials,
    create_client,
    onboard,
    request_token,
    start_stack,
)

COMPONENTS = {"azurite": "table_storage", "keyvault": "key_vault"}
CLIENT_SECRET_SHAPE = re.compile(r"[0-9a-f]{16}~[A-Za-z0-9_-]{43}")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}")


def health(base: str) -> requests.Response:
    return requests.get(f"{base}/api/health", timeout=TIMEOUT)


def test_health_reports_every_part_ok(gateway: str) -> None:
    response = health(gateway)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "components": {"table_storage": "ok", "key_vault": "ok"}}
    assert "no-store" in response.headers["Cache-Control"]
    assert "127.0.0.1" not in response.text and "http" not in response.text, "names only, no endpoints"


@pytest.fixture(scope="module", params=["azurite", "keyvault"], ids=["table-storage-down", "key-vault-down"])
def broken(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Stack, str, dict[str, Any], str]]:
    """A stack of its own with a client and a tenant, then one Azure part stopped."""
    stack = start_stack(tmp_path_factory.mktemp(f"{request.param}-down"))
    try:
        client = create_client(stack.manage, "Client of a broken stack")
        tenant = onboard(stack.manage, "https://fhir.example.org/stu3", [client["client_id"]])
        stack.processes[request.param].stop()
        yield stack, request.param, client, tenant
    finally:
        stack.stop()


def test_health_names_the_part_that_is_down_503(broken: tuple[Stack, str, dict[str, Any], str]) -> None:
    stack, stopped, _, _ = broken
    response = health(stack.facts["gateway_base_url"])
    assert response.status_code == 503, response.text
    expected = {name: ("unavailable" if part == stopped else "ok") for part, name in COMPONENTS.items()}
    assert response.json() == {"status": "degraded", "components": expected}


def test_token_requests_fail_closed_with_503_temporarily_unavailable(
        broken: tuple[Stack, str, dict[str, Any], str]) -> None:
    stack, _, client, tenant = broken
    response = client_credentials(stack.facts["token_url"], client["client_id"], client["client_secret"], tenant)
    assert_oauth_error(response, "temporarily_unavailable", 503)
    assert response.headers.get("Retry-After")


def test_management_fails_closed_with_a_503_problem(broken: tuple[Stack, str, dict[str, Any], str]) -> None:
    stack, stopped, _, _ = broken
    # Listing a client's secrets reads only Table Storage now (verifier rows); a key rotation needs the vault.
    reads = {"azurite": ("GET", "/tenants"), "keyvault": ("POST", "/signing-keys/rotate")}
    method, path = reads[stopped]
    assert_problem(stack.manage(method, path), 503)


def test_discovery_keeps_working_while_a_part_is_down_AUTH_4(broken: tuple[Stack, str, dict[str, Any], str]) -> None:
    stack, _, _, _ = broken
    for version in ("stu3", "dstu2"):
        response = requests.get(f"{stack.facts['fhir_base_urls'][version]}/metadata", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        assert "oauth2/token" in response.text


# --- log hygiene (runs after every other test of the session) -----------------------------------------

def exercise_every_secret_path(stack: Stack, facts: dict[str, Any]) -> None:
    """Secrets and tokens through every path that could log them, including the wrong ones."""
    client = create_client(stack.manage, "Log hygiene client")
    cid, secret = client["client_id"], client["client_secret"]
    tenant = onboard(stack.manage, facts["provider_base_urls"]["stu3"], [cid])
    second = add_secret(stack.manage, cid)["client_secret"]
    token = access_token(facts["token_url"], cid, secret, tenant)
    request_token(facts["token_url"], {"grant_type": "client_credentials", "scope": tenant},
                  {"Authorization": basic(cid, second)})
    request_token(facts["token_url"], {"grant_type": "client_credentials", "client_id": cid,
                                       "client_secret": secret[:-1] + "A", "scope": tenant})
    request_token(facts["token_url"], {"grant_type": "password", "client_id": cid, "client_secret": secret})
    requests.post(f"{facts['token_url']}?client_secret={secret}", data={"grant_type": "client_credentials"},
                  timeout=TIMEOUT)
    requests.post(facts["token_url"], json={"client_id": cid, "client_secret": secret}, timeout=TIMEOUT)
    base = facts["fhir_base_urls"]["stu3"]
    for presented in (token, token[:-4] + "AAAA"):
        requests.get(f"{base}/Patient", params={"_count": "1"}, headers={"Authorization": f"Bearer {presented}"},
                     timeout=TIMEOUT)
    requests.get(f"{base}/Patient", params={"access_token": token}, timeout=TIMEOUT)
    stack.manage("DELETE", f"/clients/{cid}/secrets/{client['secret']['secret_id']}")
    stack.manage("POST", f"/clients/{cid}/disable")
    requests.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


@pytest.mark.run_last
def test_no_client_secret_or_access_token_is_ever_logged(stack: Stack, facts: dict[str, Any],
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    exercise_every_secret_path(stack, facts)
    for process in stack.processes.values():
        process.log.flush()
    known = {*SENSITIVE, facts["demo_client_secret"]}
    for alias in ("gateway_calls", "tests.gateway_calls"):  # however a test module imported the helpers
        known |= getattr(sys.modules.get(alias), "SENSITIVE", set())
    assert len(known) > 5
    # every stack of this session: the shared one and the ones tests started for themselves
    logs = sorted({*stack.state.joinpath("logs").glob("*.log"),
                   *Path(tmp_path_factory.getbasetemp()).rglob("logs/*.log")})
    gateway_logs = [p for p in logs if p.name == "gateway.log"]
    assert stack.state / "logs" / "gateway.log" in gateway_logs
    assert "oauth_token" in (stack.state / "logs" / "gateway.log").read_text(errors="replace"), \
        "the scan must read the log the token endpoint writes to"
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        leaks += [f"{path}: a value the suite obtained ({value[:8]}...)" for value in known if value in text]
        if path in gateway_logs:
            leaks += [f"{path}: secret-shaped {m[:8]}..." for m in CLIENT_SECRET_SHAPE.findall(text)]
            leaks += [f"{path}: JWT-shaped {m[:12]}..." for m in JWT_SHAPE.findall(text)]
    assert not leaks, "\n".join(leaks)
