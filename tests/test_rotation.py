"""Key and secret rotation under traffic, across two gateway instances (issue #7).

Two gateway processes share one Azurite and one Key Vault, as two instances of the Function App
do, behind one public base URL (so a token from either is good on both). While traffic runs on
both, the signing key is rotated twice through one of them: no request fails, tokens
issued before keep working (they verify until they expire, by the old key's grace period),
tokens from the new key are accepted at once by the other instance, and JWKS lists old and new
keys. Then a client secret is deleted mid-traffic: it stops working everywhere within
SECRET_CACHE_TTL_SECONDS, while the client's other secret never fails, even presented from the
same address as the deleted one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import TIMEOUT, add_secret, client_credentials, remember, start_stack
from tests.reliability import Consumer, read_one_patient, signing_keys_from_vault, split_token

TTL = 3                      # SECRET_CACHE_TTL_SECONDS and SIGNING_KEY_CACHE_TTL_SECONDS here
PUBLIC = "http://gateway.rotation.test"


@dataclass
class Pair:
    stack: Stack
    bases: tuple[str, str]   # instance A (manages), instance B
    consumer: Consumer
    tenant: str

    def token(self, base: str, secret: str | None = None, source: str = "192.0.2.1") -> requests.Response:
        return client_credentials(f"{base}/api/oauth2/token", self.consumer.client_id,
                                  secret or self.consumer.secret, self.tenant, {"X-Forwarded-For": source})

    def read(self, base: str, token: str) -> requests.Response:
        return read_one_patient(base, token)

    def jwks(self, base: str) -> set[str]:
        return {k["kid"] for k in requests.get(f"{base}/api/oauth2/jwks", timeout=TIMEOUT).json()["keys"]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    stack = start_stack(Path(tmp_path_factory.mktemp("rotation")), ehr_versions=("stu3",),
                        SECRET_CACHE_TTL_SECONDS=str(TTL), SIGNING_KEY_CACHE_TTL_SECONDS=str(TTL),
                        GATEWAY_PUBLIC_BASE_URL=PUBLIC)
    try:
        second = stack.spawn("gateway-b", stack.gateway_command(0),
                             stack.gateway_env()).ready["base_url"]
        consumer = Consumer(stack, "Rotation test client")
        tenant = consumer.onboard(stack.facts["provider_base_urls"]["stu3"])
        yield Pair(stack, (stack.facts["gateway_base_url"], second), consumer, tenant)
    finally:
        stack.stop()


class Traffic:
    """Calls run over and over on background threads; every answer is tallied, failures kept."""

    def __init__(self, calls: dict[str, Callable[[], bool]]) -> None:
        self.calls, self.stop = calls, threading.Event()
        self.ok: Counter[str] = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(name,), daemon=True) for name in calls]

    def run(self, name: str) -> None:
        while not self.stop.is_set():
            try:
                passed = self.calls[name]()
            except (requests.RequestException, KeyError, ValueError) as exc:
                passed, detail = False, repr(exc)
            else:
                detail = ""
            if passed:
                self.ok[name] += 1
            else:
                self.failures.append(f"{name} {detail}")
            self.stop.wait(0.02)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_signing_key_rotation_under_traffic_fails_nothing(pair: Pair) -> None:
    a, b = pair.bases
    before = pair.token(a).json()["access_token"]
    old_kid = split_token(before)[0]["kid"]

    def old_token_on_both() -> bool:
        return pair.read(a, before).status_code == 200 and pair.read(b, before).status_code == 200

    def issued_on_one_used_on_other(issuer: str, user: str) -> Callable[[], bool]:
        def call() -> bool:
            response = pair.token(issuer)
            return response.status_code == 200 and pair.read(user, response.json()["access_token"]).status_code == 200
        return call

    def jwks_has_old_key() -> bool:
        return old_kid in pair.jwks(a) and old_kid in pair.jwks(b)

    calls = {"old token": old_token_on_both, "A to B": issued_on_one_used_on_other(a, b),
             "B to A": issued_on_one_used_on_other(b, a), "jwks": jwks_has_old_key}
    new_kids = []
    with Traffic(calls) as traffic:
        time.sleep(0.5)
        for _ in range(2):  # one cache TTL apart: each new signing key was pending, known everywhere, by then
            rotated = pair.stack.manage("POST", "/signing-keys/rotate")
            assert rotated.status_code == 201, rotated.text
            new_kids.append(rotated.json()["kid"])
            time.sleep(TTL + 0.3)  # B's key cache expires too: it signs with the newest key
    assert traffic.failures == []
    assert min(traffic.ok.values()) >= 5, dict(traffic.ok)
    # Both instances publish every key whose tokens may still be live, and sign with the newest.
    for base in (a, b):
        assert {old_kid, *new_kids} <= pair.jwks(base)
        assert split_token(pair.token(base).json()["access_token"])[0]["kid"] == new_kids[-1]
    assert pair.read(b, before).status_code == 200


def test_old_key_tokens_work_until_they_expire_and_not_after(pair: Pair) -> None:
    """By the old key, signed now: a token expiring in a few seconds works; one expired (beyond the
    30-second leeway) does not: the rotation changed which key signs, not how long tokens live."""
    a, b = pair.bases
    current = split_token(pair.token(a).json()["access_token"])
    keys = signing_keys_from_vault(pair.stack)
    old_kid = next(kid for kid in keys if kid != current[0]["kid"])
    now = int(time.time())

    def signed(exp: int) -> str:
        claims = {**current[1], "iat": now - 100, "nbf": now - 100, "exp": exp, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, keys[old_kid], algorithm="ES256", headers={"kid": old_kid, "typ": "at+jwt"})
        return remember(token)

    for base in (a, b):
        assert pair.read(base, signed(now + 5)).status_code == 200
        expired = pair.read(base, signed(now - 31))
        assert expired.status_code == 401 and "expired" in expired.json()["issue"][0]["diagnostics"]


def test_a_deleted_secret_stops_within_the_ttl_while_the_other_never_fails(pair: Pair) -> None:
    a, b = pair.bases
    doomed = add_secret(pair.stack.manage, pair.consumer.client_id)
    doomed_secret, doomed_id = doomed["client_secret"], doomed["secret"]["secret_id"]
    fleet = "192.0.2.77"  # both secrets presented from one address, as one fleet would
    doomed_ok: dict[str, float] = {}
    deleted_at: list[float] = []

    def keeper(base: str) -> Callable[[], bool]:
        return lambda: pair.token(base, source=fleet).status_code == 200

    def doomed_on(base: str) -> Callable[[], bool]:
        def call() -> bool:
            status = pair.token(base, doomed_secret, source=fleet).status_code
            if status == 200:
                doomed_ok[base] = time.monotonic()
            return status == 200 or (bool(deleted_at) and status in (401, 429))
        return call

    calls = {"keeper A": keeper(a), "keeper B": keeper(b), "doomed A": doomed_on(a), "doomed B": doomed_on(b)}
    with Traffic(calls) as traffic:
        time.sleep(1.0)
        assert set(doomed_ok) == {a, b}, "the doomed secret should work everywhere before it is deleted"
        deleted_at.append(time.monotonic())
        pair.stack.manage("DELETE", f"/clients/{pair.consumer.client_id}/secrets/{doomed_id}").raise_for_status()
        deleted_at.append(time.monotonic())  # the deletion is done when the management API says so
        time.sleep(TTL + 1.5)
    assert traffic.failures == []
    # The instance that deleted it stops at once; the other within its cache TTL.
    assert doomed_ok[a] <= deleted_at[1] + 0.2
    assert doomed_ok[b] <= deleted_at[1] + TTL + 0.2
    for base in (a, b):
        assert pair.token(base, doomed_secret, source="192.0.2.78").status_code == 401
        assert pair.token(base, source=fleet).status_code == 200
    assert traffic.ok["keeper A"] > 10 and traffic.ok["keeper B"] > 10
