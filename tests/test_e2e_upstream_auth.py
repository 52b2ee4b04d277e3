"""How the gateway authenticates to providers, end to end: each kind against a sample EHR that demands it.

Credentials live only in the Key Vault emulator; the EHRs check what they receive (static bearer,
or tokens an OAuth server issued, verified by RFC 7662 introspection), and the OAuth server
checks the gateway's client secret or its SMART Backend Services assertion.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.identity import ManagedIdentityCredential
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.stack import Stack
from devtools.upstream_idp import UpstreamIdp
from shared.stores.keyvault import KeyVaultSecretStore
from tests.conftest import get_token

STATIC_TOKEN = "static-upstream-token-" + uuid.uuid4().hex
CC_SECRET = "cc-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def vault(stack: Stack) -> Iterator[KeyVaultSecretStore]:
    """The stack's Key Vault, reached as the gateway reaches it (managed-identity protocol)."""
    env = stack.gateway_env()
    saved = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield KeyVaultSecretStore.connect(env["KEY_VAULT_URL"], ManagedIdentityCredential(),
                                          env["KEY_VAULT_CA_BUNDLE"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def idp() -> Iterator[UpstreamIdp]:
    server = UpstreamIdp(port=0, token_lifetime=600).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def backend_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _onboard(stack: Stack, facts: dict[str, Any], provider: str, upstream_auth: dict) -> dict[str, str]:
    tenant = str(uuid.uuid4())
    body = {"provider_base_url": provider, "fhir_version": "stu3", "upstream_auth": upstream_auth,
            "allowed_clients": [facts["demo_client_id"]]}
    response = stack.manage("PUT", f"/tenants/{tenant}", json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {get_token(facts, tenant)}"}


@pytest.fixture(scope="module")
def providers(stack: Stack, idp: UpstreamIdp) -> dict[str, str]:
    return {
        "bearer": stack.start_ehr("stu3", ["--auth", f"bearer:{STATIC_TOKEN}"], name="ehr-bearer")["base_url"],
        "introspect": stack.start_ehr("stu3", ["--auth", f"introspect:{idp.introspection_url}"],
                                      name="ehr-introspect")["base_url"],
    }


def _search(facts: dict[str, Any], headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{facts['fhir_base_urls']['stu3']}/Patient", params={"_count": "1"}, headers=headers,
                        timeout=30)


def test_static_bearer_from_key_vault(stack: Stack, facts: dict[str, Any], providers: dict, vault) -> None:
    vault.set_secret("upstream-e2e-ehr-bearer", STATIC_TOKEN)
    headers = _onboard(stack, facts, providers["bearer"], {"kind": "bearer", "secret_name": "upstream-e2e-ehr-bearer"})
    response = _search(facts, headers)
    assert response.status_code == 200, response.text
    assert response.json()["total"] > 0


def test_a_wrong_upstream_credential_is_a_502_that_reveals_nothing(stack: Stack, facts: dict[str, Any],
                                                                  providers: dict, vault) -> None:
    vault.set_secret("upstream-e2e-ehr-bearer-wrong", "not-the-token")
    headers = _onboard(stack, facts, providers["bearer"],
                       {"kind": "bearer", "secret_name": "upstream-e2e-ehr-bearer-wrong"})
    response = _search(facts, headers)
    assert response.status_code == 502
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "not-the-token" not in response.text


def test_client_credentials_token_is_fetched_once_and_reused(stack: Stack, facts: dict[str, Any], providers: dict,
                                                             vault, idp: UpstreamIdp) -> None:
    idp.register_client("gateway-cc", CC_SECRET)
    vault.set_secret("upstream-e2e-cc-secret", CC_SECRET)
    config = {"kind": "client_credentials", "token_url": idp.token_url, "client_id": "gateway-cc",
              "secret_name": "upstream-e2e-cc-secret", "scope": "system/*.read"}
    headers = _onboard(stack, facts, providers["introspect"], config)
    before = idp.token_requests
    for _ in range(3):
        assert _search(facts, headers).status_code == 200
    assert idp.token_requests == before + 1


def test_an_upstream_401_refreshes_the_token_once_and_the_request_succeeds(
        stack: Stack, facts: dict[str, Any], providers: dict, vault, idp: UpstreamIdp) -> None:
    idp.register_client("gateway-cc2", CC_SECRET)
    vault.set_secret("upstream-e2e-cc2-secret", CC_SECRET)
    config = {"kind": "client_credentials", "token_url": idp.token_url, "client_id": "gateway-cc2",
              "secret_name": "upstream-e2e-cc2-secret"}
    headers = _onboard(stack, facts, providers["introspect"], config)
    assert _search(facts, headers).status_code == 200
    idp.revoke_tokens()
    time.sleep(5.5)  # the sample EHR caches introspection answers for 5 s
    before = idp.token_requests
    response = _search(facts, headers)
    assert response.status_code == 200, response.text
    assert idp.token_requests == before + 1


def test_smart_backend_services_assertion(stack: Stack, facts: dict[str, Any], providers: dict, vault,
                                          idp: UpstreamIdp, backend_key: rsa.RSAPrivateKey) -> None:
    public = backend_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    idp.register_backend_client("gateway-smart", public, kid="e2e-key-1")
    pem = backend_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    vault.set_secret("upstream-e2e-smart-key", pem)
    config = {"kind": "smart_backend", "token_url": idp.token_url, "client_id": "gateway-smart",
              "secret_name": "upstream-e2e-smart-key", "alg": "RS384", "kid": "e2e-key-1", "scope": "system/*.read"}
    headers = _onboard(stack, facts, providers["introspect"], config)
    response = _search(facts, headers)
    assert response.status_code == 200, response.text
    assert idp.last_client_auth == "private_key_jwt"
    assertion = idp.last_assertion
    assert assertion is not None
    assert assertion["header"]["kid"] == "e2e-key-1" and assertion["claims"]["iss"] == "gateway-smart"
