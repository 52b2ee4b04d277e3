"""Small helpers the specification tests share: real HTTP calls to a running stack, and error-shape checks.

Every client secret and access token a test obtains goes through `remember`, so the log hygiene
test (tests/test_health_and_hygiene.py, which runs last) can prove none of them was ever logged.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from devtools.stack import Stack

TIMEOUT = 30
# What a Python traceback or a leaked exception would put into a response body.
_STACK_TRACE_MARKERS = ("Traceback", 'File "', ".py\"", "site-packages", "shared/")

SENSITIVE: set[str] = set()


def remember(value: str) -> str:
    """Record a client secret or access token; the hygiene test scans every log for it."""
    SENSITIVE.add(value)
    return value


def new_tenant_id() -> str:
    return str(uuid.uuid4())


# --- management API -------------------------------------------------------------------------------

Manage = Callable[..., requests.Response]


def create_client(manage: Manage, name: str = "Specification test client", **body: Any) -> dict[str, Any]:
    response = manage("POST", "/clients", json={"name": name, **body})
    assert response.status_code == 201, response.text
    created = response.json()
    remember(created["client_secret"])
    return created


def add_secret(manage: Manage, client_id: str, **body: Any) -> dict[str, Any]:
    response = manage("POST", f"/clients/{client_id}/secrets", json=body)
    assert response.status_code == 201, response.text
    added = response.json()
    remember(added["client_secret"])
    return added


def route_body(provider_base_url: str, allowed_clients: list[str], fhir_version: str = "stu3",
               **extra: Any) -> dict[str, Any]:
    return {"display_name": "Specification test hospital", "provider_base_url": provider_base_url,
            "fhir_version": fhir_version, "upstream_auth": {"kind": "none"}, "allowed_clients": allowed_clients,
            "enabled": True, **extra}


def put_tenant(manage: Manage, tenant_id: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return manage("PUT", f"/tenants/{tenant_id}", json=body, headers=headers)


def onboard(manage: Manage, provider_base_url: str, allowed_clients: list[str],
            fhir_version: str = "stu3") -> str:
    """A fresh tenant routed to the given provider; returns its id."""
    tenant_id = new_tenant_id()
    response = put_tenant(manage, tenant_id, route_body(provider_base_url, allowed_clients, fhir_version))
    assert response.status_code == 201, response.text
    return tenant_id


# --- the token endpoint ---------------------------------------------------------------------------

def basic(client_id: str, secret: str, *, encode_every_tilde: bool = False) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    user, password = quote(client_id, safe=""), quote(secret, safe="")
    if encode_every_tilde:
        password = password.replace("~", "%7E")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_token(token_url: str, form: dict[str, str] | list[tuple[str, str]] | str | bytes | None = None,
                  headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.post(token_url, data=form, headers=headers or {}, timeout=TIMEOUT)
    if response.status_code == 200:
        remember(response.json()["access_token"])
    return response


def client_credentials(token_url: str, client_id: str, secret: str, tenant_id: str,
                       headers: dict[str, str] | None = None) -> requests.Response:
    return request_token(token_url, {"grant_type": "client_credentials", "client_id": client_id,
                                     "client_secret": secret, "scope": tenant_id}, headers)


def access_token(token_url: str, client_id: str, secret: str, tenant_id: str) -> str:
    response = client_credentials(token_url, client_id, secret, tenant_id)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


# --- error shapes ---------------------------------------------------------------------------------

def assert_no_stack_trace(text: str) -> None:
    for marker in _STACK_TRACE_MARKERS:
        assert marker not in text, f"error body leaks internals ({marker!r}): {text}"


def assert_oauth_error(response: requests.Response, error: str, status: int = 400) -> dict[str, Any]:
    """RFC 6749 §5.2: JSON with `error` (and optional description/uri), never cached, no internals."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    body = response.json()
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert_no_stack_trace(response.text)
    return body


def assert_problem(response: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """RFC 9457 problem document; `field` is the input it must name."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not None:
        assert [e["field"] for e in body.get("errors", [])] == [field], body
    assert_no_stack_trace(response.text)
    return body


def assert_operation_outcome(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].split(";")[0] in ("application/fhir+json", "application/json+fhir")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal"), body
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    assert_no_stack_trace(response.text)
    return body


# --- polling and extra stacks ---------------------------------------------------------------------

def eventually(check: Callable[[], bool], within: float, interval: float = 0.2) -> bool:
    """True as soon as `check()` is; False if it never is within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def new_stack(state_dir: Path, **extra_env: str) -> Stack:
    """A Stack whose identity header cannot start with '-': Stack.start_keyvault passes a random
    token_urlsafe value as a separate argv item, which argparse reads as an option 1 time in 64."""
    stack = Stack(state_dir, extra_env=extra_env)
    stack.facts["identity_header"] = secrets.token_hex(16)
    return stack


def start_stack(state_dir: Path, *, ehr_versions: tuple[str, ...] = (), **extra_env: str) -> Stack:
    """A stack of its own (Azurite, Key Vault emulator, optional sample EHRs, gateway) for tests that
    change settings or break parts on purpose; the caller stops it."""
    stack = new_stack(state_dir, **extra_env)
    try:
        stack.start_azurite()
        stack.start_keyvault()
        providers = {v: stack.start_ehr(v)["base_url"] for v in ehr_versions}
        base = stack.start_gateway()
    except BaseException:
        stack.stop()
        raise
    stack.facts.update({"gateway_base_url": base, "token_url": f"{base}/api/oauth2/token",
                        "fhir_base_urls": {v: f"{base}/api/fhir/{v}" for v in ("stu3", "dstu2", "r4")},
                        "provider_base_urls": providers})
    return stack
