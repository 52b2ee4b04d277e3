"""A local Azure Key Vault (secrets only) for development and tests; never deployed.

No Key Vault emulator is available from the package registries we can reach, so this speaks the
secrets REST protocol closely enough for the unmodified ``azure.keyvault.secrets.SecretClient``
(4.12.0, api-version 2026-04-01) and authenticates callers with tokens from its own App Service
managed identity endpoint (:mod:`devtools.identity_endpoint`), which the unmodified
``ManagedIdentityCredential`` / ``DefaultAzureCredential`` use when ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER`` are set.

Client side::

    client = SecretClient(
        vault_url=info["vault_url"],
        credential=ManagedIdentityCredential(),
        connection_verify=info["ca_bundle"],
    )

Choices made where Key Vault has to be imitated:

* Challenge. A request without a token gets 401 with ``WWW-Authenticate: Bearer
  authorization="https://login.microsoftonline.com/<EMULATOR_TENANT_ID>", resource="..."``.
  Real Key Vault names ``https://vault.azure.net``; the SDK accepts a challenge only when the
  vault's host ends with ``.<resource host>`` (ports included), which ``127.0.0.1`` never does
  for ``vault.azure.net``. So the emulator names its host minus the first label, with its port:
  ``https://0.0.1:<port>`` (as ``vault.azure.net`` is ``myvault.vault.azure.net`` minus its first
  label). ``127.0.0.1:<port>`` ends with ``.0.0.1:<port>``, so ``verify_challenge_resource``
  can stay at its default True. Only tokens issued for exactly that resource are accepted.
* Disabled secrets: getting one (latest or by version) answers 403 ``Forbidden``, "Operation get
  is not allowed on a disabled secret.", inner error ``SecretDisabled``, as Key Vault does.
* Expired (``exp`` passed) and not-yet-valid (``nbf`` ahead) secrets are returned normally:
  Key Vault documents that a secret's get works outside the nbf/exp window (the attributes are
  informational for secrets; only keys enforce them).
* Missing ``api-version``: 400 ``BadParameter``. The exact wording real Key Vault uses could not
  be confirmed, and one Microsoft reply claims the data plane defaults to the latest version;
  we reject so that hand-written REST calls are caught in development.
* ``maxresults`` outside 1..25 answers 400 ``BadParameter`` (25 is Key Vault's maximum page);
  the default page size is 25 and can be lowered (``page_size``) to exercise paging.
* Names are case-insensitive like Key Vault's, and keep the spelling of their first set.
* Soft delete is always on (``Recoverable+Purgeable``, 90 days): setting a soft-deleted name
  answers 409 ``Conflict`` / ``ObjectIsDeletedButRecoverable``; deleted secrets are purged
  automatically once their ``scheduledPurgeDate`` passes.

Control API (plain HTTP, on the identity port, unauthenticated because it only shapes test
traffic): ``POST /_control/faults`` ``{"status": 429|500|502|503|504, "retry_after":
seconds-or-null, "count": N}`` makes the next N authenticated vault requests fail that way
(``count: 0`` clears); ``GET /_control/faults``; ``GET /_control/stats`` (every vault request,
including 401 challenges, by operation and by status); ``POST /_control/reset-stats``.

State lives in ``<data-dir>/vault.json`` (secret values in clear text, file mode 0600); the TLS
certificate in ``cert.pem``/``key.pem``; issued token digests in ``identity.json``.
Nothing here logs secret values or tokens: only method, path without query, and status.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devtools.identity_endpoint import IdentityEndpoint, RouteResult, write_json_atomically
from devtools.jsonhttp import read_body, send_json

__all__ = ["EMULATOR_TENANT_ID", "EmulatorHandle", "main", "start_emulator"]

_LOG = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Made up; azure-identity passes it along as tenant_id and managed identity ignores it.
EMULATOR_TENANT_ID = "7e57da7a-0000-4000-8000-00000000c0de"
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
MAX_PAGE_SIZE = 25
CERT_VALIDITY = dt.timedelta(days=365)
CERT_RENEW_MARGIN = dt.timedelta(days=1)
_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_FAULT_CODES = {
    429: ("Throttled", "Request was not processed because too many requests were received."),
    500: ("InternalServerError", "An internal server error occurred (injected fault)."),
    502: ("BadGateway", "Bad gateway (injected fault)."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable (injected fault)."),
    504: ("GatewayTimeout", "Gateway timeout (injected fault)."),
}
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


def _bad_parameter(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def _secret_not_found(name_or_id: str) -> KeyVaultError:
    message = f"A secret with (name/id) {name_or_id} was not found in this key vault."
    return KeyVaultError(404, "SecretNotFound", message + _NOT_FOUND_HINT)


def _deleted_secret_not_found(name: str) -> KeyVaultError:
    return KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


# --------------------------------------------------------------------------- certificate


def ensure_certificate(data_dir: Path) -> tuple[Path, Path]:
    """Reuses ``cert.pem``/``key.pem`` while valid so clients that pinned the CA bundle keep working
    across restarts; otherwise writes a new self-signed pair."""
    cert_path, key_path = data_dir / "cert.pem", data_dir / "key.pem"
    if not _certificate_usable(cert_path, key_path):
        _write_certificate(cert_path, key_path)
    return cert_path, key_path


def _certificate_usable(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return False
    now = dt.datetime.now(dt.UTC)
    return (
        cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc > now + CERT_RENEW_MARGIN
        and ipaddress.ip_address(HOST) in san.get_values_for_type(x509.IPAddress)
        and cert.public_key() == key.public_key()
    )


def _write_certificate(cert_path: Path, key_path: Path) -> None:
    """One self-signed leaf that is also the trust anchor; EC P-256 because it is instant to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Key Vault emulator (127.0.0.1)")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.unlink(missing_ok=True)
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------- persistence


class VaultStore:
    """All vault state, kept in memory and written through to one JSON file after each change.

    Layout: ``{"secrets": {lower_name: {"name", "versions": [...]}}, "deleted": {lower_name:
    {"name", "versions", "deletedDate", "scheduledPurgeDate"}}}``; versions oldest first.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = {"secrets": {}, "deleted": {}}
        if path.exists():
            self._state = json.loads(path.read_text(encoding="utf-8"))

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[dict[str, dict[str, Any]]]:
        """Serialises all access; a write is persisted only if the block finishes without error,
        so handlers must validate before they mutate."""
        with self._lock:
            purged = self._purge_due()
            yield self._state
            if write or purged:
                write_json_atomically(self._path, self._state)

    def _purge_due(self) -> bool:
        now = int(time.time())
        deleted = self._state["deleted"]
        due = [key for key, entry in deleted.items() if entry["scheduledPurgeDate"] <= now]
        for key in due:
            del deleted[key]
        return bool(due)


# --------------------------------------------------------------------------- faults and stats


@dataclass
class _Fault:
    status: int
    retry_after: float | None
    remaining: int


class FaultInjector:
    """Makes the next N authenticated vault requests fail, for retry and resilience tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: _Fault | None = None

    def arm(self, status: int, retry_after: float | None, count: int) -> dict[str, Any]:
        with self._lock:
            self._fault = _Fault(status, retry_after, count) if count > 0 else None
            return self._describe()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return self._describe()

    def _describe(self) -> dict[str, Any]:
        if self._fault is None:
            return {"status": None, "retry_after": None, "remaining": 0}
        return {
            "status": self._fault.status,
            "retry_after": self._fault.retry_after,
            "remaining": self._fault.remaining,
        }

    def take(self) -> KeyVaultError | None:
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        code, message = _FAULT_CODES[fault.status]
        headers = {} if fault.retry_after is None else {"Retry-After": _format_seconds(fault.retry_after)}
        return KeyVaultError(fault.status, code, message, headers=headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class RequestStats:
    """Counts every vault request so benchmarks can see what a client really sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()

    def record(self, operation: str, status: int) -> None:
        with self._lock:
            self._operations[operation] += 1
            self._statuses[str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._operations.values()),
                "operations": dict(self._operations),
                "statuses": dict(self._statuses),
            }

    def reset(self) -> None:
        with self._lock:
            self._operations.clear()
            self._statuses.clear()


class ControlApi:
    """The ``/_control`` routes, served by the identity endpoint's plain-HTTP server."""

    def __init__(self, faults: FaultInjector, stats: RequestStats) -> None:
        self._faults = faults
        self._stats = stats

    def route(self, method: str, path: str, body: bytes) -> RouteResult | None:
        key = (method, path.rstrip("/"))
        if key == ("POST", "/_control/faults"):
            return self._arm(body)
        if key == ("GET", "/_control/faults"):
            return 200, self._faults.describe(), {}
        if key == ("GET", "/_control/stats"):
            return 200, self._stats.snapshot(), {}
        if key == ("POST", "/_control/reset-stats"):
            self._stats.reset()
            return 200, self._stats.snapshot(), {}
        return None

    def _arm(self, body: bytes) -> RouteResult:
        try:
            spec = json.loads(body or b"{}")
            status, retry_after, count = _fault_spec(spec)
        except (ValueError, TypeError) as exc:
            return 400, {"error": {"code": "BadParameter", "message": str(exc)}}, {}
        return 200, self._faults.arm(status, retry_after, count), {}


def _fault_spec(spec: Any) -> tuple[int, float | None, int]:
    if not isinstance(spec, dict):
        raise ValueError("Body must be a JSON object.")
    status, retry_after, count = spec.get("status"), spec.get("retry_after"), spec.get("count", 1)
    if status not in _FAULT_CODES:
        raise ValueError(f"status must be one of {sorted(_FAULT_CODES)}.")
    if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
        raise ValueError("retry_after must be a non-negative number of seconds or null.")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("count must be a non-negative integer.")
    return status, retry_after, count


# --------------------------------------------------------------------------- secrets REST API


@dataclass(frozen=True)
class _Call:
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


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    for route_method, pattern, operation in _ROUTES:
        match = pattern.match(path)
        if route_method == method and match:
            groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            return operation, groups
    return "unsupported", {}


class VaultService:
    """Turns one HTTP request into one Response; no sockets here, so it is easy to reason about."""

    def __init__(
        self,
        store: VaultStore,
        identity: IdentityEndpoint,
        vault_url: str,
        faults: FaultInjector,
        stats: RequestStats,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        self.store = store
        self.identity = identity
        self.vault_url = vault_url
        self.resource = challenge_resource(vault_url)
        self.faults = faults
        self.stats = stats
        self.page_size = page_size

    def handle(self, method: str, path: str, raw_query: str, authorization: str | None, body: bytes) -> Response:
        operation, groups = _route(method, path)
        try:
            response = self._dispatch(operation, groups, raw_query, authorization, body)
        except KeyVaultError as err:
            response = err.response()
        except Exception:
            # A bug here must look like a server error to the client, not a dropped connection
            # (which the SDK would retry as a network failure).
            _LOG.exception("emulator failure in %s", operation)
            response = KeyVaultError(500, "InternalServerError", "The emulator failed.").response()
        response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        self.stats.record(operation, response.status)
        return response

    def _dispatch(
        self, operation: str, groups: dict[str, str], raw_query: str, authorization: str | None, body: bytes
    ) -> Response:
        self._authenticate(authorization)
        fault = self.faults.take()
        if fault is not None:
            raise fault
        query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        if not query.get("api-version"):
            raise _bad_parameter("The 'api-version' query parameter is missing or empty.")
        if operation == "unsupported":
            raise KeyVaultError(405, "NotSupported", "The emulator does not implement this operation.")
        if "name" in groups and not _NAME_RE.match(groups["name"]):
            raise _bad_parameter(f"The request URI contains an invalid name: {groups['name']}")
        handler: Callable[[_Call], Response] = getattr(self, f"_op_{operation}")
        return handler(_Call(query=query, body=body, **groups))

    # -- auth

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized("Request is missing a Bearer or PoP token.")
        if not self.identity.validate(token.strip(), self.resource):
            raise self._unauthorized("The access token is invalid, expired, or was not issued for this vault.")

    def _unauthorized(self, message: str) -> KeyVaultError:
        challenge = (
            f'Bearer authorization="https://login.microsoftonline.com/{EMULATOR_TENANT_ID}", resource="{self.resource}"'
        )
        return KeyVaultError(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})

    # -- operations on live secrets

    def _op_set(self, call: _Call) -> Response:
        params = _json_object(call.body)
        value = params.get("value")
        if not isinstance(value, str):
            raise _bad_parameter("Property 'value' is required and must be a string.")
        now = int(time.time())
        record = {"version": uuid.uuid4().hex, "value": value, "created": now, "updated": now, "enabled": True}
        record.update(_content_fields(params))
        record.update(_attribute_fields(params.get("attributes")))
        key = call.name.lower()
        with self.store.transaction(write=True) as state:
            if key in state["deleted"]:
                raise _deleted_conflict(state["deleted"][key]["name"])
            entry = state["secrets"].setdefault(key, {"name": call.name, "versions": []})
            entry["versions"].append(record)
            return Response(200, self._bundle(entry["name"], record, with_value=True))

    def _op_get(self, call: _Call) -> Response:
        with self.store.transaction(write=False) as state:
            name, record = _find_version(state, call.name, call.version)
            if not record["enabled"]:
                raise KeyVaultError(
                    403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"
                )
            return Response(200, self._bundle(name, record, with_value=True))

    def _op_update(self, call: _Call) -> Response:
        params = _json_object(call.body)
        changes = {**_content_fields(params), **_attribute_fields(params.get("attributes"))}
        with self.store.transaction(write=True) as state:
            name, record = _find_version(state, call.name, call.version)
            record.update(changes)
            record["updated"] = int(time.time())
            return Response(200, self._bundle(name, record, with_value=False))

    def _op_delete(self, call: _Call) -> Response:
        key = call.name.lower()
        with self.store.transaction(write=True) as state:
            entry = state["secrets"].pop(key, None)
            if entry is None:
                raise _secret_not_found(call.name)
            now = int(time.time())
            entry.update(deletedDate=now, scheduledPurgeDate=now + RECOVERABLE_DAYS * 86400)
            state["deleted"][key] = entry
            return Response(200, self._deleted_bundle(entry))

    def _op_list(self, call: _Call) -> Response:
        with self.store.transaction(write=False) as state:
            items = [
                (key, self._item(entry["name"], entry["versions"][-1], versioned=False))
                for key, entry in sorted(state["secrets"].items())
            ]
        return Response(200, self._page(items, call.query, "/secrets"))

    def _op_list_versions(self, call: _Call) -> Response:
        with self.store.transaction(write=False) as state:
            entry = state["secrets"].get(call.name.lower())
            if entry is None:
                raise _secret_not_found(call.name)
            items = [
                (f"{index:06d}", self._item(entry["name"], record, versioned=True))
                for index, record in enumerate(entry["versions"])
            ]
        return Response(200, self._page(items, call.query, f"/secrets/{entry['name']}/versions"))

    # -- operations on soft-deleted secrets

    def _op_get_deleted(self, call: _Call) -> Response:
        with self.store.transaction(write=False) as state:
            entry = state["deleted"].get(call.name.lower())
            if entry is None:
                raise _deleted_secret_not_found(call.name)
            return Response(200, self._deleted_bundle(entry))

    def _op_list_deleted(self, call: _Call) -> Response:
        with self.store.transaction(write=False) as state:
            items = [(key, self._deleted_item(entry)) for key, entry in sorted(state["deleted"].items())]
        return Response(200, self._page(items, call.query, "/deletedsecrets"))

    def _op_purge(self, call: _Call) -> Response:
        with self.store.transaction(write=True) as state:
            if state["deleted"].pop(call.name.lower(), None) is None:
                raise _deleted_secret_not_found(call.name)
        return Response(204)

    def _op_recover(self, call: _Call) -> Response:
        key = call.name.lower()
        with self.store.transaction(write=True) as state:
            entry = state["deleted"].pop(key, None)
            if entry is None:
                raise _deleted_secret_not_found(call.name)
            del entry["deletedDate"], entry["scheduledPurgeDate"]
            state["secrets"][key] = entry
            return Response(200, self._bundle(entry["name"], entry["versions"][-1], with_value=False))

    # -- response shapes

    def _secret_id(self, name: str, version: str | None = None) -> str:
        return f"{self.vault_url}/secrets/{name}" + (f"/{version}" if version else "")

    def _item(self, name: str, record: dict[str, Any], *, versioned: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self._secret_id(name, record["version"] if versioned else None),
            "attributes": _attributes(record),
        }
        for field_name in ("contentType", "tags"):
            if record.get(field_name) is not None:
                item[field_name] = record[field_name]
        return item

    def _bundle(self, name: str, record: dict[str, Any], *, with_value: bool) -> dict[str, Any]:
        bundle = self._item(name, record, versioned=True)
        if with_value:
            bundle["value"] = record["value"]
        return bundle

    def _deleted_fields(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "recoveryId": f"{self.vault_url}/deletedsecrets/{entry['name']}",
            "deletedDate": entry["deletedDate"],
            "scheduledPurgeDate": entry["scheduledPurgeDate"],
        }

    def _deleted_bundle(self, entry: dict[str, Any]) -> dict[str, Any]:
        bundle = self._bundle(entry["name"], entry["versions"][-1], with_value=False)
        return {**bundle, **self._deleted_fields(entry)}

    def _deleted_item(self, entry: dict[str, Any]) -> dict[str, Any]:
        item = self._item(entry["name"], entry["versions"][-1], versioned=False)
        return {**item, **self._deleted_fields(entry)}

    def _page(self, items: list[tuple[str, dict[str, Any]]], query: dict[str, str], path: str) -> dict[str, Any]:
        """Cursor paging (items after the skiptoken's key), so concurrent changes never make a
        client see an item twice."""
        size = _page_size(query.get("maxresults"), self.page_size)
        after = _decode_skiptoken(query.get("$skiptoken"))
        remaining = [(key, item) for key, item in items if after is None or key > after]
        page = remaining[:size]
        next_link = None
        if len(remaining) > size:
            token = _encode_skiptoken(page[-1][0])
            next_link = (
                f"{self.vault_url}{path}?api-version={query['api-version']}&$skiptoken={token}&maxresults={size}"
            )
        return {"value": [item for _, item in page], "nextLink": next_link}


def challenge_resource(vault_url: str) -> str:
    """The ``resource`` the 401 challenge names; see the module docstring for why."""
    parts = urlsplit(vault_url)
    host = parts.hostname or HOST
    parent = host.split(".", 1)[1] if "." in host else host
    return f"https://{parent}:{parts.port}"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body or b"{}")
    except ValueError as exc:
        raise _bad_parameter("The request body is not valid JSON.") from exc
    if not isinstance(params, dict):
        raise _bad_parameter("The request body must be a JSON object.")
    return params


def _content_fields(params: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "contentType" in params:
        if params["contentType"] is not None and not isinstance(params["contentType"], str):
            raise _bad_parameter("contentType must be a string.")
        fields["contentType"] = params["contentType"]
    if "tags" in params:
        tags = params["tags"]
        valid = tags is None or (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values()))
        if not valid:
            raise _bad_parameter("tags must be an object of string values.")
        fields["tags"] = tags
    return fields


def _attribute_fields(attributes: Any) -> dict[str, Any]:
    """Only the attributes a caller may set; created/updated/recovery* are the vault's."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise _bad_parameter("attributes must be an object.")
    fields: dict[str, Any] = {}
    if attributes.get("enabled") is not None:
        if not isinstance(attributes["enabled"], bool):
            raise _bad_parameter("attributes.enabled must be a boolean.")
        fields["enabled"] = attributes["enabled"]
    for key in ("nbf", "exp"):
        if key in attributes:
            value = attributes[key]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _bad_parameter(f"attributes.{key} must be seconds since the epoch.")
            fields[key] = value
    return fields


def _attributes(record: dict[str, Any]) -> dict[str, Any]:
    attributes = {
        "enabled": record["enabled"],
        "created": record["created"],
        "updated": record["updated"],
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    }
    for key in ("nbf", "exp"):
        if record.get(key) is not None:
            attributes[key] = record[key]
    return attributes


def _find_version(state: dict[str, Any], name: str, version: str) -> tuple[str, dict[str, Any]]:
    entry = state["secrets"].get(name.lower())
    if entry is None:
        raise _secret_not_found(name)
    if not version:
        return entry["name"], entry["versions"][-1]
    for record in entry["versions"]:
        if record["version"] == version.lower():
            return entry["name"], record
    raise _secret_not_found(f"{name}/{version}")


def _deleted_conflict(name: str) -> KeyVaultError:
    message = (
        f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused;"
        " in this state, the secret can only be recovered or purged."
    )
    return KeyVaultError(409, "Conflict", message, "ObjectIsDeletedButRecoverable")


def _page_size(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise _bad_parameter(f"maxresults must be an integer between 1 and {MAX_PAGE_SIZE}.")
    return int(raw)


def _encode_skiptoken(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_skiptoken(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError as exc:
        raise _bad_parameter("The $skiptoken is not valid.") from exc


# --------------------------------------------------------------------------- HTTPS plumbing


class _TLSServer(ThreadingHTTPServer):
    """Handshakes happen in the handler threads, so one stalled client cannot block accept()."""

    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__((HOST, port), _VaultRequestHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        # Set once the port is known (the challenge resource depends on it), before serving.
        self.service: VaultService | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Typically a client that rejected our certificate or hung up; not worth a traceback.
        _LOG.debug("vault connection from %s failed: %s", client_address, sys.exc_info()[1])


class _VaultRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keyvault-emulator"
    # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK
    # added ~40 ms to every request.
    disable_nagle_algorithm = True
    server: _TLSServer

    def _serve(self) -> None:
        body = read_body(self)
        parts = urlsplit(self.path)
        service = self.server.service
        assert service is not None
        response = service.handle(self.command, parts.path, parts.query, self.headers.get("Authorization"), body)
        send_json(self, response.status, response.body, response.headers)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The query and body can carry values; method, path and status are enough to debug.
        _LOG.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        _LOG.debug("vault: " + format, *args)


# --------------------------------------------------------------------------- lifecycle


class EmulatorHandle:
    """A running emulator: the fields of the ready JSON as attributes, plus :meth:`stop`."""

    def __init__(self, server: _TLSServer, identity: IdentityEndpoint, ca_bundle: Path) -> None:
        assert server.service is not None
        self._server = server
        self._identity = identity
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="keyvault-emulator", daemon=True
        )
        self.vault_url = server.service.vault_url
        self.challenge_resource = server.service.resource
        self.identity_endpoint = identity.url
        self.identity_header = identity.header
        self.control_url = identity.base_url + "/_control"
        self.ca_bundle = str(ca_bundle.resolve())

    def ready_info(self) -> dict[str, str]:
        return {
            "vault_url": self.vault_url,
            "identity_endpoint": self.identity_endpoint,
            "identity_header": self.identity_header,
            "control_url": self.control_url,
            "ca_bundle": self.ca_bundle,
        }

    def _start(self) -> EmulatorHandle:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops both servers; connections still open are dropped with the process."""
        self._server.shutdown()
        self._server.server_close()
        self._identity.stop()


def start_emulator(
    data_dir: Path | str,
    port: int = 0,
    identity_port: int = 0,
    *,
    identity_header: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> EmulatorHandle:
    """Starts the vault (HTTPS) and identity/control (HTTP) servers on 127.0.0.1 in this process.

    Pass the previous ``port``, ``identity_port`` and ``identity_header`` to restart without
    disturbing clients: their cached challenge and tokens stay valid.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = ensure_certificate(data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    faults, stats = FaultInjector(), RequestStats()
    identity = IdentityEndpoint(
        identity_port,
        header=identity_header,
        extra_route=ControlApi(faults, stats).route,
        grants_path=data / "identity.json",
    ).start()
    try:
        server = _TLSServer(port, context)
    except OSError:
        identity.stop()
        raise
    vault_url = f"https://{HOST}:{server.server_address[1]}"
    store = VaultStore(data / "vault.json")
    server.service = VaultService(store, identity, vault_url, faults, stats, page_size)
    return EmulatorHandle(server, identity, cert_path)._start()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.keyvault_emulator",
        description="Local Azure Key Vault (secrets) emulator with a managed identity endpoint.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="state, certificate and token digests")
    parser.add_argument("--port", type=int, default=0, help="vault HTTPS port (0: any free port)")
    parser.add_argument("--identity-port", type=int, default=0, help="identity/control HTTP port (0: any)")
    parser.add_argument("--identity-header", help="fixed X-IDENTITY-HEADER secret (default: random)")
    parser.add_argument("--ready-file", type=Path, help="also write the ready JSON here (removed on exit)")
    parser.add_argument("--page-size", type=int, default=MAX_PAGE_SIZE, help="default list page size")
    parser.add_argument("--log-level", default="INFO", help="logging level for stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs until SIGTERM or SIGINT; prints the ready JSON on one stdout line once listening."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    handle = start_emulator(
        args.data_dir,
        args.port,
        args.identity_port,
        identity_header=args.identity_header,
        page_size=args.page_size,
    )
    info = handle.ready_info()
    if args.ready_file:
        write_json_atomically(args.ready_file, info)
    # stdout usually ends up in a log file: everything but the identity header (a credential).
    print(json.dumps({k: v for k, v in info.items() if k != "identity_header"}), flush=True)
    try:
        stop.wait()
    finally:
        handle.stop()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
