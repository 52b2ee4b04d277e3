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
from shared.bridge.base import EXTRA_ITEMS, CodeMap, Ctx, Datatypes, To, codes, first, identity, many
from shared.bridge.datatypes import (
    DOSE_AND_RATE,
    annotation,
    annotation_text,
    codeable_concept,
    dosage,
    element,
    flatten_dose_and_rate,
    identifier,
    ratio,
    reference,
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
    "text": To("text"),
    "additionalInstruction": To("additionalInstructions", first(codeable_concept)),
    "timing": To("timing", timing),
    "asNeededBoolean": To("asNeededBoolean"),
    "asNeededCodeableConcept": To("asNeededCodeableConcept", codeable_concept),
    "site": To("siteCodeableConcept", codeable_concept),
    "route": To("route", codeable_concept),
    "method": To("method", codeable_concept),
    **DOSE_AND_RATE,
    "maxDosePerPeriod": To("maxDosePerPeriod", ratio),
})


def _dstu2_dosage(value: Any, ctx: Ctx, path: str) -> dict | None:
    return _DSTU2_DOSAGE(flatten_dose_and_rate(value, ctx, path), ctx, path)


def dispense(dt: Datatypes) -> dict[str, To]:
    """dispenseRequest's elements every version shares (STU3 and R4 add `performer`)."""
    return {
        "validityPeriod": To("validityPeriod", dt.period),
        "numberOfRepeatsAllowed": To("numberOfRepeatsAllowed"),
        "quantity": To("quantity", dt.quantity),
        "expectedSupplyDuration": To("expectedSupplyDuration", dt.quantity),
    }


_DISPENSE = dispense(datatypes)
_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(STATUS)),
    "medicationCodeableConcept": To("medicationCodeableConcept", codeable_concept),
    "medicationReference": To("medicationReference", reference),
    "priorPrescription": To("priorPrescription", reference),
}
_STU3 = {
    **_COMMON,
    "basedOn": To("basedOn", many(reference)),
    "groupIdentifier": To("groupIdentifier", identifier),
    "intent": To("intent", codes(INTENT)),
    "category": To("category", first(codeable_concept)),
    "priority": To("priority", codes(PRIORITY)),
    "subject": To("subject", reference),
    "encounter": To("context", reference),
    "supportingInformation": To("supportingInformation", many(reference)),
    "authoredOn": To("authoredOn"),
    "requester": To("requester", _requester),
    "recorder": To("recorder", reference_to("Practitioner")),
    "reasonCode": To("reasonCode", many(codeable_concept)),
    "reasonReference": To("reasonReference", many(reference)),
    "note": To("note", many(annotation)),
    "dosageInstruction": To("dosageInstruction", many(dosage)),
    "dispenseRequest": To("dispenseRequest", element({**_DISPENSE, "performer": To("performer", reference)})),
    "substitution": To("substitution", element({"allowedBoolean": To("allowed"),
                                                "reason": To("reason", codeable_concept)})),
    "detectedIssue": To("detectedIssue", many(reference)),
    "eventHistory": To("eventHistory", many(reference)),
}
_DSTU2 = {
    **_COMMON,
    "authoredOn": To("dateWritten"),
    "subject": To("patient", reference),
    "requester": To("prescriber", reference_to("Practitioner")),
    "encounter": To("encounter", reference),
    "reasonCode": To("reasonCodeableConcept", first(codeable_concept)),
    "reasonReference": To("reasonReference", first(reference)),
    "note": To("note", annotation_text),
    "dosageInstruction": To("dosageInstruction", many(_dstu2_dosage)),
    "dispenseRequest": To("dispenseRequest", element(_DISPENSE)),
}


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
