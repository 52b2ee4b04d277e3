"""MedicationRequest: R4 → STU3 MedicationRequest / DSTU2 MedicationOrder.

The app reads the medication's display or text, authoredOn (DSTU2 `dateWritten`), the
requester's display (STU3 `requester.agent`, DSTU2 `prescriber`) and dosageInstruction.text.
DSTU2 `dateEnded` has no R4 source (R4 records no end date of an order), so it is never set.
R4's finer intents (original-, reflex-, filler-order) are kinds of `order` in R4's own code
system, so STU3 gets `order`; `option` has no STU3 equivalent.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import EXTRA_ITEMS, CodeMap, Ctx, Datatypes, To, first, identity, many
from shared.bridge.datatypes import (
    DOSE_AND_RATE,
    codeable_concept,
    dosage_elements,
    element,
    flatten_dose_and_rate,
    reference_to,
    timing,
)
from shared.bridge.params import PATIENT, date, token
from shared.bridge.params import reference as reference_param
from shared.bridge.resource import ResourceMap

STATUS = {
    "stu3": CodeMap(identity("active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                             "unknown")),
    "dstu2": CodeMap(identity("active", "on-hold", "completed", "entered-in-error", "stopped", "draft")),
}
INTENT = CodeMap({**identity("proposal", "plan", "order", "instance-order"),
                  "original-order": "order", "reflex-order": "order", "filler-order": "order"})
PRIORITY = CodeMap(identity("routine", "urgent", "asap", "stat"))


def _requester(value: Any, ctx: Ctx, path: str) -> dict | None:
    """R4 names the requester directly; STU3 wraps it as `requester.agent`."""
    agent = reference_to("Practitioner", "Organization", "Patient", "RelatedPerson", "Device")(value, ctx, path)
    return {"agent": agent} if agent else None


_DSTU2_DOSAGE = element({
    **dosage_elements(codeable_concept, timing),
    **DOSE_AND_RATE,
    "additionalInstruction": To("additionalInstructions", first(codeable_concept)),
    "site": To("siteCodeableConcept", codeable_concept),
})


def _dstu2_dosage(value: Any, ctx: Ctx, path: str) -> dict | None:
    return _DSTU2_DOSAGE(flatten_dose_and_rate(value, ctx, path), ctx, path)


def _dispense_request(dt: Datatypes, performer: bool) -> To:
    """dispenseRequest: the elements every version shares, and `performer` where there is one (STU3, R4)."""
    return To("dispenseRequest", dt.element({
        "validityPeriod": To("validityPeriod", dt.period),
        "numberOfRepeatsAllowed": To("numberOfRepeatsAllowed"),
        "quantity": To("quantity", dt.quantity),
        "expectedSupplyDuration": To("expectedSupplyDuration", dt.quantity),
        **({"performer": To("performer", dt.reference)} if performer else {}),
    }))


def elements(dt: Datatypes) -> dict[str, To]:
    """MedicationRequest's elements of one name in every version (DSTU2 MedicationOrder's too)."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "status": To("status", dt.coded(STATUS)),
        "medicationCodeableConcept": To("medicationCodeableConcept", dt.codeable_concept),
        "medicationReference": To("medicationReference", dt.reference),
        "priorPrescription": To("priorPrescription", dt.reference),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """MedicationRequest's STU3 elements beyond `elements` and `requester` (R4 `encounter` is `context`)."""
    return {
        "basedOn": To("basedOn", many(dt.reference)),
        "groupIdentifier": To("groupIdentifier", dt.identifier),
        "intent": To("intent", dt.coded(INTENT)),
        "category": To("category", dt.single(dt.codeable_concept)),
        "priority": To("priority", dt.coded(PRIORITY)),
        "subject": To("subject", dt.reference),
        **dt.renamed("encounter", "context", dt.reference),
        "supportingInformation": To("supportingInformation", many(dt.reference)),
        "authoredOn": To("authoredOn"),
        "recorder": To("recorder", dt.reference_to("Practitioner")),
        "reasonCode": To("reasonCode", many(dt.codeable_concept)),
        "reasonReference": To("reasonReference", many(dt.reference)),
        "note": To("note", many(dt.annotation)),
        "dosageInstruction": To("dosageInstruction", many(dt.dosage)),
        "dispenseRequest": _dispense_request(dt, performer=True),
        "substitution": To("substitution", dt.element({**dt.renamed("allowedBoolean", "allowed"),
                                                       "reason": To("reason", dt.codeable_concept)})),
        "detectedIssue": To("detectedIssue", many(dt.reference)),
        "eventHistory": To("eventHistory", many(dt.reference)),
    }


def dstu2_elements(dt: Datatypes) -> dict[str, To]:
    """MedicationOrder's DSTU2 elements beyond `elements` and its dosage (`dateWritten`, `prescriber`, one reason)."""
    return {
        **dt.renamed("authoredOn", "dateWritten"),
        **dt.renamed("subject", "patient", dt.reference),
        **dt.renamed("requester", "prescriber", dt.reference_to("Practitioner")),
        "encounter": To("encounter", dt.reference),
        **dt.renamed("reasonCode", "reasonCodeableConcept", dt.single(dt.codeable_concept)),
        "reasonReference": To("reasonReference", dt.single(dt.reference)),
        "note": To("note", dt.note_text),
        "dispenseRequest": _dispense_request(dt, performer=False),
    }


_STU3 = {**elements(datatypes), **stu3_elements(datatypes), "requester": To("requester", _requester)}
_DSTU2 = {**elements(datatypes), **dstu2_elements(datatypes),
          "dosageInstruction": To("dosageInstruction", many(_dstu2_dosage))}


def _finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """DSTU2 `reason[x]` holds one reason: a coded one wins over a reference."""
    if "reasonCodeableConcept" in out and out.pop("reasonReference", None) is not None:
        ctx.drop(f"{path}.reasonReference", EXTRA_ITEMS)


_SEARCH = {**PATIENT, "code": token("code")}

MAP = ResourceMap(
    "MedicationRequest",
    stu3=_STU3,
    dstu2=_DSTU2,
    search={
        "stu3": {**_SEARCH, "status": token("status", STATUS["stu3"]), "intent": token("intent", INTENT),
                 "authoredon": date("authoredon"), "context": reference_param("encounter", "Encounter")},
        "dstu2": {**_SEARCH, "status": token("status", STATUS["dstu2"]), "datewritten": date("authoredon"),
                  "encounter": reference_param("encounter", "Encounter")},
    },
    finish=_finish,
)
