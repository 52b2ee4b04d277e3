"""Portal sessions and CSRF tokens, all signed with one HMAC key kept in Key Vault.

Why a dedicated HMAC key rather than the gateway's ES256 token-signing keys:
- key separation: whatever those keys sign is, to the FHIR proxy, a candidate access token; a
  portal session must never be one, and an access token must never open the portal;
- independent lifecycles: rotating the token-signing key (an operator routine) must not sign every
  consumer out, and the portal key could be rotated without touching issued access tokens;
- only the gateway verifies sessions, so a symmetric key is enough and costs one HMAC per request.

The key is the Key Vault secret `portal-session-key`, created on first use. Two instances starting
at once may both create it; each re-reads the latest version after writing, and every instance
re-reads it every few minutes, so they converge (a session signed with the losing key just ends).

A session token is `<payload>.<mac>` (base64url): client id, the id of the secret it signed in with,
the client's session generation (shared/portal/generations.py), a random session id, issue and
expiry times. It carries no secret, only proves "this browser signed in as that client, with that
secret, until then". The portal honours it only while that secret is still live and the generation
is still the client's current one, so a session ends at expiry, when its secret is deleted, at
sign-out and when the client is disabled (both move the generation on, on the server).
The CSRF synchronizer token is a MAC of the session id, so
it needs no server-side storage. Before sign-in there is no session: the sign-in and registration
forms use a signed double-submit token (the same value in a cookie and a hidden field, MAC'd with
an expiry so it cannot be minted by anyone else).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.jsonbody import loads_strict
from shared.stores import SecretStore
from shared.vault_key import VaultHmacKey

KEY_NAME = "portal-session-key"
SESSION_SECONDS = 30 * 60
FORM_TOKEN_SECONDS = 60 * 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same(a: str, b: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (an attacker's cookie may hold anything)."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Session:
    client_id: str
    session_id: str
    expires_at: int
    secret_id: str
    generation: int


class SessionSigner:
    def __init__(self, store: SecretStore, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._key = VaultHmacKey(store, KEY_NAME, "portal sessions and CSRF tokens", clock)

    # --- the key ------------------------------------------------------------------------------

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self._key.current(), f"{purpose}\n{message}".encode(), hashlib.sha256).digest())

    # --- sessions -----------------------------------------------------------------------------

    def issue(self, client_id: str, secret_id: str, generation: int) -> tuple[str, Session]:
        """A new session for the client, bound to the secret it signed in with and the client's
        current session generation, and the token (cookie value) that proves it."""
        now = int(self._clock())
        session = Session(client_id, secrets.token_urlsafe(16), now + SESSION_SECONDS, secret_id, generation)
        payload = _b64(json.dumps({"cid": client_id, "sid": session.session_id, "iat": now,
                                   "exp": session.expires_at, "sec": secret_id, "gen": generation},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac('session', payload)}", session

    def verify(self, token: str) -> Session | None:
        """The session a cookie proves, or None when it is forged, malformed or expired."""
        payload, _, mac = token.partition(".")
        if not payload or not mac or not _same(mac, self._mac("session", payload)):
            return None
        try:
            claims = loads_strict(_unb64(payload))
            session = Session(str(claims["cid"]), str(claims["sid"]), int(claims["exp"]), str(claims["sec"]),
                              int(claims["gen"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > self._clock() else None

    def csrf_token(self, session: Session) -> str:
        """The synchronizer token for every form of this session."""
        return self._mac("csrf", session.session_id)

    def check_csrf(self, session: Session, token: str) -> bool:
        return bool(token) and _same(token, self.csrf_token(session))

    # --- before sign-in: signed double submit ---------------------------------------------------

    def form_token(self) -> str:
        nonce, expires = secrets.token_urlsafe(16), int(self._clock()) + FORM_TOKEN_SECONDS
        return f"{nonce}.{expires}.{self._mac('form', f'{nonce}.{expires}')}"

    def form_token_valid(self, token: str) -> bool:
        nonce, _, rest = token.partition(".")
        expires, _, mac = rest.partition(".")
        if not nonce or not (expires.isascii() and expires.isdigit()) or not mac:
            return False
        return _same(mac, self._mac("form", f"{nonce}.{expires}")) and int(expires) > self._clock()

    def check_form_token(self, cookie: str, field: str) -> bool:
        """The hidden field must repeat the cookie, and the cookie must be one we minted and still valid."""
        return bool(cookie) and _same(cookie, field) and self.form_token_valid(cookie)
