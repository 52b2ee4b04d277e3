"""The tenant routing table: Azure AD tenant id -> provider FHIR endpoint, version, upstream auth.

One Table Storage row per tenant. Lists and objects are JSON-encoded into single properties so
every change is one atomic entity replace guarded by its ETag: a reader never sees half a route.
The proxy and the token endpoint read routes through a per-instance copy kept fresh by a change
log (`shared/stores/snapshot.py`): a route is read once, then held while the instance follows the
log with one query per TTL, whatever the number of tenants, instead of one read per tenant per
TTL. A removed tenant is therefore a tombstone row, not a missing one, and every write is logged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidField, NotFound, PreconditionFailed
from shared.guid import is_guid
from shared.outbound import BadUrl, OutboundPolicy, current_policy, normalise_url
from shared.stores import Entity, EntityTable
from shared.stores.snapshot import TOMBSTONE, TableSnapshot, is_tombstone
from shared.upstream_auth import InvalidUpstreamAuth, validate_upstream_auth

FHIR_VERSIONS = ("stu3", "dstu2", "r4")
_FIELDS = {"display_name", "provider_base_url", "fhir_version", "upstream_auth", "allowed_clients", "enabled",
           "resource_types", "batch_passthrough"}


@dataclass(frozen=True)
class TenantRoute:
    tenant_id: str
    display_name: str
    provider_base_url: str
    fhir_version: str
    upstream_auth: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    allowed_clients: tuple[str, ...] = ()
    enabled: bool = True
    resource_types: tuple[str, ...] | None = None
    batch_passthrough: bool = False
    created: str = ""
    updated: str = ""

    def allows(self, client_id: str) -> bool:
        return self.enabled and client_id in self.allowed_clients

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "display_name": self.display_name,
                "provider_base_url": self.provider_base_url, "fhir_version": self.fhir_version,
                "upstream_auth": self.upstream_auth, "allowed_clients": list(self.allowed_clients),
                "enabled": self.enabled,
                "resource_types": list(self.resource_types) if self.resource_types is not None else None,
                "batch_passthrough": self.batch_passthrough, "created": self.created, "updated": self.updated}

    def to_entity(self) -> dict[str, Any]:
        data = self.to_json()
        del data["tenant_id"]
        for key in ("upstream_auth", "allowed_clients", "resource_types"):
            data[key] = json.dumps(data[key])
        return data

    @classmethod
    def from_entity(cls, entity: Entity) -> TenantRoute:
        d = entity.data
        types = json.loads(d.get("resource_types") or "null")
        return cls(entity.key, d.get("display_name", ""), d["provider_base_url"], d["fhir_version"],
                   json.loads(d.get("upstream_auth") or '{"kind": "none"}'),
                   tuple(json.loads(d.get("allowed_clients") or "[]")), bool(d.get("enabled", False)),
                   tuple(types) if types is not None else None, bool(d.get("batch_passthrough", False)),
                   d.get("created", ""), d.get("updated", ""))


def _bad(field_name: str, detail: str) -> InvalidField:
    return InvalidField(field_name, detail, subject="tenant route")


def validate_provider_url(url: object, policy: OutboundPolicy) -> str:
    """The canonical absolute https base (shared.outbound); plain http only for loopback hosts
    under the local-development allowance. The canonical form is what gets stored and used."""
    try:
        return normalise_url(url, policy, base=True)
    except BadUrl as exc:
        raise _bad("provider_base_url", f"provider_base_url {exc}") from None


def _string_list(body: dict, name: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(name, f"{name} must be a list of non-empty strings")
    if pattern is not None and not all(pattern.match(v) for v in value):
        raise _bad(name, f"{name} has an entry of the wrong form")
    return tuple(dict.fromkeys(value))


def parse_route(tenant_id: str, body: object, now: str, created: str | None = None,
                policy: OutboundPolicy | None = None) -> TenantRoute:
    """Validate a management API body into a route; every error names its field.

    `policy` (where the gateway may send requests and credentials) defaults to the app settings'.
    """
    policy = policy or current_policy()
    if not is_guid(tenant_id):
        raise _bad("tenant_id", "tenant_id must be a GUID (the Azure AD tenant id)")
    if not isinstance(body, dict):
        raise _bad("body", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS - {"tenant_id", "created", "updated"})
    if unknown:
        raise _bad(unknown[0], f"unknown field {unknown[0]!r}")
    if "tenant_id" in body and str(body["tenant_id"]).lower() != tenant_id.lower():
        raise _bad("tenant_id", "tenant_id in the body does not match the URL")
    display_name = body.get("display_name", "")
    if not isinstance(display_name, str) or len(display_name) > 200:
        raise _bad("display_name", "display_name must be a string of at most 200 characters")
    base = validate_provider_url(body.get("provider_base_url"), policy)
    version = body.get("fhir_version")
    if version not in FHIR_VERSIONS:
        raise _bad("fhir_version", f"fhir_version must be one of {', '.join(FHIR_VERSIONS)}")
    try:
        upstream = validate_upstream_auth(body.get("upstream_auth", {"kind": "none"}), base, policy)
    except InvalidUpstreamAuth as exc:
        raise _bad(exc.field, exc.detail) from exc
    enabled = body.get("enabled", True)
    passthrough = body.get("batch_passthrough", False)
    if not isinstance(enabled, bool):
        raise _bad("enabled", "enabled must be true or false")
    if not isinstance(passthrough, bool):
        raise _bad("batch_passthrough", "batch_passthrough must be true or false")
    types = None if body.get("resource_types") is None else _string_list(body, "resource_types",
                                                                          re.compile(r"^[A-Z][A-Za-z]{1,63}$"))
    return TenantRoute(tenant_id.lower(), display_name, base, version, upstream,
                       _string_list(body, "allowed_clients", re.compile(r"^[0-9a-f-]{36}$")), enabled, types,
                       passthrough, created or now, now)


class TenantRegistry:
    def __init__(self, table: EntityTable, log: EntityTable, cache_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        """`log`: the change-log partition beside the routes (shared/stores/snapshot.py)."""
        self._table, self._clock = table, clock
        self._snapshot: TableSnapshot[TenantRoute] = TableSnapshot(table, log, cache_ttl, TenantRoute.from_entity)

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds")

    def _entity(self, tenant_id: str) -> Entity | None:
        """The tenant's row, a tombstone included; None when there is no row at all."""
        try:
            entity = self._table.get(tenant_id)
        except NotFound:
            return None
        return entity

    def get(self, tenant_id: str) -> tuple[TenantRoute, str | None]:
        if not is_guid(tenant_id):
            raise NotFound()
        entity = self._entity(tenant_id.lower())
        if entity is None or is_tombstone(entity):
            raise NotFound()
        return TenantRoute.from_entity(entity), entity.etag

    def list(self) -> list[TenantRoute]:
        return sorted((TenantRoute.from_entity(e) for e in self._table.list() if not is_tombstone(e)),
                      key=lambda r: r.tenant_id)

    def put(self, tenant_id: str, body: object, if_match: str | None = None,
            create_only: bool = False) -> tuple[TenantRoute, str | None, bool]:
        """Create or replace; `if_match` guards against lost updates, `create_only` is If-None-Match: *."""
        now = self._now()
        try:
            existing, _ = self.get(tenant_id) if is_guid(tenant_id) else (None, None)
        except NotFound:
            existing = None
        route = parse_route(tenant_id, body, now, existing.created if existing else None)
        if if_match is not None and existing is None:
            raise PreconditionFailed()  # RFC 9110 §13.1.1: If-Match needs a current representation
        tombstone = self._entity(route.tenant_id) if existing is None else None
        if create_only and tombstone is not None:  # a removed tenant's id is free again: take its tombstone's place
            entity = self._table.replace(route.tenant_id, route.to_entity(), etag=tombstone.etag)
        elif create_only:
            entity = self._table.insert(route.tenant_id, route.to_entity())
        elif if_match is not None:
            entity = self._table.replace(route.tenant_id, route.to_entity(), etag=if_match)
        else:
            entity = self._table.replace(route.tenant_id, route.to_entity())
        self._snapshot.changed(route.tenant_id)  # this instance sees it at once; the others within the TTL
        return route, entity.etag, existing is None

    def disable(self, tenant_id: str, if_match: str | None = None) -> tuple[TenantRoute, str | None]:
        """Not re-validated on purpose: a route stored under older rules (e.g. an upstream secret
        outside today's name space) must still be switchable off in an incident."""
        route, etag = self.get(tenant_id)
        disabled = replace(route, enabled=False, updated=self._now())
        entity = self._table.replace(disabled.tenant_id, disabled.to_entity(), etag=if_match or etag)
        self._snapshot.changed(disabled.tenant_id)
        return disabled, entity.etag

    def delete(self, tenant_id: str, if_match: str | None = None) -> None:
        """Replace the row with a tombstone (under its ETag): every instance's delta query then sees
        the removal (a plain delete would leave no row to log against and nothing to tell "removed"
        from "never existed" apart on a re-read in flight)."""
        _, etag = self.get(tenant_id)
        self._table.replace(tenant_id.lower(), {TOMBSTONE: True, "updated": self._now()}, etag=if_match or etag)
        self._snapshot.changed(tenant_id.lower())

    def resolve(self, tenant_id: str) -> TenantRoute | None:
        """The route for traffic, from the snapshot (changes reach every instance within the TTL)."""
        return self._snapshot.get(tenant_id.lower())
