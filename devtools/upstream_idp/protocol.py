"""The OAuth 2.0 wire rules the authorization server enforces: forms, Basic credentials, scopes, errors.

Plain functions over strings and bytes, each raising a :class:`Refusal` that is already the RFC
6749 §5.2 answer; the server decides only who is asking and what they may have.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
INTROSPECTION_PATH = "/introspect"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Never kept for tests to observe: they are the client's credentials.
CREDENTIAL_FIELDS = frozenset({"client_secret", "client_assertion"})
_FORM_TYPE = "application/x-www-form-urlencoded"

# (status, JSON body, extra headers)
Result = tuple[int, dict[str, Any], dict[str, str]]


class Refusal(Exception):
    """An RFC 6749 §5.2 error answer; `basic` adds the challenge §5.2 requires after Basic."""

    def __init__(self, error: str, description: str, status: int = 400, basic: bool = False) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.basic = error, description, status, basic

    def result(self) -> Result:
        headers = dict(NO_STORE)
        if self.basic:
            headers["WWW-Authenticate"] = 'Basic realm="upstream-idp"'
        return self.status, {"error": self.error, "error_description": self.description}, headers


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    if (content_type or "").split(";")[0].strip().lower() != _FORM_TYPE:
        raise Refusal("invalid_request", f"the body must be {_FORM_TYPE}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise Refusal("invalid_request", "the form body is malformed") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise Refusal("invalid_request", "a parameter is repeated (RFC 6749 §3.2)")
    return form


def client_auth_method(form: dict[str, str], authorization: str | None) -> str:
    """The one client authentication method the request uses; more than one is refused (RFC 6749 §2.3)."""
    methods = []
    if authorization is not None:
        if not authorization.lower().startswith("basic "):
            raise Refusal("invalid_request", "only the Basic scheme is accepted in Authorization")
        methods.append("client_secret_basic")
    if "client_secret" in form:
        methods.append("client_secret_post")
    if "client_assertion" in form or "client_assertion_type" in form:
        methods.append("private_key_jwt")
    if len(methods) > 1:
        raise Refusal("invalid_request", f"more than one client authentication method: {', '.join(methods)}")
    if not methods:
        raise Refusal("invalid_client", "client authentication is required", 401)
    return methods[0]


def basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: id and secret were form-urlencoded before Base64, so decode both."""
    try:
        raw = base64.b64decode(authorization.split(" ", 1)[1].strip(), validate=True).decode("utf-8")
    except (IndexError, binascii.Error, UnicodeDecodeError):
        raise Refusal("invalid_client", "malformed Basic credentials", 401, basic=True) from None
    user, colon, password = raw.partition(":")
    if not colon:
        raise Refusal("invalid_client", "malformed Basic credentials", 401, basic=True)
    return unquote_plus(user), unquote_plus(password)


def scope_set(scopes: Iterable[str] | None) -> frozenset[str] | None:
    return None if scopes is None else frozenset(scopes)


def granted_scope(requested: str | None, allowed: frozenset[str] | None, *, required: bool) -> str:
    """SMART backend requests must name a scope; others get all they may have when they name none."""
    if requested is None:
        if required:
            raise Refusal("invalid_request", "scope is required")
        return " ".join(sorted(allowed or ()))
    asked = frozenset(requested.split())
    if not asked or (allowed is not None and not asked <= allowed):
        raise Refusal("invalid_scope", "the requested scope is not granted to this client")
    return " ".join(sorted(asked))
