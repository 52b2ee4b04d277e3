"""Who is asking and where their request goes: the proxy's first step, from the bearer token alone.

The tenant comes only from the verified token (ROUTE-3): the token checked, its client still
active, the tenant's route admitting the client and speaking a version the facade can bridge to,
then the upstream credential for the tenant's provider and the key its page links are signed with.
All of it is in memory almost always; a cache miss blocks (Table Storage, Key Vault, the provider's
IdP), so the proxy runs `AccessCheck.check` with `inline_or_thread` (shared/offloop.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import telemetry
from shared.clients import ClientRegistry
from shared.errors import FhirError
from shared.http import Request
from shared.page_links import PageLinks, PagingKey
from shared.routes import TenantRegistry, TenantRoute
from shared.token_service import AccessClaims, InvalidToken, TokenService
from shared.upstream_auth import UpstreamAuthenticator
from shared.urls import Urls


@dataclass(frozen=True)
class Access:
    """What the rest of the pipeline may rely on: the caller, its tenant's route, and how to reach it."""

    claims: AccessClaims
    route: TenantRoute
    # the Authorization header the provider gets (None: it takes none); kept out of reprs and logs
    authorization: str | None = field(repr=False)
    pages: PageLinks


class AccessCheck:
    def __init__(self, tokens: TokenService, clients: ClientRegistry, tenants: TenantRegistry,
                 upstream_auth: UpstreamAuthenticator, paging_key: PagingKey) -> None:
        self._tokens, self._clients, self._tenants, self._auth = tokens, clients, tenants, upstream_auth
        self._paging_key = paging_key

    def check(self, req: Request, version: str, urls: Urls) -> Access:
        """The paging key is read here too: answers stream on the event loop, where signing their page
        links must not wait for Key Vault."""
        claims = self._authenticate(req, urls)
        route = self._route(claims, version)
        authorization = self._auth.authorization(route.tenant_id, route.provider_base_url, route.upstream_auth)
        return Access(claims, route, authorization, PageLinks(self._paging_key.current(), route.tenant_id))

    def _authenticate(self, req: Request, urls: Urls) -> AccessClaims:
        scheme, _, token = (req.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("a bearer token from the gateway's token endpoint is required")
        try:
            claims = self._tokens.verify(token.strip(), urls)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from exc
        client = self._clients.cached_client(claims.client_id)
        if client is None or not client.active:
            raise _unauthorized("the client of this token is disabled")
        return claims

    @telemetry.traced("route lookup")
    def _route(self, claims: AccessClaims, version: str) -> TenantRoute:
        route = self._tenants.resolve(claims.tenant_id)
        if route is None or not route.allows(claims.client_id):
            raise FhirError(403, "forbidden", "this client may not access this tenant (disabled or not allowed)")
        if route.fhir_version != version and "r4" not in (route.fhir_version, version):
            raise FhirError(400, "not-supported",
                            f"this tenant's provider speaks {route.fhir_version.upper()}; use the "
                            f"{route.fhir_version} or r4 FHIR base URL")
        return route


def _unauthorized(reason: str) -> FhirError:
    challenge = f'Bearer error="invalid_token", error_description="{reason}"'
    return FhirError(401, "login", reason, {"WWW-Authenticate": challenge})
