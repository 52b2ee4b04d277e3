"""Condition: R4 → STU3 / DSTU2.

R4 holds clinicalStatus and verificationStatus as CodeableConcepts; STU3 and DSTU2 as plain
codes, from value sets that differ (tables below, after the official R3/R4 and R2/R3 maps and
the R4 code system hierarchy). `recordedDate` becomes STU3 `assertedDate` and DSTU2
`dateRecorded` (a date: the time of day is dropped and counted). DSTU2 requires a
verificationStatus; when R4 gives none (or one DSTU2 cannot express), it says `unknown`, DSTU2's
code for exactly that.
"""

from __future__ import annotations

from typing import Any

from shared.bridge.base import CodeMap, Ctx, To, first, identity, many
from shared.bridge.datatypes import (
    annotation,
    annotation_text,
    codeable_concept,
    concept_code,
    element,
    identifier,
    period,
    quantity,
    range_,
    reference,
    reference_to,
    to_date,
)
from shared.bridge.params import PATIENT, date, token
from shared.bridge.params import reference as reference_param
from shared.bridge.resource import ResourceMap

CLINICAL_STATUS = {
    # STU3 `recurrence` ("re-experiencing the symptoms after remission or presumed resolution")
    # covers both R4 children of `active`: recurrence and relapse.
    "stu3": CodeMap({**identity("active", "recurrence", "inactive", "remission", "resolved"), "relapse": "recurrence"}),
    # DSTU2 has no `inactive`; its `relapse` is STU3's `recurrence` (official R2→R3 map).
    "dstu2": CodeMap({"active": "active", "recurrence": "relapse", "relapse": "relapse", "remission": "remission",
                      "resolved": "resolved"}),
}
# R4 `unconfirmed` has no equivalent in either older value set.
VERIFICATION_STATUS = CodeMap(identity("provisional", "differential", "confirmed", "refuted", "entered-in-error"))


def _onset_abatement(prefix: str, age_name: str) -> dict[str, To]:
    return {
        f"{prefix}DateTime": To(f"{prefix}DateTime"),
        f"{prefix}Age": To(age_name, quantity),
        f"{prefix}Period": To(f"{prefix}Period", period),
        f"{prefix}Range": To(f"{prefix}Range", range_),
        f"{prefix}String": To(f"{prefix}String"),
    }


_STAGE = first(element({"summary": To("summary", codeable_concept), "assessment": To("assessment", many(reference))}))
_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "clinicalStatus": To("clinicalStatus", concept_code("condition-clinical", CLINICAL_STATUS)),
    "verificationStatus": To("verificationStatus", concept_code("condition-ver-status", VERIFICATION_STATUS)),
    "severity": To("severity", codeable_concept),
    "code": To("code", codeable_concept),
    "bodySite": To("bodySite", many(codeable_concept)),
    "stage": To("stage", _STAGE),
}
_STU3 = {
    **_COMMON,
    **_onset_abatement("onset", "onsetAge"),
    **_onset_abatement("abatement", "abatementAge"),
    "category": To("category", many(codeable_concept)),
    "subject": To("subject", reference),
    "encounter": To("context", reference),
    "recordedDate": To("assertedDate"),
    "asserter": To("asserter", reference_to("Practitioner", "Patient", "RelatedPerson")),
    "evidence": To("evidence", many(element({"code": To("code", many(codeable_concept)),
                                             "detail": To("detail", many(reference))}))),
    "note": To("note", many(annotation)),
}
_DSTU2 = {
    **_COMMON,
    **_onset_abatement("onset", "onsetQuantity"),  # DSTU2 knows Age only as a profile of Quantity
    **_onset_abatement("abatement", "abatementQuantity"),
    "category": To("category", first(codeable_concept)),
    "subject": To("patient", reference),
    "encounter": To("encounter", reference),
    "recordedDate": To("dateRecorded", to_date),
    "asserter": To("asserter", reference_to("Practitioner", "Patient")),
    "evidence": To("evidence", many(element({"code": To("code", first(codeable_concept)),
                                             "detail": To("detail", many(reference))}))),
    "note": To("notes", annotation_text),
}


def _finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """DSTU2 requires a verificationStatus; `unknown` is its value when the status is not known."""
    if ctx.dstu2:
        out.setdefault("verificationStatus", "unknown")


_SEARCH = {**PATIENT, "code": token("code"), "category": token("category", system="condition-category")}

MAP = ResourceMap(
    "Condition",
    stu3=_STU3,
    dstu2=_DSTU2,
    search={
        "stu3": {**_SEARCH, "clinical-status": token("clinical-status", CLINICAL_STATUS["stu3"]),
                 "asserted-date": date("recorded-date"), "onset-date": date("onset-date"),
                 "context": reference_param("encounter", "Encounter")},
        "dstu2": {**_SEARCH, "clinicalstatus": token("clinical-status", CLINICAL_STATUS["dstu2"]),
                  "date-asserted": date("recorded-date"), "onset": date("onset-date"),
                  "encounter": reference_param("encounter", "Encounter")},
    },
    finish=_finish,
)
