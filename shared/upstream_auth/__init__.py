"""How the gateway authenticates itself to each tenant's FHIR server (the "provider").

A tenant's route carries an ``upstream_auth`` config. It names *how* to authenticate and
*where* the credential lives (a Key Vault secret name), never the credential itself, so the
route table can be read, exported and logged without leaking anything. Each kind is one object
with its schema, checks and credential fetch (`KINDS`, shared/upstream_auth/kinds.py):

``{"kind": "none"}``
    No Authorization header (none_and_bearer.py).
``{"kind": "bearer", "secret_name"}``
    A static bearer token kept in Key Vault (none_and_bearer.py).
``{"kind": "client_credentials", "token_url", "client_id", "secret_name", "scope"?, "auth_method"?}``
    OAuth 2.0 client credentials grant, client secret in Key Vault (client_credentials.py).
``{"kind": "smart_backend", "token_url", "client_id", "secret_name", "alg", "kid", "scope"}``
    SMART Backend Services, a client assertion signed with a key in Key Vault (smart_backend.py).
``{"kind": "azure_ad", "scope"?, "client_id"?}``
    A Microsoft Entra token from azure-identity, for Azure Health Data Services (azure_ad.py).

`validate_upstream_auth` checks a config from the management API; `UpstreamAuthenticator`
(authenticator.py) turns a stored config into the Authorization header value for one upstream
request, caching credentials per tenant. The token endpoint plumbing the OAuth kinds share is in
token_endpoint.py; field rules the kinds share in fields.py.
"""

from shared.upstream_auth.authenticator import UpstreamAuthenticator
from shared.upstream_auth.azure_ad import default_credential
from shared.upstream_auth.errors import InvalidUpstreamAuth, UpstreamAuthError
from shared.upstream_auth.fields import SECRET_PREFIX
from shared.upstream_auth.kind import CredentialKind, Sources, UpstreamAuthKind
from shared.upstream_auth.kinds import KINDS, validate_upstream_auth
from shared.upstream_auth.smart_backend import ASSERTION_TYPE

__all__ = [
    "ASSERTION_TYPE",
    "KINDS",
    "SECRET_PREFIX",
    "CredentialKind",
    "InvalidUpstreamAuth",
    "Sources",
    "UpstreamAuthError",
    "UpstreamAuthKind",
    "UpstreamAuthenticator",
    "default_credential",
    "validate_upstream_auth",
]
