"""Tenant isolation under load, with routes changing underneath (issue #7).

Three sample EHRs serve *disjoint* slices of the STU3 sample patients (every practitioner file,
a third of the patient files each), so every resource id and every search total belongs to one
provider only: each answer the gateway gives can be traced to the provider that produced it.
Before the load, every question is asked of each provider directly; during it, each gateway
answer must equal, exactly, its own tenant's provider's answer (totals, ids and order, read ids,
batch entries, and pages reached by following `next` links), with every URL rewritten to the
gateway. 10,000 requests from 12 threads mix tokens of three clients over three tenants.

A fourth tenant's route flips between provider A and provider B all the while (two writers
racing with PUT + If-Match): every answer for it must be wholly A's or wholly B's (for a batch,
every entry from the same one), never an error and never a mix.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.sample_ehr.loader import default_data_dir
from devtools.stack import PYTHON, Stack
from tests.gateway_calls import TIMEOUT, route_body, start_stack
from tests.reliability import Consumer, bearer

REQUESTS = int(os.environ.get("ISOLATION_REQUESTS", "10000"))  # lower it only to debug
WORKERS = 12
TIME_CAP = 150.0  # seconds: the load stops here whatever happens (it takes about 60 on two cores)
PROVIDERS = ("A", "B", "C")


# --- the data: disjoint slices --------------------------------------------------------------------

def slice_data(target: Path, index: int, parts: int) -> Path:
    source = default_data_dir() / "stu3-smart"
    folder = target / "stu3-smart"
    folder.mkdir(parents=True)
    for path in source.glob("0-practitioner-*.json"):
        shutil.copy(path, folder)
    for path in sorted(source.glob("patient-*.json"))[index::parts]:
        shutil.copy(path, folder)
    return target


def signature(payload: dict) -> tuple:
    """What identifies an answer: a read's id, or a Bundle's total and entry ids in order."""
    if payload.get("resourceType") == "Bundle":
        return ("bundle", payload.get("total"), tuple(e["resource"]["id"] for e in payload.get("entry", [])))
    return (payload.get("resourceType"), payload.get("id"))


@dataclass
class Provider:
    name: str
    base: str
    patients: list[str] = field(default_factory=list)
    expected: dict[str, tuple] = field(default_factory=dict)

    def ask(self, key: str, method: str, path: str, **kwargs: Any) -> None:
        response = requests.request(method, f"{self.base}/{path}", timeout=TIMEOUT, **kwargs)
        assert response.status_code == 200, response.text
        self.expected[key] = signature(response.json())

    def learn(self) -> None:
        """Ask the provider itself every question the load will ask the gateway."""
        listing = requests.get(f"{self.base}/Patient", params={"_count": "200"}, timeout=TIMEOUT).json()
        self.patients = [e["resource"]["id"] for e in listing["entry"]]
        self.ask("search", "GET", "Patient", params={"_count": "5"})
        self.ask("page2", "GET", "Patient", params={"_count": "2", "_offset": "2"})
        self.ask("post-search", "POST", "Patient/_search", data={"gender": "male", "_count": "3"})
        for pid in self.patients[:4]:
            self.ask(f"read:{pid}", "GET", f"Patient/{pid}")
            self.ask(f"vitals:{pid}", "GET", "Observation", params={"patient": pid, "_count": "4"})
            self.ask(f"vitals2:{pid}", "GET", "Observation", params={"patient": pid, "_count": "2"})
        self.ask("search2", "GET", "Patient", params={"_count": "2"})


@dataclass
class World:
    stack: Stack
    fhir: str
    providers: dict[str, Provider]
    tokens: list[tuple[str, str, str]]  # (client label, tenant label, token)
    flip_tenant: str
    flip_body: dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = Path(tmp_path_factory.mktemp("isolation"))
    stack = start_stack(root / "stack")
    try:
        providers: dict[str, Provider] = {}
        for index, name in enumerate(PROVIDERS):
            data = slice_data(root / f"data-{name}", index, len(PROVIDERS))
            ready = stack.spawn(f"ehr-{name}", [PYTHON, "-m", "devtools.sample_ehr", "--version", "stu3", "--port",
                                                "0", "--data-dir", str(data)]).ready
            providers[name] = Provider(name, ready["base_url"])
            providers[name].learn()
        ids = [set(p.patients) for p in providers.values()]
        assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]), "slices must be disjoint"
        x, y, z = (Consumer(stack, f"Load client {n}") for n in "XYZ")
        tenants = {name: x.onboard(p.base) for name, p in providers.items()}
        for name in PROVIDERS:
            allowed = {"A": [x, z], "B": [x, y], "C": [y, z]}[name]
            body = route_body(providers[name].base, [c.client_id for c in allowed])
            stack.manage("PUT", f"/tenants/{tenants[name]}", json=body).raise_for_status()
        flip_body = route_body(providers["A"].base, [x.client_id, y.client_id])
        flip = x.onboard(providers["A"].base)
        stack.manage("PUT", f"/tenants/{flip}", json=flip_body).raise_for_status()
        tokens = [("X", "A", x.token(tenants["A"])), ("X", "B", x.token(tenants["B"])),
                  ("Y", "B", y.token(tenants["B"])), ("Y", "C", y.token(tenants["C"])),
                  ("Z", "A", z.token(tenants["A"])), ("Z", "C", z.token(tenants["C"])),
                  ("X", "flip", x.token(flip)), ("Y", "flip", y.token(flip))]
        yield World(stack, stack.facts["fhir_base_urls"]["stu3"], providers, tokens, flip, flip_body)
    finally:
        stack.stop()


# --- the load ----------------------------------------------------------------------------------------

class Outcome:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.kinds: Counter[str] = Counter()
        self.flip_sources: Counter[str] = Counter()
        self.failures: list[str] = []

    def fail(self, text: str) -> None:
        with self.lock:
            if len(self.failures) < 30:
                self.failures.append(text)


class Worker:
    """One simulated consumer call; `run` returns how many HTTP requests it made."""

    KINDS = ("search", "read", "foreign-read", "post-search", "vitals", "batch", "next")

    def __init__(self, world: World, outcome: Outcome) -> None:
        self.world, self.outcome = world, outcome
        self.local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        return session

    def candidates(self, tenant: str) -> list[Provider]:
        return [self.world.providers[n] for n in (("A", "B") if tenant == "flip" else (tenant,))]

    def check(self, tenant: str, label: str, answers: list[tuple[str, dict]]) -> None:
        """All answers of one call must come, whole, from one of the tenant's possible providers."""
        for _, payload in answers:
            text = str(payload)
            for provider in self.world.providers.values():
                if provider.base in text:
                    self.outcome.fail(f"{label}: a provider URL leaked unrewritten: {provider.base}")
        matching = [p for p in self.candidates(tenant)
                    if all(p.expected.get(key) == signature(payload) for key, payload in answers)]
        if not matching:
            self.outcome.fail(f"{label} for tenant {tenant}: answer from no provider of its own: "
                              f"{[signature(p) for _, p in answers]}")
        elif tenant == "flip":
            with self.outcome.lock:
                self.outcome.flip_sources[matching[0].name] += 1

    def get(self, token: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.world.fhir}/{path}"
        return self.session().get(url, headers=bearer(token), timeout=TIMEOUT, **kwargs)

    def ok(self, response: requests.Response, label: str) -> dict | None:
        if response.status_code != 200:
            self.outcome.fail(f"{label}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return response.json()

    def run(self, seed: int) -> int:
        rng = random.Random(seed)
        client, tenant, token = rng.choice(self.world.tokens)
        kind = rng.choice(self.KINDS)
        label = f"{kind} by {client}"
        # A patient id of the tenant's provider (for the flip tenant, of A: B answers 404 for it then).
        own = self.candidates(tenant)[0]
        pid = rng.choice(own.patients[:4])
        made = 1
        if kind == "search":
            answers = [("search", self.ok(self.get(token, "Patient", params={"_count": "5"}), label))]
        elif kind == "read":
            response = self.get(token, f"Patient/{pid}")
            if tenant == "flip" and response.status_code == 404:
                self.count(kind, made)
                with self.outcome.lock:
                    self.outcome.flip_sources["B"] += 1
                return made
            answers = [(f"read:{pid}", self.ok(response, label))]
        elif kind == "foreign-read":
            foreign = rng.choice([p for p in self.world.providers.values() if p not in self.candidates(tenant)])
            response = self.get(token, f"Patient/{rng.choice(foreign.patients[:4])}")
            if response.status_code != 404:
                self.outcome.fail(f"{label}: another tenant's patient answered {response.status_code}")
            self.count(kind, made)
            return made
        elif kind == "post-search":
            response = self.session().post(f"{self.world.fhir}/Patient/_search", data={"gender": "male",
                                           "_count": "3"}, headers=bearer(token), timeout=TIMEOUT)
            answers = [("post-search", self.ok(response, label))]
        elif kind == "vitals":
            response = self.get(token, "Observation", params={"patient": pid, "_count": "4"})
            if tenant == "flip":  # B has no such patient: an empty Bundle, which is B's answer
                payload = self.ok(response, label)
                self.count(kind, made)
                if payload is not None and payload.get("total") == 0:
                    with self.outcome.lock:
                        self.outcome.flip_sources["B"] += 1
                    return made
                answers = [(f"vitals:{pid}", payload)]
            else:
                answers = [(f"vitals:{pid}", self.ok(response, label))]
        elif kind == "batch":
            bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": url}} for url in
                ("Patient?_count=2", "Patient?_count=5")]}
            response = self.session().post(self.world.fhir, json=bundle, headers=bearer(token), timeout=TIMEOUT)
            payload = self.ok(response, label)
            entries = payload["entry"] if payload else []
            if payload is not None and [e["response"]["status"][:3] for e in entries] != ["200", "200"]:
                self.outcome.fail(f"{label}: batch entry failed: {[e['response'] for e in entries]}")
            answers = [("search2", entries[0]["resource"]), ("search", entries[1]["resource"])] if payload else []
        else:  # next: page 1, then the gateway's own next link
            first = self.ok(self.get(token, "Patient", params={"_count": "2"}), label)
            if first is None:
                return made
            link = next((link["url"] for link in first.get("link", []) if link["relation"] == "next"), None)
            if link is None or not link.startswith(self.world.fhir):
                self.outcome.fail(f"{label}: next link missing or not the gateway's: {link}")
                return made
            made += 1
            second = self.ok(self.get(token, link), label)
            if tenant == "flip":  # the route may flip between the two pages: each page is checked alone
                self.check(tenant, label, [("search2", first)])
                answers = [("page2", second)] if second is not None else []
            else:
                answers = [("search2", first), ("page2", second)] if second is not None else []
        if all(payload is not None for _, payload in answers) and answers:
            self.check(tenant, label, answers)  # type: ignore[arg-type]
        self.count(kind, made)
        return made

    def count(self, kind: str, made: int) -> None:
        with self.outcome.lock:
            self.outcome.requests += made
            self.outcome.kinds[kind] += 1


class Flipper:
    """Two writers racing to point the flip tenant at A and at B, each with GET + PUT If-Match."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stop = threading.Event()
        self.flips = Counter()
        self.conflicts = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(name,), daemon=True) for name in ("A", "B")]

    def run(self, target: str) -> None:
        body = {**self.world.flip_body, "provider_base_url": self.world.providers[target].base}
        session = requests.Session()
        while not self.stop.is_set():
            current = self.world.stack.manage("GET", f"/tenants/{self.world.flip_tenant}")
            etag = current.headers.get("ETag", "")
            put = self.world.stack.manage("PUT", f"/tenants/{self.world.flip_tenant}", json=body,
                                          headers={"If-Match": etag})
            if put.status_code == 200:
                self.flips[target] += 1
            elif put.status_code == 412:
                self.conflicts += 1
            else:
                self.errors.append(f"PUT {put.status_code}: {put.text[:200]}")
            self.stop.wait(0.05)
        session.close()

    def __enter__(self) -> Flipper:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_ten_thousand_requests_never_cross_tenants_while_routes_flip(world: World) -> None:
    outcome = Outcome()
    worker = Worker(world, outcome)
    started = time.monotonic()
    seeds = iter(range(10**9))
    with Flipper(world) as flipper, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        def loop() -> None:
            while True:
                with outcome.lock:
                    if outcome.requests >= REQUESTS:
                        return
                    seed = next(seeds)
                if time.monotonic() - started > TIME_CAP:
                    return
                worker.run(seed)
        for future in [pool.submit(loop) for _ in range(WORKERS)]:
            future.result()
    elapsed = time.monotonic() - started
    print(f"\n{outcome.requests} requests in {elapsed:.1f} s ({outcome.requests / elapsed:.0f}/s); "
          f"calls by kind {dict(outcome.kinds)}; flip tenant answered by {dict(outcome.flip_sources)}; "
          f"route flips {dict(flipper.flips)}, If-Match conflicts {flipper.conflicts}")
    assert outcome.failures == []
    assert flipper.errors == []
    assert outcome.requests >= REQUESTS, f"only {outcome.requests} requests within {TIME_CAP:.0f} s"
    assert min(flipper.flips.values(), default=0) >= 10, "the route did not flip often enough to mean anything"
    assert outcome.flip_sources["A"] > 0 and outcome.flip_sources["B"] > 0, "flips never showed in the traffic"
