"""SMART system scopes beside the tenant id: parse, narrow to the tenant, render, enforce.

A token request's `scope` is `<tenant id>[ <SMART scopes>]`. Without SMART scopes nothing changes
(the Patients app): the token carries the tenant id alone and every type the tenant allows. With
them, the token gets the intersection of what was asked and the tenant's resource allow-list,
and the proxy checks each request (and each batch entry) against that grant.

Accepted (SMART App Launch 1.0 and 2.x, `system/` only: Backend Services has no user or patient):

* v1 `system/<Type|*>.<read|write|*>`: `read` and `*` grant read and search; `write` grants
  nothing (the gateway is read-only).
* v2 `system/<Type|*>.<cruds>` (letters in that order): `r` grants read, `s` search; `c`, `u`, `d`
  grant nothing.
* v2 granular scopes (`system/Observation.rs?category=...`) are parsed but not granted: the
  gateway cannot enforce parameter restrictions, and SMART lets a server grant fewer scopes than
  asked, never more.

`MedicationOrder` (DSTU2) and `MedicationRequest` (STU3, R4) name the same resource, so a grant
of either covers both facades. If SMART scopes were asked and none can be granted, the request
fails with `invalid_scope` rather than issuing a token that can read nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from shared.errors import FhirError, OAuthError
from shared.guid import is_guid
from shared.policy import Interaction, permitted_types

READ, SEARCH = "read", "search"
_BOTH = frozenset({READ, SEARCH})
_V1_ACTIONS = {"read": _BOTH, "*": _BOTH, "write": frozenset()}
_V2_LETTERS = re.compile(r"^c?r?u?d?s?$")
_V2_GRANTS = {"r": READ, "s": SEARCH}
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]+)(\?\S*)?$")
# One resource under two names; scopes may use either, the check accepts both.
_ALIASES = {"MedicationOrder": "MedicationRequest", "MedicationRequest": "MedicationOrder"}
# Which interaction of an `Interaction.kind` a scope must grant.
_NEEDS = {"read": READ, "search": SEARCH, "search-post": SEARCH, "page": SEARCH}


@dataclass(frozen=True)
class SmartScope:
    """One requested scope: its resource type (or `*`) and what it would grant on this gateway."""

    resource_type: str
    interactions: frozenset[str]
    v2: bool


@dataclass(frozen=True)
class ScopeRequest:
    """A token request's `scope`: the tenant id and the SMART scopes beside it (maybe none)."""

    tenant_id: str
    smart: tuple[SmartScope, ...]


@dataclass(frozen=True)
class Grant:
    """What a narrowed token may do: resource type → {"read", "search"}; `v2` picks the spelling."""

    types: Mapping[str, frozenset[str]]
    v2: bool

    def allows(self, resource_type: str | None, kind: str) -> bool:
        """Paging links name no type; they continue a search, so any search grant covers them."""
        need = _NEEDS.get(kind)
        if need is None:
            return False
        if resource_type is None:
            return kind == "page" and any(SEARCH in granted for granted in self.types.values())
        names = (resource_type, _ALIASES.get(resource_type))
        return any(need in self.types.get(name, ()) for name in names if name)

    def render(self) -> str:
        """The SMART scopes of the token response and claim, one per type, sorted."""
        return " ".join(f"system/{rtype}.{_spell(granted, self.v2)}" for rtype, granted in sorted(self.types.items()))


def parse_scope(scope: str) -> ScopeRequest:
    """Split `scope` into the tenant id and SMART scopes; anything else is `invalid_scope`."""
    parts = scope.split()
    tenants = [p for p in parts if "/" not in p]
    if len(tenants) != 1 or not is_guid(tenants[0]):
        raise OAuthError("invalid_scope", "scope must hold exactly one Azure AD tenant id (a GUID)")
    return ScopeRequest(tenants[0], tuple(_parse_one(p) for p in parts if "/" in p))


def _parse_one(text: str) -> SmartScope:
    match = _SCOPE.match(text)
    if match is None:
        raise OAuthError("invalid_scope", f"unsupported scope {text!r}: only SMART system/ scopes")
    rtype, action, query = match.groups()
    if action in _V1_ACTIONS:
        granted, v2 = _V1_ACTIONS[action], False
    elif _V2_LETTERS.match(action):
        granted, v2 = frozenset(_V2_GRANTS[c] for c in action if c in _V2_GRANTS), True
    else:
        raise OAuthError("invalid_scope", f"unsupported scope {text!r}: not a SMART v1 or v2 permission")
    return SmartScope(rtype, frozenset() if query else granted, v2)


def grant(request: ScopeRequest, allowed_types: Iterable[str] | None) -> Grant | None:
    """The intersection of the asked scopes and the tenant's allow-list (None or empty: all served types).

    None when no SMART scope was asked: the token is unrestricted within the tenant, as today.
    """
    if not request.smart:
        return None
    allowed = permitted_types(tuple(allowed_types or ()) or None)
    types: dict[str, frozenset[str]] = {}
    for scope in request.smart:
        for rtype in _expand(scope.resource_type, allowed):
            types[rtype] = types.get(rtype, frozenset()) | scope.interactions
    kept = {rtype: granted for rtype, granted in types.items() if granted}
    if not kept:
        raise OAuthError("invalid_scope", "none of the requested SMART scopes can be granted for this tenant")
    return Grant(MappingProxyType(kept), any(scope.v2 for scope in request.smart))


def _expand(rtype: str, allowed: frozenset[str]) -> frozenset[str]:
    """`*` means every allowed type, each resource once (MedicationOrder only where it stands alone)."""
    if rtype != "*":
        return frozenset({rtype}) & allowed
    return frozenset(t for t in allowed if not (t == "MedicationOrder" and "MedicationRequest" in allowed))


def token_scope(tenant_id: str, granted: Grant | None) -> str:
    """The `scope` of the token response and of the access token's claim."""
    return tenant_id if granted is None else f"{tenant_id} {granted.render()}"


def grant_from_claim(scope_claim: str) -> Grant | None:
    """The grant a verified token carries (its claim was already narrowed when it was issued)."""
    request = parse_scope(scope_claim)
    if not request.smart:
        return None
    types = {s.resource_type: s.interactions for s in request.smart if s.interactions}
    return Grant(MappingProxyType(types), any(s.v2 for s in request.smart))


def allows(granted: Grant | None, resource_type: str | None, kind: str) -> bool:
    """Whether a token may make one interaction; an unrestricted token (None) may make any."""
    return granted is None or granted.allows(resource_type, kind)


def check(granted: Grant | None, action: Interaction) -> None:
    """The proxy's per-request (and per batch entry) enforcement: a 403 OperationOutcome when refused."""
    if not allows(granted, action.resource_type, action.kind):
        what = action.resource_type or "paging"
        raise FhirError(403, "forbidden", f"the token's SMART scopes do not allow {action.kind} of {what}")


def _spell(granted: frozenset[str], v2: bool) -> str:
    if v2:
        return "".join(c for c, name in _V2_GRANTS.items() if name in granted)
    return "read"
