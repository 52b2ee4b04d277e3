"""Shared fixtures: the real local stack (Azurite, Key Vault emulator, sample EHRs, gateway host).

One stack serves the whole session; tests that break parts on purpose start their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.stack import Stack

# Tests drive plain-http loopback EHRs and IdPs in-process too (the stack sets it for the gateway);
# tests of the production default pass an explicit shared.outbound.OutboundPolicy.
os.environ.setdefault("GATEWAY_ALLOW_LOOPBACK_HTTP", "1")
# The local host appends the socket peer (always 127.0.0.1 here) to X-Forwarded-For, as Azure's front
# end does; tests stand in for a trusted proxy one hop further out, so that hop is the source.
os.environ.setdefault("CLIENT_ADDRESS_TRUSTED_HOPS", "2")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: run after every other test of the session (log scans)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked run_last go to the end (stable order otherwise), so they see the whole session's logs."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"))
    try:
        running.start_all()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def facts(stack: Stack) -> dict[str, Any]:
    return stack.facts


@pytest.fixture(scope="session")
def gateway(facts: dict[str, Any]) -> str:
    return facts["gateway_base_url"]


@pytest.fixture()
def manage(stack: Stack):
    """Call the management API with the stack's function key: manage("POST", "/clients", json=...)."""
    return stack.manage


def get_token(facts: dict[str, Any], tenant_id: str, client_id: str | None = None,
              secret: str | None = None) -> str:
    response = requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_id": client_id or facts["demo_client_id"],
        "client_secret": secret or facts["demo_client_secret"], "scope": tenant_id}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]
