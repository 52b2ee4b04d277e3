"""The caching provider (shared/upstream_auth/authenticator.py `UpstreamAuthenticator`) over the Key
Vault fake, a fake token endpoint and a fake azure-identity credential, on a clock the test moves.

What is proven: credentials are cached per tenant until shortly before they expire, and never reused
across a config change; secrets for their TTL; failures for the failure hold; the drop-on-401 and
rotation paths; one fetch for concurrent callers; a cache hit never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import StoreUnavailable
from shared.offloop import inline_or_thread
from shared.outbound import OutboundPolicy
from shared.upstream_auth import UpstreamAuthenticator, UpstreamAuthError
from tests.fakes import Clock, FakeSecretStore
from tests.unit.upstream_fakes import FakeCredential, TokenSession, json_body

pytestmark = pytest.mark.unit

BASE = "https://ehr.example.org/fhir"
MI = "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b"
BEARER = {"kind": "bearer", "secret_name": "upstream-static"}
CC = {"kind": "client_credentials", "token_url": "https://idp.example.org/token", "client_id": "gw",
      "secret_name": "upstream-cc"}


class Rig:
    """An authenticator and everything it talks to."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock(1_700_000_000)
        self.vault = FakeSecretStore(self.clock)
        self.vault.set_secret("upstream-static", "static-1")
        self.vault.set_secret("upstream-cc", "pw")
        self.session = TokenSession()
        self.identities: list[str | None] = []
        self.credential = FakeCredential(self.clock)
        kwargs.setdefault("policy", OutboundPolicy(allow_loopback_http=False))
        self.auth = UpstreamAuthenticator(self.vault, self.session, self._identity, self.clock,  # type: ignore[arg-type]  # a fake session
                                          (1.0, 2.0), **kwargs)

    def _identity(self, client_id: str | None) -> FakeCredential:
        self.identities.append(client_id)
        return self.credential

    @property
    def reads(self) -> int:
        return self.vault.calls["get_secret"]

    def header(self, config: dict, tenant: str = "t1", base: str = BASE) -> str | None:
        return self.auth.authorization(tenant, base, config)


def refuse_with(code: str) -> Any:
    return lambda form, headers: (401, json_body(error=code))


def test_kind_none_sends_nothing_and_reads_nothing() -> None:
    rig = Rig()
    assert rig.header({"kind": "none"}) is None
    assert rig.reads == 0 and rig.session.sent == []


def test_a_bearer_secret_is_read_once_per_secret_ttl() -> None:
    rig = Rig(secret_ttl=30)
    assert rig.header(BEARER) == rig.header(BEARER) == "Bearer static-1"
    assert rig.reads == 1
    rig.vault.set_secret("upstream-static", "static-2")
    rig.clock.advance(31)
    assert rig.header(BEARER) == "Bearer static-2"
    assert rig.reads == 2


@pytest.mark.parametrize(("lifetime", "margin"), [(100, 10.0), (3600, 60.0)])
def test_a_token_is_reused_until_shortly_before_it_expires(lifetime: float, margin: float) -> None:
    rig = Rig()
    rig.session.lifetime = lifetime
    first = rig.header(CC)
    rig.clock.advance(lifetime - margin - 1)
    assert rig.header(CC) == first and len(rig.session.sent) == 1
    rig.clock.advance(2)
    assert rig.header(CC) == "Bearer token-2"


def test_tenants_have_their_own_tokens() -> None:
    rig = Rig()
    assert rig.header(CC, "t1") != rig.header(CC, "t2")
    assert rig.reads == 1  # the secret behind both is read once


def test_a_changed_config_never_reuses_the_old_token() -> None:
    rig = Rig()
    first = rig.header(CC)
    assert rig.header({**CC, "scope": "system/Patient.read"}) != first
    assert rig.session.form["scope"] == "system/Patient.read"
    third = rig.header(CC)  # one credential per tenant: changing back fetches again
    assert third not in (first, None) and len(rig.session.sent) == 3
    assert rig.header({**CC, "client_id": " gw "}) == third  # the same config once normalised


def test_invalidate_drops_the_token_and_rereads_the_secret_behind_it() -> None:
    rig = Rig(secret_ttl=300)
    first, other = rig.header(CC, "t1"), rig.header(CC, "t2")
    rig.auth.invalidate("t1")
    second = rig.header(CC, "t1")
    assert second != first and rig.reads == 2
    assert rig.header(CC, "t2") == other  # other tenants keep theirs


def test_a_late_401_for_a_replaced_token_keeps_the_new_one() -> None:
    rig = Rig()
    first = rig.header(CC)
    rig.auth.invalidate("t1", rejected=first)
    second = rig.header(CC)
    rig.auth.invalidate("t1", rejected=first)
    assert rig.header(CC) == second and len(rig.session.sent) == 2


def test_a_401_after_the_refresh_time_still_drops_the_secret_behind_the_token() -> None:
    rig = Rig(secret_ttl=60)
    old = rig.header(BEARER)
    rig.clock.advance(57)  # the header is due for refresh (54 s), the secret still cached (60 s)
    rig.vault.set_secret("upstream-static", "rotated")
    rig.auth.invalidate("t1", rejected=old)
    assert rig.header(BEARER) == "Bearer rotated"


def test_a_failure_is_held_briefly_then_a_rotated_secret_is_picked_up() -> None:
    rig = Rig(failure_hold=5, secret_ttl=300)
    rig.session.answer = refuse_with("invalid_client")
    errors = []
    for _ in range(3):
        with pytest.raises(UpstreamAuthError) as caught:
            rig.header(CC)
        errors.append(caught.value)
    assert len(rig.session.sent) == 1 and rig.reads == 1  # a failing provider is not hammered
    assert {e.oauth_error for e in errors} == {"invalid_client"} and len({id(e) for e in errors}) == 3
    rig.session.answer = None
    rig.clock.advance(6)
    assert rig.header(CC) == "Bearer token-2"
    assert rig.reads == 2  # the failure dropped the secret: perhaps it was rotated


def test_invalidate_clears_a_held_failure_at_once() -> None:
    rig = Rig(failure_hold=5)
    rig.session.answer = refuse_with("invalid_client")
    with pytest.raises(UpstreamAuthError):
        rig.header(CC)
    rig.session.answer = None
    rig.auth.invalidate("t1")
    assert rig.header(CC) == "Bearer token-2"


def test_a_missing_or_disabled_secret_is_an_upstream_auth_error() -> None:
    rig = Rig()
    with pytest.raises(UpstreamAuthError, match="no credential stored"):
        rig.header({"kind": "bearer", "secret_name": "upstream-never-stored"})
    rig.vault.update_properties("upstream-static", enabled=False)
    with pytest.raises(UpstreamAuthError, match="no credential stored"):  # Key Vault reads a disabled one as absent
        rig.header(BEARER)
    rig.vault.set_secret("upstream-expired", "t", expires_on=datetime.fromtimestamp(rig.clock() - 1, UTC))
    with pytest.raises(UpstreamAuthError, match="disabled or expired"):  # Key Vault still reads an expired one
        rig.header({"kind": "bearer", "secret_name": "upstream-expired"})


def test_a_store_outage_propagates_and_is_not_held() -> None:
    rig = Rig()
    rig.vault.outage = StoreUnavailable("key_vault", "down")
    with pytest.raises(StoreUnavailable):
        rig.header(BEARER)
    rig.vault.outage = None
    assert rig.header(BEARER) == "Bearer static-1"


def test_a_hand_edited_config_is_refused_before_anything_is_read_or_sent(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    with pytest.raises(UpstreamAuthError, match="misconfigured"):
        rig.header({**CC, "token_url": "http://idp.example.org/token"})
    assert rig.reads == 0 and rig.session.sent == []
    assert [r.name for r in caplog.records] == ["gateway.upstream"]


def test_concurrent_callers_share_one_token_request() -> None:
    rig = Rig()
    rig.session.delay = 0.2
    callers, results = 8, []
    barrier = threading.Barrier(callers)

    def call() -> None:
        barrier.wait()
        results.append(rig.header(CC))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == ["Bearer token-1"] * callers and len(rig.session.sent) == 1


def test_a_cached_credential_is_served_inline_and_a_fetch_gives_way_to_a_thread() -> None:
    rig = Rig()
    fetched_on: list[str] = []
    original = rig.session.post

    def post(*args: Any, **kwargs: Any) -> Any:
        fetched_on.append(threading.current_thread().name)
        return original(*args, **kwargs)

    rig.session.post = post  # type: ignore[method-assign]  # records the thread of each fetch
    first = asyncio.run(inline_or_thread(rig.header, CC))
    assert fetched_on and fetched_on[0] != threading.main_thread().name
    assert asyncio.run(inline_or_thread(rig.header, CC)) == first and len(fetched_on) == 1


def test_azure_ad_builds_one_credential_per_identity_and_refreshes_before_expiry() -> None:
    rig = Rig()
    rig.credential.lifetime = 600
    base = "https://ws-fhir.fhir.azurehealthcareapis.com/"
    first = rig.header({"kind": "azure_ad", "client_id": MI}, "t1", base)
    assert rig.header({"kind": "azure_ad", "client_id": MI}, "t2", base) != first
    rig.header({"kind": "azure_ad"}, "t3", base)
    assert rig.identities == [MI, None]
    assert rig.credential.scopes == ["https://ws-fhir.fhir.azurehealthcareapis.com/.default"] * 3
    rig.clock.advance(600 - 60 - 1)
    assert rig.header({"kind": "azure_ad", "client_id": MI}, "t1", base) == first
    rig.clock.advance(2)
    assert rig.header({"kind": "azure_ad", "client_id": MI}, "t1", base) != first


def test_no_secret_or_token_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.upstream")
    rig = Rig()
    token = rig.header(CC)
    rig.session.answer = refuse_with("invalid_client")
    with pytest.raises(UpstreamAuthError):
        rig.header(CC, "t2")
    assert "upstream credential for tenant t1 (kind client_credentials) valid for 3600 s" in caplog.text
    assert "upstream auth for tenant t2 (kind client_credentials) failed" in caplog.text
    assert token is not None and token.removeprefix("Bearer ") not in caplog.text and "pw" not in caplog.text
    assert {r.name for r in caplog.records} == {"gateway.upstream"}
