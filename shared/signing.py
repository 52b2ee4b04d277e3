"""Token signing keys: ES256 keys kept in Key Vault, cached in memory, rotated without downtime.

Each key is one Key Vault secret `signing-key-<kid>` holding the PKCS#8 PEM private key. The
newest key signs. An older key keeps verifying (and stays in JWKS) until every token it can
have signed has expired: its successor's creation + token lifetime + this cache's TTL (other
instances may sign with it until they refresh) + clock skew.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shared.errors import NotFound
from shared.stores import SecretStore

ALGORITHM = "ES256"
PREFIX = "signing-key-"
CREATED_TAG = "created"
CLOCK_SKEW = timedelta(seconds=60)
UNKNOWN_KID_REFRESH_INTERVAL = 10.0


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: datetime

    def public_jwk(self) -> dict:
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


def _created(tags: dict[str, str]) -> datetime | None:
    try:
        created = datetime.fromisoformat(tags[CREATED_TAG])
    except (KeyError, ValueError):
        return None
    return created if created.tzinfo is not None else None


def _kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint, hex (Key Vault names allow only letters, digits and dashes)."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class KeyRing:
    def __init__(self, secrets: SecretStore, token_lifetime: int, cache_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._secrets = secrets
        self._grace = timedelta(seconds=token_lifetime + cache_ttl) + CLOCK_SKEW
        self._ttl = cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._loaded_at = float("-inf")
        self._last_unknown_refresh = float("-inf")

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _load(self) -> None:
        records = self._secrets.list_secrets(PREFIX)
        known = {k.kid: k for k in self._keys}
        keys: list[SigningKey] = []
        for record in records:
            kid = record.name[len(PREFIX):]
            if kid in known:
                keys.append(known[kid])
                continue
            try:
                pem = self._secrets.get_secret(record.name).value or ""
            except NotFound:
                continue
            private_key = serialization.load_pem_private_key(pem.encode(), password=None)
            if isinstance(private_key, ec.EllipticCurvePrivateKey):
                keys.append(SigningKey(kid, private_key, _created(record.tags) or record.created_on or self._now()))
        keys.sort(key=lambda k: k.created)
        self._keys = keys
        self._loaded_at = self._clock()

    def _fresh(self) -> list[SigningKey]:
        if self._clock() - self._loaded_at >= self._ttl:
            with self._lock:
                if self._clock() - self._loaded_at >= self._ttl:
                    self._load()
        return self._keys

    def current(self) -> SigningKey:
        """The newest key; creates the first one on a fresh vault."""
        keys = self._fresh()
        if keys:
            return keys[-1]
        with self._lock:
            self._load()
            if not self._keys:
                self._create()
            return self._keys[-1]

    def rotate(self) -> SigningKey:
        with self._lock:
            self._create()
            return self._keys[-1]

    def _create(self) -> None:
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = _kid(private_key.public_key())
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        # Key Vault's `created` has one-second resolution: two rotations within a second would tie and the
        # older key could stay "newest". The tag keeps the creation time to the microsecond.
        self._secrets.set_secret(PREFIX + kid, pem, content_type="application/x-pem-file",
                                 tags={"purpose": "token-signing", "alg": ALGORITHM,
                                       CREATED_TAG: self._now().isoformat(timespec="microseconds")})
        self._load()

    def verification_keys(self) -> list[SigningKey]:
        """Keys whose tokens may still be live: the newest, and each older one within its grace period."""
        keys = self._fresh()
        now = self._now()
        live = [k for k, successor in itertools.pairwise(keys) if successor.created + self._grace > now]
        return live + keys[-1:]

    def find(self, kid: str) -> SigningKey | None:
        """Look a kid up; an unknown kid refreshes from the vault at most every few seconds (no DoS lever)."""
        match = next((k for k in self.verification_keys() if k.kid == kid), None)
        if match is None and self._clock() - self._last_unknown_refresh >= UNKNOWN_KID_REFRESH_INTERVAL:
            with self._lock:
                self._last_unknown_refresh = self._clock()
                self._load()
            match = next((k for k in self.verification_keys() if k.kid == kid), None)
        return match

    def jwks(self) -> dict:
        """Never empty: on a fresh vault the first key is created here, so a verifier that fetches (and
        caches) the key set before the first token is issued still finds the key that will sign it."""
        self.current()
        return {"keys": [k.public_jwk() for k in self.verification_keys()]}
