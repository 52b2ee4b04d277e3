"""A local App Service managed identity endpoint, so unmodified azure-identity code gets tokens offline.

``ManagedIdentityCredential`` (and ``DefaultAzureCredential``) pick the App Service protocol when
the environment has ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` (and no
``IDENTITY_SERVER_THUMBPRINT``). Through MSAL they then send (``mi_res_id`` or ``object_id``
instead of ``client_id`` for other user-assigned selectors)::

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=...]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}

and read ``access_token``, ``expires_on`` (epoch seconds), ``resource`` and ``token_type`` from
the JSON answer. Errors are answered as App Service does, ``{"statusCode": ..., "message": ...}``,
which azure-identity raises as ``CredentialUnavailableError`` (a ``ClientAuthenticationError``;
in a ``DefaultAzureCredential`` chain it means "try the next credential").

Tokens are random opaque strings, not JWTs: a resource server that shares this process (the
Key Vault emulator) checks them with :meth:`IdentityEndpoint.validate`.

Usage::

    endpoint = IdentityEndpoint()
    endpoint.start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
    token = ManagedIdentityCredential().get_token("https://example.org/.default")
    assert endpoint.validate(token.token, "https://example.org")
    endpoint.stop()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.jsonhttp import BackgroundServer, json_handler

__all__ = ["TOKEN_PATH", "ExtraRoute", "IdentityEndpoint", "RouteResult", "write_json_atomically"]

_LOG = logging.getLogger(__name__)

TOKEN_PATH = "/msi/token"  # noqa: S105 - a URL path, not a secret
API_VERSION = "2019-08-01"
DEFAULT_TOKEN_LIFETIME = 3600
# The client id reported for the system-assigned identity; fixed so logs and tests are comparable.
SYSTEM_CLIENT_ID = "00000000-0000-0000-0000-00000000e1a0"

# (status, JSON body, extra headers)
RouteResult = tuple[int, Any, dict[str, str]]
# Handles a request the token path does not: (method, path without query, body) -> result or None.
ExtraRoute = Callable[[str, str, bytes], RouteResult | None]


@dataclass(frozen=True)
class _Grant:
    resource: str
    client_id: str | None
    expires_on: int


def write_json_atomically(path: Path, data: Any) -> None:
    """Readers (and a crash mid-write) only ever see the old or the new file, never half of one.

    The file is created owner-only because callers store secret values and token digests in it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digest(token: str) -> str:
    """Tokens are kept only as digests, so a dump of this object never reveals a usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _error(status: int, message: str) -> RouteResult:
    return status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, {}


class IdentityEndpoint(BackgroundServer):
    """Issues and checks tokens for the App Service managed identity protocol.

    The public API (``url``, ``header``, ``start``, ``stop``, ``validate``, ``issued_requests``) is
    used by other tests in this repository; keep it stable.

    :param port: TCP port on 127.0.0.1; 0 picks a free one (read it back from ``url``).
    :param header: the secret expected in ``X-IDENTITY-HEADER``; random when omitted. Pass a
        fixed value when a restarted endpoint must accept clients configured for the old one.
    :param token_lifetime: seconds a token stays valid. MSAL treats tokens with less than
        5 minutes left as expired, so values under 300 make every ``get_token`` call a request.
    :param extra_route: serves paths other than the token path (the Key Vault emulator puts its
        control API here); return None for "not found".
    :param grants_path: where to keep issued grants (token digests, never tokens) so a restarted
        endpoint with the same ``header`` still accepts tokens that clients have cached; MSAL
        caches a token for most of its lifetime, so without this a restart locks clients out.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        header: str | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        extra_route: ExtraRoute | None = None,
        grants_path: Path | None = None,
    ) -> None:
        self.header = header or secrets.token_urlsafe(32)
        self.token_lifetime = token_lifetime
        super().__init__(port)
        self._extra_route = extra_route
        self._grants_path = grants_path
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = self._load_grants()
        self._issued: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        """The value for the ``IDENTITY_ENDPOINT`` environment variable."""
        return self.base_url + TOKEN_PATH

    @property
    def issued_requests(self) -> list[tuple[str, str | None]]:
        """``(resource, client_id)`` of every successful token request, oldest first (a copy)."""
        with self._lock:
            return list(self._issued)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    def validate(self, token: str, resource_prefix: str | None = None) -> bool:
        """True when this endpoint issued ``token``, it has not expired, and (if given) it was
        issued for ``resource_prefix`` itself or a URL path below it.

        The prefix only matches at a ``/`` boundary, so ``https://host:80`` does not accept a
        token issued for ``https://host:8080``.
        """
        with self._lock:
            grant = self._grants.get(_digest(token))
        if grant is None or grant.expires_on <= time.time():
            return False
        if resource_prefix is None:
            return True
        base = resource_prefix.rstrip("/")
        return grant.resource.rstrip("/") == base or grant.resource.startswith(base + "/")

    def issue(self, resource: str, client_id: str | None = None) -> dict[str, Any]:
        """Creates a token the way a token request does; lets in-process callers skip HTTP."""
        token = secrets.token_urlsafe(32)
        expires_on = int(time.time()) + self.token_lifetime
        with self._lock:
            self._grants[_digest(token)] = _Grant(resource, client_id, expires_on)
            self._issued.append((resource, client_id))
            self._save_grants()
        return {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id or SYSTEM_CLIENT_ID,
        }

    def _load_grants(self) -> dict[str, _Grant]:
        if self._grants_path is None or not self._grants_path.exists():
            return {}
        stored = json.loads(self._grants_path.read_text(encoding="utf-8"))
        now = time.time()
        grants = {digest: _Grant(**fields) for digest, fields in stored.get("grants", {}).items()}
        return {digest: grant for digest, grant in grants.items() if grant.expires_on > now}

    def _save_grants(self) -> None:
        """Caller holds the lock. Expired grants are dropped so the file cannot grow forever."""
        if self._grants_path is None:
            return
        now = time.time()
        self._grants = {d: g for d, g in self._grants.items() if g.expires_on > now}
        grants = {digest: asdict(grant) for digest, grant in self._grants.items()}
        write_json_atomically(self._grants_path, {"grants": grants})

    def header_matches(self, presented: str | None) -> bool:
        """Constant-time, so the secret header cannot be guessed byte by byte from timings."""
        return presented is not None and hmac.compare_digest(presented.encode(), self.header.encode())

    def handle_token_request(self, query: str, presented_header: str | None) -> RouteResult:
        if not self.header_matches(presented_header):
            return _error(401, "The X-IDENTITY-HEADER header is missing or does not match.")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if params.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}.")
        resource = params.get("resource", "").strip()
        if not resource:
            return _error(400, "The resource query parameter is required.")
        return 200, self.issue(resource, params.get("client_id")), {}

    def route(self, method: str, raw_path: str, body: bytes, presented_header: str | None) -> RouteResult:
        parts = urlsplit(raw_path)
        if parts.path.rstrip("/").lower() == TOKEN_PATH:
            if method != "GET":
                return _error(405, "Only GET is supported on the token endpoint.")
            return self.handle_token_request(parts.query, presented_header)
        if self._extra_route is not None:
            result = self._extra_route(method, parts.path, body)
            if result is not None:
                return result
        return _error(404, "Not found.")


def _handler_for(endpoint: IdentityEndpoint) -> type[BaseHTTPRequestHandler]:
    return json_handler("identity-endpoint", lambda request, body: endpoint.route(
        request.command, request.path, body, request.headers.get("X-IDENTITY-HEADER")), _LOG)
