"""What a kind of upstream authentication is: its fields and their checks, and, for kinds that send
a credential, how to obtain one.

Each kind is one small stateless object (registered in shared/upstream_auth/kinds.py). The
authenticator owns everything with state (caches, the HTTP session, azure-identity credentials) and
hands a kind only the `Sources` it may draw on, so a kind can be tested with fakes of those.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shared.outbound import OutboundPolicy
from shared.upstream_auth.fields import COMMON_CHECKS, Check, check_keys, string_field
from shared.upstream_auth.token_endpoint import Credential, TokenEndpoint

if TYPE_CHECKING:  # azure-core loads on first use: only the azure_ad kind needs it
    from azure.core.credentials import TokenCredential


@dataclass(frozen=True)
class Sources:
    """Where a kind's credential comes from; each is the authenticator's, cached where it pays.

    :param secret: a Key Vault secret's value by name (`UpstreamAuthError` when missing or unusable).
    :param token_endpoint: token requests to an OAuth token endpoint.
    :param credential: the azure-identity credential of a managed identity (None: the default one).
    :param clock: epoch seconds.
    :param secret_ttl: seconds a static credential read from Key Vault is used before it is re-read.
    """

    secret: Callable[[str], str]
    token_endpoint: TokenEndpoint
    credential: Callable[[str | None], TokenCredential]
    clock: Callable[[], float]
    secret_ttl: float


class UpstreamAuthKind:
    """A kind's schema and validation. `required` and `optional` name its fields besides ``kind``
    (the management API's OpenAPI document reads them too); `checks` maps a field to its check."""

    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    checks: ClassVar[Mapping[str, Check]] = COMMON_CHECKS

    def validate(self, config: Mapping[str, object], provider_base_url: str, policy: OutboundPolicy) -> dict:
        """The normalised config (stripped values, canonical URLs, defaults filled), or InvalidUpstreamAuth.

        Every field is type-checked before any is checked for content, each in key order, so the
        field an error names does not depend on the order the client sent them in.
        """
        check_keys(config, self.name, self.required, self.optional)
        values = {key: string_field(config[key], key) for key in sorted(config) if key != "kind"}
        for key, value in values.items():
            check = self.checks.get(key)
            if check is not None:
                values[key] = check(value, policy)
        return {"kind": self.name, **self.complete(values, provider_base_url, policy)}

    def complete(self, values: dict[str, str], provider_base_url: str, policy: OutboundPolicy) -> dict[str, str]:
        """Checks across fields and defaults, once each field is valid on its own; none by default."""
        return values

    def for_request(self, config: dict, provider_base_url: str) -> dict:
        """A validated config with what is derived at request time filled in; itself by default."""
        return config


class CredentialKind(UpstreamAuthKind, ABC):
    """A kind that sends an Authorization header, which `fetch` obtains."""

    @abstractmethod
    def fetch(self, config: dict, sources: Sources) -> Credential:
        """The header value for a config `for_request` returned, and the seconds it stays valid."""
