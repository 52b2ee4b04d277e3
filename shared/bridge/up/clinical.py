"""Observation, Condition, Encounter, AllergyIntolerance and MedicationRequest: STU3/DSTU2 → R4.

Each table is the mirror of the down bridge's module of the same resource; the status tables
are the down bridge's read backwards (`inverted`), so both directions share one source. Where
the older value set is coarser than R4's, the older code becomes the R4 code of the same
spelling (DSTU2 `amended` → `amended`), never a guessed narrower one; codes R4 lacks are dropped
and counted.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import allergy, condition, encounter, medication, observation
from shared.bridge.base import NOT_REPRESENTABLE, UNKNOWN_CODE, CodeMap, Ctx, To, codes, consumed, identity, many
from shared.bridge.resource import ResourceMap
from shared.bridge.terminology import THO
from shared.bridge.up import datatypes
from shared.bridge.up.datatypes import (
    DOSAGE_COMMON,
    absent,
    annotation,
    codeable_concept,
    coding,
    concept,
    dosage,
    element,
    identifier,
    inverted,
    nest_dose_and_rate,
    note_from_text,
    period,
    quantity,
    range_,
    reference,
)

# --- Observation -------------------------------------------------------------------------------

_OBSERVATION_STATUS = {facade: inverted(table) for facade, table in observation.STATUS.items()}
# Older `related.type` → the R4 element that holds such a target; other types have no R4 home.
_RELATED = {"has-member": "hasMember", "derived-from": "derivedFrom"}
_REFERENCE_RANGE = many(observation.reference_range(datatypes))
_COMPONENT = element({
    "code": To("code", codeable_concept),
    **observation.values(datatypes),
    "dataAbsentReason": To("dataAbsentReason", codeable_concept),
    "interpretation": To("interpretation", many(codeable_concept)),
    "referenceRange": To("referenceRange", _REFERENCE_RANGE),
})
_OBSERVATION_COMMON = {
    **observation.elements(datatypes),
    "status": To("status", codes(_OBSERVATION_STATUS)),
    "category": To("category", many(codeable_concept)),
    "interpretation": To("interpretation", many(codeable_concept)),
    "referenceRange": To("referenceRange", _REFERENCE_RANGE),
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
    stu3={**_OBSERVATION_COMMON, "basedOn": To("basedOn", many(reference)), "context": To("encounter", reference),
          "valueBoolean": To("valueBoolean"), "comment": To("note", note_from_text)},
    dstu2={**_OBSERVATION_COMMON, "encounter": To("encounter", reference), "comments": To("note", note_from_text)},
    finish=_observation_related,
)

# --- Condition ---------------------------------------------------------------------------------

_CONDITION_CLINICAL = {
    "stu3": inverted(condition.CLINICAL_STATUS["stu3"]),
    # Official R2→R3 map: DSTU2 `relapse` is `recurrence`, of which R4's `relapse` is a narrower kind.
    "dstu2": inverted(condition.CLINICAL_STATUS["dstu2"], relapse="recurrence"),
}
_CONDITION_VERIFICATION = inverted(condition.VERIFICATION_STATUS)  # older `unknown` has no R4 code


def _onset_abatement(prefix: str, age_name: str) -> dict[str, To]:
    return {
        f"{prefix}DateTime": To(f"{prefix}DateTime"),
        age_name: To(f"{prefix}Age", quantity),
        f"{prefix}Period": To(f"{prefix}Period", period),
        f"{prefix}Range": To(f"{prefix}Range", range_),
        f"{prefix}String": To(f"{prefix}String"),
    }


_CONDITION_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "clinicalStatus": To("clinicalStatus", concept(THO + "condition-clinical", _CONDITION_CLINICAL)),
    "verificationStatus": To("verificationStatus", concept(THO + "condition-ver-status", _CONDITION_VERIFICATION)),
    "category": To("category", many(codeable_concept)),
    "severity": To("severity", codeable_concept),
    "code": To("code", codeable_concept),
    "bodySite": To("bodySite", many(codeable_concept)),
    "asserter": To("asserter", reference),
    "stage": To("stage", many(element({"summary": To("summary", codeable_concept),
                                       "assessment": To("assessment", many(reference))}))),
    "evidence": To("evidence", many(element({"code": To("code", many(codeable_concept)),
                                             "detail": To("detail", many(reference))}))),
}
CONDITION = ResourceMap(
    "Condition",
    stu3={**_CONDITION_COMMON, **_onset_abatement("onset", "onsetAge"),
          **_onset_abatement("abatement", "abatementAge"), "subject": To("subject", reference),
          "context": To("encounter", reference), "assertedDate": To("recordedDate"),
          "note": To("note", many(annotation))},
    dstu2={**_CONDITION_COMMON, **_onset_abatement("onset", "onsetQuantity"),
           **_onset_abatement("abatement", "abatementQuantity"), "patient": To("subject", reference),
           "encounter": To("encounter", reference), "dateRecorded": To("recordedDate"),
           "notes": To("note", note_from_text)},
)

# --- Encounter ---------------------------------------------------------------------------------

_ENCOUNTER_STATUS = {facade: inverted(table) for facade, table in encounter.STATUS.items()}
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


_ENCOUNTER_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(_ENCOUNTER_STATUS)),
    "statusHistory": To("statusHistory", many(element({"status": To("status", codes(_ENCOUNTER_STATUS)),
                                                       "period": To("period", period)}))),
    "type": To("type", many(codeable_concept)),
    "priority": To("priority", codeable_concept),
    "episodeOfCare": To("episodeOfCare", many(reference)),
    "incomingReferral": To("basedOn", many(reference)),
    "participant": To("participant", many(element({"type": To("type", many(codeable_concept)),
                                                   "period": To("period", period),
                                                   "individual": To("individual", reference)}))),
    "appointment": To("appointment", many(reference)),
    "period": To("period", period),
    "length": To("length", quantity),
    "reason": To("reasonCode", many(codeable_concept)),
    "hospitalization": To("hospitalization", encounter.hospitalization(datatypes)),
    "location": To("location", many(element({"location": To("location", reference),
                                             "status": To("status", codes(inverted(encounter.LOCATION_STATUS))),
                                             "period": To("period", period)}))),
    "serviceProvider": To("serviceProvider", reference),
    "partOf": To("partOf", reference),
}
ENCOUNTER = ResourceMap(
    "Encounter",
    stu3={**_ENCOUNTER_COMMON, "class": To("class", coding),
          "classHistory": To("classHistory", many(element({"class": To("class", coding),
                                                           "period": To("period", period)}))),
          "subject": To("subject", reference),
          "diagnosis": To("diagnosis", many(element({"condition": To("condition", reference),
                                                     "role": To("use", codeable_concept), "rank": To("rank")}))),
          "account": To("account", many(reference))},
    dstu2={**_ENCOUNTER_COMMON, "class": To("class", _dstu2_class), "patient": To("subject", reference),
           "indication": To("reasonReference", many(reference))},
    finish=_encounter_class,
)

# --- AllergyIntolerance ------------------------------------------------------------------------

_ALLERGY_CLINICAL = concept(THO + "allergyintolerance-clinical", inverted(allergy.CLINICAL_STATUS))
_ALLERGY_VERIFICATION = concept(THO + "allergyintolerance-verification", inverted(allergy.VERIFICATION_STATUS))
_CRITICALITY = {facade: inverted(table) for facade, table in allergy.CRITICALITY.items()}
# DSTU2 `other` is broader than R4 `biologic` (the down bridge's generalisation does not invert).
_CATEGORY = {"stu3": inverted(allergy.CATEGORY["stu3"]),
             "dstu2": CodeMap(identity("food", "medication", "environment"))}


_REACTION = many(element({
    "substance": To("substance", codeable_concept),
    "manifestation": To("manifestation", many(codeable_concept)),
    "description": To("description"),
    "onset": To("onset"),
    "severity": To("severity", codes(inverted(allergy.SEVERITY))),
    "exposureRoute": To("exposureRoute", codeable_concept),
    "note": To("note", many(annotation)),
}))


_ALLERGY_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "type": To("type", codes(inverted(allergy.TYPE))),
    "category": To("category", many(codes(_CATEGORY))),
    "criticality": To("criticality", codes(_CRITICALITY)),
    "patient": To("patient", reference),
    "recorder": To("recorder", reference),
    "note": To("note", many(annotation)),
    "reaction": To("reaction", _REACTION),
}


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
    stu3={**_ALLERGY_COMMON, "clinicalStatus": To("clinicalStatus", _ALLERGY_CLINICAL),
          "verificationStatus": To("verificationStatus", _ALLERGY_VERIFICATION), "code": To("code", codeable_concept),
          "onsetDateTime": To("onsetDateTime"), "onsetAge": To("onsetAge", quantity),
          "onsetPeriod": To("onsetPeriod", period), "onsetRange": To("onsetRange", range_),
          "onsetString": To("onsetString"), "assertedDate": To("recordedDate"), "asserter": To("asserter", reference),
          "lastOccurrence": To("lastOccurrence")},
    dstu2={**_ALLERGY_COMMON, "status": To("clinicalStatus", consumed), "substance": To("code", codeable_concept),
           "onset": To("onsetDateTime"), "recordedDate": To("recordedDate"), "reporter": To("asserter", reference),
           "lastOccurence": To("lastOccurrence")},
    finish=_allergy_status,
)

# --- MedicationRequest (DSTU2 MedicationOrder) -------------------------------------------------

_MEDICATION_STATUS = {facade: inverted(table) for facade, table in medication.STATUS.items()}
_DISPENSE = medication.dispense(datatypes)
_DSTU2_DOSAGE = element({
    **DOSAGE_COMMON,
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


_MEDICATION_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(_MEDICATION_STATUS)),
    "medicationCodeableConcept": To("medicationCodeableConcept", codeable_concept),
    "medicationReference": To("medicationReference", reference),
    "priorPrescription": To("priorPrescription", reference),
}
MEDICATION = ResourceMap(
    "MedicationRequest",
    stu3={
        **_MEDICATION_COMMON,
        "basedOn": To("basedOn", many(reference)),
        "groupIdentifier": To("groupIdentifier", identifier),
        "intent": To("intent", codes(inverted(medication.INTENT))),
        "category": To("category", many(codeable_concept)),
        "priority": To("priority", codes(inverted(medication.PRIORITY))),
        "subject": To("subject", reference),
        "context": To("encounter", reference),
        "supportingInformation": To("supportingInformation", many(reference)),
        "authoredOn": To("authoredOn"),
        "requester": To("requester", _requester),
        "recorder": To("recorder", reference),
        "reasonCode": To("reasonCode", many(codeable_concept)),
        "reasonReference": To("reasonReference", many(reference)),
        "note": To("note", many(annotation)),
        "dosageInstruction": To("dosageInstruction", many(dosage)),
        "dispenseRequest": To("dispenseRequest", element({**_DISPENSE, "performer": To("performer", reference)})),
        "substitution": To("substitution", element({"allowed": To("allowedBoolean"),
                                                    "reason": To("reason", codeable_concept)})),
        "detectedIssue": To("detectedIssue", many(reference)),
        "eventHistory": To("eventHistory", many(reference)),
    },
    dstu2={
        **_MEDICATION_COMMON,
        "dateWritten": To("authoredOn"),
        "patient": To("subject", reference),
        "prescriber": To("requester", reference),
        "encounter": To("encounter", reference),
        "reasonCodeableConcept": To("reasonCode", many(codeable_concept)),
        "reasonReference": To("reasonReference", many(reference)),
        "note": To("note", note_from_text),
        "dosageInstruction": To("dosageInstruction", many(_dstu2_dosage)),
        "dispenseRequest": To("dispenseRequest", element(_DISPENSE)),
    },
    finish=_order_intent,
)
