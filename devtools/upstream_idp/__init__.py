"""A local OAuth 2.0 authorization server for a provider's side of upstream authentication.

Tests and the dev stack point a tenant's ``upstream_auth.token_url`` here. Unlike a stub, it
checks what it receives, so a passing test means the gateway spoke the protocol correctly:

- client authentication (RFC 6749 §2.3): ``client_secret_basic`` (id and secret
  form-urlencoded before Base64, §2.3.1), ``client_secret_post``, or a ``private_key_jwt``
  assertion (RFC 7523, SMART Backend Services); more than one method in a request is refused;
- assertions: signature with the registered public key, ``alg`` RS384/ES384 matching the key,
  known ``kid``, ``iss`` = ``sub`` = client_id, ``aud`` = this token URL, ``exp`` at most five
  minutes ahead, ``jti`` never seen before;
- ``grant_type=client_credentials``, registered scopes, no repeated parameters (§3.2);
- errors as RFC 6749 §5.2 JSON (401 with a Basic challenge when Basic was attempted).

Tokens are opaque random strings with ``expires_in``; ``POST /introspect`` answers RFC 7662
``{"active": ...}`` so a resource server (the sample EHR's ``--auth introspect:<url>``) can check
them. The introspection endpoint asks its caller for no credentials (RFC 7662 §2.1 wants some):
it is a loopback tool, and this keeps the sample EHR free of a second set of secrets.

Python API::

    idp = UpstreamIdp().start()
    idp.register_client("gw", "s3cret", scopes=["system/*.read"])
    ...  # point the gateway at idp.token_url
    assert idp.token_requests == 1 and idp.last_client_auth == "client_secret_basic"
    idp.stop()

CLI, for the dev stack: ``python -m devtools.upstream_idp --port 0 --ready-file F --config C``
where C is JSON ``{"token_lifetime": 3600, "clients": [{"client_id", "secret", "scopes"?}],
"backend_clients": [{"client_id", "kid", "public_key" (PEM text or a JWK object), "scopes"?}]}``.
Once listening it writes F (JSON: pid, port, base_url, token_url, introspection_url) and
serves until SIGTERM or SIGINT.

Modules: :mod:`.protocol` (forms, Basic credentials, scopes, RFC 6749 error answers),
:mod:`.keys` (public keys and assertion checks), :mod:`.server` (clients, tokens and the HTTP
handler) and :mod:`.cli` (``main``).
"""

from devtools.upstream_idp.cli import main
from devtools.upstream_idp.protocol import ASSERTION_TYPE, INTROSPECTION_PATH, TOKEN_PATH
from devtools.upstream_idp.server import UpstreamIdp

__all__ = ["ASSERTION_TYPE", "INTROSPECTION_PATH", "TOKEN_PATH", "UpstreamIdp", "main"]
