"""``{"kind": "azure_ad", "scope"?, "client_id"?}``

A Microsoft Entra token from azure-identity (managed identity in Azure), for Azure Health Data
Services. ``scope`` defaults to ``<origin of the provider base URL>/.default``; ``client_id``
selects a user-assigned managed identity.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.guid import is_guid
from shared.outbound import OutboundPolicy
from shared.upstream_auth.errors import InvalidUpstreamAuth, UpstreamAuthError
from shared.upstream_auth.fields import COMMON_CHECKS, check_scope
from shared.upstream_auth.kind import CredentialKind, Sources
from shared.upstream_auth.token_endpoint import Credential, bearer_header

if TYPE_CHECKING:  # azure-core loads on first use: most tenants use no azure_ad provider
    from azure.core.credentials import TokenCredential

_LOG = logging.getLogger("gateway.upstream")


def _check_single_scope(value: str, policy: OutboundPolicy) -> str:
    if len(check_scope(value, policy).split(" ")) != 1:
        raise InvalidUpstreamAuth("upstream_auth.scope", "must be a single scope such as '<resource>/.default'")
    return value


def _check_identity(value: str, policy: OutboundPolicy) -> str:
    if not is_guid(value):
        raise InvalidUpstreamAuth(
            "upstream_auth.client_id", "must be the client id (a GUID) of a user-assigned managed identity"
        )
    return value


class AzureAd(CredentialKind):
    name = "azure_ad"
    optional = ("scope", "client_id")
    checks = {**COMMON_CHECKS, "scope": _check_single_scope, "client_id": _check_identity}

    def complete(self, values: dict[str, str], provider_base_url: str, policy: OutboundPolicy) -> dict[str, str]:
        """The managed identity's token may only go to the provider it is meant for: the scope is the
        provider's own audience or one the operator allowed in app settings, never e.g. Storage or
        Key Vault (the gateway's identity can read and write both).

        The default scope is left out on purpose: it is derived from the provider base URL at
        request time, so a later change of the base URL cannot leave a stale audience behind.
        """
        audience, scope = default_scope(provider_base_url), values.get("scope")
        if scope is not None and scope != audience and scope not in policy.azure_ad_scopes_allowed:
            raise InvalidUpstreamAuth(
                "upstream_auth.scope",
                f"must be the provider's own audience '{audience}' or appear in UPSTREAM_AZURE_AD_SCOPES_ALLOWED",
            )
        return values

    def for_request(self, config: dict, provider_base_url: str) -> dict:
        return config if "scope" in config else {**config, "scope": default_scope(provider_base_url)}

    def fetch(self, config: dict, sources: Sources) -> Credential:
        from azure.core.exceptions import AzureError

        credential = sources.credential(config.get("client_id"))
        try:
            token = credential.get_token(config["scope"])
        except AzureError as exc:
            _LOG.warning("azure-identity refused a token: %s", type(exc).__name__)
            raise UpstreamAuthError(
                "Microsoft Entra ID did not issue the gateway a token for this provider"
            ) from None
        return bearer_header(token.token), token.expires_on - sources.clock()


def default_scope(provider_base_url: str) -> str:
    parts = urlsplit(provider_base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidUpstreamAuth(
            "upstream_auth.scope", "cannot be checked: the provider base URL has no origin"
        )
    return f"{parts.scheme}://{parts.netloc}/.default"


def default_credential(client_id: str | None) -> TokenCredential:
    """The production credential factory.

    azure.identity (and MSAL under it) is imported here, not at module load, so cold starts of a
    gateway whose tenants use no azure_ad provider do not pay for it.
    """
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()
