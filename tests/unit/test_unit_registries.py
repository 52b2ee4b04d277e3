"""The client and tenant registries and the change-log snapshot behind them, over the store fakes.

Why here as well as against Azurite (test_client_registry.py, test_tenant_registry.py): these are
the management API's rules (refusals that name a field, optimistic concurrency, the last live
secret) and the revocation bound (a change reaches every instance within the TTL). With the fakes
and a hand-moved clock each rule runs in milliseconds, and a second instance is one constructor.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.client_secrets import PEPPER_PREFIX, legacy_verifier
from shared.clients import MIGRATED, ClientRegistry, InvalidClient
from shared.edge import problem
from shared.errors import (
    AlreadyExists,
    InvalidField,
    LastLiveSecret,
    NotFound,
    PreconditionFailed,
    ProblemError,
    StoreUnavailable,
)
from shared.routes import TenantRegistry, TenantRoute
from shared.stores import Entity
from shared.stores.snapshot import LOG_MARGIN, TableSnapshot
from tests.fakes import Clock, FakeSecretStore, FakeTable

pytestmark = pytest.mark.unit

PROVIDER = "https://ehr.example.org/fhir"


@pytest.fixture()
def stores() -> tuple[FakeTable, FakeSecretStore]:
    return FakeTable(), FakeSecretStore()


@pytest.fixture()
def clients(stores: tuple[FakeTable, FakeSecretStore]) -> ClientRegistry:
    table, vault = stores
    return ClientRegistry(table.sibling, vault, 60)


@pytest.fixture()
def tenants() -> TenantRegistry:
    table = FakeTable()
    return TenantRegistry(table, table.sibling("changes"), 30)


def _route(**changes: object) -> dict:
    body: dict = {"display_name": "Clinic", "provider_base_url": PROVIDER, "fhir_version": "stu3",
                  "allowed_clients": [str(uuid.uuid4())]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


# --- clients ------------------------------------------------------------------------------------------------

def test_a_new_client_is_active_and_its_secret_authenticates_once_shown(clients: ClientRegistry) -> None:
    client, secret, info = clients.create("Patients app")
    assert client.active and client.name == "Patients app"
    assert re.fullmatch(r"[0-9a-f]{16}~[A-Za-z0-9_-]{43}", secret)
    assert (info.secret_id, info.hint) == (secret[:16], secret[17:20])
    assert clients.authenticate(client.client_id, secret) == client


def test_the_secret_itself_is_stored_nowhere(stores: tuple[FakeTable, FakeSecretStore],
                                             clients: ClientRegistry) -> None:
    table, vault = stores
    _, secret, _ = clients.create("app")
    random_part = secret[17:]
    for partition in ("p", "secrets", "meta", "p-changes", "secrets-changes"):
        for entity in table.sibling(partition).list():
            assert all(random_part not in str(v) for v in entity.data.values())
    for record in vault.list_secrets(""):
        assert random_part not in (vault.get_secret(record.name).value or "")


def test_one_pepper_serves_every_client_and_lives_only_in_the_vault(stores: tuple[FakeTable, FakeSecretStore],
                                                                    clients: ClientRegistry) -> None:
    table, vault = stores
    for name in ("a", "b", "c"):
        clients.create(name)
    peppers = vault.list_secrets(PEPPER_PREFIX)
    assert len(peppers) == 1
    assert table.sibling("meta").get("pepper").data == {"pepper_id": peppers[0].name[len(PEPPER_PREFIX):]}


def test_a_second_instance_authenticates_what_the_first_created(stores: tuple[FakeTable, FakeSecretStore],
                                                                clients: ClientRegistry) -> None:
    table, vault = stores
    client, secret, _ = clients.create("app")
    assert ClientRegistry(table.sibling, vault, 60).authenticate(client.client_id, secret).client_id == client.client_id


@pytest.mark.parametrize("mangle", [
    lambda cid, s: (cid, s[:-1] + ("A" if s[-1] != "A" else "B")),     # wrong random part
    lambda cid, s: (cid, "0" * 16 + s[16:]),                            # another secret id
    lambda cid, s: (str(uuid.uuid4()), s),                              # another client
    lambda cid, s: (cid.upper(), s),                                    # ids are lower-case GUIDs
    lambda cid, s: (cid, s + "x"),                                      # not the secret grammar
])
def test_anything_but_the_exact_client_and_secret_is_InvalidClient(clients: ClientRegistry, mangle) -> None:
    client, secret, _ = clients.create("app")
    client_id, presented = mangle(client.client_id, secret)
    with pytest.raises(InvalidClient):
        clients.authenticate(client_id, presented)


def test_added_secrets_all_authenticate_and_are_listed_in_creation_order() -> None:
    clock = Clock()
    table, vault = FakeTable(), FakeSecretStore()
    clients = ClientRegistry(table.sibling, vault, 60, clock=clock)
    client, first, _ = clients.create("app")
    clock.advance(2)
    second, info = clients.add_secret(client.client_id)
    assert clients.authenticate(client.client_id, first) and clients.authenticate(client.client_id, second)
    assert [i.secret_id for i in clients.list_secrets(client.client_id)] == [first[:16], info.secret_id]


def test_a_deleted_secret_stops_authenticating_and_its_sibling_keeps_working(clients: ClientRegistry) -> None:
    client, first, _ = clients.create("app")
    second, _ = clients.add_secret(client.client_id)
    clients.delete_secret(client.client_id, first[:16])
    with pytest.raises(InvalidClient):
        clients.authenticate(client.client_id, first)
    assert clients.authenticate(client.client_id, second)
    assert [i.secret_id for i in clients.list_secrets(client.client_id)] == [second[:16]]


def test_the_last_live_secret_of_an_active_client_cannot_be_deleted(clients: ClientRegistry) -> None:
    client, secret, _ = clients.create("app")
    with pytest.raises(LastLiveSecret) as refused:
        clients.delete_secret(client.client_id, secret[:16])
    answer = problem(refused.value)
    assert answer is not None and (answer.status, answer.field) == (409, "secret_id")
    assert clients.authenticate(client.client_id, secret)


def test_a_disabled_clients_last_secret_can_be_deleted(clients: ClientRegistry) -> None:
    client, secret, _ = clients.create("app")
    clients.disable(client.client_id)
    clients.delete_secret(client.client_id, secret[:16])
    assert clients.list_secrets(client.client_id) == []


def test_deleting_an_unknown_secret_or_for_an_unknown_client_is_NotFound(clients: ClientRegistry) -> None:
    client, _, _ = clients.create("app")
    with pytest.raises(NotFound):
        clients.delete_secret(client.client_id, "0" * 16)
    with pytest.raises(NotFound):
        clients.delete_secret(str(uuid.uuid4()), "0" * 16)
    with pytest.raises(NotFound):
        clients.get("not-a-guid")


def test_an_expiry_in_the_past_is_refused_naming_expires_on(clients: ClientRegistry) -> None:
    client, _, _ = clients.create("app")
    with pytest.raises(InvalidField) as refused:
        clients.add_secret(client.client_id, datetime.now(UTC) - timedelta(seconds=1))
    answer = problem(refused.value)
    assert answer is not None and (answer.status, answer.field) == (400, "expires_on")


def test_an_expired_secret_stops_authenticating_when_its_time_comes() -> None:
    clock = Clock()
    table, vault = FakeTable(), FakeSecretStore()
    clients = ClientRegistry(table.sibling, vault, 60, clock=clock)
    client, secret, _ = clients.create("app", expires_on=datetime.fromtimestamp(clock.now + 100, UTC))
    assert clients.authenticate(client.client_id, secret)
    clock.advance(101)
    with pytest.raises(InvalidClient):
        clients.authenticate(client.client_id, secret)


def test_disabling_a_client_shows_in_the_cached_copy_at_once(clients: ClientRegistry) -> None:
    client, secret, _ = clients.create("app")
    assert clients.cached_client(client.client_id).active
    assert clients.disable(client.client_id).status == "disabled"
    cached = clients.cached_client(client.client_id)
    assert cached is not None and not cached.active
    assert clients.authenticate(client.client_id, secret).status == "disabled", "the token service decides"


def test_a_disabled_pepper_verifies_nothing(stores: tuple[FakeTable, FakeSecretStore]) -> None:
    """The tables alone cannot verify a secret: disabling the vault's pepper revokes every verifier
    (TTL 0 here; PepperRing's clock is monotonic time, not the registry's)."""
    table, vault = stores
    clients = ClientRegistry(table.sibling, vault, 0)
    client, secret, _ = clients.create("app")
    vault.update_properties(vault.list_secrets(PEPPER_PREFIX)[0].name, enabled=False)
    with pytest.raises(InvalidClient):
        clients.authenticate(client.client_id, secret)


def test_a_legacy_vault_verifier_is_migrated_to_a_row_on_first_use(stores: tuple[FakeTable, FakeSecretStore],
                                                                   clients: ClientRegistry) -> None:
    table, vault = stores
    client_id, secret_id = str(uuid.uuid4()), "0123456789abcdef"
    secret = f"{secret_id}~{'s' * 43}"
    table.insert(client_id, {"name": "old", "status": "active", "created": "2024-01-01T00:00:00+00:00"})
    vault.set_secret(f"client-{client_id}-{secret_id}", legacy_verifier(client_id, secret_id, secret),
                     tags={"secret_id": secret_id, "hint": "sss"})
    assert clients.authenticate(client_id, secret).legacy
    assert table.sibling("secrets").get(f"{client_id}-{secret_id}").data["secret_id"] == secret_id
    reads = vault.calls["get_secret"]
    assert clients.authenticate(client_id, secret)
    assert vault.calls["get_secret"] == reads, "the copied row answers; the vault is not asked again"
    with pytest.raises(InvalidClient):
        clients.authenticate(client_id, f"{secret_id}~{'t' * 43}")


def test_new_clients_are_not_legacy(stores: tuple[FakeTable, FakeSecretStore], clients: ClientRegistry) -> None:
    table, _ = stores
    client, _, _ = clients.create("app")
    assert table.get(client.client_id).data["verifiers"] == MIGRATED and not client.legacy


# --- tenants ------------------------------------------------------------------------------------------------

def test_put_creates_a_route_with_an_etag_and_get_returns_it(tenants: TenantRegistry) -> None:
    tenant_id = str(uuid.uuid4()).upper()
    route, etag, created = tenants.put(tenant_id, _route())
    assert created and etag and route.tenant_id == tenant_id.lower()
    assert tenants.get(tenant_id) == (route, etag)


def test_if_match_with_the_current_etag_replaces_and_keeps_created() -> None:
    clock = Clock()
    table = FakeTable()
    tenants = TenantRegistry(table, table.sibling("changes"), 30, clock=clock)
    tenant_id = str(uuid.uuid4())
    first, etag, _ = tenants.put(tenant_id, _route())
    clock.advance(3600)
    second, new_etag, created = tenants.put(tenant_id, _route(display_name="Renamed"), if_match=etag)
    assert not created and new_etag != etag
    assert (second.display_name, second.created) == ("Renamed", first.created) and second.updated != first.updated


def test_a_stale_if_match_is_PreconditionFailed_and_changes_nothing(tenants: TenantRegistry) -> None:
    tenant_id = str(uuid.uuid4())
    _, stale, _ = tenants.put(tenant_id, _route())
    tenants.put(tenant_id, _route(display_name="Second"))
    with pytest.raises(PreconditionFailed):
        tenants.put(tenant_id, _route(display_name="Lost update"), if_match=stale)
    assert tenants.get(tenant_id)[0].display_name == "Second"


def test_if_match_on_a_tenant_that_does_not_exist_is_PreconditionFailed(tenants: TenantRegistry) -> None:
    with pytest.raises(PreconditionFailed):
        tenants.put(str(uuid.uuid4()), _route(), if_match='W/"1"')


def test_if_none_match_refuses_an_existing_tenant_but_takes_a_removed_ones_place(tenants: TenantRegistry) -> None:
    tenant_id = str(uuid.uuid4())
    tenants.put(tenant_id, _route(), create_only=True)
    with pytest.raises(AlreadyExists):
        tenants.put(tenant_id, _route(), create_only=True)
    tenants.delete(tenant_id)
    _, _, created = tenants.put(tenant_id, _route(display_name="Again"), create_only=True)
    assert created and tenants.get(tenant_id)[0].display_name == "Again"


@pytest.mark.parametrize(("tenant_id", "body", "field"), [
    ("not-a-guid", _route(), "tenant_id"),
    (None, ["not", "an", "object"], "body"),
    (None, _route(colour="blue"), "colour"),
    (None, _route(tenant_id=str(uuid.uuid4())), "tenant_id"),
    (None, _route(display_name="x" * 201), "display_name"),
    (None, _route(provider_base_url="ftp://ehr.example.org/fhir"), "provider_base_url"),
    (None, _route(provider_base_url="http://ehr.example.org/fhir"), "provider_base_url"),
    (None, _route(fhir_version="r5"), "fhir_version"),
    (None, _route(enabled="yes"), "enabled"),
    (None, _route(batch_passthrough=1), "batch_passthrough"),
    (None, _route(allowed_clients="everyone"), "allowed_clients"),
    (None, _route(allowed_clients=["not-a-client-id"]), "allowed_clients"),
    (None, _route(resource_types=["patient"]), "resource_types"),
    (None, _route(upstream_auth={"kind": "bearer", "secret_name": "signing-key-x"}), "upstream_auth.secret_name"),
])
def test_an_invalid_route_is_a_400_problem_naming_its_field(tenants: TenantRegistry, tenant_id: str | None,
                                                            body: object, field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        tenants.put(tenant_id or str(uuid.uuid4()), body)
    answer = problem(refused.value)
    assert answer is not None and (answer.status, answer.field) == (400, field)
    assert tenants.list() == []


def test_a_problem_document_carries_the_field_for_the_portal() -> None:
    detail = "fhir_version must be one of stu3"
    response = ProblemError(400, "Invalid tenant route", detail, "fhir_version").to_response()
    body = json.loads(response.body)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert body["errors"] == [{"field": "fhir_version", "detail": detail}]


def test_routes_round_trip_through_table_properties(tenants: TenantRegistry) -> None:
    tenant_id = str(uuid.uuid4())
    route, _, _ = tenants.put(tenant_id, _route(resource_types=["Patient", "Observation"], batch_passthrough=True,
                                                upstream_auth={"kind": "bearer", "secret_name": "upstream-ehr"}))
    assert tenants.get(tenant_id)[0] == route
    assert route.upstream_auth == {"kind": "bearer", "secret_name": "upstream-ehr"}


def test_disable_keeps_the_route_but_it_allows_no_client(tenants: TenantRegistry) -> None:
    client_id = str(uuid.uuid4())
    tenant_id = str(uuid.uuid4())
    tenants.put(tenant_id, _route(allowed_clients=[client_id]))
    assert tenants.resolve(tenant_id).allows(client_id)
    disabled, _ = tenants.disable(tenant_id)
    assert not disabled.enabled
    resolved = tenants.resolve(tenant_id)
    assert resolved is not None and not resolved.allows(client_id)


def test_delete_leaves_a_tombstone_that_reads_as_absent_everywhere(tenants: TenantRegistry) -> None:
    kept, removed = str(uuid.uuid4()), str(uuid.uuid4())
    tenants.put(kept, _route())
    tenants.put(removed, _route())
    tenants.delete(removed)
    with pytest.raises(NotFound):
        tenants.get(removed)
    with pytest.raises(NotFound):
        tenants.delete(removed)
    assert [r.tenant_id for r in tenants.list()] == [kept]
    assert tenants.resolve(removed) is None


def test_a_stale_if_match_on_delete_is_PreconditionFailed(tenants: TenantRegistry) -> None:
    tenant_id = str(uuid.uuid4())
    _, stale, _ = tenants.put(tenant_id, _route())
    tenants.put(tenant_id, _route(display_name="Changed"))
    with pytest.raises(PreconditionFailed):
        tenants.delete(tenant_id, if_match=stale)
    assert tenants.resolve(tenant_id) is not None


def test_another_instance_with_ttl_zero_sees_every_change_at_once() -> None:
    table = FakeTable()
    writer = TenantRegistry(table, table.sibling("changes"), 30)
    reader = TenantRegistry(table, table.sibling("changes"), 0)
    tenant_id = str(uuid.uuid4())
    assert reader.resolve(tenant_id) is None
    writer.put(tenant_id, _route())
    assert reader.resolve(tenant_id) is not None
    writer.delete(tenant_id)
    assert reader.resolve(tenant_id) is None


# --- the change-log snapshot (shared/stores/snapshot.py) ------------------------------------------------------

class _Instance:
    """One process's snapshot of a shared table, with its own monotonic clock and a shared wall clock."""

    def __init__(self, table: FakeTable, clock: Clock, wall: Clock, ttl: float = 30, max_entries: int = 1000) -> None:
        self.snapshot: TableSnapshot[str] = TableSnapshot(table, table.sibling("log"), ttl,
                                                          lambda e: str(e.data["v"]), clock=clock, wall=wall,
                                                          max_entries=max_entries)


def _write(table: FakeTable, writer: TableSnapshot[str], key: str, value: str) -> None:
    table.replace(key, {"v": value})
    writer.changed(key)


def test_a_change_reaches_another_instance_within_the_ttl_and_not_before() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    writer, reader = _Instance(table, clock, wall), _Instance(table, clock, wall)
    _write(table, writer.snapshot, "k", "old")
    assert reader.snapshot.get("k") == "old"
    wall.advance(1)
    _write(table, writer.snapshot, "k", "new")
    assert writer.snapshot.get("k") == "new", "the writer's own instance sees it at once"
    clock.advance(29)
    assert reader.snapshot.get("k") == "old", "held for the TTL"
    clock.advance(1)
    assert reader.snapshot.get("k") == "new"


def test_a_miss_is_held_too_and_a_later_insert_is_seen_within_the_ttl() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    writer, reader = _Instance(table, clock, wall), _Instance(table, clock, wall)
    assert reader.snapshot.get("k") is None
    reads = table.calls["get"]
    assert reader.snapshot.get("k") is None and table.calls["get"] == reads
    _write(table, writer.snapshot, "k", "v")
    clock.advance(30)
    assert reader.snapshot.get("k") == "v"


def test_while_fresh_a_held_row_costs_no_store_call_and_following_costs_one_query_per_ttl() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    instance = _Instance(table, clock, wall)
    table.insert("k", {"v": "x"})
    instance.snapshot.get("k")
    before = table.calls.copy()
    for _ in range(100):
        assert instance.snapshot.get("k") == "x"
    assert table.calls == before
    clock.advance(30)
    instance.snapshot.get("k")
    assert table.calls - before == {"list_from": 1}


def test_when_the_log_cannot_be_read_nothing_held_is_used() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    instance = _Instance(table, clock, wall)
    table.insert("k", {"v": "x"})
    assert instance.snapshot.get("k") == "x"
    clock.advance(30)
    table.outage = StoreUnavailable("table-storage", "HTTP 503")
    with pytest.raises(StoreUnavailable):
        instance.snapshot.get("k")
    table.outage = None
    assert instance.snapshot.get("k") == "x"


def test_a_writer_whose_clock_is_behind_within_the_margin_is_not_missed() -> None:
    """The log is read from (newest seen - margin): a later key from a fast clock must not hide an
    earlier-keyed write from a slow one."""
    lag = 30.0
    assert lag < LOG_MARGIN
    table, clock, wall = FakeTable(), Clock(0), Clock()
    reader, synced = _Instance(table, clock, wall), _Instance(table, clock, wall)
    lagging = _Instance(table, clock, Clock(wall.now - lag))
    _write(table, synced.snapshot, "k", "first")
    assert reader.snapshot.get("k") == "first"
    clock.advance(30)
    _write(table, lagging.snapshot, "k", "second")
    clock.advance(30)
    assert reader.snapshot.get("k") == "second"


def test_a_tombstone_reads_as_absent() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    instance = _Instance(table, clock, wall)
    table.insert("k", {"v": "x", "deleted": True})
    assert instance.snapshot.get("k") is None


def test_the_snapshot_is_bounded_and_forgetting_only_costs_a_re_read() -> None:
    table, clock, wall = FakeTable(), Clock(0), Clock()
    instance = _Instance(table, clock, wall, max_entries=2)
    for key in ("a", "b", "c"):
        table.insert(key, {"v": key})
        instance.snapshot.get(key)
    reads = table.calls["get"]
    assert instance.snapshot.get("c") == "c" and table.calls["get"] == reads
    assert instance.snapshot.get("a") == "a" and table.calls["get"] == reads + 1, "the oldest was let go"


def test_from_entity_reads_what_to_entity_wrote() -> None:
    route = TenantRoute(str(uuid.uuid4()), "Clinic", PROVIDER, "dstu2", {"kind": "none"}, ("c1",), False,
                        ("Patient",), True, "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00")
    assert TenantRoute.from_entity(Entity(route.tenant_id, route.to_entity())) == route
