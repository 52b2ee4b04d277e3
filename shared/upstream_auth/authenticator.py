"""The Authorization header for a tenant's upstream requests, from the kind its route names.

One `UpstreamAuthenticator` per process, shared by all requests. It owns everything with state, in
`TtlCache`s (shared/cache.py): each tenant's credential, refreshed shortly before it expires; the
Key Vault secrets behind them, reused for a short TTL; and the azure-identity credentials, built
once per managed identity since each holds its own token cache and HTTP pipeline. The caches'
single-flight loading makes concurrent callers for one tenant share one refresh.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.cache import TtlCache
from shared.errors import NotFound
from shared.outbound import OutboundPolicy
from shared.stores import SecretStore
from shared.upstream_auth.azure_ad import default_credential
from shared.upstream_auth.errors import InvalidUpstreamAuth, UpstreamAuthError
from shared.upstream_auth.kind import CredentialKind, Sources, UpstreamAuthKind
from shared.upstream_auth.kinds import KINDS, validate_upstream_auth
from shared.upstream_auth.token_endpoint import TokenEndpoint, new_session

if TYPE_CHECKING:  # requests and azure-core load on first use: the tenant API only validates configs
    import requests
    from azure.core.credentials import TokenCredential

MAX_REFRESH_MARGIN = 60.0
_LOG = logging.getLogger("gateway.upstream")


@dataclass(frozen=True)
class _Held:
    """A tenant's header, or a recent failure held so waiters do not all retry it.

    `fingerprint` is the resolved config it was obtained for: a route whose config changed gets a
    new credential, never one fetched under the old config. `ttl` counts from the load's start and
    includes the fetch's own duration, so a slow failing token endpoint still has its failure held
    for the whole `failure_hold` once it answers.
    """

    fingerprint: str
    secret_name: str | None
    ttl: float
    header: str | None = field(default=None, repr=False)  # a credential: never in a repr or a log
    error: UpstreamAuthError | None = None


class UpstreamAuthenticator:
    """Produces the Authorization header value for a tenant's upstream requests.

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
        self._store, self._clock, self._failure_hold, self._policy = secrets, clock, failure_hold, policy
        self._credential_factory = credential_factory or default_credential
        self._held: TtlCache[str, _Held] = TtlCache(failure_hold, clock)
        self._secrets: TtlCache[str, str] = TtlCache(secret_ttl, clock)
        self._identities: TtlCache[str | None, TokenCredential] = TtlCache(math.inf, clock)
        self._sources = Sources(secret=self._secret, token_endpoint=TokenEndpoint(session or new_session(), timeout),
                                credential=self._credential, clock=clock, secret_ttl=secret_ttl)

    def authorization(self, tenant_id: str, provider_base_url: str, config: dict) -> str | None:
        """The Authorization header value for this tenant's provider, or None for kind none.

        The stored config is re-validated: a hand-edited route must not be able to send a
        credential over plain http or to an unchecked URL.
        """
        kind, resolved = self._resolve(config, provider_base_url)
        if not isinstance(kind, CredentialKind):
            return None
        fingerprint = json.dumps(resolved, sort_keys=True)
        held = self._held.get_or_load(  # calls may_block() before a fetch, or a wait for another's
            tenant_id, lambda: self._load(tenant_id, fingerprint, kind, resolved),
            stale=lambda entry: entry.value.fingerprint != fingerprint, ttl_of=lambda value: value.ttl)
        if held.error is not None:
            # A new instance per raise: the held one may be raised in many threads at once.
            raise UpstreamAuthError(held.error.message, oauth_error=held.error.oauth_error)
        assert held.header is not None
        return held.header

    def invalidate(self, tenant_id: str, rejected: str | None = None) -> None:
        """Drops the tenant's cached token (and the secret behind it) after an upstream 401.

        Pass the refused header value as `rejected` when known: if another request has already
        replaced it with a fresh token, that token is kept instead of being thrown away too.
        """
        # drop_if also sees a header past its refresh time: a 401 that arrives late still drops the secret.
        dropped = self._held.drop_if(tenant_id, lambda held: rejected is None or held.header == rejected)
        if dropped is not None and dropped.secret_name is not None:
            self._secrets.drop(dropped.secret_name)

    def _resolve(self, config: dict, provider_base_url: str) -> tuple[UpstreamAuthKind, dict]:
        try:
            resolved = validate_upstream_auth(config, provider_base_url, self._policy)
        except InvalidUpstreamAuth as exc:
            _LOG.error("stored upstream_auth is invalid (%s: %s)", exc.field, exc.detail)
            raise UpstreamAuthError("the gateway's upstream authentication for this provider is misconfigured") \
                from None
        kind = KINDS[resolved["kind"]]
        return kind, kind.for_request(resolved, provider_base_url)

    def _load(self, tenant_id: str, fingerprint: str, kind: CredentialKind, config: dict) -> _Held:
        """The tenant's credential, used until shortly before it expires; or the failure, held briefly."""
        started, secret_name = self._clock(), config.get("secret_name")
        try:
            header, lifetime = kind.fetch(config, self._sources)
        except UpstreamAuthError as exc:
            _LOG.warning("upstream auth for tenant %s (kind %s) failed: %s", tenant_id, kind.name, exc.message)
            if secret_name is not None:
                self._secrets.drop(secret_name)  # perhaps rotated: read it afresh next time
            return _Held(fingerprint, secret_name, self._clock() - started + self._failure_hold, error=exc)
        _LOG.info("upstream credential for tenant %s (kind %s) valid for %.0f s", tenant_id, kind.name, lifetime)
        usable = lifetime - min(MAX_REFRESH_MARGIN, lifetime * 0.1)
        return _Held(fingerprint, secret_name, self._clock() - started + usable, header=header)

    def _secret(self, name: str) -> str:
        return self._secrets.get_or_load(name, lambda: self._read_secret(name))

    def _read_secret(self, name: str) -> str:
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            record = self._store.get_secret(name)
        except NotFound:
            _LOG.error("Key Vault secret %s for an upstream credential does not exist", name)
            raise UpstreamAuthError("the gateway has no credential stored for this provider") from None
        if record.value is None or not record.usable_at(now):
            _LOG.error("Key Vault secret %s for an upstream credential is disabled or expired", name)
            raise UpstreamAuthError("the gateway's stored credential for this provider is disabled or expired")
        return record.value

    def _credential(self, client_id: str | None) -> TokenCredential:
        return self._identities.get_or_load(client_id, lambda: self._credential_factory(client_id))
