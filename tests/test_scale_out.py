"""Scale-out (issue #14): three gateway instances sharing one Azurite and one Key Vault emulator.

The stack is what `scripts/dev --instances 3` runs: three gateway processes behind the local
round-robin front, every cache TTL at 3 seconds (SECRET_CACHE_TTL_SECONDS, ROUTE_CACHE_TTL_SECONDS,
SIGNING_KEY_CACHE_TTL_SECONDS), so each bound below is asserted against the TTL, not slept through
blindly: each instance is polled directly until it refuses, and the slowest must refuse within the
TTL plus a second of slack. The Key Vault counts come from the emulator's own request statistics,
Table Storage counts from Azurite's access log; the measured per-instance rates are written to
`bench/results/scale-latest.json` for the scale model (`python -m bench.scale`).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import ROOT, Stack
from shared.client_secrets import legacy_verifier
from shared.stores.tables import AzureTable
from tests.gateway_calls import TIMEOUT, add_secret, client_credentials, create_client, onboard, remember, route_body
from tests.portal_client import PortalUser, next_address
from tests.reliability import operator_vault, put_vault_secret, read_one_patient

TTL = 3
SLACK = 1.0
INSTANCES = 3
PUBLIC = "http://gateway.scale.test"  # one public base URL, so a token from any instance is good on all
PAIR_LIMIT = 6  # TOKEN_FAILURES_PER_CLIENT_AND_SOURCE here: small, so the aggregate is quick to reach
_TABLE_REQUEST = re.compile(rb'"(?:GET|POST|PUT|PATCH|MERGE|DELETE) /devstoreaccount1/')
MEASURED = ROOT / "bench" / "results" / "scale-latest.json"


class Fleet:
    """The 3-instance stack, one STU3 provider, and helpers that call one instance or the front."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.front = stack.facts["gateway_base_url"]
        self.instances: list[str] = stack.facts["instance_urls"]
        self.provider = stack.facts["provider_base_urls"]["stu3"]
        self.control = stack.processes["keyvault"].ready["control_url"]

    def token(self, base: str, client_id: str, secret: str, tenant: str,
              source: str = "192.0.2.1") -> requests.Response:
        return client_credentials(f"{base}/api/oauth2/token", client_id, secret, tenant,
                                  {"X-Forwarded-For": source})

    def read(self, base: str, token: str) -> requests.Response:
        return read_one_patient(base, token)

    def vault_requests(self, reset: bool = False) -> int:
        if reset:
            requests.post(f"{self.control}/reset-stats", timeout=TIMEOUT).raise_for_status()
            return 0
        stats = requests.get(f"{self.control}/stats", timeout=TIMEOUT).json()
        return sum(stats["statuses"].values())

    def table_requests(self) -> int:
        """Requests Azurite has logged so far (its access log, one line per request)."""
        return len(_TABLE_REQUEST.findall(self.stack.processes["azurite"].log_path.read_bytes()))

    def revoked_everywhere_within(self, still_works: Callable[[str], bool]) -> float:
        """Seconds from now until the slowest instance stops accepting, each instance polled on its own."""
        started = time.monotonic()
        stopped: dict[str, float] = {}
        while len(stopped) < len(self.instances) and time.monotonic() - started < TTL + 10:
            for base in self.instances:
                if base not in stopped and not still_works(base):
                    stopped[base] = time.monotonic() - started
            time.sleep(0.1)
        assert len(stopped) == len(self.instances), f"never refused on {set(self.instances) - set(stopped)}"
        return max(stopped.values())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    stack = Stack(Path(tmp_path_factory.mktemp("scale-out")), extra_env={
        "SECRET_CACHE_TTL_SECONDS": str(TTL), "ROUTE_CACHE_TTL_SECONDS": str(TTL),
        "SIGNING_KEY_CACHE_TTL_SECONDS": str(TTL), "GATEWAY_PUBLIC_BASE_URL": PUBLIC,
        "TOKEN_FAILURES_PER_CLIENT_AND_SOURCE": str(PAIR_LIMIT)})
    try:
        stack.start_azurite()
        stack.start_keyvault()
        provider = stack.start_ehr("stu3")["base_url"]
        front = stack.start_gateway(INSTANCES)
        stack.facts.update({"gateway_base_url": front, "provider_base_urls": {"stu3": provider}})
        yield Fleet(stack)
    finally:
        stack.stop()


def test_three_instances_and_the_round_robin_front_all_answer(fleet: Fleet) -> None:
    assert len(set(fleet.instances)) == INSTANCES and fleet.front not in fleet.instances
    for base in [fleet.front] * INSTANCES + fleet.instances:
        assert requests.get(f"{base}/api/health", timeout=TIMEOUT).json()["status"] == "ok"


def test_a_deleted_secret_a_disabled_tenant_and_a_disabled_client_stop_on_every_instance_within_the_ttl(
        fleet: Fleet) -> None:
    client = create_client(fleet.stack.manage, "Revocation test client")
    cid, doomed = client["client_id"], client["client_secret"]
    keeper = add_secret(fleet.stack.manage, cid)["client_secret"]
    tenant = onboard(fleet.stack.manage, fleet.provider, [cid])
    other_tenant = onboard(fleet.stack.manage, fleet.provider, [cid])
    for base in fleet.instances:  # every instance has served both secrets and both tenants
        for secret in (doomed, keeper):
            assert fleet.token(base, cid, secret, tenant).status_code == 200
        assert fleet.token(base, cid, keeper, other_tenant).status_code == 200
    token = fleet.token(fleet.instances[0], cid, keeper, other_tenant).json()["access_token"]

    secret_id = client["secret"]["secret_id"]
    fleet.stack.manage("DELETE", f"/clients/{cid}/secrets/{secret_id}").raise_for_status()
    took = fleet.revoked_everywhere_within(lambda b: fleet.token(b, cid, doomed, tenant).status_code == 200)
    assert took <= TTL + SLACK, f"a deleted secret still worked {took:.1f} s later"

    fleet.stack.manage("POST", f"/tenants/{tenant}/disable").raise_for_status()
    took = fleet.revoked_everywhere_within(lambda b: fleet.token(b, cid, keeper, tenant).status_code == 200)
    assert took <= TTL + SLACK, f"a disabled tenant still got tokens {took:.1f} s later"
    for base in fleet.instances:  # the client's other tenant never stopped
        assert fleet.token(base, cid, keeper, other_tenant).status_code == 200

    fleet.stack.manage("POST", f"/clients/{cid}/disable").raise_for_status()
    took = fleet.revoked_everywhere_within(
        lambda b: fleet.token(b, cid, keeper, other_tenant).status_code == 200
        or fleet.read(b, token).status_code == 200)
    assert took <= TTL + SLACK, f"a disabled client still worked {took:.1f} s later"


def test_a_new_secret_works_at_once_on_every_instance(fleet: Fleet) -> None:
    """The snapshots must not delay what the Patients app sees: a secret or tenant created through one
    instance is good on the others at once (a missing key is read on its own)."""
    client = create_client(fleet.stack.manage, "New secret test client")
    tenant = onboard(fleet.stack.manage, fleet.provider, [client["client_id"]])
    fresh = add_secret(fleet.stack.manage, client["client_id"])["client_secret"]
    for base in fleet.instances:
        assert fleet.token(base, client["client_id"], fresh, tenant).status_code == 200


def test_a_client_from_before_the_pepper_keeps_working_everywhere_and_its_verifier_moves_to_a_table_row(
        fleet: Fleet) -> None:
    """Migration without downtime: a client registered by the previous design (no marker on its row,
    an unpeppered verifier in Key Vault) gets tokens on every instance; its first use copies a
    peppered row to Table Storage; deleting the secret then removes both, everywhere within the TTL."""
    stack = fleet.stack
    cid, secret_id = str(uuid.uuid4()), secrets.token_hex(8)
    secret = remember(f"{secret_id}~{secrets.token_urlsafe(32)}")
    clients = AzureTable.connect("clients", connection_string=stack.processes["azurite"].ready["connection_string"])
    clients.insert(cid, {"name": "Client from before", "status": "active", "created": "2026-01-01T00:00:00+00:00"})
    put_vault_secret(stack, f"client-{cid}-{secret_id}", legacy_verifier(cid, secret_id, secret))
    keeper = add_secret(stack.manage, cid)["client_secret"]  # a new secret of a legacy client: a row at once
    tenant = onboard(stack.manage, fleet.provider, [cid])

    assert fleet.token(fleet.instances[0], cid, secret, tenant).status_code == 200
    row = clients.sibling("secrets").get(f"{cid}-{secret_id}").data
    assert row["pepper_id"] and row["verifier"] != legacy_verifier(cid, secret_id, secret)
    for base in fleet.instances:
        assert fleet.token(base, cid, secret, tenant).status_code == 200
        assert fleet.token(base, cid, keeper, tenant).status_code == 200
    listed = stack.manage("GET", f"/clients/{cid}/secrets").json()["secrets"]
    assert len(listed) == 2 and secret_id in {s["secret_id"] for s in listed}  # copied once, listed once

    stack.manage("DELETE", f"/clients/{cid}/secrets/{secret_id}").raise_for_status()
    took = fleet.revoked_everywhere_within(lambda b: fleet.token(b, cid, secret, tenant).status_code == 200)
    assert took <= TTL + SLACK
    vault = json.loads((stack.state / "keyvault" / "vault.json").read_text())
    assert f"client-{cid}-{secret_id}" not in vault["secrets"], "the old Key Vault verifier was not deleted"


def test_failed_secret_limits_hold_in_aggregate_across_instances(fleet: Fleet) -> None:
    """Wrong secrets for one (client, source, secret id) spread over three instances: together they
    admit the configured limit (within 1.5x), not three times it; then each instance answers 429."""
    client = create_client(fleet.stack.manage, "Aggregate limit test client")
    tenant = onboard(fleet.stack.manage, fleet.provider, [client["client_id"]])
    wrong = client["secret"]["secret_id"] + "~" + "A" * 43
    statuses = Counter(fleet.token(fleet.instances[n % INSTANCES], client["client_id"], wrong, tenant,
                                   source="198.51.100.7").status_code for n in range(PAIR_LIMIT * INSTANCES))
    assert set(statuses) <= {401, 429}, statuses
    assert PAIR_LIMIT <= statuses[401] <= 1.5 * PAIR_LIMIT, f"admitted {statuses[401]} failures for limit {PAIR_LIMIT}"
    for base in fleet.instances:
        blocked = fleet.token(base, client["client_id"], wrong, tenant, source="198.51.100.7")
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    # The client's good secret, from its own address, is untouched by the attack.
    assert fleet.token(fleet.instances[1], client["client_id"], client["client_secret"], tenant).status_code == 200


def test_portal_sign_in_limits_hold_in_aggregate_across_instances(fleet: Fleet) -> None:
    """Wrong sign-ins for one client id, from a new address each time, spread over three instances:
    PORTAL_ATTEMPTS_PER_CLIENT (10) hold for the fleet (within 1.5x), not per instance."""
    client = create_client(fleet.stack.manage, "Portal limit test client")
    wrong = client["secret"]["secret_id"] + "~" + "P" * 43
    statuses: Counter[int] = Counter()
    for n in range(30):
        user = PortalUser(f"{fleet.instances[n % INSTANCES]}/api/portal", next_address())
        statuses[user.sign_in(client["client_id"], wrong).status_code] += 1
    assert set(statuses) <= {400, 429}, statuses
    assert 10 <= statuses[400] <= 15, f"admitted {statuses[400]} sign-ins for a limit of 10"


def test_signing_key_rotation_under_traffic_refuses_no_token(fleet: Fleet) -> None:
    client = create_client(fleet.stack.manage, "Rotation test client")
    tenant = onboard(fleet.stack.manage, fleet.provider, [client["client_id"]])
    outcomes: Counter[int] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            issued = fleet.token(fleet.instances[n % INSTANCES], client["client_id"], client["client_secret"], tenant)
            outcomes[issued.status_code] += 1
            if issued.status_code == 200:
                for base in fleet.instances:  # every instance accepts a token from any other
                    outcomes[fleet.read(base, issued.json()["access_token"]).status_code] += 1
            n += 1

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        for _ in range(2):
            time.sleep(TTL + 0.5)  # rotations spaced by the key cache TTL, as operations.md asks
            fleet.stack.manage("POST", "/signing-keys/rotate").raise_for_status()
        time.sleep(TTL + 0.5)
    finally:
        stop.set()
        worker.join(TIMEOUT)
    assert set(outcomes) == {200}, dict(outcomes)
    assert outcomes[200] > 20


def _token_traffic(fleet: Fleet, clients: list[tuple[str, str]], tenant: str, seconds: float) -> int:
    """Round-robin token requests over the clients and instances for `seconds`; returns how many."""
    issued, n, deadline = 0, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        cid, secret = clients[n % len(clients)]
        assert fleet.token(fleet.instances[n % INSTANCES], cid, secret, tenant).status_code == 200
        issued, n = issued + 1, n + 1
    return issued


def test_key_vault_and_table_reads_per_ttl_stay_flat_as_clients_grow_from_10_to_100(fleet: Fleet) -> None:
    """The same token traffic with 10, 40 and 100 clients: the vault and the tables see about the same
    number of requests (O(1) per instance per TTL), where the vault used to see one per client per
    instance per TTL."""
    clients: list[tuple[str, str]] = []
    tenant = onboard(fleet.stack.manage, fleet.provider, [])
    measured: dict[str, Any] = {"instances": INSTANCES, "ttl_seconds": TTL, "runs": {}}
    for size in (10, 40, 100):
        while len(clients) < size:
            created = create_client(fleet.stack.manage, f"Flat load client {len(clients)}")
            clients.append((created["client_id"], created["client_secret"]))
        body = route_body(fleet.provider, [cid for cid, _ in clients])
        fleet.stack.manage("PUT", f"/tenants/{tenant}", json=body).raise_for_status()
        time.sleep(TTL + 0.2)  # every instance follows the change log again
        for n in range(len(clients) * INSTANCES):  # every instance reads each client's rows once, on first use
            assert fleet.token(fleet.instances[n % INSTANCES], *clients[n // INSTANCES], tenant).status_code == 200
        fleet.vault_requests(reset=True)
        tables_before = fleet.table_requests()
        seconds = 2 * TTL
        issued = _token_traffic(fleet, clients, tenant, seconds)
        windows = INSTANCES * seconds / TTL
        measured["runs"][str(size)] = {
            "clients": size, "tokens": issued, "seconds": seconds,
            "vault_requests": fleet.vault_requests(),
            "table_requests": fleet.table_requests() - tables_before,
            "vault_per_instance_per_ttl": fleet.vault_requests() / windows,
            "table_per_instance_per_ttl": (fleet.table_requests() - tables_before) / windows}
    runs = measured["runs"]
    vault = {size: runs[size]["vault_requests"] for size in runs}
    assert vault["40"] <= 2 * max(vault["10"], 1), f"vault requests grew with clients: {vault}"
    assert vault["100"] <= 2 * max(vault["10"], 1), f"vault requests grew with clients: {vault}"
    tables = {size: runs[size]["table_requests"] for size in runs}
    assert tables["100"] <= 2 * max(tables["10"], 1), f"Table Storage requests grew with clients: {tables}"
    per_ttl = runs["100"]["vault_per_instance_per_ttl"]
    assert per_ttl <= 8, f"{per_ttl:.1f} vault requests per instance per TTL"  # pepper, key index, keys, challenges
    measured["cold_instance"] = _cold_instance_cost(fleet, clients[0], tenant)
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    MEASURED.write_text(json.dumps(measured, indent=2) + "\n")


def _cold_instance_cost(fleet: Fleet, client: tuple[str, str], tenant: str) -> dict[str, int]:
    """A fourth instance starts, issues one token and serves one read: what a cold instance costs (its
    full loads, plus one read per change logged in the last LOG_MARGIN: here, this module's writes)."""
    stack = fleet.stack
    fleet.vault_requests(reset=True)
    tables_before = fleet.table_requests()
    base = stack.spawn("gateway-cold", stack.gateway_command(0), stack.gateway_env()).ready["base_url"]
    try:
        issued = fleet.token(base, client[0], client[1], tenant)
        assert issued.status_code == 200
        assert fleet.read(base, issued.json()["access_token"]).status_code == 200
        return {"vault_requests": fleet.vault_requests(), "table_requests": fleet.table_requests() - tables_before}
    finally:
        stack.processes.pop("gateway-cold").stop()


def _set_enabled(stack: Stack, name: str, enabled: bool) -> None:
    """An operator disabling (or re-enabling) a Key Vault secret out of band, as `az keyvault secret
    set-attributes --enabled` would."""
    operator_vault(stack, lambda store: store.update_properties(name, enabled=enabled))


def test_disabling_the_pepper_in_key_vault_stops_every_secret_on_every_instance_within_the_ttl(
        fleet: Fleet) -> None:
    """The verifier rows alone verify nothing: the key that does lives in Key Vault, and switching it
    off there is felt by every instance within the TTL; switching it on again restores service."""
    client = create_client(fleet.stack.manage, "Pepper test client")
    tenant = onboard(fleet.stack.manage, fleet.provider, [client["client_id"]])
    for base in fleet.instances:
        assert fleet.token(base, client["client_id"], client["client_secret"], tenant).status_code == 200
    connection = fleet.stack.processes["azurite"].ready["connection_string"]
    pepper_id = AzureTable.connect("clients", connection_string=connection).sibling("meta").get("pepper").data
    name = f"client-secret-pepper-{pepper_id['pepper_id']}"
    _set_enabled(fleet.stack, name, False)
    try:
        took = fleet.revoked_everywhere_within(
            lambda b: fleet.token(b, client["client_id"], client["client_secret"], tenant).status_code == 200)
        assert took <= TTL + SLACK, f"secrets still verified {took:.1f} s after the pepper was disabled"
    finally:
        _set_enabled(fleet.stack, name, True)
    time.sleep(TTL + 0.2)
    for base in fleet.instances:
        assert fleet.token(base, client["client_id"], client["client_secret"], tenant).status_code == 200
