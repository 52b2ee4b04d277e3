"""Proxy policy: which FHIR interactions pass, as plain functions of (request, route).

The gateway is read-only. A request is reduced to an `Interaction` built only from validated
pieces (resource type, id, query pairs), and the upstream URL is built from those pieces and the
tenant's configured base; nothing the client sends can name another host or escape the base.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from shared.errors import FhirError

DEFAULT_RESOURCE_TYPES = frozenset({
    "Patient", "Observation", "Condition", "Encounter", "AllergyIntolerance", "MedicationRequest",
    "MedicationOrder", "Coverage", "Location", "Practitioner", "Organization",
})
# The MAC the gateway adds to the page links it hands out (shared/page_links.py): accepted here, then
# checked and removed by the proxy before anything is forwarded.
PAGE_SIGNATURE = "_gateway_page"
PAGING_PARAMS = frozenset({"_getpages", "_getpagesoffset", "_count", "_pretty", "_bundletype", "_format",
                           "_offset", "_page", "page", PAGE_SIGNATURE})
MAX_BATCH_ENTRIES = 100
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.:]{0,99}$")
_MAX_QUERY_PAIRS = 100
# Parameters that return or test resources of OTHER types than the one searched, which the
# per-tenant type allow-list could not see: refused outright (none of the Patients app's requests
# uses them), 400 not-supported. `_has` is reverse chaining (`_has:Observation:patient:code=...`).
CROSS_TYPE_PARAMS = frozenset({"_include", "_revinclude", "_has"})
# Result parameters that are numbers: ASCII digits only (str.isdigit also takes '²' and '٣').
NUMERIC_PARAMS = frozenset({"_count", "_offset", "_getpagesoffset"})
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Interaction:
    kind: str                      # read | search | search-post | page
    resource_type: str | None
    resource_id: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @property
    def upstream_path(self) -> str:
        parts = [p for p in (self.resource_type, self.resource_id) if p]
        if self.kind == "search-post":
            parts.append("_search")
        return "/".join(parts)

    def query_string(self) -> str:
        return urlencode(self.query)


def parse_query(raw: str) -> tuple[tuple[str, str], ...]:
    """Keep repeated parameters (FHIR uses them, e.g. two `date` bounds); reject malformed names."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=_MAX_QUERY_PAIRS)
    except ValueError as exc:
        raise FhirError(400, "invalid", "too many query parameters") from exc
    for name, value in pairs:
        if not _PARAM.match(name):
            raise FhirError(400, "invalid", "malformed search parameter name")
        if any(c in value for c in "\r\n\x00"):
            raise FhirError(400, "invalid", "control characters in a search parameter")
        _check_param(name.partition(":")[0].lower(), value)
    return tuple(pairs)


def _check_param(base: str, value: str) -> None:
    """`base` is the lower-cased name without modifiers (`_Include:iterate` -> `_include`): servers differ
    on case, so the check must not."""
    if base in CROSS_TYPE_PARAMS:
        raise FhirError(400, "not-supported", f"{base} is not supported by this gateway")
    if base in NUMERIC_PARAMS and not _DIGITS.fullmatch(value):
        raise FhirError(400, "invalid", f"{base} must be a non-negative integer in ASCII digits")


def _segments(path: str) -> list[str]:
    decoded = [unquote(s) for s in path.split("/")] if path else []
    if any(s in ("", ".", "..") or "/" in s or "\\" in s for s in decoded):
        raise FhirError(400, "invalid", "malformed FHIR path")
    return decoded


def interaction_for(method: str, path: str, query: str, form: bytes = b"") -> Interaction:
    """Classify a FHIR request; anything but a read or search is refused (the gateway is read-only)."""
    method = method.upper()
    segments = _segments(path.strip("/"))
    params = parse_query(query)
    if method == "GET" and not segments:
        if not params or any(name not in PAGING_PARAMS for name, _ in params):
            raise FhirError(400, "not-supported", "system-level search is not supported, except paging links")
        return Interaction("page", None, None, params)
    if not segments or not _TYPE.match(segments[0]):
        raise FhirError(404, "not-found", "unknown resource type")
    rtype = segments[0]
    if method == "GET" and len(segments) == 1:
        return Interaction("search", rtype, None, params)
    if method == "GET" and len(segments) == 2 and segments[1] != "_search":
        if not _ID.match(segments[1]):
            raise FhirError(400, "invalid", "malformed resource id")
        return Interaction("read", rtype, segments[1], params)
    if method == "POST" and segments[1:] == ["_search"]:
        body_params = parse_query(form.decode("utf-8", errors="strict")) if form else ()
        return Interaction("search-post", rtype, None, params + body_params)
    if method in ("GET", "POST") and len(segments) <= 2:
        raise FhirError(405, "not-supported", "this gateway is read-only: reads and searches only")
    if method not in ("GET", "POST"):
        raise FhirError(405, "not-supported", f"{method} is not allowed: this gateway is read-only")
    raise FhirError(400, "not-supported", "operations, history and compartments are not supported")


def stu3_sort(action: Interaction) -> Interaction:
    """STU3 spells sort order `_sort=-date`; the Patients app also sends DSTU2's `_sort:desc=date`."""
    def spell(name: str, value: str) -> tuple[str, str]:
        if name == "_sort:desc":
            return "_sort", f"-{value}"
        if name == "_sort:asc":
            return "_sort", value
        return name, value
    return replace(action, query=tuple(spell(n, v) for n, v in action.query))


_MEDICATION = frozenset({"MedicationOrder", "MedicationRequest"})


def permitted_types(allowed: tuple[str, ...] | None) -> frozenset[str]:
    """A tenant's allow-list as the facades see it. DSTU2's MedicationOrder is R4's and STU3's
    MedicationRequest: an allow-list naming either admits both, so a DSTU2 tenant that allows its
    medication orders serves them through the R4 facade too (and an R4 tenant through DSTU2's)."""
    permitted = frozenset(allowed) if allowed is not None else DEFAULT_RESOURCE_TYPES
    return permitted | _MEDICATION if permitted & _MEDICATION else permitted


def check_resource_type(rtype: str | None, allowed: tuple[str, ...] | None) -> None:
    """Per-tenant allow-list (default: the Patients app's types plus Practitioner, Organization, Location)."""
    permitted = permitted_types(allowed)
    if rtype is not None and rtype not in permitted:
        raise FhirError(403, "forbidden", f"resource type {rtype} is not available for this tenant")


def batch_entry_interaction(entry: object) -> Interaction:
    """A batch entry must be a GET of a relative `Type/id` or `Type?query` URL."""
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        raise FhirError(400, "invalid", "batch entry without request.url")
    method = str(request.get("method", "")).upper()
    if method != "GET":
        raise FhirError(405, "not-supported", "batch entries must be GET reads or searches (read-only gateway)")
    url = request["url"].lstrip("/")
    if "://" in url:
        raise FhirError(400, "invalid", "batch entry URLs must be relative to the FHIR base")
    path, _, query = url.partition("?")
    return interaction_for("GET", path, query)


def drop_disallowed_entries(bundle: dict[str, Any], allowed: tuple[str, ...] | None) -> Counter[str]:
    """Defence in depth behind the request checks: removes, in place, every Bundle entry whose
    resource type the tenant does not allow (a provider may add included or contained-as-entry
    resources nobody asked for) and returns how many of each type went, for the audit line.

    OperationOutcome entries (search mode `outcome`) are the provider's warnings and always stay.
    `total` is left as the provider sent it: it counts matches of the searched type, not entries.
    """
    permitted = permitted_types(allowed) | {"OperationOutcome"}
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return Counter()
    kept, dropped = [], Counter[str]()
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if resource is None or rtype in permitted:
            kept.append(entry)
        else:
            dropped[str(rtype)] += 1
    bundle["entry"] = kept
    return dropped
