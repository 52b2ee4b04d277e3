"""R4-facade requests → STU3/DSTU2 provider requests: type, parameters, modifiers, values, sort.

The down bridge's search tables say, per resource, which older parameter means which R4 one;
read backwards they translate an R4 search for an older provider (R4 `recorded-date` → DSTU2
`date-asserted`, R4 `authoredon` → DSTU2 `datewritten`). Strict in the same way: an R4 type,
parameter, modifier, sort key or status code the provider's version cannot express is a 400
`not-supported` naming it; a filter is never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from shared.bridge.base import RENAMED_TYPES
from shared.bridge.convert import MAPS
from shared.bridge.params import DATE, MODIFIERS, REFERENCE, STRING, TOKEN, Param
from shared.bridge.resource import ResourceMap
from shared.bridge.search import _COMMON, _read_query, _result_param
from shared.bridge.terminology import THO, to_facade
from shared.errors import FhirError
from shared.policy import Interaction

_SORTABLE = (DATE, STRING, TOKEN)
_RESULT_PARAMS = ("_count", "_offset", "_format", "_pretty")


def translate_up(provider: str, action: Interaction) -> Interaction:
    """The provider's interaction for an R4-facade read or search; paging links pass unchanged."""
    if action.kind == "page":
        return action
    rmap = _requestable(provider, action.resource_type)
    query = _read_query(action.query) if action.kind == "read" else _search_query(provider, rmap, action.query)
    return replace(action, resource_type=rmap.facade_type(provider), query=query)


def _requestable(provider: str, name: str | None) -> ResourceMap:
    rmap = MAPS.get(name) if name else None
    if rmap is None or not rmap.params(provider):
        raise FhirError(400, "not-supported",
                        f"resource type {name} is not available through the R4 facade of a {provider.upper()} provider")
    return rmap


def by_r4_name(provider: str, rmap: ResourceMap) -> dict[str, tuple[str, Param]]:
    """R4 parameter name → (the provider's name for it, its Param); a same-named one wins (`_id` over `id`)."""
    table: dict[str, tuple[str, Param]] = {}
    for name, param in {**_COMMON, **rmap.params(provider)}.items():
        if param.r4 not in table or name == param.r4:
            table[param.r4] = (name, param)
    return table


def _search_query(provider: str, rmap: ResourceMap,
                  query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    params = by_r4_name(provider, rmap)
    out: list[tuple[str, str]] = []
    for name, value in query:
        base, _, modifier = name.partition(":")
        if base == "_sort":
            out.extend(_sort(provider, params, modifier, value, rmap.r4_type))
        elif base in _RESULT_PARAMS:
            out.append(_result_param(base, modifier, value))
        else:
            out.append(_param(provider, params, base, modifier, value, rmap.r4_type))
    return tuple(out)


def _sort(provider: str, params: Mapping[str, tuple[str, Param]], modifier: str, value: str,
          kind: str) -> list[tuple[str, str]]:
    """R4 `_sort=-date,name`: STU3 spells it the same; DSTU2 one pair per key, `_sort:desc=date`."""
    if modifier:
        raise FhirError(400, "not-supported", f"_sort:{modifier} is not R4; use _sort=-{value}")
    keys = []
    for key in value.split(","):
        name = key.removeprefix("-")
        found = params.get(name)
        if found is None or found[1].kind not in _SORTABLE:
            raise FhirError(400, "not-supported", f"sorting {kind} by {key!r} is not supported")
        keys.append((found[0], name != key))
    if provider == "stu3":
        return [("_sort", ",".join(("-" if desc else "") + older for older, desc in keys))]
    return [("_sort:desc" if desc else "_sort", older) for older, desc in keys]


def _param(provider: str, params: Mapping[str, tuple[str, Param]], base: str, modifier: str, value: str,
           kind: str) -> tuple[str, str]:
    found = params.get(base)
    if found is None:
        raise FhirError(400, "not-supported",
                        f"search parameter {base!r} of {kind} has no {provider.upper()} equivalent here")
    older, param = found
    if modifier not in MODIFIERS[param.kind]:
        raise FhirError(400, "not-supported", f"modifier :{modifier} is not supported on {kind} {base!r}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise FhirError(400, "invalid", f"{base}:missing takes true or false")
    elif param.kind == REFERENCE:
        value = ",".join(_reference(provider, item, base) for item in value.split(","))
    elif param.kind == TOKEN and modifier != "text":
        value = ",".join(dict.fromkeys(_token(provider, param, item, base) for item in value.split(",")))
    return (f"{older}:{modifier}" if modifier else older), value


def _reference(provider: str, item: str, base: str) -> str:
    """Typed references get the provider's type name; bare ids pass; absolute URLs are refused."""
    if "://" in item:
        raise FhirError(400, "not-supported", f"{base}: absolute references are not supported; use Type/id")
    target, slash, rest = item.partition("/")
    if not slash:
        return item
    return f"{RENAMED_TYPES[provider].get(target, target)}/{rest}"


def _token(provider: str, param: Param, item: str, base: str) -> str:
    """Status codes through the down bridge's table; terminology.hl7.org systems to their older names."""
    if param.codes is not None:
        older = param.codes.forward.get(item)
        if older is None:
            raise FhirError(400, "not-supported", f"{base}: {item!r} has no {provider.upper()} equivalent")
        return older
    if "|" in item:
        system, code = item.split("|", 1)
        if system.startswith(THO):
            system, renamed = to_facade(system, code or None, provider)
            code = renamed or ""
        return f"{system}|{code}"
    if param.system:
        return to_facade(THO + param.system, item, provider)[1] or item
    return item
