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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from devtools.jsonhttp import BackgroundServer, read_body, send_json

__all__ = ["ASSERTION_TYPE", "INTROSPECTION_PATH", "TOKEN_PATH", "UpstreamIdp", "main"]

_LOG = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
INTROSPECTION_PATH = "/introspect"
MAX_ASSERTION_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes ahead
CLOCK_SKEW = 30
_FORM_TYPE = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CREDENTIAL_FIELDS = frozenset({"client_secret", "client_assertion"})

# (status, JSON body, extra headers)
_Result = tuple[int, dict[str, Any], dict[str, str]]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class _Refusal(Exception):
    """An RFC 6749 §5.2 error answer; `basic` adds the challenge §5.2 requires after Basic."""

    def __init__(self, error: str, description: str, status: int = 400, basic: bool = False) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.basic = error, description, status, basic

    def result(self) -> _Result:
        headers = dict(_NO_STORE)
        if self.basic:
            headers["WWW-Authenticate"] = 'Basic realm="upstream-idp"'
        return self.status, {"error": self.error, "error_description": self.description}, headers


@dataclass(frozen=True)
class _SecretClient:
    secret: str
    scopes: frozenset[str] | None


@dataclass
class _BackendClient:
    keys: dict[str, tuple[PublicKey, str]] = field(default_factory=dict)  # kid -> (key, alg)
    scopes: frozenset[str] | None = None


@dataclass(frozen=True)
class _Grant:
    client_id: str
    scope: str
    issued_at: int
    expires_at: int


def _digest(token: str) -> str:
    """Issued tokens are kept as digests, so a dump of this object reveals no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _alg_for(key: object) -> str:
    """The one SMART algorithm a key can verify; anything else is refused at registration."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError("backend client keys must be RSA or EC P-384 public keys (RS384 / ES384)")


def _load_public_key(public_key: str | bytes | dict) -> PublicKey:
    if isinstance(public_key, dict):
        key = jwt.PyJWK(public_key).key
    else:
        data = public_key.encode() if isinstance(public_key, str) else public_key
        key = load_pem_public_key(data)
    _alg_for(key)
    return key


class UpstreamIdp(BackgroundServer):
    """The authorization server; see the module docstring for what it checks.

    :param port: TCP port on 127.0.0.1; 0 picks a free one.
    :param token_lifetime: ``expires_in`` of issued tokens (settable later, e.g. short for tests).
    :param response_delay: seconds to stall before answering the token endpoint (timeout tests).
    """

    def __init__(self, port: int = 0, *, token_lifetime: int = 3600, response_delay: float = 0.0) -> None:
        self.token_lifetime = token_lifetime
        self.response_delay = response_delay
        super().__init__(port)
        self._lock = threading.Lock()
        self._secret_clients: dict[str, _SecretClient] = {}
        self._backend_clients: dict[str, _BackendClient] = {}
        self._grants: dict[str, _Grant] = {}
        self._jtis: dict[str, int] = {}  # jti -> exp, forgotten once exp has passed
        self._token_requests = 0
        self._last_form: dict[str, str] = {}
        self._last_client_auth: str | None = None
        self._last_assertion: dict[str, Any] | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def token_url(self) -> str:
        """Also the only ``aud`` an assertion may carry."""
        return self.base_url + TOKEN_PATH

    @property
    def introspection_url(self) -> str:
        return self.base_url + INTROSPECTION_PATH

    # -- registration

    def register_client(self, client_id: str, secret: str, *, scopes: Iterable[str] | None = None) -> None:
        """A confidential client with a secret; `scopes` limits what it may ask for (None: anything)."""
        with self._lock:
            self._secret_clients[client_id] = _SecretClient(secret, _scope_set(scopes))

    def register_backend_client(self, client_id: str, public_key: str | bytes | dict, *, kid: str,
                                scopes: Iterable[str] | None = None) -> None:
        """A SMART backend client; call again with another kid to add a key (rotation)."""
        key = _load_public_key(public_key)
        with self._lock:
            client = self._backend_clients.setdefault(client_id, _BackendClient())
            client.keys[kid] = (key, _alg_for(key))
            client.scopes = _scope_set(scopes)

    # -- observations for tests (copies; never a secret, an assertion or a token)

    @property
    def token_requests(self) -> int:
        """Every POST to the token endpoint, refused ones included."""
        with self._lock:
            return self._token_requests

    @property
    def last_form(self) -> dict[str, str]:
        """Form fields of the last token request without client_secret and client_assertion."""
        with self._lock:
            return dict(self._last_form)

    @property
    def last_client_auth(self) -> str | None:
        """client_secret_basic, client_secret_post or private_key_jwt, once authentication passed."""
        with self._lock:
            return self._last_client_auth

    @property
    def last_assertion(self) -> dict[str, Any] | None:
        """``{"header": ..., "claims": ...}`` of the last verified client assertion."""
        with self._lock:
            return json.loads(json.dumps(self._last_assertion))

    def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 answer for `token`; inactive tokens get no other member (§2.2)."""
        with self._lock:
            grant = self._grants.get(_digest(token))
        if grant is None or grant.expires_at <= time.time():
            return {"active": False}
        return {
            "active": True, "client_id": grant.client_id, "scope": grant.scope, "token_type": "Bearer",
            "exp": grant.expires_at, "iat": grant.issued_at, "sub": grant.client_id, "iss": self.base_url,
        }

    def revoke_tokens(self) -> None:
        """Makes every issued token inactive, as a provider does when it rotates or revokes."""
        with self._lock:
            self._grants.clear()

    # -- endpoints

    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Result:
        endpoints = {TOKEN_PATH: self._token, INTROSPECTION_PATH: self._introspection}
        endpoint = endpoints.get(urlsplit(path).path.rstrip("/"))
        if endpoint is None:
            return 404, {"error": "not_found"}, {}
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "use POST"}, {"Allow": "POST"}
        try:
            return endpoint(headers, body)
        except _Refusal as refusal:
            return refusal.result()

    def _token(self, headers: dict[str, str], body: bytes) -> _Result:
        if self.response_delay:
            time.sleep(self.response_delay)
        with self._lock:
            self._token_requests += 1
            self._last_client_auth = self._last_assertion = None
            self._last_form = {}
        form = _parse_form(headers.get("content-type"), body)
        with self._lock:
            self._last_form = {k: v for k, v in form.items() if k not in _CREDENTIAL_FIELDS}
        if "grant_type" not in form:
            raise _Refusal("invalid_request", "grant_type is required")
        client_id, method, allowed = self._authenticate(form, headers.get("authorization"))
        if form["grant_type"] != "client_credentials":
            raise _Refusal("unsupported_grant_type", "only client_credentials is supported")
        scope = _granted_scope(form.get("scope"), allowed, required=method == "private_key_jwt")
        return 200, self._issue(client_id, scope), dict(_NO_STORE)

    def _introspection(self, headers: dict[str, str], body: bytes) -> _Result:
        token = _parse_form(headers.get("content-type"), body).get("token")
        if not token:
            raise _Refusal("invalid_request", "token is required")
        return 200, self.introspect(token), dict(_NO_STORE)

    def _issue(self, client_id: str, scope: str) -> dict[str, Any]:
        token, now = secrets.token_urlsafe(32), int(time.time())
        grant = _Grant(client_id, scope, now, now + self.token_lifetime)
        with self._lock:
            self._grants[_digest(token)] = grant
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        if scope:
            answer["scope"] = scope
        return answer

    # -- client authentication

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> tuple[str, str, frozenset | None]:
        """(client_id, method, allowed scopes); exactly one method is allowed (RFC 6749 §2.3)."""
        methods = []
        if authorization is not None:
            if not authorization.lower().startswith("basic "):
                raise _Refusal("invalid_request", "only the Basic scheme is accepted in Authorization")
            methods.append("client_secret_basic")
        if "client_secret" in form:
            methods.append("client_secret_post")
        if "client_assertion" in form or "client_assertion_type" in form:
            methods.append("private_key_jwt")
        if len(methods) > 1:
            raise _Refusal("invalid_request", f"more than one client authentication method: {', '.join(methods)}")
        if not methods:
            raise _Refusal("invalid_client", "client authentication is required", 401)
        method = methods[0]
        if method == "private_key_jwt":
            client_id, allowed = self._verify_assertion(form)
        else:
            client_id, allowed = self._verify_secret(form, authorization, method)
        with self._lock:
            self._last_client_auth = method
        return client_id, method, allowed

    def _verify_secret(self, form: dict[str, str], authorization: str | None,
                       method: str) -> tuple[str, frozenset | None]:
        basic = method == "client_secret_basic"
        if basic:
            client_id, secret = _basic_credentials(authorization or "")
            if form.get("client_id", client_id) != client_id:
                raise _Refusal("invalid_request", "client_id in the body differs from the Basic user")
        else:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        with self._lock:
            client = self._secret_clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
            raise _Refusal("invalid_client", "client authentication failed", 401, basic=basic)
        return client_id, client.scopes

    def _verify_assertion(self, form: dict[str, str]) -> tuple[str, frozenset | None]:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _Refusal("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise _Refusal("invalid_request", "client_assertion is required")
        header, issuer = _unverified_parts(assertion)
        with self._lock:
            client = self._backend_clients.get(issuer)
        if client is None or form.get("client_id", issuer) != issuer:
            raise _Refusal("invalid_client", "unknown client (iss)", 401)
        registered = client.keys.get(header["kid"])
        if registered is None or registered[1] != header["alg"]:
            raise _Refusal("invalid_client", "no registered key has this kid and alg", 401)
        key, alg = registered
        claims = _verified_claims(assertion, key, alg, issuer, self.token_url)
        self._consume_jti(claims["jti"], claims["exp"])
        with self._lock:
            self._last_assertion = {"header": header, "claims": claims}
        return issuer, client.scopes

    def _consume_jti(self, jti: str, exp: int) -> None:
        """RFC 7523 §3 item 7: a jti is accepted once while its assertion could still be valid."""
        now = time.time()
        with self._lock:
            self._jtis = {k: v for k, v in self._jtis.items() if v + CLOCK_SKEW > now}
            if jti in self._jtis:
                raise _Refusal("invalid_client", "jti was already used (replayed assertion)", 401)
            self._jtis[jti] = exp


def _scope_set(scopes: Iterable[str] | None) -> frozenset[str] | None:
    return None if scopes is None else frozenset(scopes)


def _parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    if (content_type or "").split(";")[0].strip().lower() != _FORM_TYPE:
        raise _Refusal("invalid_request", f"the body must be {_FORM_TYPE}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise _Refusal("invalid_request", "the form body is malformed") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _Refusal("invalid_request", "a parameter is repeated (RFC 6749 §3.2)")
    return form


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: id and secret were form-urlencoded before Base64, so decode both."""
    try:
        raw = base64.b64decode(authorization.split(" ", 1)[1].strip(), validate=True).decode("utf-8")
    except (IndexError, binascii.Error, UnicodeDecodeError):
        raise _Refusal("invalid_client", "malformed Basic credentials", 401, basic=True) from None
    user, colon, password = raw.partition(":")
    if not colon:
        raise _Refusal("invalid_client", "malformed Basic credentials", 401, basic=True)
    return unquote_plus(user), unquote_plus(password)


def _unverified_parts(assertion: str) -> tuple[dict[str, Any], str]:
    """The header and iss, read before verification only to pick the key that verifies them."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise _Refusal("invalid_client", "client_assertion is not a JWT", 401) from None
    if header.get("alg") not in ("RS384", "ES384"):
        raise _Refusal("invalid_client", "assertion alg must be RS384 or ES384", 401)
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise _Refusal("invalid_client", "assertion header must carry a kid", 401)
    if not isinstance(claims.get("iss"), str):
        raise _Refusal("invalid_client", "assertion must carry iss", 401)
    return header, claims["iss"]


def _verified_claims(assertion: str, key: PublicKey, alg: str, client_id: str, token_url: str) -> dict:
    try:
        claims = jwt.decode(
            assertion, key, algorithms=[alg], audience=token_url, issuer=client_id, leeway=CLOCK_SKEW,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.InvalidAudienceError:
        raise _Refusal("invalid_client", f"assertion aud must be {token_url}", 401) from None
    except jwt.InvalidTokenError as exc:
        raise _Refusal("invalid_client", f"assertion rejected: {exc}", 401) from None
    if claims["sub"] != client_id:
        raise _Refusal("invalid_client", "assertion sub must equal iss (the client_id)", 401)
    if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise _Refusal("invalid_client", "assertion exp is more than five minutes ahead", 401)
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise _Refusal("invalid_client", "assertion jti must be a non-empty string", 401)
    return claims


def _granted_scope(requested: str | None, allowed: frozenset[str] | None, *, required: bool) -> str:
    """SMART backend requests must name a scope; others get all they may have when they name none."""
    if requested is None:
        if required:
            raise _Refusal("invalid_request", "scope is required")
        return " ".join(sorted(allowed or ()))
    asked = frozenset(requested.split())
    if not asked or (allowed is not None and not asked <= allowed):
        raise _Refusal("invalid_scope", "the requested scope is not granted to this client")
    return " ".join(sorted(asked))


def _handler_for(idp: UpstreamIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "upstream-idp"

        def _serve(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, payload, extra = idp.route(self.command, self.path, headers, read_body(self))
            send_json(self, status, payload, extra)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Only the path: bodies and headers carry credentials.
            _LOG.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

        def log_message(self, format: str, *args: Any) -> None:
            _LOG.debug("upstream idp: " + format, *args)

    return Handler


# --- CLI ------------------------------------------------------------------------------------------


def _configure(idp: UpstreamIdp, config: dict[str, Any]) -> None:
    for client in config.get("clients", []):
        idp.register_client(client["client_id"], client["secret"], scopes=client.get("scopes"))
    for client in config.get("backend_clients", []):
        idp.register_backend_client(client["client_id"], client["public_key"], kid=client["kid"],
                                    scopes=client.get("scopes"))


def _write_ready_file(path: Path, idp: UpstreamIdp) -> None:
    """Written whole then renamed, so a watcher never reads half a file."""
    info = {"pid": os.getpid(), "port": idp.port, "base_url": idp.base_url,
            "token_url": idp.token_url, "introspection_url": idp.introspection_url}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(info))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.upstream_idp", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--ready-file", type=Path, help="written with the URLs once listening")
    parser.add_argument("--config", type=Path, help="JSON: token_lifetime, clients, backend_clients")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else {}
    idp = UpstreamIdp(args.port, token_lifetime=int(config.get("token_lifetime", 3600)))
    _configure(idp, config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    idp.start()
    if args.ready_file:
        _write_ready_file(args.ready_file, idp)
    _LOG.info("upstream idp listening at %s", idp.base_url)
    while not stop.wait(0.5):
        pass
    idp.stop()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise SystemExit(main())
