"""Token signing keys: ES256 keys kept in Key Vault, cached in memory, rotated without downtime.

Each key is one Key Vault secret `signing-key-<kid>` holding the PKCS#8 PEM private key. The key
activated last signs. The ring also keeps one *pending* key: published in JWKS and accepted by
every instance's verifier, but not yet signing. A rotation activates the pending key (it signs
the very next token) and publishes a new pending one. So when an instance starts signing with a
new key, every other instance has had that key for as long as it was pending, normally at least
one cache TTL (the time since the previous rotation): no instance ever meets a token whose key it
has not loaded. (Two rotations within one cache TTL fall back to the unknown-kid refresh in
`find`.) Keys from before pending keys existed count as activated when created.

An older key keeps verifying (and stays in JWKS) until every token it can have signed has
expired: its successor's activation + token lifetime + this cache's TTL (other instances may
sign with it until they refresh) + clock skew.

Which keys exist is read from one index secret, `token-signing-ring` (JSON: kid, created,
activated), not by listing the vault (issue #14): Key Vault lists 25 secrets per request, so a
listing costs a request per 25 secrets of *any* kind (upstream credentials, legacy verifiers), per
instance per TTL. A refresh is one index read plus one read per listed key (a key whose secret was
deleted drops out, so deleting a leaked key's secret still revokes it). A vault without an index
(keys from before it) is listed once, and the index written from what was found.
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
from shared.offloop import may_block
from shared.stores import SecretStore

ALGORITHM = "ES256"
PREFIX = "signing-key-"
CREATED_TAG = "created"
ACTIVATED_TAG = "activated"
STATE_TAG = "state"
PENDING = "pending"
CLOCK_SKEW = timedelta(seconds=60)
UNKNOWN_KID_REFRESH_INTERVAL = 10.0
RING = "token-signing-ring"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: datetime
    activated: datetime | None = None  # None: pending (published, not signing yet)

    def public_jwk(self) -> dict:
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


def _created(tags: dict[str, str], name: str = CREATED_TAG) -> datetime | None:
    try:
        created = datetime.fromisoformat(tags[name])
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

    def _index(self) -> list[tuple[str, datetime, datetime | None]]:
        """(kid, created, activated or None when pending) for every key, from the index secret; a
        vault from before the index is listed once instead."""
        try:
            entries = json.loads(self._secrets.get_secret(RING).value or "[]")
            return [(e["kid"], datetime.fromisoformat(e["created"]),
                     datetime.fromisoformat(e["activated"]) if e.get("activated") else None) for e in entries]
        except NotFound:
            pass
        found = []
        for record in self._secrets.list_secrets(PREFIX):
            created = _created(record.tags) or record.created_on or self._now()
            pending = record.tags.get(STATE_TAG) == PENDING
            found.append((record.name[len(PREFIX):], created,
                          None if pending else _created(record.tags, ACTIVATED_TAG) or created))
        if found:
            self._write_index(found)
        return found

    def _write_index(self, entries: list[tuple[str, datetime, datetime | None]]) -> None:
        body = [{"kid": kid, "created": created.isoformat(timespec="microseconds"),
                 "activated": activated.isoformat(timespec="microseconds") if activated else None}
                for kid, created, activated in entries]
        self._secrets.set_secret(RING, json.dumps(body), content_type="application/json",
                                 tags={"purpose": "token-signing key index"})

    def _load(self, *, revalidate: bool = True) -> None:
        """Re-read the index; read each key's PEM (all of them when `revalidate`, else only new ones)."""
        known = {k.kid: k for k in self._keys}
        keys: list[SigningKey] = []
        for kid, created, activated in self._index():
            if kid in known and not revalidate:  # the private key never changes; its activation may have
                keys.append(SigningKey(kid, known[kid].private_key, created, activated))
                continue
            try:
                pem = self._secrets.get_secret(PREFIX + kid).value or ""
            except NotFound:
                continue  # deleted in the vault (a leaked key): it verifies nothing from now on
            private_key = serialization.load_pem_private_key(pem.encode(), password=None)
            if isinstance(private_key, ec.EllipticCurvePrivateKey):
                keys.append(SigningKey(kid, private_key, created, activated))
        keys.sort(key=lambda k: k.created)
        self._keys = keys
        self._loaded_at = self._clock()

    def _fresh(self) -> list[SigningKey]:
        if self._clock() - self._loaded_at >= self._ttl:
            may_block()  # a vault read, or a wait for another thread's
            with self._lock:
                if self._clock() - self._loaded_at >= self._ttl:
                    self._load()
        return self._keys

    @staticmethod
    def _active(keys: list[SigningKey]) -> list[SigningKey]:
        return sorted((k for k in keys if k.activated is not None), key=lambda k: k.activated or k.created)

    def current(self) -> SigningKey:
        """The key activated last; on a fresh vault creates the first key (and the pending next one)."""
        active = self._active(self._fresh())
        if active:
            return active[-1]
        with self._lock:
            self._load()
            if not self._active(self._keys):
                pending = [k for k in self._keys if k.activated is None]
                if pending:
                    self._activate(pending[-1])
                else:
                    self._create(activate=True)
                    self._create(activate=False)
            return self._active(self._keys)[-1]

    def rotate(self) -> SigningKey:
        """Activate the pending key (it signs from now on) and publish a new pending one."""
        with self._lock:
            self._load()
            pending = [k for k in self._keys if k.activated is None]
            if pending:
                self._activate(pending[-1])
            else:  # a ring from before pending keys: nothing pre-published, sign with a new key at once
                self._create(activate=True)
            self._create(activate=False)
            return self._active(self._keys)[-1]

    def _tags(self, created: datetime, activated: datetime | None) -> dict[str, str]:
        # Key Vault's `created` has one-second resolution: two rotations within a second would tie and the
        # older key could stay "newest". The tags keep the times to the microsecond.
        tags = {"purpose": "token-signing", "alg": ALGORITHM, CREATED_TAG: created.isoformat(timespec="microseconds")}
        if activated is None:
            tags[STATE_TAG] = PENDING
        else:
            tags[ACTIVATED_TAG] = activated.isoformat(timespec="microseconds")
        return tags

    def _create(self, *, activate: bool) -> None:
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = _kid(private_key.public_key())
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        now = self._now()
        self._secrets.set_secret(PREFIX + kid, pem, content_type="application/x-pem-file",
                                 tags=self._tags(now, now if activate else None))
        self._write_index([*self._entries(), (kid, now, now if activate else None)])
        self._load(revalidate=False)

    def _activate(self, key: SigningKey) -> None:
        now = self._now()
        self._secrets.update_properties(PREFIX + key.kid, tags=self._tags(key.created, now))
        self._write_index([(k.kid, k.created, now if k.kid == key.kid else k.activated) for k in self._keys])
        self._load(revalidate=False)

    def _entries(self) -> list[tuple[str, datetime, datetime | None]]:
        return [(k.kid, k.created, k.activated) for k in self._keys]

    def verification_keys(self) -> list[SigningKey]:
        """Keys whose tokens may be live or may soon be: the signing key, each older one within its
        grace period, and the pending one (so every instance knows it before it signs)."""
        keys = self._fresh()
        now = self._now()
        active = self._active(keys)
        live = [k for k, successor in itertools.pairwise(active)
                if (successor.activated or successor.created) + self._grace > now]
        return live + active[-1:] + [k for k in keys if k.activated is None]

    def find(self, kid: str) -> SigningKey | None:
        """Look a kid up; an unknown kid refreshes from the vault at most every few seconds (no DoS lever)."""
        match = next((k for k in self.verification_keys() if k.kid == kid), None)
        if match is None and self._clock() - self._last_unknown_refresh >= UNKNOWN_KID_REFRESH_INTERVAL:
            may_block()
            with self._lock:
                self._last_unknown_refresh = self._clock()
                self._load(revalidate=False)  # an index read; key reads only for kids new to this instance
            match = next((k for k in self.verification_keys() if k.kid == kid), None)
        return match

    def jwks(self) -> dict:
        """Never empty: on a fresh vault the first key is created here, so a verifier that fetches (and
        caches) the key set before the first token is issued still finds the key that will sign it."""
        self.current()
        return {"keys": [k.public_jwk() for k in self.verification_keys()]}
