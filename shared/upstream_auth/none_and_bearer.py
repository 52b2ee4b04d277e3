"""The two kinds without a token endpoint: no credential at all, and a static bearer token."""

from __future__ import annotations

from shared.upstream_auth.kind import CredentialKind, Sources, UpstreamAuthKind
from shared.upstream_auth.token_endpoint import Credential, bearer_header


class NoAuth(UpstreamAuthKind):
    """``{"kind": "none"}``: no Authorization header (a provider on a private network)."""

    name = "none"


class Bearer(CredentialKind):
    """``{"kind": "bearer", "secret_name"}``: a static token kept in Key Vault.

    It is re-read once the secret cache's TTL has passed, so a rotation in Key Vault reaches every
    instance within it (and at once after the provider refuses the old value).
    """

    name = "bearer"
    required = ("secret_name",)

    def fetch(self, config: dict, sources: Sources) -> Credential:
        return bearer_header(sources.secret(config["secret_name"])), sources.secret_ttl
