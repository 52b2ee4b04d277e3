"""The token endpoint under abuse (issue #7): no oracle, exact RFC 6749 errors, brute force slowed.

The foundation suite (tests/test_token_endpoint.py) covers each RFC 6749 error once; this module
goes after what an attacker does with them: telling failure causes apart, smuggling credentials
or parameters, oversized and odd bodies, and guessing at speed. Failed client authentications
are rate limited (shared/client_auth.py ClientAuthThrottle): per (client, source, secret id), per
source, and per client over all sources, answered 429 `slow_down` with Retry-After; no count can
lock a legitimate client out for longer than the attack lasts plus one window, and none ever
blocks a client where it already authenticates.

This module runs its own stack with tiny limits and a 3-second window so both the limit and the
recovery can be watched in real time. Sources are set with X-Forwarded-For: the right-most hop, the
one Azure's front end appends (shared/clientaddr.py); what the client writes left of it is ignored.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import (
    TIMEOUT,
    add_secret,
    assert_oauth_error,
    basic,
    create_client,
    onboard,
    remember,
    start_stack,
)

PER_PAIR, PER_SOURCE, PER_CLIENT, WINDOW = 3, 8, 12, 3
GRANT = "client_credentials"


@pytest.fixture(scope="module")
def abuse_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(Path(tmp_path_factory.mktemp("abuse")), ehr_versions=("stu3",),
                        TOKEN_FAILURES_PER_CLIENT_AND_SOURCE=str(PER_PAIR), TOKEN_FAILURES_PER_SOURCE=str(PER_SOURCE),
                        TOKEN_FAILURES_PER_CLIENT=str(PER_CLIENT), TOKEN_FAILURE_WINDOW_SECONDS=str(WINDOW))
    try:
        yield stack
    finally:
        stack.stop()


class Client:
    def __init__(self, stack: Stack, name: str = "Abuse test client") -> None:
        created = create_client(stack.manage, name)
        self.stack = stack
        self.client_id, self.secret = created["client_id"], created["client_secret"]
        self.tenant = onboard(stack.manage, stack.facts["provider_base_urls"]["stu3"], [self.client_id])

    def form(self, secret: str | None = None, **changes: str) -> dict[str, str]:
        return {"grant_type": GRANT, "client_id": self.client_id, "client_secret": secret or self.secret,
                "scope": self.tenant, **changes}

    def wrong_secret(self) -> str:
        """A made-up secret: well formed (so it costs the gateway a Key Vault look-up), never right."""
        return f"{uuid.uuid4().hex[:16]}~{'A' * 43}"

    def guess(self) -> str:
        """A guess at the value of the client's real secret: its id is public (listings show it)."""
        return f"{self.secret.partition('~')[0]}~{secrets.token_urlsafe(32)}"


@pytest.fixture()
def client(abuse_stack: Stack) -> Client:
    return Client(abuse_stack)


def post(stack: Stack, form: Any, source: str | None = None, **headers: str) -> requests.Response:
    if source is not None:
        headers["X-Forwarded-For"] = f"10.0.0.1, {source}"  # a client-chosen hop, then the front end's
    response = requests.post(stack.facts["token_url"], data=form, headers=headers, timeout=TIMEOUT)
    if response.status_code == 200:
        remember(response.json()["access_token"])
    return response


def assert_slowed(response: requests.Response) -> int:
    body = assert_oauth_error(response, "slow_down", 429)
    assert "retry" in body["error_description"]
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= WINDOW
    return wait


# --- no oracle: every failed authentication looks the same --------------------------------------

def test_every_failed_client_authentication_is_the_same_invalid_client_answer(abuse_stack: Stack) -> None:
    """Wrong, unknown, someone else's, deleted and expired secrets, and a malformed one, all give one
    byte-identical 401: nothing tells an attacker which part was wrong."""
    owner, other = Client(abuse_stack, "Oracle owner"), Client(abuse_stack, "Oracle other")
    deleted = add_secret(abuse_stack.manage, owner.client_id)
    abuse_stack.manage("DELETE", f"/clients/{owner.client_id}/secrets/{deleted['secret']['secret_id']}") \
        .raise_for_status()
    expiry = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    expiring = add_secret(abuse_stack.manage, owner.client_id, expires_on=expiry.isoformat())
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.5)
    attempts = {
        "wrong secret": owner.form(owner.wrong_secret()),
        "unknown client": {**owner.form(), "client_id": str(uuid.uuid4())},
        "another client's secret": owner.form(other.secret),
        "deleted secret": owner.form(deleted["client_secret"]),
        "expired secret": owner.form(expiring["client_secret"]),
        "malformed secret": owner.form("not-a-secret"),
        "malformed client id": {**owner.form(), "client_id": "../../etc/passwd"},
        "upper-cased client id": {**owner.form(), "client_id": owner.client_id.upper()},
    }
    answers = {}
    for index, (label, form) in enumerate(attempts.items()):
        response = post(abuse_stack, form, f"198.51.100.{index + 1}")
        assert_oauth_error(response, "invalid_client", 401)
        answers[label] = response.content
    assert len(set(answers.values())) == 1, answers
    assert post(abuse_stack, owner.form(), "198.51.100.99").status_code == 200


# --- smuggling and odd requests ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["client_secret", "client_id", "grant_type", "scope"])
def test_token_parameters_in_the_url_are_invalid_request(client: Client, name: str) -> None:
    """RFC 6749 §2.3.1: credentials MUST NOT be in the request URI (where access logs keep them)."""
    form = client.form()
    value = form.pop(name)
    response = requests.post(client.stack.facts["token_url"], params={name: value}, data=form,
                             headers={"X-Forwarded-For": "192.0.2.10"}, timeout=TIMEOUT)
    assert_oauth_error(response, "invalid_request")
    assert value not in response.text


@pytest.mark.parametrize("body", [
    "client_secret={s}&client%5Fsecret={s}",          # the same name, once percent-encoded
    "client_id={c}&client_id={c}",                      # repeated even with the same value
    "grant_type=client_credentials&grant_type=client_credentials",
    "scope={t}&scope={t}",
])
def test_duplicated_parameters_in_any_spelling_are_invalid_request(client: Client, body: str) -> None:
    base = {"grant_type": GRANT, "client_id": client.client_id, "client_secret": client.secret,
            "scope": client.tenant}
    repeated = body.format(s=client.secret, c=client.client_id, t=client.tenant)
    names = {part.split("=")[0].replace("%5F", "_") for part in repeated.split("&")}
    rest = "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in base.items() if k not in names)
    response = post(client.stack, f"{repeated}&{rest}".encode(), "192.0.2.11",
                    **{"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(response, "invalid_request")


def test_the_body_limit_is_exact_and_a_large_body_is_refused_fast(client: Client) -> None:
    form = client.form()
    encoded = "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in form.items()) + "&padding="
    at_limit = (encoded + "x" * (16 * 1024 - len(encoded))).encode()
    assert len(at_limit) == 16 * 1024
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post(client.stack, at_limit, "192.0.2.12", **headers).status_code == 200
    assert_oauth_error(post(client.stack, at_limit + b"x", "192.0.2.12", **headers), "invalid_request", 413)
    started = time.monotonic()
    assert_oauth_error(post(client.stack, at_limit * 300, "192.0.2.12", **headers), "invalid_request", 413)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded; charset=latin-1", b"grant_type=client_credentials&client_id=\xe9\xff"),
    ("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=%FF%FE&client_secret=x"),
    ("application/x-www-form-urlencoded", b"\x00\x01\x02"),
    ("application/x-www-form-urlencoded", b"=&=&=="),
    ("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=a%00b&client_secret=c%0d%0a"),
    ("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=" + b"A" * 15000
     + b"&client_secret=x"),
    ("application/x-www-form-urlencoded;;;", b"grant_type=client_credentials"),
    ("APPLICATION/X-WWW-FORM-URLENCODED", b"grant_type=password"),
    ("application/x-www-form-urlencoded-evil", b"grant_type=client_credentials"),
    ("application/xml", b"<grant_type>client_credentials</grant_type>"),
])
def test_odd_bodies_get_an_rfc6749_error_never_a_500(abuse_stack: Stack, content_type: str, body: bytes) -> None:
    response = post(abuse_stack, body, "192.0.2.13", **{"Content-Type": content_type})
    assert response.status_code in (400, 401), response.text
    assert_oauth_error(response, response.json()["error"], response.status_code)
    assert response.json()["error"] in ("invalid_request", "invalid_client", "unsupported_grant_type")


def test_basic_scheme_is_case_insensitive_and_a_huge_basic_header_is_invalid_client(client: Client) -> None:
    form = {"grant_type": GRANT, "scope": client.tenant}
    lower = basic(client.client_id, client.secret).replace("Basic", "basic", 1)
    assert post(client.stack, form, "192.0.2.14", Authorization=lower).status_code == 200
    huge = "Basic " + "QUFB" * 2000
    response = post(client.stack, form, "192.0.2.15", Authorization=huge)
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].lower().startswith("basic")


# --- brute force --------------------------------------------------------------------------------

def test_guessing_one_clients_secret_from_one_source_is_slowed_there_only(client: Client) -> None:
    attacker, elsewhere = "203.0.113.10", "203.0.113.11"
    for _ in range(PER_PAIR):
        assert_oauth_error(post(client.stack, client.form(client.guess()), attacker), "invalid_client", 401)
    assert_slowed(post(client.stack, client.form(client.guess()), attacker))
    # Even the right secret is refused from there while the block lasts: a blocked guess learns nothing.
    wait = assert_slowed(post(client.stack, client.form(), attacker))
    # The same client from anywhere else is not affected at all.
    assert post(client.stack, client.form(), elsewhere).status_code == 200
    # The block ends by itself: Retry-After is honest.
    time.sleep(wait + 0.2)
    assert post(client.stack, client.form(), attacker).status_code == 200


def test_spraying_many_clients_from_one_source_is_slowed_for_that_source(abuse_stack: Stack) -> None:
    sprayer, bystander = "203.0.113.20", "203.0.113.21"
    victim = Client(abuse_stack, "Spray victim")
    for _ in range(PER_SOURCE):
        made_up = {"grant_type": GRANT, "client_id": str(uuid.uuid4()), "client_secret": victim.wrong_secret(),
                   "scope": victim.tenant}
        assert post(abuse_stack, made_up, sprayer).status_code == 401
    wait = assert_slowed(post(abuse_stack, victim.form(), sprayer))
    assert post(abuse_stack, victim.form(), bystander).status_code == 200
    time.sleep(wait + 0.2)
    assert post(abuse_stack, victim.form(), sprayer).status_code == 200


def test_a_distributed_attack_slows_new_sources_but_never_where_the_client_already_works(client: Client) -> None:
    """The per-client ceiling: many sources, each under its own limits, together over the ceiling."""
    home, new_place = "192.0.2.100", "192.0.2.200"
    assert post(client.stack, client.form(), home).status_code == 200  # the client's usual source
    sources = [f"198.18.0.{n}" for n in range(1, 1 + PER_CLIENT // PER_PAIR + 1)]
    failures = 0
    for source in sources:
        for _ in range(PER_PAIR):
            if failures < PER_CLIENT:
                assert post(client.stack, client.form(client.wrong_secret()), source).status_code == 401
                failures += 1
    assert_slowed(post(client.stack, client.form(client.wrong_secret()), "198.18.1.1"))  # a fresh attacker source
    wait = assert_slowed(post(client.stack, client.form(), new_place))  # a new legitimate source: slowed...
    for _ in range(3):  # ...but where the client already works, never
        assert post(client.stack, client.form(), home).status_code == 200
    time.sleep(wait + 0.2)
    assert post(client.stack, client.form(), new_place).status_code == 200  # ...and only for one window


def test_a_sustained_attack_cannot_lock_the_client_out_beyond_one_window(client: Client) -> None:
    """The attacker keeps hammering while blocked; refused attempts count nothing, so the legitimate
    client, from its own source, is never refused, and the attacker's source frees one window after
    its last admitted failure."""
    attacker, legit = "203.0.113.30", "203.0.113.31"
    refused = admitted = 0
    deadline = time.monotonic() + WINDOW * 1.5
    while time.monotonic() < deadline:
        status = post(client.stack, client.form(client.guess()), attacker).status_code
        refused += status == 429
        admitted += status == 401
        assert post(client.stack, client.form(), legit).status_code == 200
        time.sleep(0.05)
    assert refused > admitted >= PER_PAIR
    # Admitted failures are at most PER_PAIR per window: the pace the limit allows, never more.
    assert admitted <= PER_PAIR * (int(1.5 * WINDOW / WINDOW) + 2)


def test_made_up_secrets_from_one_source_are_slowed_by_the_source_count(client: Client) -> None:
    """Random secret ids dodge the per-secret count; the per-source count still stops them."""
    for _ in range(PER_SOURCE):
        assert post(client.stack, client.form(client.wrong_secret()), "203.0.113.40").status_code == 401
    assert_slowed(post(client.stack, client.form(client.wrong_secret()), "203.0.113.40"))
    assert_slowed(post(client.stack, client.form(), "203.0.113.40"))


def test_a_replica_stuck_on_a_deleted_secret_never_locks_out_its_siblings(client: Client) -> None:
    """Secret rotation in a fleet behind one address: the replicas still presenting the deleted
    secret fail, on and on; the replicas with the new secret, at the same address, never notice."""
    fleet = "192.0.2.70"
    new = add_secret(client.stack.manage, client.client_id)["client_secret"]
    assert post(client.stack, client.form(), fleet).status_code == 200
    old_id = client.secret.partition("~")[0]
    client.stack.manage("DELETE", f"/clients/{client.client_id}/secrets/{old_id}").raise_for_status()
    stuck = []
    for _ in range(PER_SOURCE + PER_CLIENT):
        stuck.append(post(client.stack, client.form(), fleet).status_code)  # the deleted secret
        assert post(client.stack, client.form(new), fleet).status_code == 200
    assert set(stuck) == {401, 429} and stuck[:PER_PAIR] == [401] * PER_PAIR


def test_successes_are_never_counted(client: Client) -> None:
    for _ in range(PER_SOURCE + PER_PAIR + 2):
        assert post(client.stack, client.form(), "192.0.2.50").status_code == 200


def test_junk_and_spoofed_forwarded_headers_fall_into_bounded_buckets(client: Client) -> None:
    """Unparsable X-Forwarded-For values share one bucket, so junk cannot mint fresh sources."""
    for index in range(PER_PAIR):
        assert post(client.stack, client.form(client.guess()), f"not-an-ip-{index}").status_code == 401
    assert_slowed(post(client.stack, client.form(), "still-not-an-ip"))
    assert post(client.stack, client.form(), "192.0.2.60").status_code == 200
    # Ports, as Azure's front end writes them, name the same address.
    for _ in range(PER_PAIR):
        assert post(client.stack, client.form(client.guess()), "192.0.2.61:50123").status_code == 401
    assert_slowed(post(client.stack, client.form(), "192.0.2.61:40000"))
    assert_slowed(post(client.stack, client.form(), "192.0.2.61"))
