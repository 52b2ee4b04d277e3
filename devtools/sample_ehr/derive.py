"""Resources the sample data lacks but the Patients app shows, derived deterministically at load.

The source data has no Coverage, no Location and (STU3) no Organization, yet the Patients app
has a Coverage view and shows an Encounter's ``location[0].location.display`` as the patient's
last known location. So, at load time and always the same way:

* **Organization** ``sample-payer-1..3``: three fixed, fictitious insurers (type ``ins``).
* **Coverage** ``coverage-<patient id>``, one per Patient. The insurer is picked by CRC32 of the
  patient id. Period: from the later of birth and 2010-01-01 (or from birth, for those who died
  earlier), ending at death. STU3: status (``cancelled`` once deceased), type, policyHolder =
  subscriber = beneficiary = the patient, relationship ``self``, subscriberId, payor and
  grouping (group/plan with displays). DSTU2 has no ``payor``: the insurer is ``issuer``, with
  type, subscriberId, group, plan and subscriber.
* **Location**: four fixed places of one sample hospital. Every Encounter without a location
  gets ``location[0]`` pointing at one, with its name as display: emergency class → Emergency
  Department; inpatient or day-case → Ward 4 West; anything else → Pediatrics Clinic if the
  patient was under 18 at the encounter's start, else General Medicine Clinic.
* References to a Practitioner or Organization that lack a display get the target's name,
  as the app shows the care provider (``generalPractitioner``) by display only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from devtools.sample_ehr.store import VersionInfo

ACT_CODE = "http://hl7.org/fhir/v3/ActCode"
ROLE_CODE = "http://hl7.org/fhir/v3/RoleCode"
PLAN_START = "2010-01-01"
NOTE = "Derived by the sample EHR at load time; not part of the synthetic source data."


@dataclass(frozen=True)
class Payer:
    """A fictitious insurer and the one plan every member of it is on."""

    id: str
    name: str
    type_code: str
    type_display: str
    member_prefix: str
    group: str
    plan: str
    plan_display: str


@dataclass(frozen=True)
class Place:
    """A fixed location of the sample hospital."""

    id: str
    name: str
    role_code: str
    role_display: str


PAYERS = (
    Payer("sample-payer-1", "Example Mutual Health", "PPO", "preferred provider organization policy",
          "EXM", "GRP-1001", "PPO-SILVER", "Example Mutual PPO Silver"),
    Payer("sample-payer-2", "Synthetic Care HMO", "HMO", "health maintenance organization policy",
          "SCH", "GRP-2002", "HMO-STANDARD", "Synthetic Care HMO Standard"),
    Payer("sample-payer-3", "Sample State Medicaid", "PUBLICPOL", "public healthcare",
          "SSM", "GRP-3003", "MEDICAID", "Sample State Medicaid Plan"),
)
PLACES = {
    "general": Place("sample-location-gim", "General Medicine Clinic", "GIM",
                     "General internal medicine clinic"),
    "pediatric": Place("sample-location-pedc", "Pediatrics Clinic", "PEDC", "Pediatrics clinic"),
    "emergency": Place("sample-location-er", "Emergency Department", "ER", "Emergency room"),
    "ward": Place("sample-location-ward", "Ward 4 West", "HU", "Hospital unit"),
}
EMERGENCY_CLASSES = {"emergency", "emer"}
INPATIENT_CLASSES = {"inpatient", "imp", "acute", "daytime"}


def enrich(info: VersionInfo, resources: list[dict]) -> list[dict]:
    """The source resources (Encounters and reference displays filled in) plus derived ones."""
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    births = {p["id"]: p.get("birthDate", "") for p in patients}
    for resource in resources:
        if resource["resourceType"] == "Encounter" and not resource.get("location"):
            _add_location(resource, births)
    derived = [_payer(payer) for payer in PAYERS]
    derived += [_location(place) for place in PLACES.values()]
    derived += [_coverage(info, patient) for patient in patients]
    everything = resources + derived
    names = _display_names(everything)
    for resource in everything:
        _fill_displays(resource, names)
    return everything


def human_name(name: dict) -> str:
    """A HumanName as one line, in either version (DSTU2 ``family`` is a list)."""
    if name.get("text"):
        return name["text"]
    family = name.get("family") or []
    parts = [*name.get("prefix", []), *name.get("given", []),
             *([family] if isinstance(family, str) else family), *name.get("suffix", [])]
    return " ".join(parts)


def _official_name(resource: dict) -> str:
    names = resource.get("name") or [{}]
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    return human_name(chosen)


def _pick_payer(patient_id: str) -> Payer:
    return PAYERS[zlib.crc32(patient_id.encode()) % len(PAYERS)]


def _died(patient: dict) -> tuple[bool, str | None]:
    """(deceased?, date of death if known)."""
    when = patient.get("deceasedDateTime")
    return bool(when or patient.get("deceasedBoolean")), when[:10] if when else None


def _coverage_period(patient: dict) -> dict:
    birth = patient.get("birthDate", PLAN_START)
    start = max(birth, PLAN_START)
    _, death = _died(patient)
    if death and death < start:
        start = birth
    return {"start": start, "end": death} if death else {"start": start}


def _coverage(info: VersionInfo, patient: dict) -> dict:
    payer = _pick_payer(patient["id"])
    member_id = f"{payer.member_prefix}{zlib.crc32(patient['id'].encode()) % 10**8:08d}"
    member = {"system": f"https://sample-ehr.example/{payer.id}/member-id", "value": member_id}
    insurer = {"reference": f"Organization/{payer.id}", "display": payer.name}
    insured = {"reference": f"Patient/{patient['id']}", "display": _official_name(patient)}
    common = {
        "resourceType": "Coverage",
        "id": f"coverage-{patient['id']}",
        "identifier": [member],
        "type": {"system": ACT_CODE, "code": payer.type_code, "display": payer.type_display},
        "period": _coverage_period(patient),
    }
    if info.name == "dstu2":
        return {**common, "issuer": insurer, "subscriberId": member, "group": payer.group,
                "plan": payer.plan, "subscriber": insured}
    return {
        **common,
        "status": "cancelled" if _died(patient)[0] else "active",
        "type": {"coding": [common["type"]], "text": payer.type_display},
        "policyHolder": insured, "subscriber": insured, "beneficiary": insured,
        "subscriberId": member_id,
        "relationship": {"coding": [{"system": "http://hl7.org/fhir/policyholder-relationship",
                                     "code": "self"}]},
        "payor": [insurer],
        "grouping": {"group": payer.group, "groupDisplay": f"{payer.name} group {payer.group}",
                     "plan": payer.plan, "planDisplay": payer.plan_display},
    }


def _payer(payer: Payer) -> dict:
    return {
        "resourceType": "Organization",
        "id": payer.id,
        "active": True,
        "type": [{"coding": [{"system": "http://hl7.org/fhir/organization-type", "code": "ins",
                              "display": "Insurance Company"}]}],
        "name": payer.name,
    }


def _location(place: Place) -> dict:
    return {
        "resourceType": "Location",
        "id": place.id,
        "status": "active",
        "name": place.name,
        "description": NOTE,
        "mode": "instance",
        "type": {"coding": [{"system": ROLE_CODE, "code": place.role_code,
                             "display": place.role_display}]},
    }


def _place_for(encounter: dict, births: dict[str, str]) -> Place:
    kind = encounter.get("class")
    code = (kind.get("code", "") if isinstance(kind, dict) else kind or "").lower()
    if code in EMERGENCY_CLASSES:
        return PLACES["emergency"]
    if code in INPATIENT_CLASSES:
        return PLACES["ward"]
    subject = (encounter.get("subject") or encounter.get("patient") or {}).get("reference", "")
    birth = births.get(subject.removeprefix("Patient/"), "")
    start = encounter.get("period", {}).get("start", "")[:10]
    adult_from = f"{int(birth[:4]) + 18}{birth[4:10]}" if len(birth) >= 4 else ""
    return PLACES["pediatric"] if birth and start and start < adult_from else PLACES["general"]


def _add_location(encounter: dict, births: dict[str, str]) -> None:
    place = _place_for(encounter, births)
    entry = {"location": {"reference": f"Location/{place.id}", "display": place.name},
             "status": "completed" if encounter.get("status") == "finished" else "active"}
    if encounter.get("period"):
        entry["period"] = dict(encounter["period"])
    encounter["location"] = [entry]


def _display_names(resources: list[dict]) -> dict[str, str]:
    """``Type/id`` → display name for every Practitioner and Organization."""
    names = {}
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "Practitioner":
            names[f"{kind}/{resource['id']}"] = _official_name(resource)
        elif kind == "Organization":
            names[f"{kind}/{resource['id']}"] = resource.get("name", "")
    return {target: name for target, name in names.items() if name}


def _fill_displays(node: object, names: dict[str, str]) -> None:
    if isinstance(node, dict):
        target = node.get("reference")
        if isinstance(target, str) and "display" not in node and target in names:
            node["display"] = names[target]
        for value in node.values():
            _fill_displays(value, names)
    elif isinstance(node, list):
        for item in node:
            _fill_displays(item, names)
