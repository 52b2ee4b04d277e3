"""Builds the gateway's long-lived objects once per process from the app settings.

SDK clients, caches and key rings are process-wide on purpose: building them per request would
put Key Vault and Table Storage calls (and TLS handshakes) on every request's path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from shared.clients import ClientRegistry
    from shared.health import CachedProbe
    from shared.invitations import InvitationRegistry
    from shared.portal.generations import SessionGenerations
    from shared.portal.limits import PortalLimits
    from shared.portal.sessions import SessionSigner
    from shared.proxy import FhirProxy
    from shared.routes import TenantRegistry
    from shared.signing import KeyRing
    from shared.stores import EntityTable, SecretStore
    from shared.token_service import TokenService


@dataclass
class Services:
    settings: Settings
    secrets: SecretStore
    tenant_table: EntityTable
    client_table: EntityTable
    keys: KeyRing
    clients: ClientRegistry
    tenants: TenantRegistry
    tokens: TokenService
    proxy: FhirProxy
    invitations: InvitationRegistry
    sessions: SessionSigner
    portal_limits: PortalLimits
    session_generations: SessionGenerations
    health_probes: dict[str, CachedProbe]


def build_services(settings: Settings) -> Services:
    # Imported here, not at the top: the Azure SDKs, aiohttp, requests and PyJWT are most of a cold
    # start's import time (bench/), and discovery (metadata, SMART configuration) is answered without them.
    from azure.identity import DefaultAzureCredential

    from shared.aggregate_limits import SharedCounts
    from shared.assertion_replay import TableReplayStore
    from shared.client_auth import ClientAuthThrottle
    from shared.client_jwks import RemoteJwks
    from shared.clientaddr import AddressSource
    from shared.clients import ClientRegistry
    from shared.health import CachedProbe
    from shared.invitations import InvitationRegistry
    from shared.page_links import PagingKey
    from shared.portal.generations import SessionGenerations
    from shared.portal.limits import PortalLimits
    from shared.portal.sessions import SessionSigner
    from shared.proxy import FhirProxy
    from shared.routes import TenantRegistry
    from shared.signing import KeyRing
    from shared.stores.keyvault import KeyVaultSecretStore
    from shared.stores.tables import AzureTable
    from shared.token_service import TokenService
    from shared.upstream_auth import UpstreamAuthenticator

    if not settings.key_vault_url:
        raise RuntimeError("KEY_VAULT_URL is not set")
    credential = DefaultAzureCredential()
    secrets = KeyVaultSecretStore.connect(settings.key_vault_url, credential, settings.key_vault_ca_bundle)
    tables: dict[str, Any] = {"connection_string": settings.tables_connection_string,
                              "endpoint": settings.tables_endpoint, "credential": credential}
    tenant_table = AzureTable.connect(settings.tenants_table, **tables)
    client_table = AzureTable.connect(settings.clients_table, **tables)
    keys = KeyRing(secrets, settings.token_lifetime_seconds, settings.signing_key_cache_ttl_seconds)
    clients = ClientRegistry(client_table.sibling, secrets, settings.secret_cache_ttl_seconds)
    tenants = TenantRegistry(tenant_table, tenant_table.sibling("changes"), settings.route_cache_ttl_seconds)
    limits_table = AzureTable.connect(settings.limits_table, **tables)

    def shared(window: int) -> Callable[[str, int], SharedCounts]:
        """Failure and attempt counts every instance shares (issue #14), in the limits table."""
        return lambda name, limit: SharedCounts(name, limit, window, limits_table.sibling)

    throttle = ClientAuthThrottle(settings.token_failures_per_client_and_source, settings.token_failures_per_source,
                                  settings.token_failures_per_client, settings.token_failure_window_seconds,
                                  good_for_seconds=max(settings.token_lifetime_seconds,
                                                       settings.token_failure_window_seconds),
                                  shared=shared(settings.token_failure_window_seconds))
    # private_key_jwt: used assertion ids, one partition per client, shared by every instance
    assertions_table = AzureTable.connect(settings.assertions_table, **tables)
    tokens = TokenService(keys, clients, tenants, settings.token_lifetime_seconds, throttle=throttle,
                          address_source=AddressSource.from_settings(settings),
                          replay=TableReplayStore(assertions_table.sibling),
                          remote_jwks=RemoteJwks((settings.upstream_connect_timeout_seconds,
                                                  settings.upstream_read_timeout_seconds)))
    upstream = UpstreamAuthenticator(
        secrets, timeout=(settings.upstream_connect_timeout_seconds, settings.upstream_read_timeout_seconds),
        secret_ttl=settings.secret_cache_ttl_seconds)
    # Page links: their own HMAC key in Key Vault (`paging-link-key`), created on first use
    proxy = FhirProxy(settings, tokens, clients, tenants, upstream, PagingKey(secrets))
    invitations = InvitationRegistry(AzureTable.connect(settings.invitations_table, **tables))
    sessions = SessionSigner(secrets)  # portal sessions: an HMAC key in Key Vault, created on first use
    generations = SessionGenerations(AzureTable.connect(settings.portal_sessions_table, **tables))
    probes = {"table_storage": CachedProbe(tenant_table.ping, settings.health_cache_seconds),
              "key_vault": CachedProbe(secrets.ping, settings.health_cache_seconds)}
    return Services(settings, secrets, tenant_table, client_table, keys, clients, tenants, tokens, proxy,
                    invitations, sessions,
                    PortalLimits.from_settings(settings, shared(settings.portal_attempt_window_seconds)),
                    generations, probes)


@lru_cache(maxsize=1)
def get_services() -> Services:
    return build_services(get_settings())
