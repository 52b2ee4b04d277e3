"""Encounter (last known location): R4 → STU3 / DSTU2.

The app reads status, type[0].coding[0].display, period.start and location[0].location.display.
R4 `class` is a Coding, as in STU3; DSTU2 has a plain code from its own value set (mapped from
v3 ActCode after the official R2→R3 map). DSTU2's status value set lacks `triaged`,
`entered-in-error` and `unknown`; those are dropped and counted.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Ctx, Datatypes, To, codes, first, identity, many
from shared.bridge.datatypes import (
    codeable_concept,
    coding,
    element,
    identifier,
    period,
    quantity,
    reference,
    reference_to,
)
from shared.bridge.params import PATIENT, date, token
from shared.bridge.resource import ResourceMap
from shared.bridge.terminology import THO

STATUS = {
    "stu3": CodeMap(identity("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                             "entered-in-error", "unknown")),
    "dstu2": CodeMap(identity("planned", "arrived", "in-progress", "onleave", "finished", "cancelled")),
}
# v3 ActCode (R4, STU3) → DSTU2 encounter-class; ACUTE, NONAC, OBSENC and PRENC have no DSTU2 code.
DSTU2_CLASS = CodeMap({"IMP": "inpatient", "AMB": "ambulatory", "EMER": "emergency", "HH": "home", "FLD": "field",
                       "SS": "daytime", "VR": "virtual"})
LOCATION_STATUS = CodeMap(identity("planned", "active", "reserved", "completed"))
_ACT_CODE = THO + "v3-ActCode"


def _dstu2_class(value: Any, ctx: Ctx, path: str) -> str | None:
    code = value.get("code") if isinstance(value, dict) and value.get("system") == _ACT_CODE else None
    return DSTU2_CLASS.to_facade(code, ctx, path)


_PARTICIPANT = element({
    "type": To("type", many(codeable_concept)),
    "period": To("period", period),
    "individual": To("individual", reference_to("Practitioner", "RelatedPerson")),
})


def hospitalization(dt: Datatypes) -> Any:
    """Encounter.hospitalization's elements every version shares (DSTU2's diagnoses have no R4 place)."""
    return dt.element({
        "preAdmissionIdentifier": To("preAdmissionIdentifier", dt.identifier),
        "origin": To("origin", dt.reference),
        "admitSource": To("admitSource", dt.codeable_concept),
        "reAdmission": To("reAdmission", dt.codeable_concept),
        **{n: To(n, many(dt.codeable_concept)) for n in ("dietPreference", "specialCourtesy", "specialArrangement")},
        "destination": To("destination", dt.reference),
        "dischargeDisposition": To("dischargeDisposition", dt.codeable_concept),
    })


_HOSPITALIZATION = hospitalization(datatypes)
_LOCATION = element({
    "location": To("location", reference),
    "status": To("status", codes(LOCATION_STATUS)),
    "period": To("period", period),
})
_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(STATUS)),
    "statusHistory": To("statusHistory", many(element({"status": To("status", codes(STATUS)),
                                                       "period": To("period", period)}))),
    "type": To("type", many(codeable_concept)),
    "priority": To("priority", codeable_concept),
    "episodeOfCare": To("episodeOfCare", many(reference)),
    "basedOn": To("incomingReferral", many(reference)),
    "participant": To("participant", many(_PARTICIPANT)),
    "appointment": To("appointment", first(reference)),
    "period": To("period", period),
    "length": To("length", quantity),
    "reasonCode": To("reason", many(codeable_concept)),
    "hospitalization": To("hospitalization", _HOSPITALIZATION),
    "location": To("location", many(_LOCATION)),
    "serviceProvider": To("serviceProvider", reference),
    "partOf": To("partOf", reference),
}
_SEARCH = {**PATIENT, "date": date("date"), "type": token("type")}

MAP = ResourceMap(
    "Encounter",
    stu3={
        **_COMMON,
        "class": To("class", coding),
        "classHistory": To("classHistory", many(element({"class": To("class", coding),
                                                         "period": To("period", period)}))),
        "subject": To("subject", reference),
        "diagnosis": To("diagnosis", many(element({"condition": To("condition", reference),
                                                   "use": To("role", codeable_concept), "rank": To("rank")}))),
        "account": To("account", many(reference)),
    },
    dstu2={**_COMMON, "class": To("class", _dstu2_class), "subject": To("patient", reference)},
    search={
        "stu3": {**_SEARCH, "status": token("status", STATUS["stu3"]), "class": token("class")},
        "dstu2": {**_SEARCH, "status": token("status", STATUS["dstu2"]), "class": token("class", DSTU2_CLASS)},
    },
)
