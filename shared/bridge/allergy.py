"""AllergyIntolerance: R4 → STU3 / DSTU2.

STU3 has R4's two statuses as plain codes; DSTU2 has one `status` that combines them, derived
by the official R3→R2 rules (refuted/entered-in-error first, then inactive/resolved, then
confirmed/unconfirmed, else active); an R4 status the combined code does not carry is counted.
R4 `code` is DSTU2 `substance`, `recordedDate` STU3 `assertedDate`, `asserter` DSTU2
`reporter`; DSTU2 criticality uses CRITL/CRITH/CRITU and keeps one note and one category.
STU3 requires a verificationStatus that R4 may omit: no value is invented for it.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import NOT_REPRESENTABLE, CodeMap, Ctx, Datatypes, To, codes, consumed, first, identity, many
from shared.bridge.datatypes import concept_code, onset_choice, system_code
from shared.bridge.params import PATIENT, date, token
from shared.bridge.resource import ResourceMap

CLINICAL_STATUS = CodeMap(identity("active", "inactive", "resolved"))
VERIFICATION_STATUS = CodeMap(identity("unconfirmed", "confirmed", "refuted", "entered-in-error"))
CRITICALITY = {"stu3": CodeMap(identity("low", "high", "unable-to-assess")),
               "dstu2": CodeMap({"low": "CRITL", "high": "CRITH", "unable-to-assess": "CRITU"})}
CATEGORY = {"stu3": CodeMap(identity("food", "medication", "environment", "biologic")),
            "dstu2": CodeMap({**identity("food", "medication", "environment"), "biologic": "other"})}
TYPE = CodeMap(identity("allergy", "intolerance"))
SEVERITY = CodeMap(identity("mild", "moderate", "severe"))
# DSTU2 status → the (clinical, verification) statuses it states; None: says nothing about it.
DSTU2_STATUS = {
    "entered-in-error": (None, "entered-in-error"), "refuted": (None, "refuted"),
    "inactive": ("inactive", None), "resolved": ("resolved", None),
    "confirmed": ("active", "confirmed"), "unconfirmed": ("active", "unconfirmed"), "active": ("active", None),
}


def _notes(dt: Datatypes, note: To) -> dict[str, To]:
    """The allergy's notes and its reactions', held alike (DSTU2 keeps one of each)."""
    reaction = dt.element({
        "substance": To("substance", dt.codeable_concept),
        "manifestation": To("manifestation", many(dt.codeable_concept)),
        "description": To("description"),
        "onset": To("onset"),
        "severity": To("severity", dt.coded(SEVERITY)),
        "exposureRoute": To("exposureRoute", dt.codeable_concept),
        "note": note,
    })
    return {"note": note, "reaction": To("reaction", many(reaction))}


def elements(dt: Datatypes) -> dict[str, To]:
    """AllergyIntolerance's elements that keep their name in every version (statuses and category aside:
    each direction's own)."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "type": To("type", dt.coded(TYPE)),
        "criticality": To("criticality", dt.coded(CRITICALITY)),
        "patient": To("patient", dt.reference),
        "recorder": To("recorder", dt.reference_to("Practitioner", "Patient")),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """AllergyIntolerance's STU3 elements beyond `elements` (R4 `recordedDate` is STU3 `assertedDate`)."""
    return {
        "code": To("code", dt.codeable_concept),
        **onset_choice(dt, "onset", "onsetAge"),
        **dt.renamed("recordedDate", "assertedDate"),
        "asserter": To("asserter", dt.reference_to("Patient", "RelatedPerson", "Practitioner")),
        "lastOccurrence": To("lastOccurrence"),
        **_notes(dt, To("note", many(dt.annotation))),
    }


def dstu2_elements(dt: Datatypes) -> dict[str, To]:
    """AllergyIntolerance's DSTU2 elements beyond `elements` (`substance`, a dateTime onset, `reporter`)."""
    return {
        **dt.renamed("code", "substance", dt.codeable_concept),
        **dt.renamed("onsetDateTime", "onset"),
        "recordedDate": To("recordedDate"),
        **dt.renamed("asserter", "reporter", dt.reference_to("Patient", "RelatedPerson", "Practitioner")),
        **dt.renamed("lastOccurrence", "lastOccurence"),  # sic: DSTU2 spells it so
        **_notes(dt, To("note", dt.single(dt.annotation))),
    }


_STU3 = {
    **elements(datatypes),
    **stu3_elements(datatypes),
    "clinicalStatus": To("clinicalStatus", concept_code("allergyintolerance-clinical", CLINICAL_STATUS)),
    "verificationStatus": To("verificationStatus",
                             concept_code("allergyintolerance-verification", VERIFICATION_STATUS)),
    "category": To("category", many(codes(CATEGORY))),
}
_DSTU2 = {
    **elements(datatypes),
    **dstu2_elements(datatypes),
    "clinicalStatus": To("status", consumed),
    "verificationStatus": To("status", consumed),
    "category": To("category", first(codes(CATEGORY))),
}


def dstu2_status(clinical: str | None, verification: str | None) -> str | None:
    """The one DSTU2 status for R4's two, by the official R3→R2 rules."""
    if verification in ("entered-in-error", "refuted"):
        return verification
    if clinical in ("inactive", "resolved"):
        return clinical
    if verification in ("confirmed", "unconfirmed"):
        return verification
    return "active" if clinical == "active" else None


def _finish(source: dict[str, Any], out: dict[str, Any], ctx: Ctx, path: str) -> None:
    """DSTU2: one status from R4's two; an R4 status the DSTU2 code does not state is counted."""
    if not ctx.dstu2:
        return
    given = {"clinicalStatus": system_code(source.get("clinicalStatus"), "allergyintolerance-clinical"),
             "verificationStatus": system_code(source.get("verificationStatus"), "allergyintolerance-verification")}
    status = dstu2_status(given["clinicalStatus"], given["verificationStatus"])
    official = DSTU2_STATUS.get(status, (None, None)) if status is not None else (None, None)
    stated = dict(zip(given, official, strict=True))
    for name, code in given.items():
        if name in source and (code is None or stated[name] != code):
            ctx.drop(f"{path}.{name}", NOT_REPRESENTABLE)
    if status:
        out["status"] = status


MAP = ResourceMap(
    "AllergyIntolerance",
    stu3=_STU3,
    dstu2=_DSTU2,
    search={
        "stu3": {"patient": PATIENT["patient"], "code": token("code"), "date": date("date"),
                 "clinical-status": token("clinical-status", CLINICAL_STATUS),
                 "verification-status": token("verification-status", VERIFICATION_STATUS)},
        "dstu2": {"patient": PATIENT["patient"], "substance": token("code"), "date": date("date")},
    },
    finish=_finish,
)
