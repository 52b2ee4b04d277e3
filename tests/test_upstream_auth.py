"""Upstream authentication, end to end on loopback.

Token endpoints are a real OAuth server (devtools.upstream_idp) that checks what the gateway
sends; secrets come from the Key Vault emulator through the real KeyVaultSecretStore; the
azure_ad kind runs the real azure-identity credentials against the local managed identity
endpoint. Nothing here is mocked, so a pass means the wire protocol is right.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.identity import ManagedIdentityCredential
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtools.identity_endpoint import IdentityEndpoint
from devtools.keyvault_emulator import start_emulator
from devtools.upstream_idp import ASSERTION_TYPE, UpstreamIdp
from shared.edge import problem
from shared.errors import StoreUnavailable
from shared.outbound import OutboundPolicy
from shared.stores.keyvault import KeyVaultSecretStore
from shared.upstream_auth import (
    InvalidUpstreamAuth,
    UpstreamAuthenticator,
    UpstreamAuthError,
    default_credential,
    validate_upstream_auth,
)
from tests.fakes import Clock

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://fhir.example.org/r4"
SCOPE = "system/*.read"
MI_CLIENT_ID = "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b"
_AZURE_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
              "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "AZURE_USERNAME", "AZURE_PASSWORD",
              "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT")


class CountingStore:
    """The real Key Vault store, with its reads counted to prove the secret cache works."""

    def __init__(self, store: KeyVaultSecretStore) -> None:
        self.store, self.reads = store, 0

    def get_secret(self, name: str) -> Any:
        self.reads += 1
        return self.store.get_secret(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    handle = start_emulator(tmp_path_factory.mktemp("vault"))
    with pytest.MonkeyPatch.context() as env:
        # MSAL reads these on every token request, so they stay set for the module.
        for name in _AZURE_ENV:
            env.delenv(name, raising=False)
        env.setenv("IDENTITY_ENDPOINT", handle.identity_endpoint)
        env.setenv("IDENTITY_HEADER", handle.identity_header)
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture(scope="module")
def vault(emulator: Any) -> KeyVaultSecretStore:
    return KeyVaultSecretStore.connect(emulator.vault_url, ManagedIdentityCredential(), emulator.ca_bundle)


@pytest.fixture()
def store(vault: KeyVaultSecretStore) -> CountingStore:
    return CountingStore(vault)


@pytest.fixture()
def idp() -> Iterator[UpstreamIdp]:
    with UpstreamIdp() as server:
        yield server


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def make(store: CountingStore, clock: Clock) -> Callable[..., UpstreamAuthenticator]:
    def build(**kwargs: Any) -> UpstreamAuthenticator:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("timeout", (2.0, 5.0))
        return UpstreamAuthenticator(store, **kwargs)  # type: ignore[arg-type]
    return build


def secret(vault: KeyVaultSecretStore, value: str) -> str:
    """Stores `value` under a fresh name (the vault is shared by the module) and returns the name."""
    name = f"upstream-{uuid.uuid4().hex[:12]}"
    vault.set_secret(name, value)
    return name


def cc_config(idp: UpstreamIdp, name: str, client_id: str = "gateway", **extra: str) -> dict:
    return {"kind": "client_credentials", "token_url": idp.token_url, "client_id": client_id,
            "secret_name": name, "scope": SCOPE, **extra}


def bearer_token(header: str | None) -> str:
    assert header is not None and header.startswith("Bearer ")
    return header.removeprefix("Bearer ")


# --- validation -----------------------------------------------------------------------------------

CC = {"kind": "client_credentials", "token_url": "https://idp.example.org/token", "client_id": "gw",
      "secret_name": "upstream-gw-secret"}
SMART = {"kind": "smart_backend", "token_url": "https://idp.example.org/token", "client_id": "gw",
         "secret_name": "upstream-gw-key", "alg": "RS384", "kid": "k1", "scope": SCOPE}


@pytest.mark.parametrize(("config", "field"), [
    ("bearer", "upstream_auth"),
    ({}, "upstream_auth.kind"),
    ({"kind": 3}, "upstream_auth.kind"),
    ({"kind": "mtls"}, "upstream_auth.kind"),
    ({"kind": "none", "secret_name": "x"}, "upstream_auth.secret_name"),
    ({"kind": "bearer"}, "upstream_auth.secret_name"),
    ({"kind": "bearer", "secret_name": "ok", "token": "abc"}, "upstream_auth.token"),
    ({"kind": "bearer", "secret_name": "upstream-bad_name"}, "upstream_auth.secret_name"),
    ({"kind": "bearer", "secret_name": "upstream-" + "a" * 119}, "upstream_auth.secret_name"),
    ({"kind": "bearer", "secret_name": 5}, "upstream_auth.secret_name"),
    ({"kind": "bearer", "secret_name": "  "}, "upstream_auth.secret_name"),
    ({**CC, "client_secret": "hunter2"}, "upstream_auth.client_secret"),
    ({**CC, "secret": "hunter2"}, "upstream_auth.secret"),
    ({**CC, "token_url": "http://idp.example.org/token"}, "upstream_auth.token_url"),
    ({**CC, "token_url": "ftp://idp.example.org/token"}, "upstream_auth.token_url"),
    ({**CC, "token_url": "/token"}, "upstream_auth.token_url"),
    ({**CC, "token_url": "https://gw:pw@idp.example.org/token"}, "upstream_auth.token_url"),
    ({**CC, "token_url": "https://idp.example.org:99999/token"}, "upstream_auth.token_url"),
    ({**CC, "client_id": 42}, "upstream_auth.client_id"),
    ({**CC, "auth_method": "private_key_jwt"}, "upstream_auth.auth_method"),
    ({**CC, "scope": 'a"b'}, "upstream_auth.scope"),
    ({**CC, "scope": "a  b"}, "upstream_auth.scope"),
    ({**CC, "alg": "RS384"}, "upstream_auth.alg"),
    ({k: v for k, v in CC.items() if k != "token_url"}, "upstream_auth.token_url"),
    ({**SMART, "private_key": "-----BEGIN PRIVATE KEY-----"}, "upstream_auth.private_key"),
    ({**SMART, "alg": "RS256"}, "upstream_auth.alg"),
    ({**SMART, "alg": "HS384"}, "upstream_auth.alg"),
    ({k: v for k, v in SMART.items() if k != "kid"}, "upstream_auth.kid"),
    ({k: v for k, v in SMART.items() if k != "scope"}, "upstream_auth.scope"),
    ({**SMART, "auth_method": "client_secret_basic"}, "upstream_auth.auth_method"),
    ({"kind": "azure_ad", "client_id": "not-a-guid"}, "upstream_auth.client_id"),
    ({"kind": "azure_ad", "scope": "https://a.example/.default https://b.example/.default"},
     "upstream_auth.scope"),
    ({"kind": "azure_ad", "token_url": "https://idp.example.org/token"}, "upstream_auth.token_url"),
    ({"kind": "azure_ad", "secret_name": "x"}, "upstream_auth.secret_name"),
])
def test_invalid_configs_name_the_field(config: object, field: str) -> None:
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth(config, BASE)
    assert caught.value.field == field
    answer = problem(caught.value)
    assert answer is not None
    body = json.loads(answer.to_response().body)
    assert body["status"] == 400 and body["errors"][0]["field"] == field


def test_inline_credentials_are_pointed_to_key_vault() -> None:
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth({**CC, "client_secret": "hunter2"}, BASE)
    assert "Key Vault" in caught.value.message and "hunter2" not in caught.value.message


def test_azure_ad_scope_is_checked_against_the_provider_origin() -> None:
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth({"kind": "azure_ad"}, "fhir/r4")
    assert caught.value.field == "upstream_auth.scope"
    assert validate_upstream_auth({"kind": "azure_ad", "scope": "https://fhir.example.org/.default"}, BASE)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
def test_plain_http_token_url_is_allowed_for_loopback(host: str) -> None:
    config = {**CC, "token_url": f"http://{host}/token"}
    assert validate_upstream_auth(config, BASE)["token_url"] == config["token_url"]


def test_validation_normalises() -> None:
    raw = {**CC, "client_id": "  gw  "}
    assert validate_upstream_auth(raw, BASE) == {**CC, "client_id": "gw", "auth_method": "client_secret_basic"}
    assert raw["client_id"] == "  gw  "  # the input is not modified
    assert validate_upstream_auth({"kind": "none"}, BASE) == {"kind": "none"}
    assert validate_upstream_auth({"kind": "azure_ad", "client_id": MI_CLIENT_ID}, BASE) == {
        "kind": "azure_ad", "client_id": MI_CLIENT_ID}
    assert validate_upstream_auth(SMART, BASE) == SMART


# --- none and bearer ------------------------------------------------------------------------------


def test_kind_none_sends_no_authorization(make: Callable[..., UpstreamAuthenticator],
                                          store: CountingStore) -> None:
    assert make().authorization("t1", BASE, {"kind": "none"}) is None
    assert store.reads == 0


def test_bearer_comes_from_key_vault_and_is_cached_briefly(
        make: Callable[..., UpstreamAuthenticator], store: CountingStore, vault: KeyVaultSecretStore,
        clock: Clock) -> None:
    name = secret(vault, "static-token.v1\n")
    auth = make(secret_ttl=30)
    config = {"kind": "bearer", "secret_name": name}
    assert auth.authorization("t1", BASE, config) == "Bearer static-token.v1"
    assert auth.authorization("t1", BASE, config) == "Bearer static-token.v1"
    assert store.reads == 1
    vault.set_secret(name, "static-token.v2")
    clock.now += 31
    assert auth.authorization("t1", BASE, config) == "Bearer static-token.v2"
    assert store.reads == 2


def test_invalidate_rereads_a_rotated_bearer_secret(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore) -> None:
    name = secret(vault, "old-token")
    auth = make(secret_ttl=300)
    config = {"kind": "bearer", "secret_name": name}
    assert auth.authorization("t1", BASE, config) == "Bearer old-token"
    vault.set_secret(name, "new-token")
    auth.invalidate("t1")
    assert auth.authorization("t1", BASE, config) == "Bearer new-token"


@pytest.mark.parametrize("value", ["two words", "line\r\nX-Injected: 1"])
def test_a_stored_bearer_that_is_not_a_token_is_refused(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, value: str) -> None:
    name = secret(vault, value)
    with pytest.raises(UpstreamAuthError) as caught:
        make().authorization("t1", BASE, {"kind": "bearer", "secret_name": name})
    assert value not in caught.value.message


def test_missing_or_disabled_secret_is_an_upstream_auth_error(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore) -> None:
    auth = make()
    with pytest.raises(UpstreamAuthError, match="no credential stored"):
        auth.authorization("t1", BASE, {"kind": "bearer", "secret_name": "upstream-never-stored"})
    name = secret(vault, "disabled-token")
    vault.update_properties(name, enabled=False)
    with pytest.raises(UpstreamAuthError):
        auth.authorization("t2", BASE, {"kind": "bearer", "secret_name": name})


def test_key_vault_outage_propagates_as_store_unavailable(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, emulator: Any) -> None:
    name = secret(vault, "any-token")
    requests.post(f"{emulator.control_url}/faults", json={"status": 503, "count": 20}, timeout=5)
    try:
        with pytest.raises(StoreUnavailable):
            make().authorization("t1", BASE, {"kind": "bearer", "secret_name": name})
    finally:
        requests.post(f"{emulator.control_url}/faults", json={"status": 503, "count": 0}, timeout=5)


# --- client credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials(make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore,
                            idp: UpstreamIdp, method: str) -> None:
    client_secret = "s3cr:t+/ %x"  # characters RFC 6749 §2.3.1 makes us form-encode inside Basic
    idp.register_client("gateway:eu", client_secret, scopes=[SCOPE, "system/Patient.read"])
    config = cc_config(idp, secret(vault, client_secret), client_id="gateway:eu", auth_method=method)
    header = make().authorization("t1", BASE, config)
    assert idp.last_client_auth == method
    expected = {"grant_type": "client_credentials", "scope": SCOPE}
    if method == "client_secret_post":
        expected["client_id"] = "gateway:eu"
    assert idp.last_form == expected
    assert idp.introspect(bearer_token(header)) | {"exp": 0, "iat": 0} == {
        "active": True, "client_id": "gateway:eu", "scope": SCOPE, "token_type": "Bearer",
        "sub": "gateway:eu", "iss": idp.base_url, "exp": 0, "iat": 0}


def test_scope_is_optional(make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore,
                           idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw", scopes=["system/Observation.read"])
    config = {k: v for k, v in cc_config(idp, secret(vault, "pw")).items() if k != "scope"}
    header = make().authorization("t1", BASE, config)
    assert idp.last_form == {"grant_type": "client_credentials"}
    assert idp.introspect(bearer_token(header))["scope"] == "system/Observation.read"


@pytest.mark.parametrize(("lifetime", "margin"), [(100, 10.0), (3600, 60.0)])
def test_tokens_are_cached_until_shortly_before_expiry(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, idp: UpstreamIdp,
        clock: Clock, lifetime: int, margin: float) -> None:
    idp.register_client("gateway", "pw")
    idp.token_lifetime = lifetime
    auth, config = make(), cc_config(idp, secret(vault, "pw"))
    first = auth.authorization("t1", BASE, config)
    start = clock.now
    clock.now = start + lifetime - margin - 1
    assert auth.authorization("t1", BASE, config) == first
    assert idp.token_requests == 1
    clock.now = start + lifetime - margin + 1
    second = auth.authorization("t1", BASE, config)
    assert idp.token_requests == 2 and second != first


def test_invalidate_forces_a_new_token(make: Callable[..., UpstreamAuthenticator],
                                       vault: KeyVaultSecretStore, idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw")
    auth, config = make(), cc_config(idp, secret(vault, "pw"))
    first = auth.authorization("t1", BASE, config)
    other = auth.authorization("t2", BASE, config)
    auth.invalidate("t1")
    second = auth.authorization("t1", BASE, config)
    assert second != first and idp.token_requests == 3
    assert auth.authorization("t2", BASE, config) == other  # other tenants keep theirs
    auth.invalidate("t1", rejected=first)  # a late 401 for the old token keeps the newer one
    assert auth.authorization("t1", BASE, config) == second
    assert idp.token_requests == 3


def test_a_changed_config_gets_its_own_token(make: Callable[..., UpstreamAuthenticator],
                                             vault: KeyVaultSecretStore, idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw")
    auth, name = make(), secret(vault, "pw")
    first = auth.authorization("t1", BASE, cc_config(idp, name))
    second = auth.authorization("t1", BASE, cc_config(idp, name, scope="system/Patient.read"))
    assert first != second
    assert idp.introspect(bearer_token(second))["scope"] == "system/Patient.read"


def test_concurrent_callers_share_one_token_request(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw")
    idp.response_delay = 0.5
    auth, config = make(), cc_config(idp, secret(vault, "pw"))
    callers = 12
    barrier, results = threading.Barrier(callers), []

    def call() -> None:
        barrier.wait()
        results.append(auth.authorization("t1", BASE, config))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == callers and len(set(results)) == 1
    assert idp.token_requests == 1


def test_wrong_secret_reports_the_oauth_error_without_secrets(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "the-right-secret")
    auth = make()
    config = cc_config(idp, secret(vault, "a-wrong-secret"))
    with pytest.raises(UpstreamAuthError) as caught:
        auth.authorization("t1", BASE, config)
    error = caught.value
    assert error.oauth_error == "invalid_client" and error.status == 502
    assert error.message == "upstream token endpoint refused the gateway's credentials (invalid_client)"
    for leaked in ("a-wrong-secret", "the-right-secret", "client authentication failed"):
        assert leaked not in str(error) and leaked not in error.to_response().body.decode()


def test_a_failure_is_held_briefly_then_a_rotated_secret_is_picked_up(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, idp: UpstreamIdp,
        clock: Clock) -> None:
    idp.register_client("gateway", "rotated")
    name = secret(vault, "stale")
    auth, config = make(failure_hold=5, secret_ttl=300), cc_config(idp, name)
    for _ in range(3):
        with pytest.raises(UpstreamAuthError, match="invalid_client"):
            auth.authorization("t1", BASE, config)
    assert idp.token_requests == 1  # a failing provider is not hammered
    vault.set_secret(name, "rotated")
    clock.now += 6
    assert auth.authorization("t1", BASE, config)
    assert idp.token_requests == 2 and idp.last_client_auth == "client_secret_basic"


def test_invalid_scope_is_reported(make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore,
                                   idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw", scopes=["system/Patient.read"])
    with pytest.raises(UpstreamAuthError, match=r"refused the requested scope \(invalid_scope\)"):
        make().authorization("t1", BASE, cc_config(idp, secret(vault, "pw")))


def test_token_endpoint_timeout(make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore,
                                idp: UpstreamIdp) -> None:
    idp.register_client("gateway", "pw")
    idp.response_delay = 3
    auth, config = make(timeout=(1.0, 0.5)), cc_config(idp, secret(vault, "pw"))
    started = time.monotonic()
    with pytest.raises(UpstreamAuthError, match=r"did not answer within 0\.5 s"):
        auth.authorization("t1", BASE, config)
    assert time.monotonic() - started < 2


def test_unreachable_token_endpoint(make: Callable[..., UpstreamAuthenticator],
                                    vault: KeyVaultSecretStore) -> None:
    idp = UpstreamIdp().start()
    token_url = idp.token_url
    idp.stop()
    config = {"kind": "client_credentials", "token_url": token_url, "client_id": "gw",
              "secret_name": secret(vault, "pw")}
    with pytest.raises(UpstreamAuthError, match="could not be reached"):
        make().authorization("t1", BASE, config)


def test_a_hand_edited_config_is_refused_before_anything_is_sent(
        make: Callable[..., UpstreamAuthenticator], store: CountingStore) -> None:
    config = {**CC, "token_url": "http://idp.example.org/token"}
    with pytest.raises(UpstreamAuthError, match="misconfigured"):
        make().authorization("t1", BASE, config)
    assert store.reads == 0


# --- SMART backend services -----------------------------------------------------------------------


def _key_pair(alg: str) -> tuple[str, str]:
    private = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, str]]:
    return {alg: _key_pair(alg) for alg in ("RS384", "ES384")}


def smart_config(idp: UpstreamIdp, name: str, alg: str) -> dict:
    return {"kind": "smart_backend", "token_url": idp.token_url, "client_id": "gateway-backend",
            "secret_name": name, "alg": alg, "kid": f"key-{alg}", "scope": SCOPE}


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_assertion_is_verified_by_the_provider(
        make: Callable[..., UpstreamAuthenticator], vault: KeyVaultSecretStore, idp: UpstreamIdp,
        keys: dict[str, tuple[str, str]], alg: str) -> None:
    private_pem, public_pem = keys[alg]
    idp.register_backend_client("gateway-backend", public_pem, kid=f"key-{alg}", scopes=[SCOPE])
    auth, config = make(clock=time.time), smart_config(idp, secret(vault, private_pem), alg)
    header = auth.authorization("t1", BASE, config)
    assert idp.introspect(bearer_token(header))["client_id"] == "gateway-backend"
    assert idp.last_client_auth == "private_key_jwt"
    assert idp.last_form == {"grant_type": "client_credentials", "scope": SCOPE,
                             "client_assertion_type": ASSERTION_TYPE}
    first = idp.last_assertion
    assert first is not None
    assert first["header"] == {"alg": alg, "kid": f"key-{alg}", "typ": "JWT"}
    claims = first["claims"]
    assert claims["iss"] == claims["sub"] == "gateway-backend" and claims["aud"] == idp.token_url
    assert 0 < claims["exp"] - time.time() <= 300
    auth.invalidate("t1")
    assert auth.authorization("t1", BASE, config) != header  # the provider accepted a second assertion
    second = idp.last_assertion
    assert second is not None and second["claims"]["jti"] != claims["jti"]
    assert idp.token_requests == 2


def test_smart_backend_key_must_fit_alg(make: Callable[..., UpstreamAuthenticator],
                                        vault: KeyVaultSecretStore, idp: UpstreamIdp,
                                        keys: dict[str, tuple[str, str]]) -> None:
    config = smart_config(idp, secret(vault, keys["RS384"][0]), "ES384")
    with pytest.raises(UpstreamAuthError, match="does not fit alg ES384"):
        make().authorization("t1", BASE, config)
    config = smart_config(idp, secret(vault, "not a key"), "RS384")
    with pytest.raises(UpstreamAuthError, match="not an unencrypted PEM private key") as caught:
        make().authorization("t1", BASE, config)
    assert "not a key" not in caught.value.message
    assert idp.token_requests == 0


def test_smart_backend_refusal_is_reported(make: Callable[..., UpstreamAuthenticator],
                                           vault: KeyVaultSecretStore, idp: UpstreamIdp,
                                           keys: dict[str, tuple[str, str]]) -> None:
    idp.register_backend_client("gateway-backend", keys["ES384"][1], kid="another-kid")
    config = smart_config(idp, secret(vault, keys["ES384"][0]), "ES384")
    with pytest.raises(UpstreamAuthError, match=r"\(invalid_client\)"):
        make(clock=time.time).authorization("t1", BASE, config)


# --- the checking IdP really checks ---------------------------------------------------------------


def _assertion(idp: UpstreamIdp, private_pem: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": "backend", "sub": "backend", "aud": idp.token_url, "iat": now, "exp": now + 240,
              "jti": uuid.uuid4().hex, **overrides}
    return jwt.encode(claims, private_pem, algorithm="ES384", headers={"kid": "k1"})


def _post_assertion(idp: UpstreamIdp, assertion: str) -> requests.Response:
    return requests.post(idp.token_url, data={"grant_type": "client_credentials", "scope": SCOPE,
                                              "client_assertion_type": ASSERTION_TYPE,
                                              "client_assertion": assertion}, timeout=5)


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"aud": "https://elsewhere.example/token"}, "aud must be"),
    ({"sub": "someone-else"}, "sub must equal iss"),
    ({"exp": int(time.time()) + 3600}, "five minutes"),
    ({"exp": int(time.time()) - 600}, "expired"),
])
def test_idp_rejects_bad_assertions(idp: UpstreamIdp, keys: dict[str, tuple[str, str]],
                                    overrides: dict, fragment: str) -> None:
    idp.register_backend_client("backend", keys["ES384"][1], kid="k1")
    response = _post_assertion(idp, _assertion(idp, keys["ES384"][0], **overrides))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert fragment in response.json()["error_description"]


def test_idp_rejects_a_replayed_jti_and_a_foreign_signature(
        idp: UpstreamIdp, keys: dict[str, tuple[str, str]]) -> None:
    idp.register_backend_client("backend", keys["ES384"][1], kid="k1")
    assertion = _assertion(idp, keys["ES384"][0])
    assert _post_assertion(idp, assertion).status_code == 200
    replay = _post_assertion(idp, assertion)
    assert replay.status_code == 401 and "replayed" in replay.json()["error_description"]
    other_private, _ = _key_pair("ES384")
    assert _post_assertion(idp, _assertion(idp, other_private)).status_code == 401


def test_idp_rejects_two_client_authentication_methods(idp: UpstreamIdp) -> None:
    idp.register_client("gw", "pw")
    response = requests.post(idp.token_url, auth=("gw", "pw"), timeout=5, data={
        "grant_type": "client_credentials", "client_id": "gw", "client_secret": "pw"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("data", "auth", "status", "error"), [
    ({"grant_type": "client_credentials"}, ("gw", "bad"), 401, "invalid_client"),
    ({"grant_type": "password"}, ("gw", "pw"), 400, "unsupported_grant_type"),
    ({"scope": SCOPE}, ("gw", "pw"), 400, "invalid_request"),
    ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
    ([("grant_type", "client_credentials"), ("grant_type", "client_credentials")], ("gw", "pw"), 400,
     "invalid_request"),
])
def test_idp_error_responses(idp: UpstreamIdp, data: Any, auth: tuple[str, str] | None, status: int,
                             error: str) -> None:
    idp.register_client("gw", "pw")
    response = requests.post(idp.token_url, data=data, auth=auth, timeout=5)
    assert (response.status_code, response.json()["error"]) == (status, error)
    if auth is not None and status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_introspection_endpoint(idp: UpstreamIdp) -> None:
    idp.register_client("gw", "pw")
    idp.token_lifetime = 1
    token = requests.post(idp.token_url, auth=("gw", "pw"), data={"grant_type": "client_credentials"},
                          timeout=5).json()["access_token"]
    answer = requests.post(idp.introspection_url, data={"token": token}, timeout=5).json()
    assert answer["active"] is True and answer["client_id"] == "gw"
    assert requests.post(idp.introspection_url, data={"token": "forged"}, timeout=5).json() == {"active": False}
    time.sleep(1.1)
    assert requests.post(idp.introspection_url, data={"token": token}, timeout=5).json() == {"active": False}
    assert requests.post(idp.introspection_url, data={}, timeout=5).status_code == 400


def test_idp_cli_for_the_dev_stack(tmp_path: Path, make: Callable[..., UpstreamAuthenticator],
                                   vault: KeyVaultSecretStore, keys: dict[str, tuple[str, str]]) -> None:
    config_file, ready_file = tmp_path / "idp.json", tmp_path / "idp.ready.json"
    config_file.write_text(json.dumps({"token_lifetime": 600, "clients": [
        {"client_id": "gw", "secret": "pw", "scopes": [SCOPE]}], "backend_clients": [
        {"client_id": "gateway-backend", "kid": "key-RS384", "public_key": keys["RS384"][1]}]}))
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.upstream_idp", "--port", "0", "--ready-file", str(ready_file),
         "--config", str(config_file)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the IdP did not become ready"
            time.sleep(0.05)
        ready = json.loads(ready_file.read_text())
        assert ready["pid"] == process.pid
        auth = make(clock=time.time)
        config = {"kind": "client_credentials", "token_url": ready["token_url"], "client_id": "gw",
                  "secret_name": secret(vault, "pw"), "scope": SCOPE}
        token = bearer_token(auth.authorization("t1", BASE, config))
        introspected = requests.post(ready["introspection_url"], data={"token": token}, timeout=5).json()
        assert introspected["active"] is True and introspected["exp"] - time.time() <= 600
        smart = {"kind": "smart_backend", "token_url": ready["token_url"], "client_id": "gateway-backend",
                 "secret_name": secret(vault, keys["RS384"][0]), "alg": "RS384", "kid": "key-RS384",
                 "scope": SCOPE}
        assert auth.authorization("t2", BASE, smart)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr.decode()
    assert b"pw" not in stderr.replace(b"pwd", b"")


# --- Azure AD (managed identity) ------------------------------------------------------------------


@pytest.fixture()
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    """A managed identity endpoint of its own; Key Vault is not used while it is in place."""
    with IdentityEndpoint() as endpoint:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
        monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
        yield endpoint


@pytest.mark.parametrize("client_id", [MI_CLIENT_ID, None])
def test_azure_ad_uses_azure_identity(make: Callable[..., UpstreamAuthenticator], identity: IdentityEndpoint,
                                      client_id: str | None) -> None:
    built: list[str | None] = []

    def factory(selected: str | None) -> Any:
        built.append(selected)
        return default_credential(selected)

    auth = make(credential_factory=factory, clock=time.time)
    config = {"kind": "azure_ad", **({"client_id": client_id} if client_id else {})}
    base = "https://ws-fhir.fhir.azurehealthcareapis.com/"
    header = auth.authorization("t1", base, config)
    resource = "https://ws-fhir.fhir.azurehealthcareapis.com"
    assert identity.issued_requests == [(resource, client_id)]
    assert identity.validate(bearer_token(header), resource)
    assert auth.authorization("t1", base, config) == header
    assert auth.authorization("t2", base, config)  # another tenant, same identity
    assert built == [client_id]  # one credential object, reused


def test_azure_ad_explicit_scope(make: Callable[..., UpstreamAuthenticator], identity: IdentityEndpoint) -> None:
    """A scope other than the provider's own audience works once the operator allows it."""
    auth = make(clock=time.time, policy=OutboundPolicy(azure_ad_scopes_allowed=frozenset({"api://fhir-proxy/.default"})))
    header = auth.authorization("t1", BASE, {"kind": "azure_ad", "scope": "api://fhir-proxy/.default",
                                             "client_id": MI_CLIENT_ID})
    assert identity.issued_requests == [("api://fhir-proxy", MI_CLIENT_ID)]
    assert identity.validate(bearer_token(header), "api://fhir-proxy")


def test_azure_ad_failure_is_an_upstream_auth_error(make: Callable[..., UpstreamAuthenticator],
                                                    identity: IdentityEndpoint,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(UpstreamAuthError, match="Microsoft Entra ID did not issue"):
        make(clock=time.time).authorization("t1", BASE, {"kind": "azure_ad", "client_id": MI_CLIENT_ID})
    assert identity.issued_requests == []


# --- logs -----------------------------------------------------------------------------------------


def test_no_secret_or_token_reaches_the_logs(make: Callable[..., UpstreamAuthenticator],
                                             vault: KeyVaultSecretStore, idp: UpstreamIdp,
                                             keys: dict[str, tuple[str, str]],
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    idp.register_client("gateway", "log-secret-1")
    idp.register_backend_client("gateway-backend", keys["RS384"][1], kid="key-RS384")
    auth = make(clock=time.time)
    good = auth.authorization("t1", BASE, cc_config(idp, secret(vault, "log-secret-1")))
    with pytest.raises(UpstreamAuthError):
        auth.authorization("t2", BASE, cc_config(idp, secret(vault, "log-secret-2")))
    smart = auth.authorization("t3", BASE, smart_config(idp, secret(vault, keys["RS384"][0]), "RS384"))
    bearer = auth.authorization("t4", BASE, {"kind": "bearer", "secret_name": secret(vault, "log-bearer-3")})
    logged = caplog.text
    assert "upstream credential for tenant t1" in logged
    for value in ("log-secret-1", "log-secret-2", "log-bearer-3", bearer_token(good), bearer_token(smart),
                  bearer_token(bearer), "PRIVATE KEY", "eyJ"):
        assert value not in logged
