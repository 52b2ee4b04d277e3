"""The two storage seams on their real Azure SDKs: `AzureTable` (azure-data-tables against Azurite)
and `KeyVaultSecretStore` (azure-keyvault-secrets against the Key Vault emulator, authenticated by
azure-identity's ManagedIdentityCredential through the emulator's managed identity endpoint).

They are built as shared/services.py builds them, from the stack's own app settings. What the
tests pin down is the store vocabulary the registries rely on: NotFound, AlreadyExists,
PreconditionFailed (optimistic concurrency) and StoreUnavailable (fail closed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.identity import ManagedIdentityCredential

from devtools.stack import Stack
from shared.errors import AlreadyExists, NotFound, PreconditionFailed, StoreUnavailable
from shared.stores import SecretRecord
from shared.stores.keyvault import KeyVaultSecretStore
from shared.stores.tables import AzureTable
from tests.gateway_calls import TIMEOUT, new_stack
from tests.table_contract import TableContract

_AZURE_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
              "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "AZURE_PASSWORD", "MSI_ENDPOINT", "MSI_SECRET",
              "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT")


def use_identity_of(env: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The App Service managed identity protocol, as the Functions host provides it in Azure."""
    for name in _AZURE_ENV:
        patch.delenv(name, raising=False)
    patch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    patch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])


def vault_for(env: dict[str, str]) -> KeyVaultSecretStore:
    return KeyVaultSecretStore.connect(env["KEY_VAULT_URL"], ManagedIdentityCredential(), env["KEY_VAULT_CA_BUNDLE"])


def table_for(env: dict[str, str], name: str | None = None) -> AzureTable:
    return AzureTable.connect(name or f"spec{uuid.uuid4().hex[:12]}",
                              connection_string=env["GATEWAY_TABLES_CONNECTION_STRING"])


@pytest.fixture(scope="module")
def env(stack: Stack) -> Iterator[dict[str, str]]:
    settings = stack.gateway_env()
    with pytest.MonkeyPatch.context() as patch:  # MSAL reads these on every token request
        use_identity_of(settings, patch)
        yield settings


@pytest.fixture()
def table(env: dict[str, str]) -> AzureTable:
    return table_for(env)  # a fresh table per test, created on first use


@pytest.fixture(scope="module")
def vault(env: dict[str, str]) -> KeyVaultSecretStore:
    return vault_for(env)


@pytest.fixture()
def prefix() -> str:
    """Secret names unique to one test (the vault is shared with the session's gateway)."""
    return f"spec-{uuid.uuid4().hex[:12]}-"


# --- AzureTable on Azurite ----------------------------------------------------------------------------

def test_table_insert_then_get_round_trips_values_and_etag(table: AzureTable) -> None:
    data = {"name": "Contoso", "enabled": True, "count": 3, "json": '["a","b"]'}
    inserted = table.insert("row-1", data)
    assert inserted.etag
    fetched = table.get("row-1")
    assert fetched.key == "row-1"
    assert fetched.data == data
    assert fetched.etag == inserted.etag


def test_table_list_returns_every_row(table: AzureTable) -> None:
    assert table.list() == []
    for i in range(5):
        table.insert(f"row-{i}", {"i": i})
    rows = {e.key: e for e in table.list()}
    assert set(rows) == {f"row-{i}" for i in range(5)}
    assert all(rows[f"row-{i}"].data == {"i": i} and rows[f"row-{i}"].etag for i in range(5))


def test_table_replace_without_etag_is_an_upsert(table: AzureTable) -> None:
    created = table.replace("row-1", {"v": 1, "old": "x"})
    assert table.get("row-1").data == {"v": 1, "old": "x"}
    replaced = table.replace("row-1", {"v": 2})
    assert replaced.etag != created.etag
    assert table.get("row-1").data == {"v": 2}, "replace, not merge: dropped properties are gone"


def test_table_replace_with_the_current_etag_succeeds(table: AzureTable) -> None:
    inserted = table.insert("row-1", {"v": 1})
    replaced = table.replace("row-1", {"v": 2}, etag=inserted.etag)
    assert replaced.etag and replaced.etag != inserted.etag
    assert table.get("row-1").etag == replaced.etag


def test_table_replace_with_an_etag_of_a_deleted_row_does_not_recreate_it(table: AzureTable) -> None:
    etag = table.insert("row-1", {"v": 1}).etag
    table.delete("row-1")
    with pytest.raises((NotFound, PreconditionFailed)):
        table.replace("row-1", {"v": 2}, etag=etag)
    with pytest.raises(NotFound):
        table.get("row-1")


def test_table_delete_then_NotFound(table: AzureTable) -> None:
    table.insert("row-1", {"v": 1})
    table.delete("row-1")
    with pytest.raises(NotFound):
        table.get("row-1")
    with pytest.raises(NotFound):
        table.delete("row-1")


def test_table_delete_with_a_stale_etag_is_PreconditionFailed(table: AzureTable) -> None:
    stale = table.insert("row-1", {"v": 1}).etag
    current = table.replace("row-1", {"v": 2}).etag
    with pytest.raises(PreconditionFailed):
        table.delete("row-1", etag=stale)
    assert table.get("row-1").data == {"v": 2}
    table.delete("row-1", etag=current)
    with pytest.raises(NotFound):
        table.get("row-1")


class TestTableContract(TableContract):
    """The contract every EntityTable keeps (tests/table_contract.py), on the real SDK and Azurite."""


def test_table_ping_succeeds_on_a_reachable_service(table: AzureTable) -> None:
    table.ping()


# --- KeyVaultSecretStore on the emulator --------------------------------------------------------------

def test_secret_set_then_get_returns_the_value_and_attributes(vault: KeyVaultSecretStore, prefix: str) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    stored = vault.set_secret(prefix + "a", "value-1", expires_on=expires, tags={"purpose": "spec"},
                              content_type="text/plain")
    assert isinstance(stored, SecretRecord)
    assert stored.name == prefix + "a"
    assert stored.value is None, "set returns properties only"
    fetched = vault.get_secret(prefix + "a")
    assert fetched.value == "value-1"
    assert fetched.enabled is True
    assert fetched.expires_on == expires
    assert fetched.tags == {"purpose": "spec"}
    assert fetched.created_on is not None
    assert fetched.usable_at(datetime.now(UTC))
    assert not fetched.usable_at(expires + timedelta(seconds=1))


def test_setting_a_secret_again_adds_a_version_and_get_returns_the_latest(vault: KeyVaultSecretStore,
                                                                          prefix: str) -> None:
    vault.set_secret(prefix + "a", "v1")
    vault.set_secret(prefix + "a", "v2")
    assert vault.get_secret(prefix + "a").value == "v2"


def test_an_expired_secret_is_still_readable_but_not_usable(vault: KeyVaultSecretStore, prefix: str) -> None:
    """Key Vault does not enforce `exp` on secrets; callers check `usable_at` (the client registry does)."""
    past = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    vault.set_secret(prefix + "old", "v", expires_on=past)
    record = vault.get_secret(prefix + "old")
    assert record.value == "v"
    assert not record.usable_at(datetime.now(UTC))


def test_get_of_a_missing_secret_is_NotFound(vault: KeyVaultSecretStore, prefix: str) -> None:
    with pytest.raises(NotFound):
        vault.get_secret(prefix + "missing")


def test_list_by_prefix_returns_properties_without_values_across_pages(vault: KeyVaultSecretStore,
                                                                       prefix: str) -> None:
    """More than one page (Key Vault pages hold at most 25), and only names under the prefix."""
    names = {f"{prefix}item-{i:02d}" for i in range(30)}
    for name in sorted(names):
        vault.set_secret(name, "secret-value", tags={"n": name[-2:]})
    vault.set_secret(prefix.rstrip("-") + "x-other", "not listed")
    listed = vault.list_secrets(prefix + "item-")
    assert {r.name for r in listed} == names
    assert all(r.value is None for r in listed)
    assert all(r.tags == {"n": r.name[-2:]} and r.enabled for r in listed)
    assert vault.list_secrets(prefix + "nothing-") == []


def test_update_properties_disables_and_reenables_a_secret(vault: KeyVaultSecretStore, prefix: str) -> None:
    vault.set_secret(prefix + "a", "v", tags={"k": "1"})
    updated = vault.update_properties(prefix + "a", enabled=False)
    assert updated.enabled is False
    with pytest.raises(NotFound):  # a disabled secret cannot be read: to the gateway it is absent
        vault.get_secret(prefix + "a")
    assert [r.enabled for r in vault.list_secrets(prefix + "a")] == [False]
    vault.update_properties(prefix + "a", enabled=True)
    assert vault.get_secret(prefix + "a").value == "v"


def test_update_properties_changes_expiry_and_tags(vault: KeyVaultSecretStore, prefix: str) -> None:
    vault.set_secret(prefix + "a", "v", tags={"k": "1"})
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    updated = vault.update_properties(prefix + "a", expires_on=expires, tags={"k": "2"})
    assert updated.expires_on == expires and updated.tags == {"k": "2"}
    record = vault.get_secret(prefix + "a")
    assert (record.value, record.expires_on, record.tags) == ("v", expires, {"k": "2"})


def test_update_properties_of_a_missing_secret_is_NotFound(vault: KeyVaultSecretStore, prefix: str) -> None:
    with pytest.raises(NotFound):
        vault.update_properties(prefix + "missing", enabled=False)


def test_delete_removes_the_secret_and_a_second_delete_is_NotFound(vault: KeyVaultSecretStore, prefix: str) -> None:
    vault.set_secret(prefix + "a", "v")
    vault.delete_secret(prefix + "a")
    with pytest.raises(NotFound):
        vault.get_secret(prefix + "a")
    assert vault.list_secrets(prefix) == []
    with pytest.raises(NotFound):
        vault.delete_secret(prefix + "a")


def test_a_deleted_name_cannot_be_set_again_while_soft_deleted(vault: KeyVaultSecretStore, prefix: str) -> None:
    """Key Vault soft delete (purge protection in Azure): the gateway never reuses a secret name."""
    vault.set_secret(prefix + "a", "v")
    vault.delete_secret(prefix + "a")
    with pytest.raises(AlreadyExists):
        vault.set_secret(prefix + "a", "again")


def test_vault_ping_succeeds_on_a_reachable_vault(vault: KeyVaultSecretStore) -> None:
    vault.ping()


# --- failing closed -----------------------------------------------------------------------------------

@pytest.fixture()
def doomed(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, dict[str, str]]]:
    """Azurite and a Key Vault emulator of their own, to break on purpose."""
    stack = new_stack(tmp_path_factory.mktemp("doomed-stores"))
    try:
        stack.start_azurite()
        stack.start_keyvault()
        settings = {**stack.gateway_env(), "CONTROL_URL": stack.processes["keyvault"].ready["control_url"]}
        use_identity_of(settings, monkeypatch)
        yield stack, settings
    finally:
        stack.stop()


def test_a_stopped_table_service_is_StoreUnavailable(doomed: tuple[Stack, dict[str, str]]) -> None:
    stack, settings = doomed
    used = table_for(settings)
    used.insert("row-1", {"v": 1})
    never_used = table_for(settings)  # its first call would create the table
    stack.processes["azurite"].stop()
    calls: list[Any] = [lambda: used.get("row-1"), used.list, lambda: used.insert("row-2", {}),
                        lambda: used.replace("row-1", {}), lambda: used.delete("row-1"), used.ping,
                        never_used.ping, lambda: never_used.get("row-1")]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.component == "table-storage"


def test_a_stopped_vault_is_StoreUnavailable(doomed: tuple[Stack, dict[str, str]]) -> None:
    stack, settings = doomed
    vault = vault_for(settings)
    vault.set_secret("spec-a", "v")
    fresh = vault_for(settings)  # has no managed identity token yet
    stack.processes["keyvault"].stop()
    calls: list[Any] = [lambda: vault.get_secret("spec-a"), lambda: vault.list_secrets("spec-"),
                        lambda: vault.set_secret("spec-b", "v"), lambda: vault.delete_secret("spec-a"),
                        lambda: vault.update_properties("spec-a", enabled=False), vault.ping, fresh.ping]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.component == "key-vault"


def test_a_vault_failing_with_5xx_after_retries_is_StoreUnavailable_and_a_blip_is_retried(
        doomed: tuple[Stack, dict[str, str]]) -> None:
    _, settings = doomed
    vault = vault_for(settings)
    vault.set_secret("spec-a", "v")

    def arm(count: int) -> None:
        armed = requests.post(f"{settings['CONTROL_URL']}/faults", json={"status": 503, "count": count},
                              timeout=TIMEOUT)
        assert armed.status_code == 200, armed.text

    arm(1)
    assert vault.get_secret("spec-a").value == "v", "one 503 is retried by the SDK"
    arm(10)
    with pytest.raises(StoreUnavailable):
        vault.get_secret("spec-a")
    arm(0)
    assert vault.get_secret("spec-a").value == "v"
