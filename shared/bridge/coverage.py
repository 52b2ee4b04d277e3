"""Coverage: R4 → STU3 / DSTU2.

The app reads STU3 `grouping` (groupDisplay, planDisplay), `period`, `subscriberId`, and in
DSTU2 the payer and `plan`/`subscriber`. R4 `class` items become STU3 `grouping` slots and
`sequence` (official R4→R3 map), or DSTU2 `group`/`plan`/`subPlan`/`sequence`/`bin`. DSTU2 has no
payor list but one `issuer` Organization, no display names for its plan, and no status,
beneficiary or relationship; those are dropped and counted.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import (
    EXTRA_ITEMS,
    NOT_REPRESENTABLE,
    UNKNOWN_CODE,
    CodeMap,
    Ctx,
    Datatypes,
    To,
    consumed,
    identity,
    many,
)
from shared.bridge.datatypes import codeable_concept, system_code
from shared.bridge.params import PATIENT, token
from shared.bridge.params import reference as reference_param
from shared.bridge.resource import ResourceMap

STATUS = CodeMap(identity("active", "cancelled", "draft", "entered-in-error"))
# R4 class type (coverage-class) → STU3 grouping slot for its value and for its name.
STU3_GROUPING = {
    "group": ("group", "groupDisplay"), "subgroup": ("subGroup", "subGroupDisplay"),
    "plan": ("plan", "planDisplay"), "subplan": ("subPlan", "subPlanDisplay"),
    "class": ("class", "classDisplay"), "subclass": ("subClass", "subClassDisplay"),
}
DSTU2_CLASS = {"group": "group", "plan": "plan", "subplan": "subPlan"}


def _value_identifier(value: Any, ctx: Ctx, path: str) -> dict | None:
    """R4 strings that DSTU2 holds as an Identifier (subscriberId, network)."""
    return {"value": value} if isinstance(value, str) else None


def _positive_int(value: Any, ctx: Ctx, path: str) -> int | None:
    """R4 strings that DSTU2 holds as a positiveInt; anything but a positive number is dropped."""
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    ctx.drop(path, NOT_REPRESENTABLE)
    return None


def _first_coding(value: Any, ctx: Ctx, path: str) -> dict | None:
    """DSTU2 `type` is one Coding where R4 has a CodeableConcept."""
    concept = codeable_concept(value, ctx, path) or {}
    if "text" in concept:
        ctx.drop(f"{path}.text", NOT_REPRESENTABLE)
    codings = concept.get("coding", [])
    if len(codings) > 1:
        ctx.drop(f"{path}.coding", EXTRA_ITEMS, len(codings) - 1)
    return codings[0] if codings else None


def _stu3_class(item: dict, out: dict[str, Any], ctx: Ctx, path: str) -> None:
    kind = system_code(item.get("type"), "coverage-class")
    if kind == "sequence":
        out["sequence"] = item.get("value")
        return
    if kind not in STU3_GROUPING:
        ctx.drop(path, UNKNOWN_CODE)
        return
    grouping = out.setdefault("grouping", {})
    value_slot, name_slot = STU3_GROUPING[kind]
    if value_slot in grouping:
        ctx.drop(path, EXTRA_ITEMS)
        return
    grouping[value_slot] = item.get("value")
    if item.get("name"):
        grouping[name_slot] = item["name"]


def _dstu2_class(item: dict, out: dict[str, Any], ctx: Ctx, path: str) -> None:
    kind, value = system_code(item.get("type"), "coverage-class"), item.get("value")
    if kind == "sequence":
        if (sequence := _positive_int(value, ctx, f"{path}.value")) is not None:
            out["sequence"] = sequence
        return
    if kind == "rxbin":
        out["bin"] = {"value": value}
    elif kind in DSTU2_CLASS:
        out[DSTU2_CLASS[kind]] = value
    else:
        ctx.drop(path, UNKNOWN_CODE)
        return
    if item.get("name"):
        ctx.drop(f"{path}.name", NOT_REPRESENTABLE)


def _finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """R4 `class` items go to their STU3/DSTU2 slots."""
    place = _dstu2_class if ctx.dstu2 else _stu3_class
    for item in source.get("class") or []:
        if isinstance(item, dict):
            place(item, out, ctx, f"{path}.class")


def elements(dt: Datatypes) -> dict[str, To]:
    """Coverage's elements of one name and shape in every version."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "period": To("period", dt.period),
        "contract": To("contract", many(dt.reference)),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """Coverage's STU3 elements beyond `elements`: R4's, but `class` (STU3 `grouping`, placed by `finish`)."""
    return {
        "status": To("status", dt.coded(STATUS)),
        "type": To("type", dt.codeable_concept),
        "policyHolder": To("policyHolder", dt.reference),
        "subscriber": To("subscriber", dt.reference),
        "subscriberId": To("subscriberId"),
        "beneficiary": To("beneficiary", dt.reference),
        "dependent": To("dependent"),
        "relationship": To("relationship", dt.codeable_concept),
        "payor": To("payor", many(dt.reference)),
        **dt.renamed("class", "grouping", consumed),
        "order": To("order"),
        "network": To("network"),
    }


def dstu2_elements(dt: Datatypes) -> dict[str, To]:
    """Coverage's DSTU2 elements beyond `elements` that both directions read alike (one `issuer`)."""
    return {
        "subscriber": To("subscriber", dt.reference_to("Patient")),
        **dt.renamed("payor", "issuer", dt.single(dt.reference_to("Organization"))),
    }


MAP = ResourceMap(
    "Coverage",
    stu3={**elements(datatypes), **stu3_elements(datatypes)},
    dstu2={
        **elements(datatypes),
        **dstu2_elements(datatypes),
        "type": To("type", _first_coding),
        "subscriberId": To("subscriberId", _value_identifier),
        "dependent": To("dependent", _positive_int),
        "class": To("group", consumed),
        "network": To("network", _value_identifier),
    },
    search={
        "stu3": {"patient": PATIENT["patient"], "beneficiary": reference_param("beneficiary"),
                 "subscriber": reference_param("subscriber"), "payor": reference_param("payor", None),
                 "identifier": token("identifier"), "type": token("type")},
        "dstu2": {"patient": PATIENT["patient"], "subscriber": reference_param("subscriber"),
                  "issuer": reference_param("payor", "Organization"), "identifier": token("identifier"),
                  "type": token("type")},
    },
    finish=_finish,
)
