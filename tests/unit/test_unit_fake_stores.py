"""The store fakes keep the real stores' contract, so unit tests built on them prove real behaviour.

These are the assertions tests/test_azure_stores.py makes of `AzureTable` on Azurite and of
`KeyVaultSecretStore` on the Key Vault emulator (that module stays the proof for the real side),
plus the parts of the contract the registries lean on that only the fakes can show cheaply:
siblings share a table, listings are key ranges in RowKey order, None is not stored.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import AlreadyExists, NotFound, PreconditionFailed, StoreUnavailable
from shared.offloop import inline_or_thread
from shared.stores import EntityTable, SecretRecord, SecretStore
from tests.fakes import FakeSecretStore, FakeTable
from tests.table_contract import TableContract

pytestmark = pytest.mark.unit


@pytest.fixture()
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture()
def vault() -> FakeSecretStore:
    return FakeSecretStore()


@pytest.mark.parametrize(("protocol", "fake"), [(EntityTable, FakeTable), (SecretStore, FakeSecretStore)])
def test_fakes_have_every_protocol_method_with_its_parameters(protocol: type, fake: type) -> None:
    """A method added to or changed in a store Protocol must reach the fake too, or this fails."""
    methods = [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
    assert methods
    for name in methods:
        wanted = inspect.signature(getattr(protocol, name)).parameters
        offered = inspect.signature(getattr(fake, name)).parameters
        assert [(p.name, p.kind, p.default) for p in wanted.values()] == \
            [(p.name, p.kind, p.default) for p in offered.values()], name


# --- EntityTable ---------------------------------------------------------------------------------------

class TestTableContract(TableContract):
    """The contract AzureTable keeps on Azurite (tests/table_contract.py), kept by the fake."""


def test_table_insert_then_get_round_trips_values_and_etag(table: FakeTable) -> None:
    data = {"name": "Contoso", "enabled": True, "count": 3, "json": '["a","b"]'}
    inserted = table.insert("row-1", data)
    fetched = table.get("row-1")
    assert inserted.etag and fetched.etag == inserted.etag
    assert (fetched.key, fetched.data) == ("row-1", data)


def test_table_replace_without_etag_is_an_upsert_not_a_merge(table: FakeTable) -> None:
    created = table.replace("row-1", {"v": 1, "old": "x"})
    replaced = table.replace("row-1", {"v": 2})
    assert replaced.etag != created.etag
    assert table.get("row-1").data == {"v": 2}


def test_table_replace_with_the_etag_of_a_deleted_row_does_not_recreate_it(table: FakeTable) -> None:
    etag = table.insert("row-1", {"v": 1}).etag
    table.delete("row-1")
    with pytest.raises(NotFound):
        table.replace("row-1", {"v": 2}, etag=etag)
    with pytest.raises(NotFound):
        table.get("row-1")


def test_table_delete_is_NotFound_when_missing_and_PreconditionFailed_when_stale(table: FakeTable) -> None:
    stale = table.insert("row-1", {"v": 1}).etag
    current = table.replace("row-1", {"v": 2}).etag
    with pytest.raises(PreconditionFailed):
        table.delete("row-1", etag=stale)
    table.delete("row-1", etag=current)
    with pytest.raises(NotFound):
        table.delete("row-1")


def test_siblings_share_one_table_but_not_each_others_rows(table: FakeTable) -> None:
    secrets = table.sibling("secrets")
    secrets.insert("k", {"in": "secrets"})
    table.insert("k", {"in": "p"})
    assert table.sibling("secrets").get("k").data == {"in": "secrets"}
    assert table.sibling("p").get("k").data == {"in": "p"}
    assert [e.key for e in table.list()] == ["k"]


def test_listings_come_in_row_key_order_and_list_prefix_is_a_key_range(table: FakeTable) -> None:
    for key in ("b-2", "a-1", "b-1", "c", "b"):
        table.insert(key, {})
    assert [e.key for e in table.list()] == ["a-1", "b", "b-1", "b-2", "c"]
    assert [e.key for e in table.list_prefix("b-")] == ["b-1", "b-2"]
    assert [e.key for e in table.list_from("b-1")] == ["b-1", "b-2", "c"]
    with pytest.raises(ValueError, match="non-empty"):
        table.list_prefix("")


def test_none_values_are_not_stored_and_unsupported_types_are_refused(table: FakeTable) -> None:
    table.insert("row", {"kept": "x", "gone": None})
    assert table.get("row").data == {"kept": "x"}
    for bad in ({"list": [1]}, {"obj": {"a": 1}}, {"big": 2**31}):
        with pytest.raises(TypeError):
            table.replace("row", bad)
    assert table.get("row").data == {"kept": "x"}


def test_a_key_table_storage_refuses_is_the_stores_StoreUnavailable(table: FakeTable) -> None:
    with pytest.raises(StoreUnavailable, match="HTTP 400"):
        table.insert("a/b", {})


def test_an_outage_fails_every_call_closed_until_it_ends(table: FakeTable) -> None:
    table.insert("row", {"v": 1})
    table.sibling("other").outage = StoreUnavailable("table-storage", "HTTP 503", 7.0, True)
    for call in (table.ping, table.list, lambda: table.get("row")):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.retry_after == 7.0 and caught.value.throttled
    table.outage = None
    assert table.get("row").data == {"v": 1}


def test_store_calls_may_not_run_inline_on_the_event_loop(table: FakeTable) -> None:
    """As the real stores: a store call inside inline_or_thread's inline attempt signals WouldBlock."""
    table.insert("row", {"v": 1})
    seen: list[str] = []

    def read() -> int:
        seen.append("attempt")
        return int(table.get("row").data["v"])

    assert asyncio.run(inline_or_thread(read)) == 1
    assert seen == ["attempt", "attempt"], "the inline attempt stopped at the store call and ran on a thread"


# --- SecretStore ---------------------------------------------------------------------------------------

def test_secret_set_returns_properties_and_get_returns_value_and_attributes(vault: FakeSecretStore) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    stored = vault.set_secret("a", "value-1", expires_on=expires, tags={"purpose": "spec"})
    assert isinstance(stored, SecretRecord) and stored.name == "a" and stored.value is None
    fetched = vault.get_secret("a")
    assert (fetched.value, fetched.enabled, fetched.expires_on, fetched.tags) == ("value-1", True, expires,
                                                                               {"purpose": "spec"})
    assert fetched.created_on is not None
    assert not fetched.usable_at(expires + timedelta(seconds=1))


def test_setting_a_secret_again_adds_a_version_and_get_returns_the_latest(vault: FakeSecretStore) -> None:
    vault.set_secret("a", "v1")
    vault.set_secret("A", "v2")
    record = vault.get_secret("a")
    assert (record.name, record.value) == ("a", "v2"), "names are case-insensitive and keep their first spelling"


def test_an_expired_secret_is_still_readable_but_not_usable(vault: FakeSecretStore) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    vault.set_secret("old", "v", expires_on=past)
    record = vault.get_secret("old")
    assert record.value == "v" and not record.usable_at(datetime.now(UTC))
    assert record.expires_on == past.replace(microsecond=0), "Key Vault keeps whole seconds"


def test_list_by_prefix_returns_properties_without_values(vault: FakeSecretStore) -> None:
    for i in range(3):
        vault.set_secret(f"item-{i}", "secret-value", tags={"n": str(i)})
    vault.set_secret("other-item", "no")
    listed = vault.list_secrets("item-")
    assert [r.name for r in listed] == ["item-0", "item-1", "item-2"]
    assert all(r.value is None for r in listed)


def test_a_disabled_secret_reads_as_NotFound_but_is_still_listed(vault: FakeSecretStore) -> None:
    vault.set_secret("a", "v")
    assert vault.update_properties("a", enabled=False).enabled is False
    with pytest.raises(NotFound):
        vault.get_secret("a")
    assert [r.enabled for r in vault.list_secrets("a")] == [False]
    vault.update_properties("a", enabled=True)
    assert vault.get_secret("a").value == "v"


def test_update_properties_replaces_tags_and_is_NotFound_for_a_missing_secret(vault: FakeSecretStore) -> None:
    vault.set_secret("a", "v", tags={"k": "1", "x": "y"})
    assert vault.update_properties("a", tags={"k": "2"}).tags == {"k": "2"}
    with pytest.raises(NotFound):
        vault.update_properties("missing", enabled=False)


def test_delete_is_soft_so_the_name_cannot_be_set_again_until_purged(vault: FakeSecretStore) -> None:
    vault.set_secret("a", "v")
    vault.delete_secret("a")
    with pytest.raises(NotFound):
        vault.get_secret("a")
    with pytest.raises(NotFound):
        vault.delete_secret("a")
    assert vault.list_secrets("a") == []
    with pytest.raises(AlreadyExists):
        vault.set_secret("a", "again")
    vault.purge("a")
    vault.set_secret("a", "again")
    assert vault.get_secret("a").value == "again"


@pytest.mark.parametrize("name", ["under_score", "dot.ted", "x" * 128, ""])
def test_a_name_key_vault_refuses_is_the_stores_StoreUnavailable(vault: FakeSecretStore, name: str) -> None:
    with pytest.raises(StoreUnavailable, match="HTTP 400"):
        vault.set_secret(name, "v")


def test_a_vault_outage_fails_every_call_closed(vault: FakeSecretStore) -> None:
    vault.set_secret("a", "v")
    vault.outage = StoreUnavailable("key-vault", "ConnectionError")
    for call in (vault.ping, lambda: vault.get_secret("a"), lambda: vault.list_secrets("")):
        with pytest.raises(StoreUnavailable):
            call()
    vault.outage = None
    assert vault.get_secret("a").value == "v"
