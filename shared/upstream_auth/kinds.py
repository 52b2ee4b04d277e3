"""The registry of upstream authentication kinds, and validation of a config against it.

Adding a kind is one object here: its schema, checks and credential fetch live on it, so nothing
else (validation, the authenticator, the management API's OpenAPI document) names kinds.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.outbound import OutboundPolicy, current_policy
from shared.upstream_auth.azure_ad import AzureAd
from shared.upstream_auth.client_credentials import ClientCredentials
from shared.upstream_auth.errors import InvalidUpstreamAuth
from shared.upstream_auth.kind import UpstreamAuthKind
from shared.upstream_auth.none_and_bearer import Bearer, NoAuth
from shared.upstream_auth.smart_backend import SmartBackend

KINDS: Mapping[str, UpstreamAuthKind] = {
    kind.name: kind for kind in (NoAuth(), Bearer(), ClientCredentials(), SmartBackend(), AzureAd())
}
"""Every kind by name, in the order error messages and the OpenAPI document list them."""


def validate_upstream_auth(config: object, provider_base_url: str, policy: OutboundPolicy | None = None) -> dict:
    """Checks and normalises a config from the management API; raises InvalidUpstreamAuth.

    `provider_base_url` must already be validated (it is the audience an azure_ad scope is held
    to); `policy` defaults to this process's app settings. Normalising strips surrounding
    whitespace, puts token URLs in canonical form and fills defaults (``auth_method``); defaults
    derived from the provider base URL are left to request time (`UpstreamAuthKind.for_request`).
    """
    if not isinstance(config, dict):
        raise InvalidUpstreamAuth("upstream_auth", "must be a JSON object with a 'kind'")
    name = config.get("kind")
    if not isinstance(name, str) or name not in KINDS:
        raise InvalidUpstreamAuth("upstream_auth.kind", f"must be one of: {', '.join(KINDS)}")
    return KINDS[name].validate(config, provider_base_url, policy or current_policy())
