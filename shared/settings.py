"""Every app setting the gateway reads, in one place, typed.

The names are the Function App's application settings (environment variables).
`local.settings.json.sample` lists every one this module reads, with its local-development value
(tests/test_infra.py checks that nothing read here is missing from it), and `infra/` provisions them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"app setting {name} must be an integer, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"app setting {name} must not be negative")
    return value


def _str(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting: blanks around and between items are ignored."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    public_base_url: str | None
    tables_connection_string: str | None
    tables_endpoint: str | None
    tenants_table: str
    clients_table: str
    invitations_table: str
    limits_table: str
    key_vault_url: str | None
    key_vault_ca_bundle: str | None
    token_lifetime_seconds: int
    secret_cache_ttl_seconds: int
    route_cache_ttl_seconds: int
    signing_key_cache_ttl_seconds: int
    upstream_connect_timeout_seconds: int
    upstream_read_timeout_seconds: int
    upstream_retries: int
    batch_concurrency: int
    tenant_concurrency: int
    batch_deadline_seconds: int
    batch_max_response_bytes: int
    max_request_body_bytes: int
    max_upstream_response_bytes: int
    portal_attempts_per_client: int
    portal_attempts_per_ip: int
    portal_attempt_window_seconds: int
    token_failures_per_client_and_source: int
    token_failures_per_source: int
    token_failures_per_client: int
    token_failure_window_seconds: int
    allow_loopback_http: bool = False
    upstream_azure_ad_scopes_allowed: tuple[str, ...] = ()
    client_address_header: str = "X-Forwarded-For"
    client_address_trusted_hops: int = 1
    portal_sessions_table: str = "portalsessions"
    health_cache_seconds: int = 15
    assertions_table: str = "assertions"
    applicationinsights_connection_string: str | None = None
    traces_exporter: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        base = _str("GATEWAY_PUBLIC_BASE_URL")
        return cls(
            public_base_url=base.rstrip("/") if base else None,
            tables_connection_string=_str("GATEWAY_TABLES_CONNECTION_STRING"),
            tables_endpoint=_str("GATEWAY_TABLES_ENDPOINT"),
            tenants_table=_str("GATEWAY_TENANTS_TABLE") or "tenants",
            clients_table=_str("GATEWAY_CLIENTS_TABLE") or "clients",
            invitations_table=_str("GATEWAY_INVITATIONS_TABLE") or "invitations",
            portal_sessions_table=_str("GATEWAY_PORTAL_SESSIONS_TABLE") or "portalsessions",
            limits_table=_str("GATEWAY_LIMITS_TABLE") or "ratelimits",
            assertions_table=_str("GATEWAY_ASSERTIONS_TABLE") or "assertions",
            key_vault_url=_str("KEY_VAULT_URL"),
            key_vault_ca_bundle=_str("KEY_VAULT_CA_BUNDLE"),
            token_lifetime_seconds=_int("TOKEN_LIFETIME_SECONDS", 3600),
            secret_cache_ttl_seconds=min(_int("SECRET_CACHE_TTL_SECONDS", 60), 60),
            route_cache_ttl_seconds=min(_int("ROUTE_CACHE_TTL_SECONDS", 30), 60),  # revocation bound (#14)
            signing_key_cache_ttl_seconds=_int("SIGNING_KEY_CACHE_TTL_SECONDS", 300),
            upstream_connect_timeout_seconds=_int("UPSTREAM_CONNECT_TIMEOUT_SECONDS", 5),
            upstream_read_timeout_seconds=_int("UPSTREAM_READ_TIMEOUT_SECONDS", 30),
            upstream_retries=_int("UPSTREAM_RETRIES", 2),
            batch_concurrency=max(1, _int("BATCH_CONCURRENCY", 6)),
            tenant_concurrency=max(1, _int("TENANT_CONCURRENCY", 32)),
            batch_deadline_seconds=max(1, _int("BATCH_DEADLINE_SECONDS", 60)),
            batch_max_response_bytes=max(1024, _int("BATCH_MAX_RESPONSE_BYTES", 32 * 1024 * 1024)),
            max_request_body_bytes=_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024),
            max_upstream_response_bytes=_int("MAX_UPSTREAM_RESPONSE_BYTES", 100 * 1024 * 1024),
            portal_attempts_per_client=max(1, _int("PORTAL_ATTEMPTS_PER_CLIENT", 10)),
            portal_attempts_per_ip=max(1, _int("PORTAL_ATTEMPTS_PER_IP", 30)),
            portal_attempt_window_seconds=max(1, _int("PORTAL_ATTEMPT_WINDOW_SECONDS", 900)),
            token_failures_per_client_and_source=max(1, _int("TOKEN_FAILURES_PER_CLIENT_AND_SOURCE", 20)),
            token_failures_per_source=max(1, _int("TOKEN_FAILURES_PER_SOURCE", 60)),
            token_failures_per_client=max(1, _int("TOKEN_FAILURES_PER_CLIENT", 300)),
            token_failure_window_seconds=max(1, _int("TOKEN_FAILURE_WINDOW_SECONDS", 60)),
            # Local development only (plain-http loopback EHRs and IdPs); infra/ never sets it.
            allow_loopback_http=_str("GATEWAY_ALLOW_LOOPBACK_HTTP") == "1",
            upstream_azure_ad_scopes_allowed=_list(_str("UPSTREAM_AZURE_AD_SCOPES_ALLOWED") or ""),
            # Where rate limits read the caller's address (shared/clientaddr.py): the header the
            # trusted front end appends to, and how many trusted proxies append to it.
            client_address_header=_str("CLIENT_ADDRESS_HEADER") or "X-Forwarded-For",
            client_address_trusted_hops=max(1, _int("CLIENT_ADDRESS_TRUSTED_HOPS", 1)),
            # Anonymous /api/health probes each dependency at most once per this many seconds
            # (infra/ keeps it within 10-30; 0, for tests that watch outages, probes every call).
            health_cache_seconds=min(_int("HEALTH_CACHE_SECONDS", 15), 30),
            # Traces and metrics (shared/telemetry.py): Application Insights in Azure (infra/ sets it);
            # locally GATEWAY_TRACES=console or otlp, never provisioned.
            applicationinsights_connection_string=_str("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            traces_exporter=(_str("GATEWAY_TRACES") or "").lower() or None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read once per process: app settings change only with a restart of the Functions host."""
    return Settings.from_env()
