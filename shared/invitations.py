"""Invitation codes: the operator's gate in front of consumer self-registration (AUTH-5).

Anonymous sign-up is never open: the portal registers a client only against a code the operator
issued. A code is `<invitation id>.<256 random bits>`; the id names the Table Storage row, and the
row keeps only an HMAC of the whole code (as client secrets keep only verifiers), so a leaked table
lists invitations but opens none. A random 256-bit code needs no slow hash: there is nothing to
guess offline.

A code is used once: claiming it is an ETag-guarded replace of its row from `pending` to `used`,
so of two registrations racing with one code exactly one wins. Expiry is checked at claim time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import InvalidField, InvitationUsed, NotFound, PreconditionFailed, StoreUnavailable
from shared.stores import EntityTable

DEFAULT_HOURS = 72
MAX_HOURS = 30 * 24
MAX_NOTE = 200
_HASH_KEY = b"fhir-gateway/invitation-code/v1"
_CODE_RE = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class InvalidInvitation(Exception):
    """Unknown, wrong, used, revoked or expired: deliberately one error, so a guess learns nothing."""


def code_id(code: str) -> str | None:
    """The invitation id a code claims to be for (rate-limit key); None when it is not a code at all."""
    match = _CODE_RE.match(code)
    return match.group(1) if match else None


def _hash(code: str) -> str:
    return hmac.new(_HASH_KEY, code.encode(), hashlib.sha256).hexdigest()


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Invitation:
    invitation_id: str
    note: str
    created: str
    expires: str
    status: str  # pending | used | revoked (expired is derived from `expires`)
    used_at: str = ""
    client_id: str = ""
    code_hash: str = ""

    def state_at(self, now: datetime) -> str:
        if self.status == "pending" and datetime.fromisoformat(self.expires) <= now:
            return "expired"
        return self.status

    def to_json(self, now: datetime) -> dict[str, Any]:
        """What the management API shows: never the code, nor its hash."""
        return {"invitation_id": self.invitation_id, "note": self.note, "created": self.created,
                "expires": self.expires, "status": self.state_at(now), "used_at": self.used_at or None,
                "client_id": self.client_id or None}

    def to_entity(self) -> dict[str, str]:
        return {"note": self.note, "created": self.created, "expires": self.expires, "status": self.status,
                "used_at": self.used_at, "client_id": self.client_id, "code_hash": self.code_hash}

    @classmethod
    def from_entity(cls, key: str, data: dict[str, Any]) -> Invitation:
        return cls(key, data.get("note", ""), data.get("created", ""), data.get("expires", ""),
                   data.get("status", "revoked"), data.get("used_at", ""), data.get("client_id", ""),
                   data.get("code_hash", ""))


@dataclass(frozen=True)
class Claim:
    """A code claimed for one registration; `etag` guards completing or releasing it."""

    invitation: Invitation
    etag: str | None


def _hours(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_HOURS:
        raise InvalidField("expires_in_hours", f"expires_in_hours must be a number in (0, {MAX_HOURS}]",
                           subject="invitation")
    return float(value)


def _note(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_NOTE:
        raise InvalidField("note", f"note must be a string of at most {MAX_NOTE} characters", subject="invitation")
    return value.strip()


class InvitationRegistry:
    def __init__(self, table: EntityTable, clock: Callable[[], float] = time.time) -> None:
        self._table, self._clock = table, clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def create(self, expires_in_hours: object = DEFAULT_HOURS, note: object = "") -> tuple[Invitation, str]:
        """A new pending invitation and its code; the code is returned here once and stored nowhere."""
        hours, text, now = _hours(expires_in_hours), _note(note), self.now()
        invitation_id = secrets.token_hex(8)
        code = f"{invitation_id}.{secrets.token_urlsafe(32)}"
        invitation = Invitation(invitation_id, text, _iso(now), _iso(now + timedelta(hours=hours)), "pending",
                                code_hash=_hash(code))
        self._table.insert(invitation_id, invitation.to_entity())
        return invitation, code

    def list(self) -> list[Invitation]:
        rows = (Invitation.from_entity(e.key, e.data) for e in self._table.list())
        return sorted(rows, key=lambda i: i.created, reverse=True)

    def revoke(self, invitation_id: str) -> None:
        """A pending (or expired) invitation can no longer be used; a used one cannot be revoked."""
        if not _ID_RE.match(invitation_id):
            raise NotFound()
        entity = self._table.get(invitation_id)
        invitation = Invitation.from_entity(entity.key, entity.data)
        if invitation.status == "used":
            raise InvitationUsed()
        if invitation.status != "revoked":
            self._table.replace(invitation_id, replace(invitation, status="revoked").to_entity(), etag=entity.etag)

    def claim(self, code: str) -> Claim:
        """Mark the code's invitation used, atomically; raises InvalidInvitation for any unusable code."""
        invitation_id = code_id(code)
        if invitation_id is None:
            raise InvalidInvitation()
        try:
            entity = self._table.get(invitation_id)
        except NotFound as exc:
            raise InvalidInvitation() from exc
        invitation = Invitation.from_entity(entity.key, entity.data)
        now = self.now()
        if not hmac.compare_digest(invitation.code_hash, _hash(code)) or invitation.state_at(now) != "pending":
            raise InvalidInvitation()
        used = replace(invitation, status="used", used_at=_iso(now))
        try:
            stored = self._table.replace(invitation_id, used.to_entity(), etag=entity.etag)
        except (PreconditionFailed, NotFound) as exc:
            raise InvalidInvitation() from exc  # someone else claimed or revoked it first
        return Claim(used, stored.etag)

    def complete(self, claim: Claim, client_id: str) -> None:
        """Record which client the invitation registered (for the operator's list)."""
        done = replace(claim.invitation, client_id=client_id)
        self._table.replace(done.invitation_id, done.to_entity(), etag=claim.etag)

    def release(self, claim: Claim) -> None:
        """Best effort: give the code back when registration failed after claiming it."""
        pending = replace(claim.invitation, status="pending", used_at="")
        with contextlib.suppress(PreconditionFailed, NotFound, StoreUnavailable):
            self._table.replace(pending.invitation_id, pending.to_entity(), etag=claim.etag)
