"""The gateway's core objects wired as shared/services.py wires them, over the in-memory store fakes.

Why not call `build_services`: it connects the Azure SDKs (DefaultAzureCredential, Key Vault, Table
Storage). Here the same constructors get `FakeSecretStore` and `FakeTable` instead, with the same
sibling partitions ("changes" for routes; the client table's partitions via `sibling`), so what the
unit tests prove is the production wiring minus the network.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from shared.client_auth import ClientAuthThrottle
from shared.clientaddr import AddressSource
from shared.clients import ClientRegistry
from shared.errors import OAuthError
from shared.page_links import PagingKey
from shared.proxy import FhirProxy
from shared.routes import TenantRegistry
from shared.settings import Settings
from shared.signing import KeyRing
from shared.token_service import TokenService
from shared.upstream_auth import UpstreamAuthenticator
from shared.urls import Urls
from tests.fakes import FakeSecretStore, FakeTable

URLS = Urls("https://gateway.example")
FORM = {"content-type": "application/x-www-form-urlencoded"}


def settings(**overrides: Any) -> Settings:
    """The app settings' defaults (shared/settings.py), small enough for tests where it matters."""
    values: dict[str, Any] = dict(
        public_base_url=None, tables_connection_string=None, tables_endpoint=None, tenants_table="tenants",
        clients_table="clients", invitations_table="invitations", limits_table="ratelimits", key_vault_url=None,
        key_vault_ca_bundle=None, token_lifetime_seconds=3600, secret_cache_ttl_seconds=60,
        route_cache_ttl_seconds=30, signing_key_cache_ttl_seconds=300, upstream_connect_timeout_seconds=2,
        upstream_read_timeout_seconds=5, upstream_retries=0, batch_concurrency=4, tenant_concurrency=8,
        batch_deadline_seconds=10, batch_max_response_bytes=32 * 1024 * 1024, max_request_body_bytes=1024 * 1024,
        max_upstream_response_bytes=100 * 1024 * 1024, portal_attempts_per_client=10, portal_attempts_per_ip=30,
        portal_attempt_window_seconds=900, token_failures_per_client_and_source=20, token_failures_per_source=60,
        token_failures_per_client=300, token_failure_window_seconds=60, allow_loopback_http=True)
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    """One gateway instance's core over one set of fake stores."""

    vault: FakeSecretStore
    tenant_table: FakeTable
    client_table: FakeTable
    keys: KeyRing
    clients: ClientRegistry
    tenants: TenantRegistry
    tokens: TokenService
    settings: Settings
    throttle: ClientAuthThrottle | None = None
    _proxy: FhirProxy | None = field(default=None, repr=False)

    @property
    def proxy(self) -> FhirProxy:
        """Built on first use: FhirProxy makes an SSL context, which the token tests do not need."""
        if self._proxy is None:
            upstream = UpstreamAuthenticator(self.vault, timeout=(2.0, 5.0), secret_ttl=60.0)
            self._proxy = FhirProxy(self.settings, self.tokens, self.clients, self.tenants, upstream,
                                    PagingKey(self.vault))
        return self._proxy

    def client(self, name: str = "app") -> tuple[str, str]:
        """A new active client: (client_id, secret)."""
        client, secret, _ = self.clients.create(name)
        return client.client_id, secret

    def tenant(self, provider: str = "http://127.0.0.1:9/fhir", *, allowed: tuple[str, ...] = (),
               **body: Any) -> str:
        """A new enabled tenant route naming `provider`; returns its tenant id."""
        tenant_id = str(uuid.uuid4())
        self.tenants.put(tenant_id, {"display_name": "Clinic", "provider_base_url": provider,
                                     "fhir_version": "stu3", "allowed_clients": list(allowed), **body})
        return tenant_id

    def token_request(self, client_id: str, secret: str, scope: str, *, source: str = "203.0.113.9",
                      **extra: str) -> dict:
        """POST /oauth2/token with the secret in the body; raises OAuthError as the endpoint would."""
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                "scope": scope, **extra}
        return self.tokens.issue(urlencode(form).encode(), {**FORM, "x-forwarded-for": source}, URLS)

    def token(self, client_id: str, secret: str, tenant_id: str) -> str:
        return str(self.token_request(client_id, secret, tenant_id)["access_token"])


def build_world(*, lifetime: int = 3600, token_clock: Callable[[], float] = time.time,
                throttle: ClientAuthThrottle | None = None, vault: FakeSecretStore | None = None,
                tenant_table: FakeTable | None = None, client_table: FakeTable | None = None,
                **overrides: Any) -> World:
    """Pass the stores of another World to get a second instance over the same storage."""
    config = settings(token_lifetime_seconds=lifetime, **overrides)
    vault = vault or FakeSecretStore()
    tenant_table, client_table = tenant_table or FakeTable(), client_table or FakeTable()
    keys = KeyRing(vault, config.token_lifetime_seconds, config.signing_key_cache_ttl_seconds)
    clients = ClientRegistry(client_table.sibling, vault, config.secret_cache_ttl_seconds)
    tenants = TenantRegistry(tenant_table, tenant_table.sibling("changes"), config.route_cache_ttl_seconds)
    tokens = TokenService(keys, clients, tenants, config.token_lifetime_seconds, clock=token_clock,
                          throttle=throttle, address_source=AddressSource())
    return World(vault, tenant_table, client_table, keys, clients, tenants, tokens, config, throttle)


def oauth_error(call: Callable[[], object]) -> OAuthError:
    """The OAuthError `call` raises (fails the test when it raises none)."""
    try:
        call()
    except OAuthError as exc:
        return exc
    raise AssertionError("expected an OAuthError")
