"""The consumer portal's defences, over real HTTP against the local stack (no browser).

Security headers on every response, CSRF refusals (synchronizer token, signed double submit,
Origin and Fetch Metadata), invitation codes (single use, also under a race; expiry; revocation),
generic failures that do not tell whether a client or code exists, secrets kept out of URLs,
cookies and logs, and rate limits answering 429 with Retry-After and recovering after the window
(on a stack of its own with a 3-second window).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from portal_client import (
    PortalUser,
    error_text,
    hidden,
    invitation,
    next_address,
    registered_user,
    shown_secret,
)

from devtools.stack import Stack
from shared.clientaddr import AddressSource, client_address
from shared.portal.handlers import FORM_EXPIRED, INVITATION_FAILED, SIGNIN_FAILED

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'")
WINDOW = 3


@pytest.fixture(scope="module")
def portal(facts: dict[str, Any]) -> str:
    return facts["portal_url"]


def assert_hardened(response: requests.Response) -> None:
    headers = response.headers
    assert headers["Content-Security-Policy"] == CSP, response.url
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


def session_cookie(response: requests.Response) -> str:
    return response.headers.get("Set-Cookie", "")


# --- headers and markup ------------------------------------------------------------------------

def test_every_portal_response_carries_the_security_headers(portal: str, manage: Any) -> None:
    user, _, _ = registered_user(portal, manage)
    anonymous = PortalUser(portal)
    responses = [anonymous.get(""), anonymous.get("/signin"), anonymous.get("/register"),
                 anonymous.get("/static/portal.css"), anonymous.get("/static/portal.js"),
                 anonymous.get("/static/..%2Fhandlers.py"), anonymous.get("/static/nope.css"),
                 anonymous.get("/secrets"), anonymous.post("/signin", {"client_id": "x"}),
                 anonymous.post("/register", {"form_token": "x"}),
                 user.get(""), user.get("/secrets"), user.post("/secrets", {"csrf_token": "wrong"})]
    for response in responses:
        assert_hardened(response)
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 404, 303, 403, 403, 200, 200, 403]
    assert responses[3].headers["Content-Type"].startswith("text/css")
    assert responses[4].headers["Content-Type"].startswith("text/javascript")


def test_pages_need_no_inline_script_or_style(portal: str, manage: Any) -> None:
    """The CSP forbids inline code, so the pages must not rely on any."""
    user, _, _ = registered_user(portal, manage)
    pages = [PortalUser(portal).get(path).text for path in ("", "/signin", "/register")]
    pages += [user.get("").text, user.get("/secrets").text, user.add_secret().text]
    for page in pages:
        assert "<style" not in page and " style=" not in page
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
        assert re.search(r"\son[a-z]+=", page) is None
        assert 'lang="en"' in page and 'name="viewport"' in page


def test_user_input_is_escaped(portal: str, manage: Any) -> None:
    user, _, _ = registered_user(portal, manage, name='<script>alert("x")</script>')
    page = user.get("").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


# --- CSRF ---------------------------------------------------------------------------------------

def test_sign_in_needs_the_signed_double_submit_token(portal: str, manage: Any) -> None:
    _, client_id, secret = registered_user(portal, manage)
    form = {"client_id": client_id, "client_secret": secret}
    user = PortalUser(portal)
    token = user.form_token()
    other = PortalUser(portal).form_token()
    forged = f"{uuid.uuid4().hex}.{int(time.time()) + 600}.{'A' * 43}"
    refused = [
        user.post("/signin", form),  # no field
        user.post("/signin", {**form, "form_token": other}),  # a valid token, but not this browser's cookie
        PortalUser(portal).post("/signin", {**form, "form_token": token}),  # field without the cookie
        PortalUser(portal).post("/signin", {**form, "form_token": forged}, cookies={"portal_form": forged}),
    ]
    for response in refused:
        assert response.status_code == 403
        assert error_text(response.text) == FORM_EXPIRED
        assert "portal_session" not in session_cookie(response)
    accepted = user.post("/signin", {**form, "form_token": token})
    assert accepted.status_code == 303 and "portal_session=" in session_cookie(accepted)


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "null", "Sec-Fetch-Site": "cross-site"}],
                         ids=["foreign-origin", "cross-site", "same-site", "null-origin-cross-site"])
def test_cross_site_posts_are_refused_even_with_a_valid_token(portal: str, manage: Any,
                                                              headers: dict[str, str]) -> None:
    user, client_id, secret = registered_user(portal, manage)
    token = user.form_token()
    response = user.post("/signin", {"form_token": token, "client_id": client_id, "client_secret": secret},
                         headers=headers)
    assert response.status_code == 403
    added = user.post("/secrets", {"csrf_token": user.csrf_token()}, headers=headers)
    assert added.status_code == 403
    assert len(manage("GET", f"/clients/{client_id}/secrets").json()["secrets"]) == 1


def test_same_origin_browser_posts_pass(portal: str, manage: Any) -> None:
    """What Chromium sends for our own forms under Referrer-Policy: no-referrer: Origin null, same-origin."""
    user, _, _ = registered_user(portal, manage)
    response = user.post("/secrets", {"csrf_token": user.csrf_token()},
                         headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 201


def test_signed_in_changes_need_this_sessions_synchronizer_token(portal: str, manage: Any) -> None:
    user, client_id, _ = registered_user(portal, manage)
    other, _, _ = registered_user(portal, manage)
    for token in (None, other.csrf_token(), user.form_token(), "x" * 43):
        data = {"expires_in_days": "30", **({"csrf_token": token} if token else {})}
        assert user.post("/secrets", data).status_code == 403
        assert user.post("/signout", data).status_code == 403
        assert user.post("/jwks", {**data, "jwks": '{"keys": []}'}).status_code == 403
    assert len(manage("GET", f"/clients/{client_id}/secrets").json()["secrets"]) == 1
    assert "jwks" not in manage("GET", f"/clients/{client_id}").json()
    assert user.get("/secrets").status_code == 200, "still signed in"


# --- invitations ---------------------------------------------------------------------------------

def test_an_invitation_registers_exactly_one_client(portal: str, manage: Any) -> None:
    code = invitation(manage)
    first = PortalUser(portal).register(code)
    assert first.status_code == 201
    second = PortalUser(portal).register(code, "Second app")
    assert second.status_code == 400 and error_text(second.text) == INVITATION_FAILED
    assert "portal_session" not in session_cookie(second)
    listed = {i["invitation_id"]: i for i in manage("GET", "/invitations").json()["invitations"]}
    entry = listed[code.split(".")[0]]
    assert entry["status"] == "used" and entry["client_id"]
    assert manage("GET", f"/clients/{entry['client_id']}").json()["name"] == "Portal test app"


def test_racing_registrations_with_one_code_create_one_client(portal: str, manage: Any) -> None:
    code = invitation(manage)
    users = [PortalUser(portal) for _ in range(6)]
    tokens = [u.form_token("/register") for u in users]
    start = threading.Barrier(len(users))
    statuses: list[int] = []

    def register(user: PortalUser, token: str) -> None:
        start.wait()
        reply = user.post("/register", {"form_token": token, "invitation_code": code, "name": "Racer",
                                        "expires_in_days": "30"})
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=register, args=pair) for pair in zip(users, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 400, 400, 400, 400, 400]
    racers = [c for c in manage("GET", "/clients").json()["clients"] if c["name"] == "Racer"]
    assert len(racers) == 1


def test_an_expired_invitation_is_refused_like_any_bad_code(portal: str, manage: Any) -> None:
    code = invitation(manage, expires_in_hours=0.0005)  # 1.8 s
    time.sleep(2.5)
    reply = PortalUser(portal).register(code)
    assert reply.status_code == 400 and error_text(reply.text) == INVITATION_FAILED
    listed = {i["invitation_id"]: i["status"] for i in manage("GET", "/invitations").json()["invitations"]}
    assert listed[code.split(".")[0]] == "expired"


def test_revoked_invitations_and_the_revoke_api(portal: str, manage: Any) -> None:
    code = invitation(manage)
    invitation_id = code.split(".")[0]
    assert manage("DELETE", f"/invitations/{invitation_id}").status_code == 204
    assert manage("DELETE", f"/invitations/{invitation_id}").status_code == 204, "idempotent"
    reply = PortalUser(portal).register(code)
    assert reply.status_code == 400 and error_text(reply.text) == INVITATION_FAILED
    used = invitation(manage)
    assert PortalUser(portal).register(used).status_code == 201
    conflict = manage("DELETE", f"/invitations/{used.split('.')[0]}")
    assert conflict.status_code == 409 and "disable" in conflict.json()["detail"]
    assert manage("DELETE", "/invitations/0000000000000000").status_code == 404
    assert manage("DELETE", "/invitations/not-an-id").status_code == 404


def test_the_management_api_shows_a_code_once_and_validates_input(manage: Any, gateway: str) -> None:
    created = manage("POST", "/invitations", json={"expires_in_hours": 2, "note": "for Contoso"})
    assert created.status_code == 201 and created.headers["Cache-Control"].startswith("no-store")
    body = created.json()
    assert re.fullmatch(r"[0-9a-f]{16}\.[A-Za-z0-9_-]{43}", body["code"])
    assert body["status"] == "pending" and body["note"] == "for Contoso"
    listing = manage("GET", "/invitations").text
    assert body["code"] not in listing and body["code"].split(".")[1] not in listing
    assert "code_hash" not in listing and '"code"' not in listing
    for bad in ({"expires_in_hours": 0}, {"expires_in_hours": 721}, {"expires_in_hours": "2"},
                {"expires_in_hours": True}, {"note": "x" * 201}, {"note": 5}):
        refused = manage("POST", "/invitations", json=bad)
        assert refused.status_code == 400, bad
        assert refused.headers["Content-Type"] == "application/problem+json"
    assert requests.get(f"{gateway}/api/manage/invitations", timeout=30).status_code == 401
    assert requests.post(f"{gateway}/api/manage/invitations", json={}, timeout=30).status_code == 401


# --- generic failures ----------------------------------------------------------------------------

def test_sign_in_failures_do_not_tell_whether_a_client_exists(portal: str, manage: Any) -> None:
    _, client_id, secret = registered_user(portal, manage)
    _, disabled_id, disabled_secret = registered_user(portal, manage)
    assert manage("POST", f"/clients/{disabled_id}/disable").status_code == 200
    wrong = secret[:17] + ("A" if secret[17] != "A" else "B") + secret[18:]
    attempts = [(str(uuid.uuid4()), secret), (client_id, wrong), (client_id, "not a secret"),
                (disabled_id, disabled_secret), ("nonsense", "nonsense"), ("", "")]
    replies = [PortalUser(portal).sign_in(cid, s) for cid, s in attempts]
    assert {r.status_code for r in replies} == {400}
    assert {error_text(r.text) for r in replies} == {SIGNIN_FAILED}
    assert all("portal_session" not in session_cookie(r) for r in replies)


def test_registration_failures_all_read_the_same(portal: str, manage: Any) -> None:
    used = invitation(manage)
    assert PortalUser(portal).register(used).status_code == 201
    real = invitation(manage)
    codes = [used, f"{real.split('.')[0]}.{'A' * 43}", f"{uuid.uuid4().hex[:16]}.{'A' * 43}", "garbage", ""]
    replies = [PortalUser(portal).register(code) for code in codes]
    assert {r.status_code for r in replies} == {400}
    assert {error_text(r.text) for r in replies} == {INVITATION_FAILED}
    assert PortalUser(portal).register(real).status_code == 201, "a wrong guess does not burn the real code"


# --- secrets stay out of URLs, cookies and logs ----------------------------------------------------

def test_secrets_never_travel_in_urls_or_cookies(portal: str, manage: Any, stack: Stack) -> None:
    user, client_id, first = registered_user(portal, manage)
    added = user.add_secret()
    assert added.status_code == 201
    second = shown_secret(added.text)
    signed_in = PortalUser(portal).sign_in(client_id, second)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/api/portal"
    exchanged = [added, signed_in, user.get(""), user.get("/secrets")]
    first_id = first.split("~")[0]
    deleted = user.delete_secret(first_id)
    assert deleted.status_code == 303
    exchanged.append(deleted)
    for response in exchanged:
        for secret in (first, second):
            assert secret not in response.url and secret not in response.headers.get("Location", "")
            assert secret not in response.headers.get("Set-Cookie", "")
    for secret in (first, second):
        assert all(secret not in c.value for c in user.http.cookies), "no secret in any cookie"
        assert secret not in user.get("").text and secret not in user.get("/secrets").text, "shown once only"
    for log in Path(stack.state, "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert first not in text and second not in text, log.name


def test_the_session_cookie_is_httponly_strict_and_carries_no_secret(portal: str, manage: Any) -> None:
    user = PortalUser(portal)
    reply = user.register(invitation(manage))
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("portal_session=")
    attributes = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes and "Path=/api/portal" in attributes
    assert "Max-Age=1800" in attributes
    assert "Secure" not in attributes, "plain http locally; Secure over https (tested on the https stack)"
    value = attributes[0].partition("=")[2]
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert set(payload) == {"cid", "sid", "iat", "exp", "sec", "gen"} and payload["exp"] - payload["iat"] == 1800
    assert shown_secret(reply.text) not in value


def test_a_tampered_or_foreign_session_is_no_session(portal: str, manage: Any) -> None:
    user, _, _ = registered_user(portal, manage)
    _, victim_id, _ = registered_user(portal, manage)
    token = user.http.cookies["portal_session"]
    payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "cid": victim_id}).encode()).rstrip(b"=").decode()
    for value in (f"{forged}.{mac}", f"{payload}.{mac[:-2]}AA", "garbage", "é"):
        stranger = PortalUser(portal)
        stranger.http.cookies.set("portal_session", value)
        reply = stranger.get("/secrets")
        assert reply.status_code == 303 and reply.headers["Location"] == "/api/portal/signin"


def test_sign_out_ends_the_session_in_the_browser(portal: str, manage: Any) -> None:
    user, _, _ = registered_user(portal, manage)
    reply = user.post("/signout", {"csrf_token": user.csrf_token()})
    assert reply.status_code == 303 and reply.headers["Location"] == "/api/portal/signin"
    assert "portal_session=;" in reply.headers["Set-Cookie"] and "Max-Age=0" in reply.headers["Set-Cookie"]
    assert user.get("/secrets").status_code == 303


def test_a_disabled_client_loses_its_session(portal: str, manage: Any) -> None:
    user, client_id, _ = registered_user(portal, manage)
    assert manage("POST", f"/clients/{client_id}/disable").status_code == 200
    assert user.get("/secrets").status_code == 303


def test_the_last_live_secret_cannot_be_deleted(portal: str, manage: Any) -> None:
    user, client_id, first = registered_user(portal, manage)
    refused = user.delete_secret(first.split("~")[0])
    assert refused.status_code == 409 and "last live secret" in error_text(refused.text)
    assert user.delete_secret("0123456789abcdef").status_code == 404
    second = shown_secret(user.add_secret().text)
    other = PortalUser(portal)
    assert other.sign_in(client_id, second).status_code == 303
    deleted = other.delete_secret(first.split("~")[0])
    assert deleted.status_code == 303
    page = other.get(deleted.headers["Location"].removeprefix("/api/portal")).text
    assert "Deleted the secret starting" in page
    assert len(manage("GET", f"/clients/{client_id}/secrets").json()["secrets"]) == 1
    # The first browser signed in with the deleted secret: its session ended with it.
    assert user.get("/secrets").headers["Location"].endswith("/signin")


# --- rate limits (a stack of its own: small limits, a 3-second window, an https public URL) ------------

@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Public base https, so cookies come back Secure; requests are sent to its plain http port."""
    running = Stack(tmp_path_factory.mktemp("limited"), extra_env={
        "PORTAL_ATTEMPTS_PER_CLIENT": "3", "PORTAL_ATTEMPTS_PER_IP": "5",
        "PORTAL_ATTEMPT_WINDOW_SECONDS": str(WINDOW), "GATEWAY_PUBLIC_BASE_URL": "https://gateway.example.test"})
    try:
        running.start_all()
        yield running
    finally:
        running.stop()


class HttpsFormUser(PortalUser):
    """Secure cookies never return over plain http, so this user sends its form cookie by hand."""

    def attempt(self, path: str, fields: dict[str, str]) -> requests.Response:
        page = self.get(path)
        token = hidden(page.text, "form_token")
        return self.post(path, {"form_token": token, **fields}, headers={"Cookie": f"portal_form={token}"})


def assert_throttled(response: requests.Response) -> int:
    assert response.status_code == 429, response.status_code
    assert_hardened(response)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW
    assert f"Wait {retry_after} seconds" in error_text(response.text)
    return retry_after


def test_cookies_are_secure_when_the_portal_is_https(limited: Stack) -> None:
    reply = PortalUser(limited.facts["portal_url"]).get("/signin")
    assert reply.headers["Set-Cookie"].endswith("; Secure")


def test_sign_in_is_limited_per_address_and_recovers(limited: Stack) -> None:
    address = next_address()
    user = HttpsFormUser(limited.facts["portal_url"], address)
    guesses = [user.attempt("/signin", {"client_id": str(uuid.uuid4()), "client_secret": "x"}) for _ in range(5)]
    assert [g.status_code for g in guesses] == [400] * 5
    retry_after = assert_throttled(user.attempt("/signin", {"client_id": str(uuid.uuid4()), "client_secret": "x"}))
    other = HttpsFormUser(limited.facts["portal_url"])
    assert other.attempt("/signin", {"client_id": str(uuid.uuid4()), "client_secret": "x"}).status_code == 400
    time.sleep(retry_after + 0.2)
    assert user.attempt("/signin", {"client_id": str(uuid.uuid4()), "client_secret": "x"}).status_code == 400


def test_sign_in_is_limited_per_client_without_locking_it_out_for_good(limited: Stack) -> None:
    client = limited.manage("POST", "/clients", json={"name": "Limited client"}).json()
    client_id, secret = client["client_id"], client["client_secret"]
    portal = limited.facts["portal_url"]
    for _ in range(3):  # three guesses from three addresses
        assert HttpsFormUser(portal).attempt("/signin", {"client_id": client_id, "client_secret": "x"}
                                             ).status_code == 400
    locked = HttpsFormUser(portal).attempt("/signin", {"client_id": client_id, "client_secret": secret})
    retry_after = assert_throttled(locked)
    assert "portal_session" not in locked.headers.get("Set-Cookie", "")
    time.sleep(retry_after + 0.2)
    signed_in = HttpsFormUser(portal).attempt("/signin", {"client_id": client_id, "client_secret": secret})
    assert signed_in.status_code == 303 and "portal_session=" in signed_in.headers["Set-Cookie"]
    for _ in range(3):  # success cleared the client's count
        assert HttpsFormUser(portal).attempt("/signin", {"client_id": client_id, "client_secret": "x"}
                                             ).status_code == 400


def test_registration_is_limited_per_address_and_per_invitation(limited: Stack) -> None:
    portal = limited.facts["portal_url"]
    user = HttpsFormUser(portal)
    def guess() -> dict[str, str]:  # a well-formed code for a made-up invitation: its own per-invitation count
        return {"invitation_code": f"{uuid.uuid4().hex[:16]}.{'A' * 43}", "name": "x"}

    for _ in range(5):
        assert user.attempt("/register", guess()).status_code == 400
    assert_throttled(user.attempt("/register", guess()))
    code = limited.manage("POST", "/invitations", json={}).json()["code"]
    wrong = f"{code.split('.')[0]}.{'A' * 43}"
    for _ in range(3):
        assert HttpsFormUser(portal).attempt("/register", {"invitation_code": wrong, "name": "x"}
                                             ).status_code == 400
    retry_after = assert_throttled(HttpsFormUser(portal).attempt("/register", {"invitation_code": code,
                                                                               "name": "x"}))
    time.sleep(retry_after + 0.2)
    assert HttpsFormUser(portal).attempt("/register", {"invitation_code": code, "name": "Late but fine"}
                                         ).status_code == 201


@pytest.mark.parametrize(("header", "key"), [
    ("203.0.113.7", "203.0.113.7"), ("10.0.0.1, 203.0.113.7:51234", "203.0.113.7"),
    ("[2001:db8:1:2::5]:443", "2001:db8:1:2::/64"), ("10.0.0.1, 2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("", "unknown"), ("not-an-address", "unparsable"), ("203.0.113.7, ", "unknown")])
def test_the_source_address_is_the_hop_the_trusted_front_end_appended(header: str, key: str) -> None:
    """Right-most hop (shared/clientaddr.py): what the client wrote to the left is its own invention."""
    assert client_address({"x-forwarded-for": header} if header else {}, AddressSource()) == key
