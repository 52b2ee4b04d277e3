"""Facade requests → R4 requests: resource type, search parameters, modifiers, values, paging.

Strict on purpose: a resource type, parameter, modifier or sort key the bridge does not know is
a 400 `not-supported` naming it, never silently ignored (an ignored filter would return other
patients' data than the app asked for). The query the bridge itself puts in paging links (typed
references, `_sort=-date`, `_count`/`_offset`) is accepted by both facades, so those links work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from shared.bridge.convert import MAPS
from shared.bridge.params import DATE, MODIFIERS, REFERENCE, STRING, TOKEN, Param, token
from shared.bridge.resource import ResourceMap
from shared.bridge.terminology import r4_code, to_r4
from shared.errors import FhirError
from shared.policy import Interaction

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPED = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_REQUESTABLE = tuple(m for m in MAPS.values() if m.search)
_SORTABLE = (DATE, STRING, TOKEN)
_COMMON = {"_id": token("_id")}


def translate(facade: str, action: Interaction) -> Interaction:
    """The R4 interaction for a facade read or search; provider paging links pass unchanged."""
    if action.kind == "page":
        return action
    rmap = requestable(facade, action.resource_type)
    query = _read_query(action.query) if action.kind == "read" else _search_query(facade, rmap, action.query)
    return replace(action, resource_type=rmap.r4_type, query=query)


def requestable(facade: str, name: str | None) -> ResourceMap:
    """The resource a facade type name means (the R4 name too, as paging links carry it)."""
    for rmap in _REQUESTABLE:
        if name in (rmap.facade_type(facade), rmap.r4_type):
            return rmap
    raise FhirError(400, "not-supported",
                    f"resource type {name} is not available through the {facade.upper()} facade of an R4 provider")


def _read_query(query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    for name, value in query:
        if name == "_format":
            _check_format(value)
        elif name != "_pretty":
            raise FhirError(400, "not-supported", f"parameter {name!r} is not supported on a read")
    return query


def _search_query(facade: str, rmap: ResourceMap, query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    params = {**_COMMON, **rmap.params(facade)}
    out: list[tuple[str, str]] = []
    sort: list[str] = []
    sort_at = None
    for name, value in query:
        base, _, modifier = name.partition(":")
        if base == "_sort":
            sort.extend(_sort_keys(params, modifier, value, rmap.facade_type(facade)))
            sort_at = len(out) if sort_at is None else sort_at
        elif base in ("_count", "_offset", "_format", "_pretty"):
            out.append(_result_param(base, modifier, value))
        else:
            out.append(_param(facade, rmap, params, base, modifier, value))
    if sort_at is not None:
        out.insert(sort_at, ("_sort", ",".join(sort)))
    return tuple(out)


def _result_param(name: str, modifier: str, value: str) -> tuple[str, str]:
    if modifier:
        raise FhirError(400, "not-supported", f"{name}:{modifier} is not supported")
    if name in ("_count", "_offset") and not (value.isascii() and value.isdigit()):
        raise FhirError(400, "invalid", f"{name} must be a non-negative integer")
    if name == "_format":
        _check_format(value)
    return name, value


def _check_format(value: str) -> None:
    if "json" not in value.lower():
        raise FhirError(400, "not-supported", "only JSON is supported (_format=json)")


def _sort_keys(params: Mapping[str, Param], modifier: str, value: str, kind: str) -> list[str]:
    """DSTU2 `_sort:desc=date` and STU3/R4 `_sort=-date` both become R4 `_sort=-date`."""
    if modifier not in ("", "asc", "desc"):
        raise FhirError(400, "not-supported", f"_sort:{modifier} is not supported")
    keys = []
    for key in value.split(","):
        name = key.removeprefix("-")
        param = params.get(name)
        if param is None or param.kind not in _SORTABLE or (modifier and name != key):
            raise FhirError(400, "not-supported", f"sorting {kind} by {key!r} is not supported")
        keys.append(("-" if modifier == "desc" or name != key else "") + param.r4)
    return keys


def _param(facade: str, rmap: ResourceMap, params: Mapping[str, Param], base: str, modifier: str,
           value: str) -> tuple[str, str]:
    param = params.get(base)
    kind = rmap.facade_type(facade)
    if param is None:
        raise FhirError(400, "not-supported", f"search parameter {base!r} is not supported for {kind}")
    if param.kind == REFERENCE and modifier and modifier not in MODIFIERS[REFERENCE]:
        value, modifier = _typed_modifier(facade, modifier, value), ""  # subject:Patient=1 → subject=Patient/1
    if modifier not in MODIFIERS[param.kind]:
        raise FhirError(400, "not-supported", f"modifier :{modifier} is not supported on {kind} {base!r}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise FhirError(400, "invalid", f"{base}:missing takes true or false")
        return f"{param.r4}:missing", value
    modifier = modifier or param.modifier
    if param.kind == REFERENCE:
        value = ",".join(_reference_value(facade, param, item, base) for item in value.split(","))
    elif param.kind == TOKEN and modifier != "text":
        value = ",".join(dict.fromkeys(code for item in value.split(",")
                                       for code in _token_value(facade, param, item, base)))
    return (f"{param.r4}:{modifier}" if modifier else param.r4), value


def _typed_modifier(facade: str, modifier: str, value: str) -> str:
    if not _ID.match(value):
        raise FhirError(400, "invalid", "a typed reference parameter needs a plain id")
    return f"{requestable(facade, modifier).r4_type}/{value}"


def _reference_value(facade: str, param: Param, item: str, base: str) -> str:
    """A bare id becomes typed (`Patient/123`); a typed one gets its R4 type name."""
    typed = _TYPED.match(item)
    if typed:
        target = typed.group(1)
        known = next((m for m in MAPS.values() if target in (m.facade_type(facade), m.r4_type)), None)
        return f"{known.r4_type if known else target}/{typed.group(2)}"
    if "://" in item:
        raise FhirError(400, "not-supported", f"{base}: absolute references are not supported; use Type/id")
    if not _ID.match(item):
        raise FhirError(400, "invalid", f"{base}: malformed reference {item!r}")
    if param.target is None:
        raise FhirError(400, "invalid", f"{base} needs a typed reference (Type/id)")
    return f"{param.target}/{item}"


def _token_value(facade: str, param: Param, item: str, base: str) -> tuple[str, ...]:
    """Status codes through their table; other codes' systems (and a few codes) renamed to R4's."""
    if param.codes is not None:
        r4 = param.codes.to_r4(item) if "|" not in item else ()
        if not r4:
            raise FhirError(400, "invalid", f"{base}: {item!r} is not a code this facade knows")
        return r4
    if "|" in item:
        system, code = item.split("|", 1)
        if system and code:
            system, code = to_r4(system, code, facade)
        return (f"{system}|{code}",)
    return (r4_code(param.system, item, facade) if param.system else item,)
