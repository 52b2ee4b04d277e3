"""Observation, Condition, Encounter, AllergyIntolerance and MedicationRequest: STU3/DSTU2 → R4.

What R4 and an older version share is the down bridge's own table (each resource module's
`elements`, `stu3_elements`, `dstu2_elements`), read through this direction's datatypes, so both
directions have one source; this module adds only what the way up does differently. Status
tables are the down bridge's read backwards (`inverted`): where the older value set is coarser
than R4's, the older code becomes the R4 code of the same spelling (DSTU2 `amended` →
`amended`), never a guessed narrower one; codes R4 lacks are dropped and counted.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import allergy, condition, encounter, medication, observation
from shared.bridge.base import NOT_REPRESENTABLE, UNKNOWN_CODE, CodeMap, Ctx, To, codes, consumed, identity, many
from shared.bridge.datatypes import dosage_elements
from shared.bridge.resource import ResourceMap
from shared.bridge.terminology import THO
from shared.bridge.up import datatypes
from shared.bridge.up.datatypes import (
    NESTED_DOSE_AND_RATE,
    absent,
    codeable_concept,
    concept,
    element,
    inverted,
    nest_dose_and_rate,
    reference,
    timing,
)

# --- Observation -------------------------------------------------------------------------------

# Older `related.type` → the R4 element that holds such a target; other types have no R4 home.
_RELATED = {"has-member": "hasMember", "derived-from": "derivedFrom"}
_COMPONENT = element({**observation.component(datatypes),
                      "interpretation": To("interpretation", many(codeable_concept))})
_OBSERVATION_COMMON = {
    **observation.elements(datatypes),
    "related": To("hasMember", consumed),
    "component": To("component", many(_COMPONENT)),
}


def _observation_related(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """Older `related` items become R4 hasMember/derivedFrom by their type; other types are counted."""
    for item in source.get("related") or []:
        name = _RELATED.get(item.get("type", "")) if isinstance(item, dict) else None
        target = reference(item.get("target"), ctx, f"{path}.related.target") if name else None
        if name is None or not target:
            ctx.drop(f"{path}.related", NOT_REPRESENTABLE)
            continue
        out.setdefault(name, []).append(target)


OBSERVATION = ResourceMap(
    "Observation",
    stu3={**_OBSERVATION_COMMON, **observation.stu3_elements(datatypes)},
    dstu2={**_OBSERVATION_COMMON, **observation.dstu2_elements(datatypes)},
    finish=_observation_related,
)

# --- Condition ---------------------------------------------------------------------------------

_CONDITION_CLINICAL = {
    "stu3": inverted(condition.CLINICAL_STATUS["stu3"]),
    # Official R2→R3 map: DSTU2 `relapse` is `recurrence`, of which R4's `relapse` is a narrower kind.
    "dstu2": inverted(condition.CLINICAL_STATUS["dstu2"], relapse="recurrence"),
}
_CONDITION_VERIFICATION = inverted(condition.VERIFICATION_STATUS)  # older `unknown` has no R4 code
_CONDITION_COMMON = {
    **condition.elements(datatypes),
    "clinicalStatus": To("clinicalStatus", concept(THO + "condition-clinical", _CONDITION_CLINICAL)),
    "verificationStatus": To("verificationStatus", concept(THO + "condition-ver-status", _CONDITION_VERIFICATION)),
}
CONDITION = ResourceMap(
    "Condition",
    stu3={**_CONDITION_COMMON, **condition.stu3_elements(datatypes)},
    dstu2={**_CONDITION_COMMON, **condition.dstu2_elements(datatypes), "dateRecorded": To("recordedDate")},
)

# --- Encounter ---------------------------------------------------------------------------------

# Official R2→R3 map: DSTU2 `outpatient` is v3 AMB too; DSTU2 `other` has no v3 ActCode.
_DSTU2_CLASS = inverted(encounter.DSTU2_CLASS, outpatient="AMB")


def _dstu2_class(value: Any, ctx: Ctx, path: str) -> dict:
    """R4 requires a class: one DSTU2 cannot name in v3 ActCode is stated absent (`unsupported`)."""
    code = _DSTU2_CLASS.to_facade(value, ctx, path)
    return {"system": THO + "v3-ActCode", "code": code} if code else absent("unsupported")


def _encounter_class(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """A DSTU2 Encounter without a class: R4's required one is stated absent (`unknown`)."""
    if ctx.dstu2 and "class" not in out:
        out["class"] = absent("unknown")


_ENCOUNTER_COMMON = encounter.elements(datatypes)
ENCOUNTER = ResourceMap(
    "Encounter",
    stu3={**_ENCOUNTER_COMMON, **encounter.stu3_elements(datatypes)},
    dstu2={**_ENCOUNTER_COMMON, "class": To("class", _dstu2_class), "patient": To("subject", reference),
           "indication": To("reasonReference", many(reference))},
    finish=_encounter_class,
)

# --- AllergyIntolerance ------------------------------------------------------------------------

_ALLERGY_CLINICAL = concept(THO + "allergyintolerance-clinical", inverted(allergy.CLINICAL_STATUS))
_ALLERGY_VERIFICATION = concept(THO + "allergyintolerance-verification", inverted(allergy.VERIFICATION_STATUS))
# DSTU2 `other` is broader than R4 `biologic` (the down bridge's generalisation does not invert).
_CATEGORY = {"stu3": inverted(allergy.CATEGORY["stu3"]),
             "dstu2": CodeMap(identity("food", "medication", "environment"))}
_ALLERGY_COMMON = {**allergy.elements(datatypes), "category": To("category", many(codes(_CATEGORY)))}


def _allergy_status(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """DSTU2's one status states R4's clinical and/or verification status (official R2→R3 rules)."""
    if not ctx.dstu2 or "status" not in source:
        return
    stated = allergy.DSTU2_STATUS.get(source["status"])
    if stated is None:
        ctx.drop(f"{path}.status", UNKNOWN_CODE)
        return
    clinical, verification = stated
    if clinical:
        out["clinicalStatus"] = _ALLERGY_CLINICAL(clinical, ctx, f"{path}.status")
    if verification:
        out["verificationStatus"] = _ALLERGY_VERIFICATION(verification, ctx, f"{path}.status")


ALLERGY = ResourceMap(
    "AllergyIntolerance",
    stu3={**_ALLERGY_COMMON, **allergy.stu3_elements(datatypes),
          "clinicalStatus": To("clinicalStatus", _ALLERGY_CLINICAL),
          "verificationStatus": To("verificationStatus", _ALLERGY_VERIFICATION)},
    dstu2={**_ALLERGY_COMMON, **allergy.dstu2_elements(datatypes), "status": To("clinicalStatus", consumed)},
    finish=_allergy_status,
)

# --- MedicationRequest (DSTU2 MedicationOrder) -------------------------------------------------

_DSTU2_DOSAGE = element({
    **dosage_elements(codeable_concept, timing),
    **NESTED_DOSE_AND_RATE,
    "additionalInstructions": To("additionalInstruction", many(codeable_concept)),
    "siteCodeableConcept": To("site", codeable_concept),
})


def _dstu2_dosage(value: Any, ctx: Ctx, path: str) -> dict | None:
    return _DSTU2_DOSAGE(nest_dose_and_rate(value), ctx, path)


def _requester(value: Any, ctx: Ctx, path: str) -> dict | None:
    """STU3 wraps the requester as `requester.agent`; R4 names it directly (onBehalfOf has no place)."""
    if not isinstance(value, dict):
        return None
    if "onBehalfOf" in value:
        ctx.drop(f"{path}.onBehalfOf", NOT_REPRESENTABLE)
    for key in value.keys() - {"agent", "onBehalfOf"}:
        ctx.drop(f"{path}.{key}", NOT_REPRESENTABLE)
    return reference(value.get("agent"), ctx, f"{path}.agent") if "agent" in value else None


def _order_intent(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """A DSTU2 MedicationOrder is an order by definition: R4's required intent says so."""
    if ctx.dstu2:
        out["intent"] = "order"


_MEDICATION_COMMON = medication.elements(datatypes)
MEDICATION = ResourceMap(
    "MedicationRequest",
    stu3={**_MEDICATION_COMMON, **medication.stu3_elements(datatypes), "requester": To("requester", _requester)},
    dstu2={**_MEDICATION_COMMON, **medication.dstu2_elements(datatypes),
           "dosageInstruction": To("dosageInstruction", many(_dstu2_dosage))},
    finish=_order_intent,
)
