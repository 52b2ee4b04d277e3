"""Encounter (last known location): R4 → STU3 / DSTU2.

The app reads status, type[0].coding[0].display, period.start and location[0].location.display.
R4 `class` is a Coding, as in STU3; DSTU2 has a plain code from its own value set (mapped from
v3 ActCode after the official R2→R3 map). DSTU2's status value set lacks `triaged`,
`entered-in-error` and `unknown`; those are dropped and counted.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Convert, Ctx, Datatypes, To, identity, many
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


def _with_period(dt: Datatypes, name: str, convert: Convert) -> To:
    """statusHistory and classHistory: a status or class, and the period it held."""
    return To(f"{name}History", many(dt.element({name: To(name, convert), "period": To("period", dt.period)})))


def elements(dt: Datatypes) -> dict[str, To]:
    """Encounter's elements in every version (`class` aside: DSTU2's is its own code)."""
    participant = dt.element({
        "type": To("type", many(dt.codeable_concept)),
        "period": To("period", dt.period),
        "individual": To("individual", dt.reference_to("Practitioner", "RelatedPerson")),
    })
    location = dt.element({
        "location": To("location", dt.reference),
        "status": To("status", dt.coded(LOCATION_STATUS)),
        "period": To("period", dt.period),
    })
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "status": To("status", dt.coded(STATUS)),
        "statusHistory": _with_period(dt, "status", dt.coded(STATUS)),
        "type": To("type", many(dt.codeable_concept)),
        "priority": To("priority", dt.codeable_concept),
        "episodeOfCare": To("episodeOfCare", many(dt.reference)),
        **dt.renamed("basedOn", "incomingReferral", many(dt.reference)),
        "participant": To("participant", many(participant)),
        "appointment": To("appointment", dt.single(dt.reference)),
        "period": To("period", dt.period),
        "length": To("length", dt.quantity),
        **dt.renamed("reasonCode", "reason", many(dt.codeable_concept)),
        "hospitalization": To("hospitalization", hospitalization(dt)),
        "location": To("location", many(location)),
        "serviceProvider": To("serviceProvider", dt.reference),
        "partOf": To("partOf", dt.reference),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """Encounter's STU3 elements beyond `elements` (R4 `diagnosis.use` is STU3's `role`)."""
    return {
        "class": To("class", dt.coding),
        "classHistory": _with_period(dt, "class", dt.coding),
        "subject": To("subject", dt.reference),
        "diagnosis": To("diagnosis", many(dt.element({"condition": To("condition", dt.reference),
                                                      **dt.renamed("use", "role", dt.codeable_concept),
                                                      "rank": To("rank")}))),
        "account": To("account", many(dt.reference)),
    }


_COMMON = elements(datatypes)
_SEARCH = {**PATIENT, "date": date("date"), "type": token("type")}

MAP = ResourceMap(
    "Encounter",
    stu3={**_COMMON, **stu3_elements(datatypes)},
    dstu2={**_COMMON, "class": To("class", _dstu2_class), "subject": To("patient", datatypes.reference)},
    search={
        "stu3": {**_SEARCH, "status": token("status", STATUS["stu3"]), "class": token("class")},
        "dstu2": {**_SEARCH, "status": token("status", STATUS["dstu2"]), "class": token("class", DSTU2_CLASS)},
    },
)
