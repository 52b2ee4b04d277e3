"""Patient, Coverage, Location, Practitioner, Organization and OperationOutcome: STU3/DSTU2 → R4.

The down bridge's own tables (each module's `tables`, or `elements` and the rest), read through
this direction's datatypes: lists R4 widened (Location/Organization `type`, DSTU2 Practitioner
`name`) take the one older item. DSTU2 Coverage's group/plan/subPlan/bin/sequence slots and
STU3's `grouping` become R4 `class` items typed by the coverage-class code system.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import coverage, location, organization, outcome, patient, practitioner
from shared.bridge.base import NOT_REPRESENTABLE, Ctx, To, consumed
from shared.bridge.resource import ResourceMap
from shared.bridge.terminology import THO
from shared.bridge.up import datatypes
from shared.bridge.up.datatypes import absent, coding

# --- Patient -----------------------------------------------------------------------------------

PATIENT = ResourceMap("Patient", **patient.tables(datatypes))

# --- Coverage ----------------------------------------------------------------------------------

_COVERAGE_CLASS = THO + "coverage-class"
# DSTU2 slot → R4 class type (the down bridge's table read backwards, plus the rxbin Identifier).
_DSTU2_SLOTS = {slot: kind for kind, slot in coverage.DSTU2_CLASS.items()}


def _class_item(kind: str, value: Any, name: Any = None) -> dict[str, Any]:
    item = {"type": {"coding": [{"system": _COVERAGE_CLASS, "code": kind}]}, "value": str(value)}
    return {**item, "name": name} if name else item


def _stu3_classes(source: dict[str, Any], ctx: Ctx, path: str) -> list[dict[str, Any]]:
    grouping = source.get("grouping")
    if not isinstance(grouping, dict):
        grouping = {}
    items = []
    for kind, (value_slot, name_slot) in coverage.STU3_GROUPING.items():
        if value_slot in grouping:
            items.append(_class_item(kind, grouping[value_slot], grouping.get(name_slot)))
        elif name_slot in grouping:
            ctx.drop(f"{path}.grouping.{name_slot}", NOT_REPRESENTABLE)  # a name with no value has no R4 class
    known = {slot for pair in coverage.STU3_GROUPING.values() for slot in pair}
    for key in grouping.keys() - known:
        ctx.drop(f"{path}.grouping.{key}", NOT_REPRESENTABLE)
    return items


def _dstu2_classes(source: dict[str, Any], ctx: Ctx, path: str) -> list[dict[str, Any]]:
    items = [_class_item(kind, source[slot]) for slot, kind in _DSTU2_SLOTS.items() if slot in source]
    rxbin = source.get("bin")
    if isinstance(rxbin, dict) and rxbin.get("value"):
        items.append(_class_item("rxbin", rxbin["value"]))
    return items


def _coverage_finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """Older plan slots → R4 `class` items; the older `sequence` is R4's class of type sequence.

    DSTU2 names no beneficiary: a Coverage without a `dependent` number covers its subscriber,
    which R4 (where beneficiary is required) states as such; with one, the dependent is unnamed.
    DSTU2 has no status either: R4's required one is stated absent (`unknown`), not guessed.
    """
    items = _dstu2_classes(source, ctx, path) if ctx.dstu2 else _stu3_classes(source, ctx, path)
    if "sequence" in source:
        items.append(_class_item("sequence", source["sequence"]))
    if items:
        out["class"] = items
    if not ctx.dstu2:
        return
    out["_status"] = absent("unknown")  # R4 requires a status; DSTU2 Coverage has none
    if "subscriber" in out and "dependent" not in source:
        out["beneficiary"] = out["subscriber"]


def _identifier_value(value: Any, ctx: Ctx, path: str) -> str | None:
    """DSTU2 Identifiers where R4 holds a string (subscriberId, network): the value is kept."""
    if not isinstance(value, dict):
        return None
    for key in value.keys() - {"value"}:
        ctx.drop(f"{path}.{key}", NOT_REPRESENTABLE)
    return value.get("value")


def _as_string(value: Any, ctx: Ctx, path: str) -> str | None:
    """DSTU2 positiveInts R4 holds as strings (dependent)."""
    return str(value) if isinstance(value, int) else None


def _concept_of(value: Any, ctx: Ctx, path: str) -> dict | None:
    """DSTU2 Coverage.type is one Coding; R4's is a CodeableConcept holding it."""
    converted = coding(value, ctx, path)
    return {"coding": [converted]} if converted else None


_COVERAGE_COMMON = {**coverage.elements(datatypes), "sequence": To("class", consumed)}
COVERAGE = ResourceMap(
    "Coverage",
    stu3={**_COVERAGE_COMMON, **coverage.stu3_elements(datatypes)},
    dstu2={**_COVERAGE_COMMON, **coverage.dstu2_elements(datatypes),
           **{slot: To("class", consumed) for slot in ("bin", *_DSTU2_SLOTS)},
           "type": To("type", _concept_of), "subscriberId": To("subscriberId", _identifier_value),
           "dependent": To("dependent", _as_string), "network": To("network", _identifier_value)},
    finish=_coverage_finish,
)

# --- Location, Practitioner, Organization ------------------------------------------------------

LOCATION = ResourceMap("Location", **location.tables(datatypes))
PRACTITIONER = ResourceMap("Practitioner", **practitioner.tables(datatypes))
ORGANIZATION = ResourceMap("Organization", **organization.tables(datatypes))

# --- OperationOutcome --------------------------------------------------------------------------

OPERATION_OUTCOME = ResourceMap("OperationOutcome", **outcome.tables(datatypes))
