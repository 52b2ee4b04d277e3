"""How the gateway authenticates itself to each tenant's FHIR server (the "provider").

A tenant's route carries an ``upstream_auth`` config. It names *how* to authenticate and
*where* the credential lives (a Key Vault secret name), never the credential itself, so the
route table can be read, exported and logged without leaking anything. Kinds:

``{"kind": "none"}``
    No Authorization header.
``{"kind": "bearer", "secret_name": ...}``
    A static bearer token kept in Key Vault.
``{"kind": "client_credentials", "token_url", "client_id", "secret_name", "scope"?, "auth_method"?}``
    OAuth 2.0 client credentials grant (RFC 6749 §4.4); the client secret is sent with HTTP
    Basic (``client_secret_basic``, the default, RFC 6749 §2.3.1) or in the form body
    (``client_secret_post``).
``{"kind": "smart_backend", "token_url", "client_id", "secret_name", "alg", "kid", "scope"}``
    SMART Backend Services: a ``private_key_jwt`` client assertion (RFC 7523) signed with the
    PEM private key kept in Key Vault, ``alg`` RS384 or ES384.
``{"kind": "azure_ad", "scope"?, "client_id"?}``
    A Microsoft Entra token from azure-identity (managed identity in Azure), for Azure Health
    Data Services. ``scope`` defaults to ``<origin of the provider base URL>/.default``;
    ``client_id`` selects a user-assigned managed identity.

`validate_upstream_auth` checks a config from the management API; `UpstreamAuthenticator`
turns a stored config into the Authorization header value for one upstream request.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shared.errors import FhirError, NotFound, ProblemError
from shared.guid import is_guid
from shared.http import basic_authorization_header
from shared.offloop import may_block
from shared.outbound import BadUrl, OutboundPolicy, current_policy, normalise_url
from shared.stores import SecretStore

if TYPE_CHECKING:  # requests, PyJWT and azure-core load on first use: the tenant API only validates configs
    import requests
    from azure.core.credentials import TokenCredential

__all__ = [
    "ASSERTION_TYPE",
    "SECRET_PREFIX",
    "InvalidUpstreamAuth",
    "UpstreamAuthError",
    "UpstreamAuthenticator",
    "default_credential",
    "validate_upstream_auth",
]

_LOG = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
ALGORITHMS = ("RS384", "ES384")
# SMART allows at most 5 minutes; 4 leaves room for clock skew between us and the provider.
ASSERTION_LIFETIME = 240
# RFC 6749 §5.1 only RECOMMENDS expires_in; without it, assume a short life and re-fetch.
DEFAULT_TOKEN_LIFETIME = 300.0
MAX_REFRESH_MARGIN = 60.0
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024

# Upstream credentials live in their own Key Vault name space. The gateway's own secrets
# (signing-key-*, client-*, portal-session-key, paging-link-key) never start with it, so no route
# can name them.
SECRET_PREFIX = "upstream-"  # noqa: S105 (a name space, not a password)
_SECRET_NAME = re.compile(re.escape(SECRET_PREFIX) + r"[0-9A-Za-z-]{1,118}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Keys that would put a credential into the route table; each gets a pointer to Key Vault.
_INLINE_CREDENTIALS = frozenset({
    "secret", "token", "client_secret", "private_key", "password", "access_token",
    "bearer_token", "client_assertion", "key", "pem", "jwk",
})


@dataclass(frozen=True)
class _Schema:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


_SCHEMAS: dict[str, _Schema] = {
    "none": _Schema(()),
    "bearer": _Schema(("secret_name",)),
    "client_credentials": _Schema(("token_url", "client_id", "secret_name"), ("scope", "auth_method")),
    "smart_backend": _Schema(("token_url", "client_id", "secret_name", "alg", "kid", "scope")),
    "azure_ad": _Schema((), ("scope", "client_id")),
}
_Check = Callable[[str, str, OutboundPolicy], str]

_REFUSALS = {
    "invalid_client": "refused the gateway's credentials",
    "invalid_scope": "refused the requested scope",
    "unauthorized_client": "does not allow the gateway's client this grant",
    "unsupported_grant_type": "does not support the client_credentials grant",
    "invalid_grant": "refused the grant",
    "invalid_request": "rejected the token request as malformed",
}


class InvalidUpstreamAuth(ProblemError):
    """A management-API input error; `.field` names the offending key (``upstream_auth.<key>``)."""

    field: str  # always set, unlike a ProblemError's

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, "Invalid upstream_auth", message, field)
        self.message = message


class UpstreamAuthError(FhirError):
    """The gateway could not obtain credentials for the provider (a 502 to the client).

    The message is safe to show: it never carries a secret, a token or the provider's response
    body, only the OAuth ``error`` code (also in `.oauth_error`) when the provider sent one.
    """

    def __init__(self, message: str, *, oauth_error: str | None = None) -> None:
        super().__init__(502, "exception", message)
        self.message = message
        self.oauth_error = oauth_error


# --- validation -----------------------------------------------------------------------------------


def validate_upstream_auth(config: object, provider_base_url: str, policy: OutboundPolicy | None = None) -> dict:
    """Checks and normalises a config from the management API; raises InvalidUpstreamAuth.

    `provider_base_url` must already be validated (it is the audience an azure_ad scope is held
    to); `policy` defaults to this process's app settings. Normalising strips surrounding
    whitespace, puts token URLs in canonical form and fills ``auth_method``. The azure_ad default
    scope is left out on purpose: it is derived from the provider base URL at request time, so
    a later change of the base URL cannot leave a stale audience behind.
    """
    policy = policy or current_policy()
    if not isinstance(config, dict):
        raise InvalidUpstreamAuth("upstream_auth", "must be a JSON object with a 'kind'")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise InvalidUpstreamAuth("upstream_auth.kind", f"must be one of: {', '.join(_SCHEMAS)}")
    _check_keys(config, kind)
    values = {key: _string_field(config[key], key) for key in sorted(config) if key != "kind"}
    for key, value in values.items():
        check = _FIELD_CHECKS.get(key)  # kid is opaque: printable and non-empty is all we ask
        if check is not None:
            values[key] = check(value, kind, policy)
    if kind == "client_credentials":
        values.setdefault("auth_method", "client_secret_basic")
    if kind == "azure_ad":
        _check_azure_scope(values.get("scope"), provider_base_url, policy)
    return {"kind": kind, **values}


def _check_keys(config: dict, kind: str) -> None:
    schema = _SCHEMAS[kind]
    for key in sorted(k for k in config if k in _INLINE_CREDENTIALS):
        raise InvalidUpstreamAuth(
            f"upstream_auth.{key}",
            "credentials are never stored in the route: put the value in Key Vault and "
            "reference it with 'secret_name'",
        )
    allowed = {"kind", *schema.required, *schema.optional}
    for key in sorted(k for k in config if k not in allowed):
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", f"is not a field of kind '{kind}'")
    for key in schema.required:
        if key not in config:
            raise InvalidUpstreamAuth(f"upstream_auth.{key}", f"is required for kind '{kind}'")


def _string_field(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must be a string")
    value = value.strip()
    if not value:
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must not be empty")
    if not value.isprintable():
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must not contain control characters")
    return value


def _check_token_url(value: str, kind: str, policy: OutboundPolicy) -> str:
    """https only, so a client secret or assertion never crosses the network in clear; plain
    http only for loopback hosts under the local-development allowance. Returns the canonical form."""
    try:
        return normalise_url(value, policy, base=False)
    except BadUrl as exc:
        raise InvalidUpstreamAuth("upstream_auth.token_url", str(exc)) from None


def _check_secret_name(value: str, kind: str, policy: OutboundPolicy) -> str:
    """Only the upstream name space: a route must never make the gateway send its own secrets."""
    if not _SECRET_NAME.fullmatch(value):
        raise InvalidUpstreamAuth(
            "upstream_auth.secret_name",
            f"must be a Key Vault secret name starting with '{SECRET_PREFIX}' (at most 127 letters, digits or '-')",
        )
    return value


def _check_scope(value: str, kind: str, policy: OutboundPolicy) -> str:
    tokens = value.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidUpstreamAuth("upstream_auth.scope", "must be space-separated OAuth scope tokens")
    if kind == "azure_ad" and len(tokens) != 1:
        raise InvalidUpstreamAuth("upstream_auth.scope", "must be a single scope such as '<resource>/.default'")
    return value


def _check_client_id(value: str, kind: str, policy: OutboundPolicy) -> str:
    if kind == "azure_ad" and not is_guid(value):
        raise InvalidUpstreamAuth(
            "upstream_auth.client_id", "must be the client id (a GUID) of a user-assigned managed identity"
        )
    return value


def _check_auth_method(value: str, kind: str, policy: OutboundPolicy) -> str:
    if value not in AUTH_METHODS:
        raise InvalidUpstreamAuth("upstream_auth.auth_method", f"must be one of: {', '.join(AUTH_METHODS)}")
    return value


def _check_alg(value: str, kind: str, policy: OutboundPolicy) -> str:
    if value not in ALGORITHMS:
        raise InvalidUpstreamAuth("upstream_auth.alg", f"must be one of: {', '.join(ALGORITHMS)}")
    return value


def _check_azure_scope(scope: str | None, provider_base_url: str, policy: OutboundPolicy) -> None:
    """The managed identity's token may only go to the provider it is meant for: the scope is the
    provider's own audience or one the operator allowed in app settings, never e.g. Storage or
    Key Vault (the gateway's identity can read and write both)."""
    audience = _default_azure_scope(provider_base_url)
    if scope is not None and scope != audience and scope not in policy.azure_ad_scopes_allowed:
        raise InvalidUpstreamAuth(
            "upstream_auth.scope",
            f"must be the provider's own audience '{audience}' or appear in UPSTREAM_AZURE_AD_SCOPES_ALLOWED",
        )


_FIELD_CHECKS: dict[str, _Check] = {
    "token_url": _check_token_url,
    "secret_name": _check_secret_name,
    "scope": _check_scope,
    "client_id": _check_client_id,
    "auth_method": _check_auth_method,
    "alg": _check_alg,
}


def _default_azure_scope(provider_base_url: str) -> str:
    parts = urlsplit(provider_base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidUpstreamAuth(
            "upstream_auth.scope", "cannot be checked: the provider base URL has no origin"
        )
    return f"{parts.scheme}://{parts.netloc}/.default"


# --- authenticator --------------------------------------------------------------------------------


def default_credential(client_id: str | None) -> TokenCredential:
    """The production credential factory.

    azure.identity (and MSAL under it) is imported here, not at module load, so cold starts of a
    gateway whose tenants use no azure_ad provider do not pay for it.
    """
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


@dataclass(frozen=True)
class _Entry:
    """A tenant's cached header, or a recent failure held so waiters do not all retry it."""

    fingerprint: str
    refresh_at: float
    secret_name: str | None
    header: str | None = None
    error: UpstreamAuthError | None = None


class UpstreamAuthenticator:
    """Produces the Authorization header value for a tenant's upstream requests.

    One instance per process, shared by all requests: it holds the token cache (one entry per
    tenant, refreshed shortly before expiry), a short-TTL cache of Key Vault secrets, and the
    azure-identity credentials (built once per managed identity, since each holds its own token
    cache and HTTP pipeline). A per-tenant lock makes concurrent callers share one refresh.

    :param secrets: where credentials live; `StoreUnavailable` from it propagates unchanged.
    :param session: HTTP session for token endpoints (a new one when omitted).
    :param credential_factory: builds a TokenCredential for a managed-identity client id (None:
        the default identity); `default_credential` when omitted.
    :param clock: epoch seconds; injectable so tests can step over expiry margins.
    :param timeout: (connect, read) seconds for token endpoint calls.
    :param secret_ttl: seconds a secret read from the store is reused.
    :param failure_hold: seconds a failed refresh is answered from memory, so a broken provider
        is not hammered by every waiting request (`invalidate` clears it at once).
    :param policy: where credentials may be sent; this process's app settings when omitted.
        Stored configs are re-checked against it on every refresh.
    """

    def __init__(
        self,
        secrets: SecretStore,
        session: requests.Session | None = None,
        credential_factory: Callable[[str | None], TokenCredential] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: tuple[float, float] = (5.0, 30.0),
        secret_ttl: float = 60.0,
        failure_hold: float = 5.0,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self._secrets = secrets
        self._session = session or _new_session()
        self._credential_factory = credential_factory or default_credential
        self._clock = clock
        self._timeout = timeout
        self._secret_ttl = secret_ttl
        self._failure_hold = failure_hold
        self._policy = policy
        self._guard = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._entries: dict[str, _Entry] = {}
        self._secret_cache: dict[str, tuple[str, float]] = {}
        self._credentials: dict[str | None, TokenCredential] = {}

    def authorization(self, tenant_id: str, provider_base_url: str, config: dict) -> str | None:
        """The Authorization header value for this tenant's provider, or None for kind none.

        The stored config is re-validated: a hand-edited route must not be able to send a
        credential over plain http or to an unchecked URL.
        """
        resolved = self._resolve(config, provider_base_url)
        if resolved["kind"] == "none":
            return None
        fingerprint = json.dumps(resolved, sort_keys=True)
        entry = self._fresh_entry(tenant_id, fingerprint)
        if entry is None:
            may_block()  # a fetch, or a wait for another request's fetch
            with self._tenant_lock(tenant_id):
                entry = self._fresh_entry(tenant_id, fingerprint) or self._refresh(
                    tenant_id, fingerprint, resolved
                )
        if entry.error is not None:
            # A new instance per raise: the held one may be raised in many threads at once.
            raise UpstreamAuthError(entry.error.message, oauth_error=entry.error.oauth_error)
        assert entry.header is not None
        return entry.header

    def invalidate(self, tenant_id: str, rejected: str | None = None) -> None:
        """Drops the tenant's cached token (and the secret behind it) after an upstream 401.

        Pass the refused header value as `rejected` when known: if another request has already
        replaced it with a fresh token, that token is kept instead of being thrown away too.
        """
        with self._guard:
            entry = self._entries.get(tenant_id)
            if entry is None or (rejected is not None and entry.header != rejected):
                return
            del self._entries[tenant_id]
            if entry.secret_name is not None:
                self._secret_cache.pop(entry.secret_name, None)

    # -- cache mechanics

    def _resolve(self, config: dict, provider_base_url: str) -> dict:
        try:
            resolved = validate_upstream_auth(config, provider_base_url, self._policy)
        except InvalidUpstreamAuth as exc:
            _LOG.error("stored upstream_auth is invalid (%s: %s)", exc.field, exc.message)
            raise UpstreamAuthError("the gateway's upstream authentication for this provider is misconfigured") \
                from None
        if resolved["kind"] == "azure_ad":
            resolved.setdefault("scope", _default_azure_scope(provider_base_url))
        return resolved

    def _tenant_lock(self, tenant_id: str) -> threading.Lock:
        with self._guard:
            return self._tenant_locks.setdefault(tenant_id, threading.Lock())

    def _fresh_entry(self, tenant_id: str, fingerprint: str) -> _Entry | None:
        with self._guard:
            entry = self._entries.get(tenant_id)
        if entry is None or entry.fingerprint != fingerprint or self._clock() >= entry.refresh_at:
            return None
        return entry

    def _refresh(self, tenant_id: str, fingerprint: str, config: dict) -> _Entry:
        kind, secret_name = config["kind"], config.get("secret_name")
        try:
            header, lifetime = self._fetch(config)
        except UpstreamAuthError as exc:
            _LOG.warning("upstream auth for tenant %s (kind %s) failed: %s", tenant_id, kind, exc.message)
            if secret_name is not None:
                self._secret_cache.pop(secret_name, None)  # perhaps rotated: read it afresh next time
            entry = _Entry(fingerprint, self._clock() + self._failure_hold, secret_name, error=exc)
        else:
            _LOG.info("upstream credential for tenant %s (kind %s) valid for %.0f s", tenant_id, kind, lifetime)
            refresh_at = self._clock() + lifetime - min(MAX_REFRESH_MARGIN, lifetime * 0.1)
            entry = _Entry(fingerprint, refresh_at, secret_name, header=header)
        with self._guard:
            self._entries[tenant_id] = entry
        return entry

    def _fetch(self, config: dict) -> tuple[str, float]:
        """(header value, seconds it stays valid) from the source the kind names."""
        kind = config["kind"]
        if kind == "bearer":
            return _bearer_header(self._secret(config["secret_name"])), self._secret_ttl
        if kind == "client_credentials":
            return self._client_credentials(config)
        if kind == "smart_backend":
            return self._smart_backend(config)
        return self._azure_ad(config)

    def _secret(self, name: str) -> str:
        now = self._clock()
        cached = self._secret_cache.get(name)
        if cached is not None and now - cached[1] < self._secret_ttl:
            return cached[0]
        try:
            record = self._secrets.get_secret(name)
        except NotFound:
            _LOG.error("Key Vault secret %s for an upstream credential does not exist", name)
            raise UpstreamAuthError("the gateway has no credential stored for this provider") from None
        if record.value is None or not record.usable_at(datetime.fromtimestamp(now, UTC)):
            _LOG.error("Key Vault secret %s for an upstream credential is disabled or expired", name)
            raise UpstreamAuthError("the gateway's stored credential for this provider is disabled or expired")
        self._secret_cache[name] = (record.value, now)
        return record.value

    # -- kinds

    def _client_credentials(self, config: dict) -> tuple[str, float]:
        client_id, secret = config["client_id"], self._secret(config["secret_name"])
        form = {"grant_type": "client_credentials"}
        if "scope" in config:
            form["scope"] = config["scope"]
        headers = {}
        if config["auth_method"] == "client_secret_post":
            form.update(client_id=client_id, client_secret=secret)
        else:
            headers["Authorization"] = basic_authorization_header(client_id, secret)
        return self._token_request(config["token_url"], form, headers)

    def _smart_backend(self, config: dict) -> tuple[str, float]:
        key = _signing_key(self._secret(config["secret_name"]), config["alg"])
        form = {
            "grant_type": "client_credentials",
            "scope": config["scope"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _client_assertion(config, key, self._clock()),
        }
        return self._token_request(config["token_url"], form, {})

    def _azure_ad(self, config: dict) -> tuple[str, float]:
        from azure.core.exceptions import AzureError

        credential = self._credential(config.get("client_id"))
        try:
            token = credential.get_token(config["scope"])
        except AzureError as exc:
            _LOG.warning("azure-identity refused a token: %s", type(exc).__name__)
            raise UpstreamAuthError(
                "Microsoft Entra ID did not issue the gateway a token for this provider"
            ) from None
        return _bearer_header(token.token), token.expires_on - self._clock()

    def _credential(self, client_id: str | None) -> TokenCredential:
        with self._guard:
            credential = self._credentials.get(client_id)
            if credential is None:
                credential = self._credentials[client_id] = self._credential_factory(client_id)
        return credential

    # -- token endpoint

    def _token_request(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[str, float]:
        status, body = self._post(url, form, headers)
        if status != 200:
            raise _refusal(status, body)
        return _issued_token(body)

    def _post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        """Redirects are not followed: a 3xx must not carry the gateway's credentials elsewhere."""
        import requests

        try:
            with self._session.post(url, data=form, headers={"Accept": "application/json", **headers},
                                    timeout=self._timeout, allow_redirects=False, stream=True) as response:
                return response.status_code, _read_capped(response)
        except requests.ConnectTimeout:
            raise UpstreamAuthError(
                f"upstream token endpoint could not be reached within {self._timeout[0]:g} s"
            ) from None
        except requests.Timeout:
            raise UpstreamAuthError(
                f"upstream token endpoint did not answer within {self._timeout[1]:g} s"
            ) from None
        except requests.RequestException as exc:
            _LOG.warning("upstream token endpoint request failed: %s", type(exc).__name__)
            raise UpstreamAuthError("upstream token endpoint could not be reached") from None


def _new_session() -> requests.Session:
    import requests

    return requests.Session()


def _read_capped(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(16 * 1024):
        body += chunk
        if len(body) > MAX_TOKEN_RESPONSE_BYTES:
            raise UpstreamAuthError("upstream token endpoint sent an oversized response")
    return bytes(body)


def _signing_key(pem: str, alg: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise UpstreamAuthError(
            "the gateway's signing key for this provider is not an unencrypted PEM private key"
        ) from None
    if alg == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        return key
    if alg == "ES384" and isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    raise UpstreamAuthError(f"the gateway's signing key for this provider does not fit alg {alg}")


def _client_assertion(config: dict, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, now: float) -> str:
    """RFC 7523 §3 / SMART Backend Services: iss = sub = client_id, aud = the token URL."""
    issued = int(now)
    claims = {
        "iss": config["client_id"],
        "sub": config["client_id"],
        "aud": config["token_url"],
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": str(uuid.uuid4()),
    }
    import jwt

    return jwt.encode(claims, key, algorithm=config["alg"], headers={"kid": config["kid"], "typ": "JWT"})


def _bearer_header(token: str) -> str:
    """Refuses values that would break or smuggle headers (the b64token grammar of RFC 6750)."""
    token = token.strip()
    if not _BEARER_TOKEN.fullmatch(token):
        raise UpstreamAuthError("the credential for this provider is not a valid bearer token")
    return f"Bearer {token}"


def _refusal(status: int, body: bytes) -> UpstreamAuthError:
    """Only the OAuth error code is passed on; descriptions and bodies may echo request data."""
    if 300 <= status < 400:
        return UpstreamAuthError(f"upstream token endpoint answered with a redirect (HTTP {status})")
    code = _oauth_error_code(body)
    if code is None:
        return UpstreamAuthError(f"upstream token endpoint answered HTTP {status}")
    reason = _REFUSALS.get(code, "refused the token request")
    return UpstreamAuthError(f"upstream token endpoint {reason} ({code})", oauth_error=code)


def _oauth_error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    code = payload.get("error") if isinstance(payload, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _issued_token(body: bytes) -> tuple[str, float]:
    """Reads an RFC 6749 §5.1 success response; only Bearer tokens can be sent on."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str):
        raise UpstreamAuthError("upstream token endpoint answered without an access_token")
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise UpstreamAuthError("upstream token endpoint issued a token type other than Bearer")
    return _bearer_header(token), _lifetime(payload.get("expires_in"))


def _lifetime(expires_in: object) -> float:
    """Some servers send expires_in as a string; anything unusable falls back to the default."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(expires_in)
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_TOKEN_LIFETIME
