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

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Convert, Ctx, Datatypes, To, identity, many
from shared.bridge.datatypes import concept_code, onset_choice, to_date
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


def _evidence(dt: Datatypes, code: Convert) -> To:
    return To("evidence", many(dt.element({"code": To("code", code), "detail": To("detail", many(dt.reference))})))


def elements(dt: Datatypes) -> dict[str, To]:
    """Condition's elements that keep their name in every version (the statuses aside: each direction's own)."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "severity": To("severity", dt.codeable_concept),
        "code": To("code", dt.codeable_concept),
        "bodySite": To("bodySite", many(dt.codeable_concept)),
        "stage": To("stage", dt.single(dt.element({"summary": To("summary", dt.codeable_concept),
                                                    "assessment": To("assessment", many(dt.reference))}))),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """Condition's STU3 elements beyond `elements` (R4 `encounter` is STU3 `context`)."""
    return {
        **onset_choice(dt, "onset", "onsetAge"),
        **onset_choice(dt, "abatement", "abatementAge"),
        "category": To("category", many(dt.codeable_concept)),
        "subject": To("subject", dt.reference),
        **dt.renamed("encounter", "context", dt.reference),
        **dt.renamed("recordedDate", "assertedDate"),
        "asserter": To("asserter", dt.reference_to("Practitioner", "Patient", "RelatedPerson")),
        "evidence": _evidence(dt, many(dt.codeable_concept)),
        "note": To("note", many(dt.annotation)),
    }


def dstu2_elements(dt: Datatypes) -> dict[str, To]:
    """Condition's DSTU2 elements beyond `elements` (one category, `patient`, the notes as text)."""
    return {
        **onset_choice(dt, "onset", "onsetQuantity"),
        **onset_choice(dt, "abatement", "abatementQuantity"),
        "category": To("category", dt.single(dt.codeable_concept)),
        **dt.renamed("subject", "patient", dt.reference),
        "encounter": To("encounter", dt.reference),
        "asserter": To("asserter", dt.reference_to("Practitioner", "Patient")),
        "evidence": _evidence(dt, dt.single(dt.codeable_concept)),
        **dt.renamed("note", "notes", dt.note_text),
    }


_COMMON = {
    **elements(datatypes),
    "clinicalStatus": To("clinicalStatus", concept_code("condition-clinical", CLINICAL_STATUS)),
    "verificationStatus": To("verificationStatus", concept_code("condition-ver-status", VERIFICATION_STATUS)),
}


def _finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """DSTU2 requires a verificationStatus; `unknown` is its value when the status is not known."""
    if ctx.dstu2:
        out.setdefault("verificationStatus", "unknown")


_SEARCH = {**PATIENT, "code": token("code"), "category": token("category", system="condition-category")}

MAP = ResourceMap(
    "Condition",
    stu3={**_COMMON, **stu3_elements(datatypes)},
    dstu2={**_COMMON, **dstu2_elements(datatypes), "recordedDate": To("dateRecorded", to_date)},
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
