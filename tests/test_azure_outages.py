"""Azure outages mid-traffic: fail closed, say what is down, recover by itself (issue #7).

Table Storage (Azurite) and Key Vault (the emulator) are stopped while traffic runs, then started
again on the same ports; Key Vault also throttles (429 + Retry-After) and fails (5xx). Throughout:
no answer is a 500 or hangs; a protected request either succeeds or fails closed with a 503 in its
route's style (OperationOutcome; `temporarily_unavailable` at the token endpoint) carrying
Retry-After; /api/health names the part that is down; and every path works again once the part is
back, without restarting the gateway.

What still works during an outage is the documented cache behaviour (docs/operations.md), not
luck: an item held while the change logs were followed less than a TTL ago (client, secret-verifier
and route rows, the verifier pepper: SECRET_CACHE_TTL_SECONDS / ROUTE_CACHE_TTL_SECONDS; signing keys:
SIGNING_KEY_CACHE_TTL_SECONDS) is still used; an older one is never used past its TTL, so once it
expires the request fails closed. This module runs with every TTL at 3 seconds to watch both.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import (
    TIMEOUT,
    assert_oauth_error,
    assert_operation_outcome,
    assert_problem,
    eventually,
    new_tenant_id,
    put_tenant,
    route_body,
)
from tests.reliability import Consumer, bearer, put_vault_secret, restart, stop

TTL = 3
SLOW = 5.0  # no answer during an outage may take longer than this


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Persistent Azurite (so a restart keeps the tables), the Key Vault emulator, one sample EHR."""
    running = Stack(Path(tmp_path_factory.mktemp("outages")), persistent=True, extra_env={
        "SECRET_CACHE_TTL_SECONDS": str(TTL), "ROUTE_CACHE_TTL_SECONDS": str(TTL),
        "SIGNING_KEY_CACHE_TTL_SECONDS": str(TTL), "HEALTH_CACHE_SECONDS": "0"})
    try:
        running.start_azurite()
        running.start_keyvault()
        provider = running.start_ehr("stu3")["base_url"]
        base = running.start_gateway()
        running.facts.update({"gateway_base_url": base, "token_url": f"{base}/api/oauth2/token",
                              "fhir_base_urls": {"stu3": f"{base}/api/fhir/stu3"},
                              "provider_base_urls": {"stu3": provider}})
        yield running
    finally:
        running.stop()


class App:
    """One consumer: a client, a tenant it uses, and a tenant whose upstream credential (a Key Vault
    secret) was never read (nothing cached for it)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.consumer = Consumer(stack, "Outage test client")
        provider = stack.facts["provider_base_urls"]["stu3"]
        self.tenant = self.consumer.onboard(provider)
        put_vault_secret(stack, "upstream-outage-bearer", "outage-upstream-token")
        self.vault_tenant = new_tenant_id()
        body = route_body(provider, [self.consumer.client_id],
                          upstream_auth={"kind": "bearer", "secret_name": "upstream-outage-bearer"})
        assert put_tenant(stack.manage, self.vault_tenant, body).status_code == 201
        self.token = self.consumer.token(self.tenant)
        self.vault_token = self.consumer.token(self.vault_tenant)
        self.wrong_secret = self.consumer.secret_id + "~" + "W" * 43
        self.fhir = stack.facts["fhir_base_urls"]["stu3"]
        self.control = stack.processes["keyvault"].ready["control_url"]

    def read(self, token: str | None = None) -> requests.Response:
        return requests.get(f"{self.fhir}/Patient", params={"_count": "1"}, headers=bearer(token or self.token),
                            timeout=TIMEOUT)

    def token_request(self, source: str = "192.0.2.1", secret: str | None = None) -> requests.Response:
        return requests.post(self.stack.facts["token_url"], data={
            "grant_type": "client_credentials", "client_id": self.consumer.client_id,
            "client_secret": secret or self.consumer.secret, "scope": self.tenant},
            headers={"X-Forwarded-For": source}, timeout=TIMEOUT)

    def cold(self, part: str) -> requests.Response:
        """A request that needs the stopped part for something nothing has cached: a wrong secret
        (its failure is counted in the shared limits table, Table Storage), an upstream credential
        never read (Key Vault)."""
        if part == "azurite":
            return self.token_request("192.0.2.60", self.wrong_secret)
        return self.read(self.vault_token)

    def health(self) -> requests.Response:
        return requests.get(f"{self.stack.facts['gateway_base_url']}/api/health", timeout=TIMEOUT)

    def warm(self) -> float:
        """Let every cached item expire, then fetch all of them afresh; returns when."""
        time.sleep(TTL + 0.3)
        fetched = time.monotonic()
        assert self.read().status_code == 200
        assert self.token_request().status_code == 200
        return fetched

    def faults(self, **spec: Any) -> dict:
        response = requests.post(f"{self.control}/faults", json=spec, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def vault_stats(self, reset: bool = False) -> dict:
        if reset:
            return requests.post(f"{self.control}/reset-stats", timeout=TIMEOUT).json()
        return requests.get(f"{self.control}/stats", timeout=TIMEOUT).json()


@pytest.fixture(scope="module")
def app(stack: Stack) -> App:
    return App(stack)


class Traffic:
    """Background traffic (a FHIR read and a token request, over and over) recording every answer."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop = threading.Event()
        self.seen: Counter[tuple[str, int]] = Counter()
        self.problems: list[str] = []
        self.last: dict[str, int] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for kind, call in (("fhir", self.app.read), ("token", self.app.token_request)):
                started = time.monotonic()
                try:
                    response = call()
                except requests.RequestException as exc:
                    self.problems.append(f"{kind}: {type(exc).__name__}")
                    continue
                elapsed = time.monotonic() - started
                self.seen[(kind, response.status_code)] += 1
                self.last[kind] = response.status_code
                if elapsed > SLOW:
                    self.problems.append(f"{kind}: {response.status_code} after {elapsed:.1f} s")
                self.check_shape(kind, response)
            self.stop.wait(0.05)

    def check_shape(self, kind: str, response: requests.Response) -> None:
        try:
            if response.status_code == 200:
                return
            if response.status_code != 503 or not response.headers.get("Retry-After"):
                self.problems.append(f"{kind}: {response.status_code} {response.text[:200]}")
            elif kind == "fhir":
                assert_operation_outcome(response, 503, "transient")
            else:
                assert_oauth_error(response, "temporarily_unavailable", 503)
        except AssertionError as exc:
            self.problems.append(f"{kind}: {exc}")

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def assert_health(app: App, status: int, **components: str) -> None:
    response = app.health()
    assert response.status_code == status, response.text
    expected = {"table_storage": "ok", "key_vault": "ok", **components}
    assert response.json()["components"] == expected


def assert_fails_closed(response: requests.Response, kind: str) -> None:
    if kind == "fhir":
        assert_operation_outcome(response, 503, "transient")
    else:
        assert_oauth_error(response, "temporarily_unavailable", 503)
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("part", ["azurite", "keyvault"])
def test_an_outage_mid_traffic_fails_closed_then_heals_by_itself(stack: Stack, app: App, part: str) -> None:
    component = {"azurite": "table_storage", "keyvault": "key_vault"}[part]
    try:
        traffic = outage_and_recovery(stack, app, part, component)
    finally:
        if stack.processes[part].popen.poll() is not None:
            restart(stack, part)  # whatever failed above, leave the stack whole for the next test
    assert traffic.problems == []
    assert traffic.seen[("fhir", 503)] > 0 and traffic.seen[("token", 503)] > 0, dict(traffic.seen)
    assert traffic.last == {"fhir": 200, "token": 200}, "traffic did not end healthy"


def outage_and_recovery(stack: Stack, app: App, part: str, component: str) -> Traffic:
    with Traffic(app) as traffic:
        app.warm()
        stop(stack, part)
        stopped = time.monotonic()
        # Within the TTL: what was fetched before the outage still serves (documented, bounded).
        assert app.read().status_code == 200
        assert app.token_request().status_code == 200
        assert time.monotonic() - stopped < TTL - 0.5, "too slow to observe the warm window; the test is void"
        # Anything not cached fails closed at once, and health names the part.
        started = time.monotonic()
        assert_fails_closed(app.cold(part), "token" if part == "azurite" else "fhir")
        assert time.monotonic() - started < SLOW
        assert_health(app, 503, **{component: "unavailable"})
        manage = {"azurite": ("GET", "/tenants"), "keyvault": ("POST", "/signing-keys/rotate")}
        assert_problem(stack.manage(*manage[part]), 503)
        # Past the TTL nothing stale is used: the warm tenant and the token endpoint fail closed too.
        time.sleep(max(0.0, stopped + TTL + 0.5 - time.monotonic()))
        assert_fails_closed(app.read(), "fhir")
        assert_fails_closed(app.token_request(), "token")
        # The part comes back on the same port: the gateway heals without a restart.
        restart(stack, part)
        assert eventually(lambda: app.read().status_code == 200, within=15), "FHIR reads did not recover"
        assert eventually(lambda: app.token_request().status_code == 200, within=15), "tokens did not recover"
        assert app.cold(part).status_code == (401 if part == "azurite" else 200)
        assert_health(app, 200)
        assert stack.manage(*manage[part]).status_code in (200, 201)
        time.sleep(0.3)
    return traffic


def test_key_vault_throttling_is_honoured_not_hammered(stack: Stack, app: App) -> None:
    """429 + Retry-After: callers get an immediate 503 carrying the vault's wait, the vault is not
    asked again until the wait is over, and then everything works again."""
    wait = 2
    time.sleep(TTL + 0.3)  # every Key Vault item cached here (the verifier pepper, signing keys) is due
    app.vault_stats(reset=True)
    app.faults(status=429, retry_after=wait, count=1000)
    try:
        started = time.monotonic()
        answers = [app.token_request(f"192.0.2.{n}") for n in range(10, 30)]
        burst = time.monotonic() - started
        for response in answers:
            assert_fails_closed(response, "token")
            assert int(response.headers["Retry-After"]) <= wait
        assert burst < wait, f"20 throttled requests took {burst:.1f} s: something slept on the Retry-After"
        assert_health(app, 503, key_vault="throttled")
        throttled_calls = app.vault_stats()["statuses"].get("429", 0)
        assert 1 <= throttled_calls <= 2, f"the vault was asked {throttled_calls} times while it said wait"
    finally:
        app.faults(status=429, count=0)
    time.sleep(max(0.0, started + wait + 0.2 - time.monotonic()))
    assert app.token_request("192.0.2.40").status_code == 200
    assert app.read().status_code == 200
    assert_health(app, 200)


@pytest.mark.parametrize(("status", "retry_after"), [(503, 0.5), (500, None), (429, 0.2)])
def test_a_short_vault_blip_is_retried_inside_the_call(stack: Stack, app: App, status: int,
                                                       retry_after: float | None) -> None:
    """One failure with a short (or no) Retry-After: the SDK retries at once and the caller never notices."""
    time.sleep(TTL + 0.3)  # the verifier pepper and signing keys are due: the next token reads the vault
    app.vault_stats(reset=True)
    app.faults(status=status, retry_after=retry_after, count=1)
    assert app.token_request("192.0.2.50").status_code == 200
    stats = app.vault_stats()["statuses"]
    assert stats.get(str(status)) == 1 and stats.get("200", 0) >= 1, stats
