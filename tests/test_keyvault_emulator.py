"""The Key Vault emulator and identity endpoint, driven by the unmodified Azure SDK clients.

The emulator runs as a subprocess, the way the local stack runs it, so the CLI, the ready file
and clean shutdown are covered too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache

from devtools.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 20.0
PAGE_SIZE = 25


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    info: dict[str, str]
    data_dir: Path
    ready_file: Path
    stdout_path: Path

    @property
    def vault_port(self) -> int:
        return int(self.info["vault_url"].rsplit(":", 1)[1])

    @property
    def identity_port(self) -> int:
        return int(self.info["identity_endpoint"].split(":")[2].split("/")[0])

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, self.info["control_url"] + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()


def _spawn(data_dir: Path, *extra: str) -> Emulator:
    run_dir = data_dir.parent
    ready_file = run_dir / f"{data_dir.name}.ready.json"
    ready_file.unlink(missing_ok=True)
    stdout_path = run_dir / f"{data_dir.name}.{time.monotonic_ns()}.out"
    args = [sys.executable, "-m", "devtools.keyvault_emulator", "--data-dir", str(data_dir)]
    with stdout_path.open("wb") as out, stdout_path.with_suffix(".err").open("wb") as err:
        process = subprocess.Popen([*args, "--ready-file", str(ready_file), *extra], cwd=ROOT, stdout=out, stderr=err)
    try:
        info = _wait_ready(process, ready_file)
    except BaseException:
        _stop(process)
        raise
    return Emulator(process, info, data_dir, ready_file, stdout_path)


def _wait_ready(process: subprocess.Popen[bytes], ready_file: Path) -> dict[str, str]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode}")
        if ready_file.exists():
            return json.loads(ready_file.read_text())
        time.sleep(0.05)
    raise RuntimeError("emulator did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = _spawn(tmp_path_factory.mktemp("kv") / "data")
    try:
        yield running
    finally:
        _stop(running.process)


@pytest.fixture
def fresh_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """For tests that need a vault no client has talked to yet (the SDK caches challenges per host)."""
    running = _spawn(tmp_path / "data")
    try:
        yield running
    finally:
        _stop(running.process)


def _use_identity(monkeypatch: pytest.MonkeyPatch, info: dict[str, str]) -> None:
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", info["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", info["identity_header"])


def _client(info: dict[str, str], **kwargs: Any) -> SecretClient:
    """Exactly how application code is expected to build the client against the emulator."""
    return SecretClient(
        vault_url=info["vault_url"],
        credential=ManagedIdentityCredential(),
        connection_verify=info["ca_bundle"],
        **kwargs,
    )


@pytest.fixture
def client(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> SecretClient:
    _use_identity(monkeypatch, emulator.info)
    return _client(emulator.info)


@pytest.fixture
def no_faults(emulator: Emulator) -> Iterator[None]:
    try:
        yield
    finally:
        emulator.control("POST", "/faults", {"status": 503, "count": 0})


def _challenge(info: dict[str, str]) -> requests.Response:
    return requests.get(f"{info['vault_url']}/secrets?api-version=2026-04-01", verify=info["ca_bundle"], timeout=10)


def _challenge_resource(info: dict[str, str]) -> str:
    header = _challenge(info).headers["WWW-Authenticate"]
    return header.split('resource="', 1)[1].split('"', 1)[0]


def _raw_token(info: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    _use_identity(monkeypatch, info)
    return ManagedIdentityCredential().get_token(_challenge_resource(info) + "/.default").token


def _raw_get(info: dict[str, str], path: str, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(info["vault_url"] + path, headers=headers, verify=info["ca_bundle"], timeout=10)


# --------------------------------------------------------------------------- identity endpoint


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint().start()
    try:
        _use_identity(monkeypatch, {"identity_endpoint": endpoint.url, "identity_header": endpoint.header})
        yield endpoint
    finally:
        endpoint.stop()


def test_identity_endpoint_serves_managed_identity_credential(identity: IdentityEndpoint) -> None:
    token = ManagedIdentityCredential().get_token("https://fhir.example.org/.default")
    user_token = ManagedIdentityCredential(client_id="user-mi").get_token("https://other.example.org/.default")

    assert token.expires_on > time.time() + 3000
    assert identity.validate(token.token)
    assert identity.validate(token.token, "https://fhir.example.org")
    assert not identity.validate(token.token, "https://other.example.org")
    assert identity.validate(user_token.token, "https://other.example.org")
    assert not identity.validate("not-a-token")
    assert identity.issued_requests == [("https://fhir.example.org", None), ("https://other.example.org", "user-mi")]


def test_identity_endpoint_rejects_a_wrong_header(identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    raw = requests.get(
        identity.url,
        params={"api-version": "2019-08-01", "resource": "https://x.example.org"},
        headers={"X-IDENTITY-HEADER": "wrong"},
        timeout=10,
    )

    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token("https://x.example.org/.default")
    assert raw.status_code == 401
    assert raw.json()["statusCode"] == 401
    assert identity.issued_requests == []


def test_identity_resource_prefix_matches_only_at_path_boundaries(identity: IdentityEndpoint) -> None:
    token = identity.issue("https://host.example:8080")["access_token"]
    nested = identity.issue("https://host.example/api")["access_token"]

    assert not identity.validate(token, "https://host.example:80")
    assert identity.validate(token, "https://host.example:8080/")
    assert identity.validate(nested, "https://host.example")


def test_identity_grants_survive_a_restart_with_the_same_header(tmp_path: Path) -> None:
    grants = tmp_path / "identity.json"
    first = IdentityEndpoint(grants_path=grants).start()
    token = first.issue("https://vault.example")["access_token"]
    first.stop()

    second = IdentityEndpoint(header=first.header, grants_path=grants)

    assert second.validate(token, "https://vault.example")
    assert token not in grants.read_text()


# --------------------------------------------------------------------------- authentication


def test_challenge_then_success_with_default_resource_verification(
    fresh_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = fresh_emulator.info
    # The SDK caches challenges per host:port for the whole process; a reused ephemeral port
    # would otherwise skip the probe this test is about.
    http_challenge_cache.clear()
    raw = _challenge(info)
    _use_identity(monkeypatch, info)
    client = _client(info)  # verify_challenge_resource stays at its default, True

    client.set_secret("greeting", "hello")
    stats = fresh_emulator.control("GET", "/stats")

    assert raw.status_code == 401
    assert raw.json()["error"]["code"] == "Unauthorized"
    assert raw.headers["WWW-Authenticate"] == (
        'Bearer authorization="https://login.microsoftonline.com/7e57da7a-0000-4000-8000-00000000c0de", '
        f'resource="https://0.0.1:{fresh_emulator.vault_port}"'
    )
    assert client.get_secret("greeting").value == "hello"
    assert stats["statuses"] == {"401": 2, "200": 1}  # ours, then the SDK's bodiless probe


def test_unknown_or_foreign_tokens_are_rejected(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    info = emulator.info
    _use_identity(monkeypatch, info)
    foreign = ManagedIdentityCredential().get_token("https://vault.azure.net/.default").token

    class StaticCredential:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("forged", int(time.time()) + 3600)

    unknown = _raw_get(info, "/secrets?api-version=2026-04-01", "forged")
    wrong_audience = _raw_get(info, "/secrets?api-version=2026-04-01", foreign)

    assert unknown.status_code == 401
    assert "WWW-Authenticate" in unknown.headers
    assert wrong_audience.status_code == 401
    forged_client = SecretClient(info["vault_url"], StaticCredential(), connection_verify=info["ca_bundle"])
    with pytest.raises(ClientAuthenticationError):
        forged_client.get_secret("anything")


def test_missing_api_version_is_bad_parameter(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _raw_token(emulator.info, monkeypatch)

    missing = _raw_get(emulator.info, "/secrets", token)
    present = _raw_get(emulator.info, "/secrets?api-version=2026-04-01", token)

    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "BadParameter"
    assert present.status_code == 200


# --------------------------------------------------------------------------- secrets


def test_set_get_and_versions(client: SecretClient) -> None:
    first = client.set_secret("db-password", "one", content_type="text/plain", tags={"owner": "ops"})
    second = client.set_secret("db-password", "two")

    latest = client.get_secret("db-password")
    old = client.get_secret("db-password", first.properties.version)
    versions = [p.version for p in client.list_properties_of_secret_versions("db-password")]

    assert (latest.value, latest.properties.version) == ("two", second.properties.version)
    assert old.value == "one"
    assert old.properties.content_type == "text/plain"
    assert old.properties.tags == {"owner": "ops"}
    assert old.properties.recovery_level == "Recoverable+Purgeable"
    assert old.properties.recoverable_days == 90
    assert old.properties.vault_url == client.vault_url
    assert versions == [first.properties.version, second.properties.version]
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("db-password", "0" * 32)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("never-set")


def test_names_are_validated_and_case_insensitive(client: SecretClient) -> None:
    client.set_secret("Mixed-Case", "v")

    assert client.get_secret("mixed-case").name == "Mixed-Case"
    with pytest.raises(HttpResponseError) as bad:
        client.set_secret("under_score", "v")
    assert bad.value.status_code == 400
    with pytest.raises(HttpResponseError):
        client.set_secret("x" * 128, "v")


def test_list_pages_through_more_than_a_page(client: SecretClient) -> None:
    names = {f"paged-{i:02d}" for i in range(PAGE_SIZE + 5)}
    for name in names:
        client.set_secret(name, "v")

    pages = [list(page) for page in client.list_properties_of_secrets().by_page()]
    small_pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=10).by_page()]
    listed = [p.name for page in pages for p in page]

    assert len(pages) >= 2
    assert len(pages[0]) == PAGE_SIZE
    assert names <= set(listed)
    assert len(listed) == len(set(listed))
    assert all(len(page) <= 10 for page in small_pages)
    assert [p.name for page in small_pages for p in page] == listed
    with pytest.raises(HttpResponseError) as too_big:
        list(client.list_properties_of_secrets(max_page_size=PAGE_SIZE + 1))
    assert too_big.value.status_code == 400


def test_update_enabled_and_expiry(client: SecretClient) -> None:
    client.set_secret("rotating", "v1")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)

    updated = client.update_secret_properties("rotating", enabled=False, expires_on=expires)
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("rotating")
    client.update_secret_properties("rotating", updated.version, enabled=True)

    assert updated.enabled is False
    assert updated.expires_on == expires
    assert disabled.value.status_code == 403
    assert disabled.value.error is not None
    assert disabled.value.error.code == "Forbidden"
    assert "SecretDisabled" in str(disabled.value)
    assert client.get_secret("rotating").value == "v1"


def test_expired_secret_is_still_returned_like_key_vault(client: SecretClient) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    client.set_secret("expired", "still-readable", expires_on=past)

    assert client.get_secret("expired").value == "still-readable"


def test_delete_is_soft_then_recover_and_purge(client: SecretClient) -> None:
    client.set_secret("temp", "keep-me")

    deleted = client.begin_delete_secret("temp").result()
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("temp")
    fetched = client.get_deleted_secret("temp")
    listed_deleted = {d.name for d in client.list_deleted_secrets()}
    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("temp", "reuse")
    client.begin_recover_deleted_secret("temp").wait()
    recovered = client.get_secret("temp").value
    client.begin_delete_secret("temp").wait()
    client.purge_deleted_secret("temp")

    assert deleted.recovery_id == f"{client.vault_url}/deletedsecrets/temp"
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
    assert fetched.name == "temp"
    assert "temp" in listed_deleted
    assert conflict.value.status_code == 409
    assert conflict.value.error is not None
    assert conflict.value.error.code == "Conflict"
    assert recovered == "keep-me"
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("temp")
    assert client.set_secret("temp", "fresh").value == "fresh"


# --------------------------------------------------------------------------- control API


@pytest.mark.usefixtures("no_faults")
def test_throttling_with_retry_after_is_retried(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_identity(monkeypatch, emulator.info)
    client = _client(emulator.info, retry_backoff_factor=0)  # any wait below comes from Retry-After
    client.set_secret("busy", "ok")
    emulator.control("POST", "/reset-stats")
    emulator.control("POST", "/faults", {"status": 429, "retry_after": 1, "count": 2})

    started = time.monotonic()
    value = client.get_secret("busy").value
    elapsed = time.monotonic() - started
    stats = emulator.control("GET", "/stats")

    assert value == "ok"
    assert elapsed >= 1.9
    assert stats["operations"] == {"get": 3}
    assert stats["statuses"] == {"429": 2, "200": 1}


@pytest.mark.usefixtures("no_faults")
def test_persistent_unavailability_surfaces(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_identity(monkeypatch, emulator.info)
    client = _client(emulator.info, retry_total=2, retry_backoff_factor=0)
    client.set_secret("flaky", "v")
    emulator.control("POST", "/reset-stats")
    armed = emulator.control("POST", "/faults", {"status": 503, "retry_after": None, "count": 50})

    with pytest.raises(HttpResponseError) as failure:
        client.get_secret("flaky")

    assert armed == {"status": 503, "retry_after": None, "remaining": 50}
    assert failure.value.status_code == 503
    assert failure.value.error is not None
    assert failure.value.error.code == "ServiceUnavailable"
    assert emulator.control("GET", "/stats")["operations"] == {"get": 3}
    assert emulator.control("GET", "/faults")["remaining"] == 47


def test_bad_fault_specs_are_rejected(emulator: Emulator) -> None:
    response = requests.post(emulator.info["control_url"] + "/faults", json={"status": 418}, timeout=10)

    assert response.status_code == 400
    assert emulator.control("GET", "/faults")["remaining"] == 0


def test_stats_count_requests_by_operation(emulator: Emulator, client: SecretClient) -> None:
    client.set_secret("counted", "v")
    emulator.control("POST", "/reset-stats")

    client.set_secret("counted", "v2")
    client.get_secret("counted")
    client.get_secret("counted")
    list(client.list_properties_of_secret_versions("counted"))
    client.update_secret_properties("counted", tags={"k": "v"})
    stats = emulator.control("GET", "/stats")
    reset = emulator.control("POST", "/reset-stats")

    assert stats["operations"] == {"set": 1, "get": 2, "list_versions": 1, "update": 1}
    assert stats["total"] == 5
    assert reset["total"] == 0


# --------------------------------------------------------------------------- process lifecycle


def test_ready_line_matches_ready_file_but_keeps_the_identity_header_out_of_stdout(emulator: Emulator) -> None:
    printed = json.loads(emulator.stdout_path.read_text().splitlines()[0])

    assert printed == {k: v for k, v in emulator.info.items() if k != "identity_header"}
    assert emulator.info["identity_header"] not in emulator.stdout_path.read_text()
    assert set(printed) == {"vault_url", "identity_endpoint", "control_url", "ca_bundle"}
    assert printed["identity_endpoint"].endswith("/msi/token")
    assert Path(printed["ca_bundle"]) == emulator.data_dir.resolve() / "cert.pem"


def test_state_survives_a_restart(fresh_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    first = fresh_emulator
    _use_identity(monkeypatch, first.info)
    client = _client(first.info)
    client.set_secret("durable", "v1")
    client.set_secret("durable", "v2")
    client.set_secret("gone", "x")
    client.begin_delete_secret("gone").wait()
    cert = Path(first.info["ca_bundle"]).read_bytes()

    exit_code = _stop(first.process)
    second = _spawn(
        first.data_dir,
        *("--port", str(first.vault_port), "--identity-port", str(first.identity_port)),
        *("--identity-header", first.info["identity_header"]),
    )
    try:
        versions = list(client.list_properties_of_secret_versions("durable"))
        value = client.get_secret("durable").value  # same client: cached token still accepted
        deleted = client.get_deleted_secret("gone")
    finally:
        second_exit = _stop(second.process)

    assert exit_code == 0
    assert second_exit == 0
    assert not first.ready_file.exists()
    assert second.info == first.info
    assert Path(second.info["ca_bundle"]).read_bytes() == cert
    assert value == "v2"
    assert len(versions) == 2
    assert deleted.name == "gone"
    assert oct(os.stat(first.data_dir / "vault.json").st_mode & 0o777) == "0o600"
