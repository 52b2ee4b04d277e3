"""What a Key Vault secrets request may say and how its refusals read: routes, validation, errors.

Plain functions over strings and bytes (no sockets, no state), so each rule of the wire format
can be read, and tested, on its own. The choices where Key Vault had to be imitated are listed in
the package docstring.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
# Made up; azure-identity passes it along as tenant_id and managed identity ignores it.
EMULATOR_TENANT_ID = "7e57da7a-0000-4000-8000-00000000c0de"
MAX_PAGE_SIZE = 25
_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_NOT_FOUND_HINT = (
    " If you recently deleted this secret you may be able to recover it using the correct recovery"
    " command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


# --------------------------------------------------------------------------- errors and responses


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class KeyVaultError(Exception):
    """Raised anywhere below the router; becomes Key Vault's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.headers = headers or {}

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return Response(self.status, {"error": error}, self.headers)


def bad_parameter(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def secret_not_found(name_or_id: str) -> KeyVaultError:
    message = f"A secret with (name/id) {name_or_id} was not found in this key vault."
    return KeyVaultError(404, "SecretNotFound", message + _NOT_FOUND_HINT)


def deleted_secret_not_found(name: str) -> KeyVaultError:
    return KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def deleted_conflict(name: str) -> KeyVaultError:
    message = (
        f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused;"
        " in this state, the secret can only be recovered or purged."
    )
    return KeyVaultError(409, "Conflict", message, "ObjectIsDeletedButRecoverable")


def secret_disabled() -> KeyVaultError:
    return KeyVaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")


def internal_error() -> KeyVaultError:
    return KeyVaultError(500, "InternalServerError", "The emulator failed.")


# --------------------------------------------------------------------------- challenge and auth


def challenge_resource(vault_url: str) -> str:
    """The ``resource`` the 401 challenge names; see the package docstring for why."""
    parts = urlsplit(vault_url)
    host = parts.hostname or HOST
    parent = host.split(".", 1)[1] if "." in host else host
    return f"https://{parent}:{parts.port}"


def unauthorized(message: str, resource: str) -> KeyVaultError:
    """A 401 carrying the challenge the SDK needs to ask for a token for ``resource``."""
    challenge = f'Bearer authorization="https://login.microsoftonline.com/{EMULATOR_TENANT_ID}", resource="{resource}"'
    return KeyVaultError(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})


def bearer_token(authorization: str | None, resource: str) -> str:
    """The token of an ``Authorization: Bearer`` header; anything else is answered with the challenge."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Request is missing a Bearer or PoP token.", resource)
    return token.strip()


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Call:
    """One validated request: its query (last value of each key wins), body and path names."""

    query: dict[str, str]
    body: bytes
    name: str = ""
    version: str = ""


_N = r"(?P<name>[^/]+)"
_V = r"(?:/(?P<version>[^/]*))?"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), operation)
    for method, pattern, operation in [
        ("GET", r"^/secrets/?$", "list"),
        ("GET", rf"^/secrets/{_N}/versions/?$", "list_versions"),
        ("GET", rf"^/secrets/{_N}{_V}/?$", "get"),
        ("PUT", rf"^/secrets/{_N}/?$", "set"),
        ("PATCH", rf"^/secrets/{_N}{_V}/?$", "update"),
        ("DELETE", rf"^/secrets/{_N}/?$", "delete"),
        ("GET", r"^/deletedsecrets/?$", "list_deleted"),
        ("GET", rf"^/deletedsecrets/{_N}/?$", "get_deleted"),
        ("DELETE", rf"^/deletedsecrets/{_N}/?$", "purge"),
        ("POST", rf"^/deletedsecrets/{_N}/recover/?$", "recover"),
    ]
]


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The operation name (``unsupported`` when none matches) and the unquoted path names."""
    for route_method, pattern, operation in _ROUTES:
        match = pattern.match(path)
        if route_method == method and match:
            groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            return operation, groups
    return "unsupported", {}


def parse_call(operation: str, groups: dict[str, str], raw_query: str, body: bytes) -> Call:
    """Checks what every operation needs, in Key Vault's order: api-version, a known route, a valid name."""
    query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
    if not query.get("api-version"):
        raise bad_parameter("The 'api-version' query parameter is missing or empty.")
    if operation == "unsupported":
        raise KeyVaultError(405, "NotSupported", "The emulator does not implement this operation.")
    if "name" in groups and not _NAME_RE.match(groups["name"]):
        raise bad_parameter(f"The request URI contains an invalid name: {groups['name']}")
    return Call(query=query, body=body, **groups)


# --------------------------------------------------------------------------- request bodies


def json_object(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body or b"{}")
    except ValueError as exc:
        raise bad_parameter("The request body is not valid JSON.") from exc
    if not isinstance(params, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return params


def secret_value(params: dict[str, Any]) -> str:
    value = params.get("value")
    if not isinstance(value, str):
        raise bad_parameter("Property 'value' is required and must be a string.")
    return value


def content_fields(params: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "contentType" in params:
        if params["contentType"] is not None and not isinstance(params["contentType"], str):
            raise bad_parameter("contentType must be a string.")
        fields["contentType"] = params["contentType"]
    if "tags" in params:
        tags = params["tags"]
        valid = tags is None or (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values()))
        if not valid:
            raise bad_parameter("tags must be an object of string values.")
        fields["tags"] = tags
    return fields


def attribute_fields(attributes: Any) -> dict[str, Any]:
    """Only the attributes a caller may set; created/updated/recovery* are the vault's."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise bad_parameter("attributes must be an object.")
    fields: dict[str, Any] = {}
    if attributes.get("enabled") is not None:
        if not isinstance(attributes["enabled"], bool):
            raise bad_parameter("attributes.enabled must be a boolean.")
        fields["enabled"] = attributes["enabled"]
    for key in ("nbf", "exp"):
        if key in attributes:
            value = attributes[key]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise bad_parameter(f"attributes.{key} must be seconds since the epoch.")
            fields[key] = value
    return fields


# --------------------------------------------------------------------------- paging parameters


def page_size(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise bad_parameter(f"maxresults must be an integer between 1 and {MAX_PAGE_SIZE}.")
    return int(raw)


def encode_skiptoken(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_skiptoken(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError as exc:
        raise bad_parameter("The $skiptoken is not valid.") from exc
