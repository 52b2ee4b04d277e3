"""A scripted browser-less portal user for the tests: real HTTP with `requests`, forms parsed from the pages.

Each `PortalUser` has its own cookie jar and its own source address (X-Forwarded-For), so the
per-address rate limits one test trips never reach another.
"""

from __future__ import annotations

import html
import ipaddress
import itertools
import re
from typing import Any

import requests

from tests.gateway_calls import TIMEOUT

# Header values only (no traffic goes there): one IPv4 address per user from 100.64.0.0/10.
_ADDRESSES = (str(ipaddress.IPv4Address("100.64.0.0") + i) for i in itertools.count(1))
_FIELD = re.compile(r'name="(form_token|csrf_token)" value="([^"]*)"')
_SECRET = re.compile(r'<code id="new-secret" class="value secret">([^<]+)</code>')
_CLIENT_ID = re.compile(r'<code id="client-id" class="value">([^<]+)</code>')
_NOTICE = re.compile(r'<div class="notice error" role="alert"><p>([^<]*)</p></div>')


def next_address() -> str:
    return next(_ADDRESSES)


def hidden(page: str, name: str) -> str:
    found = dict(_FIELD.findall(page))
    assert name in found, f"no {name} field on the page"
    return html.unescape(found[name])


def error_text(page: str) -> str:
    found = _NOTICE.search(page)
    return html.unescape(found.group(1)) if found else ""


def shown_secret(page: str) -> str:
    found = _SECRET.search(page)
    assert found, "no secret shown on the page"
    return html.unescape(found.group(1))


def shown_client_id(page: str) -> str:
    found = _CLIENT_ID.search(page)
    assert found, "no client id shown on the page"
    return found.group(1)


class PortalUser:
    def __init__(self, portal_url: str, address: str | None = None) -> None:
        self.portal = portal_url
        self.http = requests.Session()
        self.http.headers["X-Forwarded-For"] = address or next_address()

    def get(self, path: str = "", **kwargs: Any) -> requests.Response:
        return self.http.get(f"{self.portal}{path}", timeout=TIMEOUT, allow_redirects=False, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
        return self.http.post(f"{self.portal}{path}", data=data, timeout=TIMEOUT, allow_redirects=False, **kwargs)

    def form_token(self, path: str = "/signin") -> str:
        return hidden(self.get(path).text, "form_token")

    def csrf_token(self) -> str:
        return hidden(self.get("/secrets").text, "csrf_token")

    def register(self, code: str, name: str = "Portal test app", expires: str = "180") -> requests.Response:
        token = self.form_token("/register")
        return self.post("/register", {"form_token": token, "invitation_code": code, "name": name,
                                       "expires_in_days": expires})

    def sign_in(self, client_id: str, secret: str) -> requests.Response:
        token = self.form_token("/signin")
        return self.post("/signin", {"form_token": token, "client_id": client_id, "client_secret": secret})

    def add_secret(self, expires: str = "30") -> requests.Response:
        return self.post("/secrets", {"csrf_token": self.csrf_token(), "expires_in_days": expires})

    def delete_secret(self, secret_id: str) -> requests.Response:
        return self.post(f"/secrets/{secret_id}/delete", {"csrf_token": self.csrf_token()})


def invitation(manage: Any, **body: Any) -> str:
    """A fresh invitation code from the management API."""
    created = manage("POST", "/invitations", json={"note": "portal test", **body})
    assert created.status_code == 201, created.text
    return created.json()["code"]


def registered_user(portal_url: str, manage: Any, name: str = "Portal test app") -> tuple[PortalUser, str, str]:
    """A user who registered (and so holds a session): the user, its client id and its first secret."""
    user = PortalUser(portal_url)
    reply = user.register(invitation(manage), name)
    assert reply.status_code == 201, error_text(reply.text) or reply.status_code
    return user, shown_client_id(reply.text), shown_secret(reply.text)
