"""The token endpoint's client-authentication step: which registered client is asking, proved how.

Three ways in (RFC 6749 §2.3, RFC 7523 §3): a secret in the form (`client_secret_post`), a secret
in a Basic header (`client_secret_basic`), or, for SMART Backend Services, a signed assertion
(`private_key_jwt`, shared/client_assertion.py). Every failure is `invalid_client` (401), or
`slow_down` (429) once `ClientAuthThrottle` has seen too many; a disabled client that proved
itself is `unauthorized_client`. Nothing here issues or verifies gateway tokens
(shared/token_service.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import jwt

from shared.aggregate_limits import SharedCounts
from shared.cache import TtlCache
from shared.client_assertion import InvalidAssertion, ReplayStore, accept_assertion, assertion_request
from shared.client_jwks import RemoteJwks
from shared.clientaddr import AddressSource, client_address
from shared.clients import Client, ClientRegistry, InvalidClient
from shared.errors import OAuthError
from shared.guid import is_guid
from shared.http import parse_basic_credentials
from shared.ratelimit import RateLimiter
from shared.urls import Urls

_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="token", charset="UTF-8"'}


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
        # (client, source) pairs that recently presented a good secret: bounded, each for good_for_seconds
        self._good: TtlCache[tuple[str, str], bool] = TtlCache(good_for_seconds, clock, max_entries=100_000)

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
        self._good.put((client_id, source), True)

    def _known_good(self, client_id: str, source: str) -> bool:
        return self._good.entry((client_id, source)) is not None


def _slow_down(wait: int) -> OAuthError:
    return OAuthError("slow_down", f"too many failed client authentications; retry in {wait} s", 429,
                      {"Retry-After": str(wait)})


_NO_SECRET_ID = "-"  # noqa: S105 - a placeholder key, not a password


def _secret_id(secret: str) -> str:
    """The public id part of a well-formed client secret (`<16 hex>~<random>`), else "-"."""
    head, sep, _ = secret.partition("~")
    return head if sep and len(head) == 16 and all(c in "0123456789abcdef" for c in head) else _NO_SECRET_ID


class ClientAuthenticator:
    """Which client a token request comes from, or the OAuth error that says it proved nothing."""

    def __init__(self, clients: ClientRegistry, throttle: ClientAuthThrottle | None = None,
                 address_source: AddressSource | None = None, replay: ReplayStore | None = None,
                 remote_jwks: RemoteJwks | None = None) -> None:
        """`replay`: where used client-assertion ids are claimed; without one, `private_key_jwt` is
        refused. `remote_jwks`: fetches the sets of clients registered with a `jwks_uri`."""
        self._clients, self._throttle = clients, throttle
        self._address_source = address_source or AddressSource()
        self._replay, self._remote_jwks = replay, remote_jwks

    def authenticate(self, form: dict[str, str], headers: Mapping[str, str], urls: Urls) -> Client:
        authorization = headers.get("authorization")
        signed = assertion_request(form, basic_auth=(authorization or "").strip().lower().startswith("basic "))
        if signed is not None:
            return self._authenticate_assertion(*signed, urls)
        return self._authenticate_secret(form, authorization, client_address(headers, self._address_source))

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

    def _authenticate_secret(self, form: dict[str, str], authorization: str | None, source: str) -> Client:
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
            challenge = _BASIC_CHALLENGE
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


def _basic_client(authorization: str) -> tuple[str, str]:
    """client_secret_basic: the credentials, or the 401 with the Basic challenge."""
    try:
        return parse_basic_credentials(authorization)
    except ValueError as exc:
        raise OAuthError("invalid_client", "malformed Basic authorization header", 401, _BASIC_CHALLENGE) from exc
