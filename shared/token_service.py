"""The OAuth 2.0 authorization server (client-credentials grant, RFC 6749 §4.4) and token verification.

`issue` turns a token request into a signed JWT for one tenant; `verify` is what the FHIR proxy
runs on every request. Clients authenticate with a secret (post or Basic) or, as SMART Backend
Services, with a signed assertion (`private_key_jwt`, shared/client_assertion.py); `scope` is the
tenant id, optionally narrowed by SMART system scopes (shared/smart_scopes.py), which the token's
`scope` claim carries for the proxy to enforce. Verification follows RFC 8725: one allowed algorithm, keys only from our
own key ring by `kid` (never `jku`/`x5u`/embedded keys), and iss/aud/exp/nbf/iat all required.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from shared import telemetry
from shared.aggregate_limits import SharedCounts
from shared.client_assertion import InvalidAssertion, ReplayStore, accept_assertion, assertion_request
from shared.client_jwks import RemoteJwks
from shared.clientaddr import AddressSource, client_address
from shared.clients import Client, ClientRegistry, InvalidClient
from shared.errors import OAuthError
from shared.guid import is_guid
from shared.http import FORM_TYPE, FormError, NotAForm, RepeatedField, parse_basic_credentials, parse_form
from shared.ratelimit import RateLimiter
from shared.routes import TenantRegistry
from shared.signing import ALGORITHM, KeyRing
from shared.smart_scopes import Grant, grant, grant_from_claim, parse_scope, token_scope
from shared.urls import Urls

audit_log = logging.getLogger("gateway.audit")

GRANT = "client_credentials"
LEEWAY_SECONDS = 30
_VERIFIED_MAX = 4096  # verified tokens remembered per instance (a few MB at most)
_SINGLE = ("grant_type", "grant-type", "client_id", "client_secret", "scope", "client_assertion",
           "client_assertion_type")


MAX_TOKEN_CHARS = 8192
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")


def _numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message is safe to return to the client."""


@dataclass(frozen=True)
class AccessClaims:
    client_id: str
    tenant_id: str
    jti: str
    expires_at: int
    grant: Grant | None = None  # the SMART system scopes the token was narrowed to; None: the whole tenant


def _token_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """The token request's fields; RFC 6749 §3.2: its own parameters must not repeat."""
    try:
        return parse_form(body, content_type, single=_SINGLE)
    except NotAForm:
        raise OAuthError("invalid_request", f"the token request must be {FORM_TYPE}") from None
    except RepeatedField as exc:
        raise OAuthError("invalid_request", f"parameter {exc.name!r} must not be repeated") from None
    except FormError as exc:
        raise OAuthError("invalid_request", "the request body is not a valid form") from exc


def _basic_client(authorization: str) -> tuple[str, str]:
    """client_secret_basic: the credentials, or the 401 with the Basic challenge."""
    try:
        return parse_basic_credentials(authorization)
    except ValueError as exc:
        challenge = {"WWW-Authenticate": 'Basic realm="token", charset="UTF-8"'}
        raise OAuthError("invalid_client", "malformed Basic authorization header", 401, challenge) from exc


class ClientAuthThrottle:
    """Rate limits on FAILED client authentications at the token endpoint (brute force, spraying,
    and a Key Vault look-up per made-up secret id), answered 429 + Retry-After before the secret
    is checked, so a blocked guess learns nothing. Three counts in one sliding window:

    * per (client, source, secret id): one source guessing the value of one of a client's secrets
      (the secret id is the public prefix of a secret, `<secret_id>~<random>`);
    * per source: one source spraying made-up secrets or many clients;
    * per client, over all sources: a ceiling, set high, against guessing from many (spoofed)
      sources.

    A source that authenticated the client successfully within the token lifetime is the client's
    own deployment: the per-source and per-client counts neither count nor block its requests for
    that client, so a distributed attack can slow a client's new sources but never cut it off
    where it already works, and a replica still presenting a deleted secret slows only that secret,
    never its siblings' current one at the same address.

    Only failures are counted and a refused attempt counts nothing (RateLimiter), so every count
    clears at most one window after the last failure it admitted: nobody is locked out for longer
    than an attack lasts plus one window. Successes are never limited by another source's failures.

    Across instances (issue #14): with `shared` set, every failure is also counted in Table Storage
    (`shared.aggregate_limits`) before it is answered, so the three limits hold over all instances
    together (within 1.5x in any sliding window; a block still ends one window after the last
    admitted failure). Only failures pay for it (a read and an ETag write per count), and only after the secret
    was found wrong: a request with a good secret makes no Table call. The price: an instance that
    has not itself refused a blocked key still admits a *correct* secret for it (a wrong one is
    refused by the shared count); with 256-bit secrets that reveals nothing an attacker could have
    guessed.
    """

    def __init__(self, per_client_and_source: int, per_source: int, per_client: int, window_seconds: float,
                 good_for_seconds: float, clock: Callable[[], float] = time.monotonic,
                 shared: Callable[[str, int], SharedCounts] | None = None) -> None:
        self._pair = RateLimiter(per_client_and_source, window_seconds, clock)
        self._source = RateLimiter(per_source, window_seconds, clock)
        self._client = RateLimiter(per_client, window_seconds, clock)
        self._shared = None if shared is None else {
            "pair": shared("token-pair", per_client_and_source), "source": shared("token-source", per_source),
            "client": shared("token-client", per_client)}
        self._blocked = RateLimiter(1, window_seconds, clock)  # keys the shared counts refused, seen here
        self._good: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._good_for, self._clock = good_for_seconds, clock
        self._lock = threading.Lock()

    def _keys(self, client_id: str | None, source: str, secret_id: str) -> list[tuple[str, str]]:
        """The counts an attempt touches: (limit, key); the client's own sources skip the broad two."""
        own = client_id is not None and self._known_good(client_id, source)
        keys = [] if own else [("source", source)]
        if client_id is not None:
            keys.append(("pair", f"{client_id}|{source}|{secret_id}"))
            if not own:
                keys.append(("client", client_id))
        return keys

    def check(self, client_id: str | None, source: str, secret_id: str) -> None:
        limiters = {"pair": self._pair, "source": self._source, "client": self._client}
        keys = self._keys(client_id, source, secret_id)
        wait = max(max(limiters[name].retry_after(key), self._blocked.retry_after(f"{name}|{key}"))
                   for name, key in keys)
        if wait and self._shared is not None:  # refused: Retry-After must say when the shared counts free too
            wait = max(wait, *(self._shared[name].wait(self._shared[name].read(key)) for name, key in keys))
        if wait:
            raise _slow_down(wait)

    def check_shared(self, client_id: str | None, source: str, secret_id: str) -> None:
        """The shared counts alone, counting nothing: run before a Key Vault read that a made-up
        secret could cause (legacy verifiers), so guessing cannot become vault load."""
        if self._shared is not None:
            wait = max(self._shared[name].wait(self._shared[name].read(key))
                       for name, key in self._keys(client_id, source, secret_id))
            if wait:
                raise _slow_down(wait)

    def failed(self, client_id: str | None, source: str, secret_id: str) -> None:
        """Count a failure; raises slow_down instead when the shared counts are already full."""
        keys = self._keys(client_id, source, secret_id)
        if self._shared is not None:
            counts = [(name, key, self._shared[name].read(key)) for name, key in keys]
            waits = {(name, key): self._shared[name].wait(count) for name, key, count in counts}
            if any(waits.values()):
                for (name, key), wait in waits.items():
                    if wait:
                        self._blocked.hit(f"{name}|{key}")
                raise _slow_down(max(waits.values()))
            for name, key, count in counts:
                wait = self._shared[name].add(key, count)
                if wait:  # another instance took the last free place meanwhile
                    self._blocked.hit(f"{name}|{key}")
                    raise _slow_down(wait)
        limiters = {"pair": self._pair, "source": self._source, "client": self._client}
        for name, key in keys:
            limiters[name].hit(key)

    def succeeded(self, client_id: str, source: str, secret_id: str) -> None:
        self._pair.reset(f"{client_id}|{source}|{secret_id}")
        with self._lock:
            self._good[(client_id, source)] = self._clock()
            self._good.move_to_end((client_id, source))
            while len(self._good) > 100_000:
                self._good.popitem(last=False)

    def _known_good(self, client_id: str, source: str) -> bool:
        with self._lock:
            since = self._good.get((client_id, source))
        return since is not None and self._clock() - since < self._good_for


def _slow_down(wait: int) -> OAuthError:
    return OAuthError("slow_down", f"too many failed client authentications; retry in {wait} s", 429,
                      {"Retry-After": str(wait)})


_NO_SECRET_ID = "-"  # noqa: S105 - a placeholder key, not a password


def _secret_id(secret: str) -> str:
    """The public id part of a well-formed client secret (`<16 hex>~<random>`), else "-"."""
    head, sep, _ = secret.partition("~")
    return head if sep and len(head) == 16 and all(c in "0123456789abcdef" for c in head) else _NO_SECRET_ID


class TokenService:
    def __init__(self, keys: KeyRing, clients: ClientRegistry, tenants: TenantRegistry, lifetime: int,
                 clock: Callable[[], float] = time.time, throttle: ClientAuthThrottle | None = None,
                 address_source: AddressSource | None = None, replay: ReplayStore | None = None,
                 remote_jwks: RemoteJwks | None = None) -> None:
        """`replay`: where used client-assertion ids are claimed; without one, `private_key_jwt` is
        refused. `remote_jwks`: fetches the sets of clients registered with a `jwks_uri`."""
        self._keys, self._clients, self._tenants = keys, clients, tenants
        self._replay, self._remote_jwks = replay, remote_jwks
        self._lifetime, self._clock = lifetime, clock
        self._throttle = throttle
        self._address_source = address_source or AddressSource()
        self._verified: dict[tuple[str, str, str], tuple[str, AccessClaims]] = {}
        self._verified_lock = threading.Lock()

    @telemetry.token_issuance
    def issue(self, body: bytes, headers: Mapping[str, str], urls: Urls) -> dict:
        """Every outcome leaves one audit line: which client got a token for which tenant, or the
        RFC 6749 error it got. The client id is recorded only once authenticated; never a secret or token."""
        record: dict[str, str | None] = {"event": "token-request", "outcome": "error", "client_id": None,
                                         "tenant_id": None, "jti": None}
        try:
            issued = self._issue(body, headers, urls, record)
        except OAuthError as exc:
            record["outcome"] = exc.error
            _audit(record)
            raise
        except Exception:
            _audit(record)
            raise
        # Not in a `finally`: an inline attempt interrupted by WouldBlock runs again and writes the line then.
        record["outcome"] = "issued"
        _audit(record)
        return issued

    def _issue(self, body: bytes, headers: Mapping[str, str], urls: Urls, record: dict[str, str | None]) -> dict:
        form = _token_form(body, headers.get("content-type"))
        self._check_grant(form)
        source = client_address(headers, self._address_source)
        authorization = headers.get("authorization")
        signed = assertion_request(form, basic_auth=(authorization or "").strip().lower().startswith("basic "))
        if signed is not None:
            client = self._authenticate_assertion(*signed, urls)
        else:
            client = self._authenticate(form, authorization, source)
        record["client_id"] = client.client_id
        tenant_id, scope = self._granted_scope(form.get("scope", ""), client)
        record["tenant_id"] = tenant_id
        now = int(self._clock())
        jti = str(uuid.uuid4())
        claims = {"iss": urls.issuer, "aud": urls.audience, "sub": client.client_id,
                  "client_id": client.client_id, "tid": tenant_id, "scope": scope, "iat": now,
                  "nbf": now, "exp": now + self._lifetime, "jti": jti}
        record["jti"] = jti
        key = self._keys.current()
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"})
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime, "scope": scope}

    def _authenticate_assertion(self, client_id: str, assertion: str, urls: Urls) -> Client:
        """`private_key_jwt` (RFC 7523 §3): every failure is the same `invalid_client` family as a
        wrong secret, with the failed check named (never key material). The client is looked up
        before verifying because its registered keys are what the assertion is checked against; so
        an unknown, disabled or keyless client gets the same answer before any check has passed
        (nothing about the client is told to a caller who has proved nothing)."""
        client = self._clients.cached_client(client_id) if is_guid(client_id) else None
        if client is None or (client.jwks is None and client.jwks_uri is None) or not client.active:
            raise OAuthError("invalid_client", "client authentication failed", 401)
        if self._replay is None:
            raise OAuthError("invalid_client", "private_key_jwt is not available on this gateway", 401)
        jwks = client.jwks if client.jwks is not None else self._published_keys(client.jwks_uri or "", assertion)
        accept_assertion(jwks, urls.token_url, client.client_id, assertion, self._replay)
        return client

    def _published_keys(self, uri: str, assertion: str) -> dict:
        """The set at the client's jwks_uri, refreshed early when it lacks the assertion's kid."""
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.PyJWTError:
            kid = None  # accept_assertion names the failure
        kid = kid if isinstance(kid, str) else None
        jwks = self._remote_jwks.get(uri, kid) if self._remote_jwks is not None else None
        if jwks is None:
            raise InvalidAssertion("the client's jwks_uri did not serve a usable JWK Set")
        return jwks

    @staticmethod
    def _check_grant(form: dict[str, str]) -> None:
        grant, alias = form.get("grant_type"), form.get("grant-type")
        if grant is not None and alias is not None and grant != alias:
            raise OAuthError("invalid_request", "grant_type and grant-type disagree")
        grant = grant if grant is not None else alias
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant != GRANT:
            raise OAuthError("unsupported_grant_type", f"only {GRANT} is supported")

    def _authenticate(self, form: dict[str, str], authorization: str | None, source: str) -> Client:
        throttle = self._throttle
        if authorization:
            if "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method, not two")
            try:
                client_id, secret = _basic_client(authorization)
            except OAuthError:
                if throttle is not None:
                    throttle.check(None, source, _NO_SECRET_ID)
                    throttle.failed(None, source, _NO_SECRET_ID)
                raise
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials")
            challenge = {"WWW-Authenticate": 'Basic realm="token", charset="UTF-8"'}
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if not client_id or not secret:
                raise OAuthError("invalid_client", "client authentication is required", 401)
            challenge = {}
        # Only a well-formed id becomes a per-client key (a made-up 16 KiB id must not cost 16 KiB of memory).
        counted, secret_id = (client_id.lower() if is_guid(client_id) else None), _secret_id(secret)
        if throttle is not None:
            throttle.check(counted, source, secret_id)  # before the secret is looked at: a blocked guess learns nothing
        try:
            before_vault = None if throttle is None else lambda: throttle.check_shared(counted, source, secret_id)
            client = self._clients.authenticate(client_id, secret, before_vault)
        except InvalidClient as exc:
            if throttle is not None:
                throttle.failed(counted, source, secret_id)
            raise OAuthError("invalid_client", "client authentication failed", 401, challenge) from exc
        if throttle is not None:
            throttle.succeeded(client.client_id, source, secret_id)
        if not client.active:
            raise OAuthError("unauthorized_client", "this client is disabled")
        return client

    def _granted_scope(self, scope: str, client: Client) -> tuple[str, str]:
        """The tenant and the granted `scope`: the tenant id alone (unchanged for the Patients app), or
        followed by the SMART system scopes narrowed to the tenant's allow-list."""
        request = parse_scope(scope)
        route = self._tenants.resolve(request.tenant_id)
        if route is None or not route.allows(client.client_id):
            raise OAuthError("invalid_scope", "this client may not request tokens for that tenant")
        return route.tenant_id, token_scope(route.tenant_id, grant(request, route.resource_types))

    @telemetry.traced("token verification")
    def verify(self, token: str, urls: Urls) -> AccessClaims:
        """Verified once, then remembered until it expires: the ES256 check was the largest part of the
        proxy's per-request CPU. Only tokens that passed every check get in; a hit still needs the
        signing key to be live and the token unexpired, by the same clock and leeway as PyJWT's."""
        key = (token, urls.audience, urls.issuer)
        hit = self._verified.get(key)
        if hit is not None and hit[1].expires_at > time.time() - LEEWAY_SECONDS and self._keys.find(hit[0]) is not None:
            return hit[1]
        kid, claims = self._verify_signed(token, urls)
        with self._verified_lock:
            if len(self._verified) >= _VERIFIED_MAX:
                del self._verified[next(iter(self._verified))]  # the oldest: the first to expire
            self._verified[key] = (kid, claims)
        return claims

    def _verify_signed(self, token: str, urls: Urls) -> tuple[str, AccessClaims]:
        # Compact JWS in strict base64url (no padding, no "+/"): one token, one spelling.
        if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.match(token):
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or len(kid) != 32:
            raise InvalidToken("token not signed by this gateway")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES:  # RFC 9068 §4, RFC 8725 §3.11
            raise InvalidToken("not an access token")
        key = self._keys.find(kid)
        if key is None:
            raise InvalidToken("token not signed by this gateway")
        try:
            claims = jwt.decode(token, key.private_key.public_key(), algorithms=[ALGORITHM], audience=urls.audience,
                                issuer=urls.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "tid", "jti"]})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        tenant, client_id, scope = claims.get("tid"), claims.get("client_id"), claims.get("scope")
        if not isinstance(tenant, str) or not isinstance(scope, str) or client_id != claims.get("sub"):
            raise InvalidToken("token rejected")
        try:
            granted = grant_from_claim(scope)
            if parse_scope(scope).tenant_id != tenant:
                raise InvalidToken("token rejected")
        except OAuthError as exc:
            raise InvalidToken("token rejected") from exc
        if not all(_numeric_date(claims[name]) for name in ("exp", "iat", "nbf")):  # RFC 7519 §2 (PyJWT takes "123")
            raise InvalidToken("token rejected")
        if claims["exp"] - claims["iat"] > self._lifetime + LEEWAY_SECONDS:
            # We never issue longer-lived tokens: one that claims so was minted with a stolen key
            # (or before the lifetime was lowered), and must not outlive what we would issue now.
            raise InvalidToken("token rejected")
        return kid, AccessClaims(str(client_id), tenant, str(claims["jti"]), int(claims["exp"]), granted)


def _audit(record: dict[str, str | None]) -> None:
    audit_log.info(json.dumps(record, separators=(",", ":")))
