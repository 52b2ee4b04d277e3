"""``{"kind": "client_credentials", "token_url", "client_id", "secret_name", "scope"?, "auth_method"?}``

The OAuth 2.0 client credentials grant (RFC 6749 §4.4). The client secret is kept in Key Vault and
sent with HTTP Basic (``client_secret_basic``, the default, RFC 6749 §2.3.1) or in the form body
(``client_secret_post``).
"""

from __future__ import annotations

from shared.http import basic_authorization_header
from shared.outbound import OutboundPolicy
from shared.upstream_auth.fields import COMMON_CHECKS, one_of
from shared.upstream_auth.kind import CredentialKind, Sources
from shared.upstream_auth.token_endpoint import Credential

AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class ClientCredentials(CredentialKind):
    name = "client_credentials"
    required = ("token_url", "client_id", "secret_name")
    optional = ("scope", "auth_method")
    checks = {**COMMON_CHECKS, "auth_method": one_of("auth_method", AUTH_METHODS)}

    def complete(self, values: dict[str, str], provider_base_url: str, policy: OutboundPolicy) -> dict[str, str]:
        """The default method is stored, so what is sent does not change with the gateway's default."""
        return {**values, "auth_method": values.get("auth_method", "client_secret_basic")}

    def fetch(self, config: dict, sources: Sources) -> Credential:
        client_id, secret = config["client_id"], sources.secret(config["secret_name"])
        form = {"grant_type": "client_credentials"}
        if "scope" in config:
            form["scope"] = config["scope"]
        headers = {}
        if config["auth_method"] == "client_secret_post":
            form.update(client_id=client_id, client_secret=secret)
        else:
            headers["Authorization"] = basic_authorization_header(client_id, secret)
        return sources.token_endpoint.request(config["token_url"], form, headers)
