"""The R4 → STU3/DSTU2 bridge as pure functions: request translation and response conversion.

Resources come from the real R4 sample data (`../shared/data/r4-synthea`); the types it lacks
(AllergyIntolerance, Coverage, Location) and the edge cases it never shows are hand-written R4
resources below, marked as such. Every STU3 result is validated with the independent
`fhir.resources.STU3` models; DSTU2 results, which have no such validator here, are checked
against the DSTU2 element lists and the shapes the Patients app reads, written out as tables.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bridge import convert_response, translate_request
from shared.bridge.allergy import CLINICAL_STATUS as ALLERGY_CLINICAL
from shared.bridge.allergy import VERIFICATION_STATUS as ALLERGY_VERIFICATION
from shared.bridge.condition import CLINICAL_STATUS as CONDITION_CLINICAL
from shared.bridge.encounter import DSTU2_CLASS
from shared.bridge.encounter import STATUS as ENCOUNTER_STATUS
from shared.bridge.medication import INTENT
from shared.bridge.medication import STATUS as MEDICATION_STATUS
from shared.bridge.observation import STATUS as OBSERVATION_STATUS
from shared.bridge.terminology import SYSTEMS, THO
from shared.errors import FhirError
from shared.policy import Interaction

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

R4_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "r4-synthea"
PROVIDER = "http://provider.example/fhir"
CONVERTED = ("Patient", "Observation", "Condition", "Encounter", "MedicationRequest", "Practitioner", "Organization")
OLD_MRN = "http://hl7.org/fhir/v2/0203"

# --- hand-written R4 resources (types and cases the sample data lacks) ------------------------

ALLERGY = {
    "resourceType": "AllergyIntolerance", "id": "allergy-1",
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Cashew allergy</div>"},
    "clinicalStatus": {"coding": [{"system": THO + "allergyintolerance-clinical", "code": "active"}]},
    "verificationStatus": {"coding": [{"system": THO + "allergyintolerance-verification", "code": "confirmed"}]},
    "type": "allergy", "category": ["food"], "criticality": "high",
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "227493005", "display": "Cashew nuts"}],
             "text": "Cashew nuts"},
    "patient": {"reference": "Patient/p1", "display": "Mr. Antony Anderson"},
    "onsetDateTime": "2004", "recordedDate": "2014-10-09T14:58:00+11:00",
    "recorder": {"reference": "Practitioner/dr1", "display": "Dr. Tyron Torphy"},
    "note": [{"text": "The criticality is high because of an observed anaphylactic reaction."}],
    "reaction": [{
        "substance": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1160593",
                                  "display": "cashew nut allergenic extract"}]},
        "manifestation": [{"coding": [{"system": "http://snomed.info/sct", "code": "39579001",
                                       "display": "Anaphylactic reaction"}]}],
        "onset": "2012-06-12", "severity": "severe",
        "note": [{"text": "Required an epinephrine injection."}],
    }],
}
COVERAGE = {
    "resourceType": "Coverage", "id": "coverage-1", "status": "active",
    "identifier": [{"system": "https://sample-ehr.example/sample-payer-1/member-id", "value": "EXM00000042"}],
    "type": {"coding": [{"system": THO + "v3-ActCode", "code": "PPO",
                         "display": "preferred provider organization policy"}],
             "text": "preferred provider organization policy"},
    "policyHolder": {"reference": "Patient/p1", "display": "Mr. Antony Anderson"},
    "subscriber": {"reference": "Patient/p1", "display": "Mr. Antony Anderson"},
    "subscriberId": "EXM00000042",
    "beneficiary": {"reference": "Patient/p1", "display": "Mr. Antony Anderson"},
    "relationship": {"coding": [{"system": THO + "subscriber-relationship", "code": "self"}]},
    "period": {"start": "2010-01-01"},
    "payor": [{"reference": "Organization/sample-payer-1", "display": "Example Mutual Health"}],
    "class": [
        {"type": {"coding": [{"system": THO + "coverage-class", "code": "group"}]}, "value": "GRP-1001",
         "name": "Example Mutual Health group GRP-1001"},
        {"type": {"coding": [{"system": THO + "coverage-class", "code": "plan"}]}, "value": "PPO-SILVER",
         "name": "Example Mutual PPO Silver"},
    ],
}
LOCATION = {
    "resourceType": "Location", "id": "loc-1", "status": "active", "name": "General Medicine Clinic",
    "mode": "instance",
    "type": [{"coding": [{"system": THO + "v3-RoleCode", "code": "GIM",
                          "display": "General internal medicine clinic"}]}],
}
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "deleted", "diagnostics": "Patient/p9 was deleted",
               "expression": ["Patient"]}],
}


@cache
def r4_resources() -> dict[str, list[dict]]:
    """Every resource of a converted type in the R4 sample data, plus the hand-written ones."""
    found: dict[str, list[dict]] = {kind: [] for kind in CONVERTED}
    for path in sorted(R4_DATA.glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            if entry["resource"]["resourceType"] in found:
                found[entry["resource"]["resourceType"]].append(entry["resource"])
    return {**found, "AllergyIntolerance": [ALLERGY], "Coverage": [COVERAGE], "Location": [LOCATION],
            "OperationOutcome": [OUTCOME]}


def convert(facade: str, resource: dict) -> tuple[dict, dict[str, int]]:
    action = Interaction("read", resource["resourceType"], resource.get("id"))
    return convert_response(facade, action, copy.deepcopy(resource), PROVIDER)


def stu3_model(kind: str) -> Any:
    return getattr(importlib.import_module(f"fhir.resources.STU3.{kind.lower()}"), kind)


def all_resources() -> list[tuple[str, dict]]:
    return [(kind, r) for kind, items in r4_resources().items() for r in items]


# --- STU3: validated by an independent implementation ----------------------------------------

# Codes the STU3 value sets (required bindings) allow; fhir.resources checks shapes, not codes.
STU3_CODES = {
    ("Condition", "clinicalStatus"): {"active", "recurrence", "inactive", "remission", "resolved"},
    ("Condition", "verificationStatus"): {"provisional", "differential", "confirmed", "refuted", "entered-in-error",
                                          "unknown"},
    ("Encounter", "status"): {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                              "entered-in-error", "unknown"},
    ("MedicationRequest", "status"): {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped",
                                      "draft", "unknown"},
    ("MedicationRequest", "intent"): {"proposal", "plan", "order", "instance-order"},
    ("AllergyIntolerance", "clinicalStatus"): {"active", "inactive", "resolved"},
    ("AllergyIntolerance", "verificationStatus"): {"unconfirmed", "confirmed", "refuted", "entered-in-error"},
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                                "entered-in-error", "unknown"},
}


@pytest.mark.parametrize("kind", [*CONVERTED, "AllergyIntolerance", "Coverage", "Location", "OperationOutcome"])
def test_every_stu3_resource_validates(kind: str) -> None:
    resources = r4_resources()[kind]
    assert resources
    for resource in resources:
        out, _ = convert("stu3", resource)
        stu3_model(kind).model_validate(out)
        for (owner, element), allowed in STU3_CODES.items():
            if owner == kind and element in out:
                assert out[element] in allowed, (kind, element, out[element])


def test_stu3_shapes_the_app_reads() -> None:
    patient, _ = convert("stu3", r4_resources()["Patient"][0])
    mrn = next(i for i in patient["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR")
    assert mrn["type"]["coding"][0]["system"] == OLD_MRN
    vitals = [o for o in r4_resources()["Observation"] if o["category"][0]["coding"][0]["code"] == "vital-signs"]
    observation, _ = convert("stu3", vitals[0])
    assert observation["category"][0]["coding"][0]["system"] == "http://hl7.org/fhir/observation-category"
    condition, _ = convert("stu3", r4_resources()["Condition"][0])
    assert condition["assertedDate"] == r4_resources()["Condition"][0]["recordedDate"]
    assert condition["clinicalStatus"] in ("active", "resolved")
    order, _ = convert("stu3", r4_resources()["MedicationRequest"][0])
    assert order["requester"] == {"agent": r4_resources()["MedicationRequest"][0]["requester"]}
    coverage, drops = convert("stu3", COVERAGE)
    assert coverage["grouping"] == {"group": "GRP-1001", "groupDisplay": "Example Mutual Health group GRP-1001",
                                    "plan": "PPO-SILVER", "planDisplay": "Example Mutual PPO Silver"}
    assert coverage["subscriberId"] == "EXM00000042" and coverage["period"] == {"start": "2010-01-01"}
    assert coverage["relationship"]["coding"][0]["system"] == "http://hl7.org/fhir/policyholder-relationship"
    assert drops == {}
    allergy, drops = convert("stu3", ALLERGY)
    assert (allergy["clinicalStatus"], allergy["verificationStatus"], allergy["assertedDate"]) == (
        "active", "confirmed", "2014-10-09T14:58:00+11:00")
    assert allergy["code"]["text"] == "Cashew nuts" and allergy["note"][0]["text"].startswith("The criticality")
    assert drops == {}


def test_sample_data_converts_to_stu3_with_only_known_drops() -> None:
    drops: Counter[str] = Counter()
    for _, resource in all_resources():
        drops.update(convert("stu3", resource)[1])
    with_type = sum(1 for r in r4_resources()["MedicationRequest"] for d in r.get("dosageInstruction", [])
                    for dr in d.get("doseAndRate", []) if "type" in dr)
    assert drops == {"MedicationRequest.dosageInstruction.doseAndRate.type:not-representable": with_type}


# --- DSTU2: element lists and the shapes the app reads, as tables ----------------------------

RESOURCE_BASE = {"resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
                 "modifierExtension"}
DSTU2_ELEMENTS = {
    "Patient": {"identifier", "active", "name", "telecom", "gender", "birthDate", "deceasedBoolean",
                "deceasedDateTime", "address", "maritalStatus", "multipleBirthBoolean", "multipleBirthInteger",
                "photo", "contact", "animal", "communication", "careProvider", "managingOrganization", "link"},
    "Observation": {"identifier", "status", "category", "code", "subject", "encounter", "effectiveDateTime",
                    "effectivePeriod", "issued", "performer", "valueQuantity", "valueCodeableConcept", "valueString",
                    "valueRange", "valueRatio", "valueSampledData", "valueAttachment", "valueTime",
                    "valueDateTime", "valuePeriod", "dataAbsentReason", "interpretation", "comments", "bodySite",
                    "method", "specimen", "device", "referenceRange", "related", "component"},
    "Condition": {"identifier", "patient", "encounter", "asserter", "dateRecorded", "code", "category",
                  "clinicalStatus", "verificationStatus", "severity", "onsetDateTime", "onsetQuantity", "onsetPeriod",
                  "onsetRange", "onsetString", "abatementDateTime", "abatementQuantity", "abatementBoolean",
                  "abatementPeriod", "abatementRange", "abatementString", "stage", "evidence", "bodySite", "notes"},
    "Encounter": {"identifier", "status", "statusHistory", "class", "type", "priority", "patient", "episodeOfCare",
                  "incomingReferral", "participant", "appointment", "period", "length", "reason", "indication",
                  "hospitalization", "location", "serviceProvider", "partOf"},
    "AllergyIntolerance": {"identifier", "onset", "recordedDate", "recorder", "patient", "reporter", "substance",
                           "status", "criticality", "type", "category", "lastOccurence", "note", "reaction"},
    "MedicationOrder": {"identifier", "dateWritten", "status", "dateEnded", "reasonEnded", "patient", "prescriber",
                        "encounter", "reasonCodeableConcept", "reasonReference", "note", "medicationCodeableConcept",
                        "medicationReference", "dosageInstruction", "dispenseRequest", "substitution",
                        "priorPrescription"},
    "Coverage": {"issuer", "bin", "period", "type", "subscriberId", "identifier", "group", "plan", "subPlan",
                 "dependent", "sequence", "subscriber", "network", "contract"},
    "Location": {"identifier", "status", "name", "description", "mode", "type", "telecom", "address",
                 "physicalType", "position", "managingOrganization", "partOf"},
    "Practitioner": {"identifier", "active", "name", "telecom", "address", "gender", "birthDate", "photo",
                     "practitionerRole", "qualification", "communication"},
    "Organization": {"identifier", "active", "type", "name", "telecom", "address", "partOf", "contact"},
    "OperationOutcome": {"issue"},
}
DSTU2_CODES = {
    ("Condition", "clinicalStatus"): {"active", "relapse", "remission", "resolved"},
    ("Condition", "verificationStatus"): {"provisional", "differential", "confirmed", "refuted", "entered-in-error",
                                          "unknown"},
    ("Encounter", "status"): {"planned", "arrived", "in-progress", "onleave", "finished", "cancelled"},
    ("Encounter", "class"): {"inpatient", "outpatient", "ambulatory", "emergency", "home", "field", "daytime",
                             "virtual", "other"},
    ("MedicationOrder", "status"): {"active", "on-hold", "completed", "entered-in-error", "stopped", "draft"},
    ("AllergyIntolerance", "status"): {"active", "unconfirmed", "confirmed", "inactive", "resolved", "refuted",
                                       "entered-in-error"},
    ("AllergyIntolerance", "criticality"): {"CRITL", "CRITH", "CRITU"},
    ("AllergyIntolerance", "category"): {"food", "medication", "environment", "other"},
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "cancelled", "entered-in-error",
                                "unknown"},
    ("OperationOutcome", "issue.code"): {"invalid", "structure", "required", "value", "invariant", "security",
                                         "login", "unknown", "expired", "forbidden", "suppressed", "processing",
                                         "not-supported", "duplicate", "not-found", "too-long", "code-invalid",
                                         "extension", "too-costly", "business-rule", "conflict", "incomplete",
                                         "transient", "lock-error", "no-store", "exception", "timeout", "throttled",
                                         "informational"},
}
# Elements DSTU2 requires (1..1) that the converted sample data must therefore carry.
DSTU2_REQUIRED = {
    "Condition": {"patient", "code", "verificationStatus"},
    "Encounter": {"status"},
    "Observation": {"status", "code"},
    "MedicationOrder": {"medicationCodeableConcept"},
    "AllergyIntolerance": {"patient", "substance"},
}


def _values(resource: dict, path: str) -> list[Any]:
    """Every value at a dotted path, through lists."""
    values: list[Any] = [resource]
    for part in path.split("."):
        values = [v for item in values for v in (item if isinstance(item, list) else [item])
                  if isinstance(v, dict) and part in v]
        values = [v[part] for v in values]
    return values


@pytest.mark.parametrize("kind", [*CONVERTED, "AllergyIntolerance", "Coverage", "Location", "OperationOutcome"])
def test_every_dstu2_resource_has_only_dstu2_elements_and_codes(kind: str) -> None:
    for resource in r4_resources()[kind]:
        out, _ = convert("dstu2", resource)
        name = out["resourceType"]
        assert set(out) - RESOURCE_BASE <= DSTU2_ELEMENTS[name], set(out) - RESOURCE_BASE - DSTU2_ELEMENTS[name]
        assert DSTU2_REQUIRED.get(name, set()) <= set(out), (name, resource.get("id"))
        for (owner, path), allowed in DSTU2_CODES.items():
            if owner == name:
                assert all(v in allowed for v in _values(out, path)), (name, path, _values(out, path))


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"reference", "display"} and bool(value)


def _is_coding(value: Any) -> bool:
    return isinstance(value, dict) and "code" in value and "coding" not in value


def _is_concept(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"coding", "text"}


def _is_date(value: Any) -> bool:
    return isinstance(value, str) and len(value) in (4, 7, 10)


# The DSTU2 shapes the Patients app reads, per resource: dotted path → check of every value there.
DSTU2_SHAPES = {
    "Patient": {"name": lambda v: isinstance(v, list), "name.family": lambda v: isinstance(v, list),
                "name.given": lambda v: isinstance(v, list), "name.prefix": lambda v: isinstance(v, list),
                "identifier.type.coding.system": lambda v: v in (OLD_MRN, "http://hl7.org/fhir/v2/0203"),
                "careProvider": lambda v: isinstance(v, list) and all(_is_reference(r) for r in v),
                "gender": lambda v: v in ("male", "female", "other", "unknown"), "birthDate": _is_date},
    "Observation": {"category": _is_concept, "category.coding.system":
                    lambda v: v == "http://hl7.org/fhir/observation-category",
                    "effectiveDateTime": lambda v: isinstance(v, str), "valueQuantity.value":
                    lambda v: isinstance(v, int | float), "component.valueQuantity.value":
                    lambda v: isinstance(v, int | float), "component.code.coding.display": lambda v: isinstance(v, str),
                    "subject": _is_reference, "interpretation": _is_concept},
    "Condition": {"code.coding.display": lambda v: isinstance(v, str), "dateRecorded": _is_date,
                  "patient": _is_reference, "category": _is_concept, "notes": lambda v: isinstance(v, str)},
    "Encounter": {"type.coding.display": lambda v: isinstance(v, str), "period.start": lambda v: isinstance(v, str),
                  "location.location.display": lambda v: isinstance(v, str), "patient": _is_reference,
                  "class": lambda v: isinstance(v, str)},
    "AllergyIntolerance": {"substance.text": lambda v: isinstance(v, str), "substance.coding.display":
                           lambda v: isinstance(v, str), "note": lambda v: isinstance(v, dict),
                           "note.text": lambda v: isinstance(v, str), "reaction.note": lambda v: isinstance(v, dict),
                           "reaction.manifestation": lambda v: isinstance(v, list),
                           "recordedDate": lambda v: isinstance(v, str), "category": lambda v: isinstance(v, str)},
    "MedicationOrder": {"dateWritten": lambda v: isinstance(v, str), "prescriber": _is_reference,
                        "medicationCodeableConcept.text": lambda v: isinstance(v, str),
                        "dosageInstruction.text": lambda v: isinstance(v, str), "patient": _is_reference,
                        "dosageInstruction.timing.repeat.periodUnits": lambda v: isinstance(v, str),
                        "dosageInstruction.doseQuantity": lambda v: isinstance(v, dict),
                        "reasonReference": _is_reference},
    "Coverage": {"issuer": _is_reference, "plan": lambda v: isinstance(v, str), "group": lambda v: isinstance(v, str),
                 "subscriber": _is_reference, "subscriberId.value": lambda v: isinstance(v, str), "type": _is_coding,
                 "period.start": _is_date},
    "Location": {"type": _is_concept, "name": lambda v: isinstance(v, str)},
    "Practitioner": {"name": lambda v: isinstance(v, dict), "name.family": lambda v: isinstance(v, list)},
    "Organization": {"type": _is_concept, "type.coding.system": lambda v: not v.startswith(THO + "organization-type")},
}


@pytest.mark.parametrize("kind", [*CONVERTED, "AllergyIntolerance", "Coverage", "Location"])
def test_dstu2_field_shapes(kind: str) -> None:
    seen: Counter[str] = Counter()
    for resource in r4_resources()[kind]:
        out, _ = convert("dstu2", resource)
        for path, check in DSTU2_SHAPES[out["resourceType"]].items():
            values = _values(out, path)
            seen[path] += len(values)
            assert all(check(v) for v in values), (out["resourceType"], path, values)
    shown = {path for path, n in seen.items() if n}
    required_seen = {"Patient": {"name.family", "identifier.type.coding.system", "birthDate"},
                     "Observation": {"category", "valueQuantity.value", "component.valueQuantity.value"},
                     "Condition": {"code.coding.display", "dateRecorded", "patient"},
                     "Encounter": {"type.coding.display", "period.start", "class"},
                     "AllergyIntolerance": {"substance.text", "note.text", "reaction.note"},
                     "MedicationRequest": {"dateWritten", "prescriber", "medicationCodeableConcept.text"},
                     "Coverage": {"issuer", "plan", "subscriberId.value"}}.get(kind, set())
    assert required_seen <= shown, required_seen - shown


def test_dstu2_values_the_app_reads() -> None:
    allergy, drops = convert("dstu2", ALLERGY)
    assert (allergy["status"], allergy["criticality"], allergy["category"], allergy["recordedDate"]) == (
        "confirmed", "CRITH", "food", "2014-10-09T14:58:00+11:00")
    assert allergy["substance"] == ALLERGY["code"] and allergy["onset"] == "2004"
    assert drops == {}
    coverage, drops = convert("dstu2", COVERAGE)
    assert coverage["issuer"] == COVERAGE["payor"][0]
    assert (coverage["group"], coverage["plan"], coverage["subscriberId"]) == (
        "GRP-1001", "PPO-SILVER", {"value": "EXM00000042"})
    assert coverage["type"] == {"system": "http://hl7.org/fhir/v3/ActCode", "code": "PPO",
                                "display": "preferred provider organization policy"}
    assert drops == {"Coverage.status:not-representable": 1, "Coverage.policyHolder:not-representable": 1,
                     "Coverage.beneficiary:not-representable": 1, "Coverage.relationship:not-representable": 1,
                     "Coverage.type.text:not-representable": 1, "Coverage.class.name:not-representable": 2}
    condition = r4_resources()["Condition"][0]
    out, drops = convert("dstu2", condition)
    assert out["dateRecorded"] == condition["recordedDate"][:10]
    assert out["patient"] == condition["subject"] and out["verificationStatus"] == "confirmed"
    assert drops == {"Condition.recordedDate:truncated": 1}


def test_sample_data_drops_in_dstu2_are_the_expected_ones() -> None:
    for resource in r4_resources()["Condition"]:
        assert convert("dstu2", resource)[1] == {"Condition.recordedDate:truncated": 1}
    for resource in r4_resources()["MedicationRequest"]:
        drops = convert("dstu2", resource)[1]
        assert drops["MedicationRequest.intent:not-representable"] == 1  # DSTU2 orders have no intent
        extra = len(resource.get("reasonReference", [])) - 1
        assert drops.get("MedicationRequest.reasonReference:extra-items", 0) == max(extra, 0)
    for kind in ("Patient", "Observation", "Encounter", "Practitioner", "Organization"):
        for resource in r4_resources()[kind]:
            assert convert("dstu2", resource)[1] == {}, (kind, resource["id"])


# --- what cannot be represented is dropped and counted, never invented ------------------------

def _condition(**changes: Any) -> dict:
    base = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"text": "Asthma"},
            "clinicalStatus": {"coding": [{"system": THO + "condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": THO + "condition-ver-status", "code": "confirmed"}]}}
    return {**base, **changes}


DROP_CASES = [
    ("stu3", _condition(verificationStatus={"coding": [{"system": THO + "condition-ver-status",
                                                        "code": "unconfirmed"}]}),
     {"Condition.verificationStatus:unknown-code": 1}, {"verificationStatus": None}),
    ("dstu2", _condition(verificationStatus={"coding": [{"system": THO + "condition-ver-status",
                                                         "code": "unconfirmed"}]}),
     {"Condition.verificationStatus:unknown-code": 1}, {"verificationStatus": "unknown"}),
    ("dstu2", _condition(clinicalStatus={"coding": [{"system": THO + "condition-clinical", "code": "inactive"}]}),
     {"Condition.clinicalStatus:unknown-code": 1}, {"clinicalStatus": None}),
    ("stu3", _condition(clinicalStatus={"coding": [{"system": THO + "condition-clinical", "code": "relapse"}]}),
     {}, {"clinicalStatus": "recurrence"}),
    ("dstu2", _condition(clinicalStatus={"coding": [{"system": THO + "condition-clinical", "code": "recurrence"}]}),
     {}, {"clinicalStatus": "relapse"}),
    ("stu3", _condition(recorder={"reference": "Practitioner/1"}, stage=[{"summary": {"text": "I"}},
                                                                         {"summary": {"text": "II"}}]),
     {"Condition.recorder:not-representable": 1, "Condition.stage:extra-items": 1},
     {"stage": {"summary": {"text": "I"}}}),
    ("stu3", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 7,
              "focus": [{"reference": "Device/1"}],
              "interpretation": [{"text": "H"}, {"text": "HH"}, {"text": "A"}],
              "note": [{"text": "first", "authorString": "nurse"}, {"text": "second"}]},
     {"Observation.focus:not-representable": 1, "Observation.interpretation:extra-items": 2,
      "Observation.note.authorString:not-representable": 1},
     {"valueQuantity": {"value": 7}, "interpretation": {"text": "H"}, "comment": "first\n\nsecond"}),
    ("dstu2", {"resourceType": "Observation", "status": "corrected", "code": {"text": "x"}, "valueBoolean": True,
               "category": [{"text": "a"}, {"text": "b"}], "hasMember": [{"reference": "Observation/2"}],
               "derivedFrom": [{"reference": "Observation/3"}]},
     {"Observation.valueBoolean:not-representable": 1, "Observation.category:extra-items": 1},
     {"status": "amended", "category": {"text": "a"},
      "related": [{"type": "has-member", "target": {"reference": "Observation/2"}},
                  {"type": "derived-from", "target": {"reference": "Observation/3"}}]}),
    ("dstu2", {"resourceType": "Encounter", "status": "triaged", "class": {"system": THO + "v3-ActCode",
                                                                         "code": "ACUTE"}},
     {"Encounter.status:unknown-code": 1, "Encounter.class:unknown-code": 1}, {"status": None, "class": None}),
    ("dstu2", {"resourceType": "Encounter", "status": "finished", "class": {"system": THO + "v3-ActCode",
                                                                          "code": "EMER"}},
     {}, {"status": "finished", "class": "emergency"}),
    ("stu3", {"resourceType": "MedicationRequest", "status": "active", "intent": "option",
              "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "x"},
              "requester": {"reference": "PractitionerRole/9"}},
     {"MedicationRequest.intent:unknown-code": 1, "MedicationRequest.requester:not-representable": 1},
     {"intent": None, "requester": None}),
    ("stu3", {"resourceType": "MedicationRequest", "status": "active", "intent": "filler-order",
              "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "x"},
              "dosageInstruction": [{"text": "1 tab", "doseAndRate": [{"doseQuantity": {"value": 1}},
                                                                       {"doseQuantity": {"value": 2}}]}]},
     {"MedicationRequest.dosageInstruction.doseAndRate:extra-items": 1},
     {"intent": "order", "dosageInstruction": [{"text": "1 tab", "doseQuantity": {"value": 1}}]}),
    ("dstu2", {"resourceType": "MedicationRequest", "status": "cancelled", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "x"},
               "reasonCode": [{"text": "pain"}], "reasonReference": [{"reference": "Condition/1"}],
               "priorPrescription": {"reference": "MedicationRequest/7"}},
     {"MedicationRequest.status:unknown-code": 1, "MedicationRequest.intent:not-representable": 1,
      "MedicationRequest.reasonReference:extra-items": 1},
     {"status": None, "reasonCodeableConcept": {"text": "pain"}, "reasonReference": None,
      "priorPrescription": {"reference": "MedicationOrder/7"}}),
    ("stu3", {**COVERAGE, "class": [*COVERAGE["class"],
                                    {"type": {"coding": [{"system": THO + "coverage-class", "code": "rxbin"}]},
                                     "value": "610014"},
                                    {"type": {"coding": [{"system": THO + "coverage-class", "code": "sequence"}]},
                                     "value": "2"}]},
     {"Coverage.class:unknown-code": 1}, {"sequence": "2"}),
    ("dstu2", {**COVERAGE, "class": [{"type": {"coding": [{"system": THO + "coverage-class", "code": "rxbin"}]},
                                      "value": "610014"},
                                     {"type": {"coding": [{"system": THO + "coverage-class", "code": "sequence"}]},
                                      "value": "2"}]},
     {"Coverage.status:not-representable": 1, "Coverage.policyHolder:not-representable": 1,
      "Coverage.beneficiary:not-representable": 1, "Coverage.relationship:not-representable": 1,
      "Coverage.type.text:not-representable": 1},
     {"bin": {"value": "610014"}, "sequence": 2}),
    ("stu3", {"resourceType": "Patient", "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/x"],
                                                  "source": "#abc", "versionId": "3"},
              "identifier": [{"use": "old", "value": "1"}],
              "generalPractitioner": [{"reference": "Practitioner/1", "type": "Practitioner", "display": "Dr A"}],
              "address": [{"use": "billing", "city": "Boston"}],
              "extension": [{"url": "http://example.org/x", "valueCanonical": "http://example.org/y"},
                            {"url": "http://example.org/z", "valueUuid": "urn:uuid:1"}]},
     {"Patient.meta.profile:not-representable": 1, "Patient.meta.source:not-representable": 1,
      "Patient.identifier.use:unknown-code": 1, "Patient.generalPractitioner.type:not-representable": 1,
      "Patient.address.use:unknown-code": 1, "Patient.extension.valueUuid:not-representable": 1},
     {"meta": {"versionId": "3"}, "identifier": [{"value": "1"}],
      "generalPractitioner": [{"reference": "Practitioner/1", "display": "Dr A"}],
      "address": [{"city": "Boston"}],
      "extension": [{"url": "http://example.org/x", "valueUri": "http://example.org/y"}]}),
    ("dstu2", {"resourceType": "Patient", "generalPractitioner": [{"reference": "PractitionerRole/1"},
                                                                  {"reference": "Organization/2"}],
               "telecom": [{"system": "url", "value": "https://x"}, {"system": "sms", "value": "555"}],
               "name": [{"family": "Kihn", "_family": {"extension": [{"url": "http://e/x", "valueString": "y"}]}}]},
     {"Patient.generalPractitioner:not-representable": 1, "Patient.telecom.system:unknown-code": 1,
      "Patient.name._family:not-representable": 1},
     {"careProvider": [{"reference": "Organization/2"}], "telecom": [{"system": "other", "value": "https://x"},
                                                                     {"value": "555"}],
      "name": [{"family": ["Kihn"]}]}),
    ("stu3", {"resourceType": "Patient", "birthDate": "1970",
              "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                            "valueDateTime": "1970-01-01T04:00:00Z"}]},
              "name": [{"family": "Kihn", "_family": {"extension": [{"url": "http://e/x", "valueString": "y"}]}}]},
     {}, {"_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                        "valueDateTime": "1970-01-01T04:00:00Z"}]},
          "name": [{"family": "Kihn", "_family": {"extension": [{"url": "http://e/x", "valueString": "y"}]}}]}),
    ("dstu2", {**ALLERGY, "clinicalStatus": {"coding": [{"system": THO + "allergyintolerance-clinical",
                                                         "code": "resolved"}]}},
     {"AllergyIntolerance.verificationStatus:not-representable": 1}, {"status": "resolved"}),
    ("dstu2", {**ALLERGY, "verificationStatus": {"coding": [{"system": THO + "allergyintolerance-verification",
                                                             "code": "refuted"}]}},
     {"AllergyIntolerance.clinicalStatus:not-representable": 1}, {"status": "refuted"}),
    ("dstu2", {**{k: v for k, v in ALLERGY.items() if k != "onsetDateTime"}, "category": ["biologic", "food"],
               "encounter": {"reference": "Encounter/1"}, "onsetAge": {"value": 4, "unit": "a"}},
     {"AllergyIntolerance.category:extra-items": 1, "AllergyIntolerance.encounter:not-representable": 1,
      "AllergyIntolerance.onsetAge:not-representable": 1},
     {"category": "other", "onset": None}),
    ("dstu2", OUTCOME, {"OperationOutcome.issue.expression:not-representable": 1},
     {"issue": [{"severity": "error", "code": "not-found", "diagnostics": "Patient/p9 was deleted"}]}),
]


@pytest.mark.parametrize(("facade", "resource", "drops", "expected"), DROP_CASES)
def test_dropped_counters(facade: str, resource: dict, drops: dict, expected: dict) -> None:
    out, counted = convert(facade, resource)
    assert counted == drops
    for key, value in expected.items():
        assert out.get(key) == value, (key, out.get(key))
    if facade == "stu3" and resource["resourceType"] != "MedicationRequest":
        stu3_model(resource["resourceType"]).model_validate(out)


# --- Bundles, paging and errors ------------------------------------------------------------

def _searchset(entries: list[dict], total: int, links: list[dict] | None = None) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": total,
              "entry": [{"resource": r, "search": {"mode": "match"}} for r in entries]}
    if links is not None:
        bundle["link"] = links
    return bundle


OBSERVATIONS = r4_resources()["Observation"][:3]
VITALS = Interaction("search", "Observation", None, (("patient", "Patient/p1"), ("category", "vital-signs"),
                                                     ("_sort", "-date"), ("_count", "3")))


def test_searchset_keeps_total_and_links_and_converts_entries() -> None:
    links = [{"relation": "self", "url": f"{PROVIDER}/Observation?x=1"},
             {"relation": "next", "url": f"{PROVIDER}?_getpages=abc&_getpagesoffset=3"}]
    body, drops = convert_response("dstu2", VITALS, _searchset(OBSERVATIONS, 20, links), PROVIDER)
    assert body["total"] == 20 and body["link"] == links and drops == {}
    assert [e["resource"]["id"] for e in body["entry"]] == [o["id"] for o in OBSERVATIONS]
    assert all(isinstance(e["resource"]["category"], dict) for e in body["entry"])


def test_paging_links_are_synthesized_on_the_provider_base_when_missing() -> None:
    body, _ = convert_response("stu3", VITALS, _searchset(OBSERVATIONS, 8), PROVIDER)
    links = {link["relation"]: link["url"] for link in body["link"]}
    assert links == {
        "self": f"{PROVIDER}/Observation?patient=Patient/p1&category=vital-signs&_sort=-date&_count=3",
        "next": f"{PROVIDER}/Observation?patient=Patient/p1&category=vital-signs&_sort=-date&_count=3&_offset=3",
    }
    page2 = Interaction("search", "Observation", None, (*VITALS.query, ("_offset", "6")))
    body, _ = convert_response("stu3", page2, _searchset(OBSERVATIONS[:2], 8), PROVIDER)
    links = {link["relation"]: link["url"] for link in body["link"]}
    assert "next" not in links  # 6 + 2 = 8: the last page
    assert links["previous"].endswith("_count=3&_offset=3")


def test_no_synthesized_next_when_everything_is_here_or_it_was_a_post() -> None:
    body, _ = convert_response("stu3", VITALS, _searchset(OBSERVATIONS, 3), PROVIDER)
    assert [link["relation"] for link in body["link"]] == ["self"]
    posted = Interaction("search-post", "Patient", None, (("family:contains", "And"), ("_count", "1")))
    patients = r4_resources()["Patient"][:1]
    body, _ = convert_response("stu3", posted, _searchset(patients, 2), PROVIDER)
    assert "link" not in body  # the search terms (PHI) stay out of URLs


def test_dstu2_bundles_rename_medication_requests() -> None:
    orders = r4_resources()["MedicationRequest"][:2]
    bundle = _searchset(orders, 2)
    for entry in bundle["entry"]:
        entry["fullUrl"] = f"{PROVIDER}/MedicationRequest/{entry['resource']['id']}"
    action = Interaction("search", "MedicationRequest", None, (("patient", "Patient/p1"),))
    body, _ = convert_response("dstu2", action, bundle, PROVIDER)
    assert [e["resource"]["resourceType"] for e in body["entry"]] == ["MedicationOrder"] * 2
    assert [e["fullUrl"] for e in body["entry"]] == [f"{PROVIDER}/MedicationOrder/{o['id']}" for o in orders]


def test_unconvertible_entries_are_left_out_and_counted() -> None:
    claim = {"resourceType": "Claim", "id": "x"}
    body, drops = convert_response("stu3", VITALS, _searchset([*OBSERVATIONS[:1], claim], 2), PROVIDER)
    assert len(body["entry"]) == 1 and drops == {"Bundle.entry.resource.Claim:not-representable": 1}
    with pytest.raises(FhirError) as caught:
        convert_response("stu3", Interaction("read", "Claim", "x"), claim, PROVIDER)
    assert caught.value.status == 502


def test_batch_response_entries_are_converted() -> None:
    batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"response": {"status": "200 OK"}, "resource": _searchset(OBSERVATIONS[:1], 1)},
        {"response": {"status": "404 Not Found", "outcome": OUTCOME}},
        {"response": {"status": "200 OK"}, "resource": r4_resources()["Patient"][0]}]}
    body, _ = convert_response("dstu2", Interaction("page", None), batch, PROVIDER)
    assert body["entry"][0]["resource"]["entry"][0]["resource"]["category"]["coding"][0]["system"] == (
        "http://hl7.org/fhir/observation-category")
    assert "outcome" not in body["entry"][1]["response"]  # DSTU2 responses carry no outcome
    assert body["entry"][2]["resource"]["name"][0]["family"] == ["Anderson"]


def test_unknown_facade_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="r5"):
        translate_request("r5", VITALS)


# --- request translation --------------------------------------------------------------------

def _search(kind: str, *query: tuple[str, str], post: bool = False) -> Interaction:
    return Interaction("search-post" if post else "search", kind, None, tuple(query))


TRANSLATIONS = [
    # STU3 (the STU3 interface article's searches)
    ("stu3", _search("Patient", ("_id", "p1"), post=True), _search("Patient", ("_id", "p1"), post=True)),
    ("stu3", _search("Patient", ("family", "And"), ("given", "ton"), ("birthdate", "1986-01-27"),
                     ("gender", "male"), ("identifier", "88fe"), ("_count", "5"), post=True),
     _search("Patient", ("family:contains", "And"), ("given:contains", "ton"), ("birthdate", "1986-01-27"),
             ("gender", "male"), ("identifier", "88fe"), ("_count", "5"), post=True)),
    ("stu3", _search("Observation", ("patient", "p1"), ("category", "vital-signs"), ("_sort", "-date")),
     _search("Observation", ("patient", "Patient/p1"), ("category", "vital-signs"), ("_sort", "-date"))),
    ("stu3", _search("Condition", ("patient", "p1"), ("_count", "10")),
     _search("Condition", ("patient", "Patient/p1"), ("_count", "10"))),
    ("stu3", _search("Encounter", ("patient", "p1"), ("_sort", "-date"), ("_count", "1")),
     _search("Encounter", ("patient", "Patient/p1"), ("_sort", "-date"), ("_count", "1"))),
    ("stu3", _search("AllergyIntolerance", ("patient", "p1")),
     _search("AllergyIntolerance", ("patient", "Patient/p1"))),
    ("stu3", _search("MedicationRequest", ("patient", "p1"), ("_count", "10")),
     _search("MedicationRequest", ("patient", "Patient/p1"), ("_count", "10"))),
    ("stu3", _search("Coverage", ("patient", "p1")), _search("Coverage", ("patient", "Patient/p1"))),
    ("stu3", Interaction("read", "Patient", "p1"), Interaction("read", "Patient", "p1")),
    # DSTU2 (the DSTU2 interface article's searches)
    ("dstu2", _search("Patient", ("id", "p1"), post=True), _search("Patient", ("_id", "p1"), post=True)),
    ("dstu2", _search("Patient", ("family:contains", "And"), ("name", "Antony"), ("given", "ton"),
                      ("birthdate", "1986-01-27"), ("identifier", "88fe"), ("_count", "5"), post=True),
     _search("Patient", ("family:contains", "And"), ("name", "Antony"), ("given:contains", "ton"),
             ("birthdate", "1986-01-27"), ("identifier", "88fe"), ("_count", "5"), post=True)),
    ("dstu2", _search("Observation", ("patient", "p1"), ("category", "vital-signs"), ("_sort:desc", "date")),
     _search("Observation", ("patient", "Patient/p1"), ("category", "vital-signs"), ("_sort", "-date"))),
    ("dstu2", _search("Encounter", ("patient", "p1"), ("_sort:desc", "date"), ("_count", "1")),
     _search("Encounter", ("patient", "Patient/p1"), ("_sort", "-date"), ("_count", "1"))),
    ("dstu2", _search("Encounter", ("_sort:asc", "date"), ("patient", "p1"), ("_sort:desc", "type")),
     _search("Encounter", ("_sort", "date,-type"), ("patient", "Patient/p1"))),
    ("dstu2", _search("MedicationOrder", ("patient", "p1"), ("_count", "10")),
     _search("MedicationRequest", ("patient", "Patient/p1"), ("_count", "10"))),
    ("dstu2", Interaction("read", "MedicationOrder", "m1"), Interaction("read", "MedicationRequest", "m1")),
    ("dstu2", _search("Coverage", ("patient", "p1")), _search("Coverage", ("patient", "Patient/p1"))),
    # values: status tables, code systems, typed references, paging links the bridge wrote
    ("dstu2", _search("Observation", ("patient", "p1"), ("status", "amended")),
     _search("Observation", ("patient", "Patient/p1"), ("status", "amended,corrected"))),
    ("dstu2", _search("Condition", ("patient", "p1"), ("clinicalstatus", "relapse,active")),
     _search("Condition", ("patient", "Patient/p1"), ("clinical-status", "recurrence,relapse,active"))),
    ("dstu2", _search("Condition", ("category", "diagnosis")),
     _search("Condition", ("category", "encounter-diagnosis"))),
    ("dstu2", _search("Encounter", ("class", "inpatient")), _search("Encounter", ("class", "IMP"))),
    ("stu3", _search("Observation", ("category", "http://hl7.org/fhir/observation-category|vital-signs")),
     _search("Observation", ("category", THO + "observation-category|vital-signs"))),
    ("stu3", _search("Encounter", ("class", "http://hl7.org/fhir/v3/ActCode|AMB")),
     _search("Encounter", ("class", THO + "v3-ActCode|AMB"))),
    ("stu3", _search("MedicationRequest", ("intent", "order")),
     _search("MedicationRequest", ("intent", "order,original-order,reflex-order,filler-order"))),
    ("stu3", _search("Observation", ("subject:Patient", "p1"), ("code:text", "Body Height"), ("date", "ge2019")),
     _search("Observation", ("subject", "Patient/p1"), ("code:text", "Body Height"), ("date", "ge2019"))),
    ("dstu2", _search("MedicationRequest", ("patient", "Patient/p1"), ("_count", "2"), ("_offset", "2")),
     _search("MedicationRequest", ("patient", "Patient/p1"), ("_count", "2"), ("_offset", "2"))),
    ("dstu2", _search("Observation", ("patient", "Patient/p1"), ("_sort", "-date"), ("_format", "json")),
     _search("Observation", ("patient", "Patient/p1"), ("_sort", "-date"), ("_format", "json"))),
    ("stu3", _search("Patient", ("family:exact", "Kihn"), ("given:missing", "false")),
     _search("Patient", ("family:exact", "Kihn"), ("given:missing", "false"))),
    ("stu3", Interaction("page", None, None, (("_getpages", "abc"), ("_getpagesoffset", "10"))),
     Interaction("page", None, None, (("_getpages", "abc"), ("_getpagesoffset", "10")))),
]


@pytest.mark.parametrize(("facade", "given_action", "expected"), TRANSLATIONS)
def test_request_translation(facade: str, given_action: Interaction, expected: Interaction) -> None:
    assert translate_request(facade, given_action) == expected


REFUSED = [
    ("stu3", _search("Immunization", ("patient", "p1")), "not-supported", "Immunization"),
    ("dstu2", _search("MedicationStatement"), "not-supported", "MedicationStatement"),
    ("stu3", _search("MedicationOrder"), "not-supported", "MedicationOrder"),
    ("stu3", _search("Patient", ("foo", "bar")), "not-supported", "'foo'"),
    ("stu3", _search("Patient", ("family:phonetic", "x")), "not-supported", ":phonetic"),
    ("stu3", _search("Observation", ("patient", "https://other.example/fhir/Patient/1")), "not-supported",
     "absolute"),
    ("stu3", _search("Observation", ("subject", "p1")), "invalid", "typed"),
    ("stu3", _search("Observation", ("_sort", "foo")), "not-supported", "'foo'"),
    ("stu3", _search("Observation", ("_sort:desc", "-date")), "not-supported", "'-date'"),
    ("dstu2", _search("AllergyIntolerance", ("status", "active")), "not-supported", "'status'"),
    ("stu3", _search("Condition", ("clinical-status", "bogus")), "invalid", "bogus"),
    ("dstu2", _search("Encounter", ("status", "triaged")), "invalid", "triaged"),
    ("stu3", _search("Patient", ("_count", "ten")), "invalid", "_count"),
    ("stu3", _search("Patient", ("_count:max", "5")), "not-supported", "_count:max"),
    ("stu3", _search("Patient", ("_include", "Patient:organization")), "not-supported", "_include"),
    ("stu3", _search("Patient", ("_format", "xml")), "not-supported", "JSON"),
    ("stu3", Interaction("read", "Patient", "p1", (("_summary", "true"),)), "not-supported", "_summary"),
]


@pytest.mark.parametrize(("facade", "action", "code", "words"), REFUSED)
def test_unsupported_requests_are_clear_400s(facade: str, action: Interaction, code: str, words: str) -> None:
    with pytest.raises(FhirError) as caught:
        translate_request(facade, action)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert words in caught.value.diagnostics


# --- round trips (hypothesis) ------------------------------------------------------------

def _status_resource(kind: str, element: str, code: str) -> dict:
    """A minimal R4 resource holding one status code (as a CodeableConcept where R4 has one)."""
    concept_systems = {("Condition", "clinicalStatus"): "condition-clinical",
                       ("AllergyIntolerance", "clinicalStatus"): "allergyintolerance-clinical",
                       ("AllergyIntolerance", "verificationStatus"): "allergyintolerance-verification"}
    if (kind, element) in concept_systems:
        value: Any = {"coding": [{"system": THO + concept_systems[kind, element], "code": code}]}
    elif (kind, element) == ("Encounter", "class"):
        value = {"system": THO + "v3-ActCode", "code": code}
    else:
        value = code
    return {"resourceType": kind, element: value}


# (facade, facade type, search parameter, R4 type, element, its CodeMap)
STATUS_SEARCHES = [
    ("stu3", "Observation", "status", "Observation", "status", OBSERVATION_STATUS["stu3"]),
    ("dstu2", "Observation", "status", "Observation", "status", OBSERVATION_STATUS["dstu2"]),
    ("stu3", "Condition", "clinical-status", "Condition", "clinicalStatus", CONDITION_CLINICAL["stu3"]),
    ("dstu2", "Condition", "clinicalstatus", "Condition", "clinicalStatus", CONDITION_CLINICAL["dstu2"]),
    ("stu3", "Encounter", "status", "Encounter", "status", ENCOUNTER_STATUS["stu3"]),
    ("dstu2", "Encounter", "status", "Encounter", "status", ENCOUNTER_STATUS["dstu2"]),
    ("dstu2", "Encounter", "class", "Encounter", "class", DSTU2_CLASS),
    ("stu3", "MedicationRequest", "status", "MedicationRequest", "status", MEDICATION_STATUS["stu3"]),
    ("dstu2", "MedicationOrder", "status", "MedicationRequest", "status", MEDICATION_STATUS["dstu2"]),
    ("stu3", "MedicationRequest", "intent", "MedicationRequest", "intent", INTENT),
    ("stu3", "AllergyIntolerance", "clinical-status", "AllergyIntolerance", "clinicalStatus", ALLERGY_CLINICAL),
    ("stu3", "AllergyIntolerance", "verification-status", "AllergyIntolerance", "verificationStatus",
     ALLERGY_VERIFICATION),
]
FACADE_CODES = [(row, code) for row in STATUS_SEARCHES for code in sorted(set(row[5].forward.values()))]
R4_CODES = [(row, code) for row in STATUS_SEARCHES for code in sorted(row[5].forward)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FACADE_CODES))
def test_status_search_round_trip(case: tuple) -> None:
    """Every R4 code a facade status search asks for converts back to that facade code."""
    (facade, kind, param, r4_kind, element, _), code = case
    r4 = translate_request(facade, _search(kind, (param, code)))
    assert r4.resource_type == r4_kind
    for r4_code in r4.query[0][1].split(","):
        out, drops = convert(facade, _status_resource(r4_kind, element, r4_code))
        assert out[element] == code and not drops


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(R4_CODES))
def test_status_conversion_round_trip(case: tuple) -> None:
    """Searching for the facade code an R4 code converts to finds that R4 code again."""
    (facade, kind, param, r4_kind, element, _), r4_code = case
    out, _ = convert(facade, _status_resource(r4_kind, element, r4_code))
    r4 = translate_request(facade, _search(kind, (param, out[element])))
    assert r4_code in r4.query[0][1].split(",")


_V2_TABLE = st.from_regex(r"^[0-9]{4}$", fullmatch=True)
_V3_NAME = st.from_regex(r"^[A-Z][A-Za-z]{2,20}$", fullmatch=True)
_CODE = st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9\-]{0,10}$", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["stu3", "dstu2"]), st.one_of(_V2_TABLE.map(lambda t: f"v2-{t}"),
                                                      _V3_NAME.map(lambda n: f"v3-{n}")), _CODE)
def test_code_system_round_trip(facade: str, table: str, code: str) -> None:
    """R4 → facade (response) → R4 (a search for it) gives the R4 system and code back."""
    coding = {"system": THO + table, "code": code}
    out, _ = convert(facade, {"resourceType": "Encounter", "status": "finished", "type": [{"coding": [coding]}]})
    older = out["type"][0]["coding"][0]
    assert older["system"].startswith("http://hl7.org/fhir/v")
    r4 = translate_request(facade, _search("Encounter", ("type", f"{older['system']}|{older['code']}")))
    assert r4.query == (("type", f"{THO}{table}|{code}"),)


@pytest.mark.parametrize("facade", ["stu3", "dstu2"])
def test_fhir_defined_code_systems_round_trip(facade: str) -> None:
    for name, mapped in SYSTEMS[facade].items():
        for r4_code, older_code in mapped.codes.items():
            out, _ = convert(facade, {"resourceType": "Organization", "type": [
                {"coding": [{"system": THO + name, "code": r4_code}]}]})
            concept = out["type"] if facade == "dstu2" else out["type"][0]
            assert concept["coding"][0] == {"system": mapped.uri, "code": older_code}
            r4 = translate_request(facade, _search("Organization", ("type", f"{mapped.uri}|{older_code}")))
            assert r4.query == (("type", f"{THO}{name}|{r4_code}"),)


# FHIR strings: letters, digits and plain spaces, never only spaces.
_TEXT = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N"), include_characters=" "),
                min_size=1, max_size=12).filter(str.strip)
NAMES = st.fixed_dictionaries(
    {},
    optional={"use": st.sampled_from(["usual", "official", "temp", "nickname", "anonymous", "old", "maiden"]),
              "text": _TEXT, "family": _TEXT, "given": st.lists(_TEXT, min_size=1, max_size=3),
              "prefix": st.lists(_TEXT, min_size=1, max_size=2), "suffix": st.lists(_TEXT, min_size=1, max_size=2),
              "period": st.fixed_dictionaries({"start": st.just("2001-02-03")})}).filter(bool)
IDENTIFIERS = st.fixed_dictionaries(
    {"value": _TEXT},
    optional={"use": st.sampled_from(["usual", "official", "temp", "secondary", "old"]),
              "system": st.sampled_from(["http://hospital.smarthealthit.org", "urn:oid:2.16.840.1.113883.4.3.25"]),
              "type": st.fixed_dictionaries({"coding": st.lists(st.fixed_dictionaries(
                  {"system": st.just(THO + "v2-0203"), "code": st.sampled_from(["MR", "SS", "DL", "PPN"])}),
                  min_size=1, max_size=1)})})


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=3), st.lists(IDENTIFIERS, min_size=1, max_size=3))
def test_name_and_identifier_shapes(names: list[dict], identifiers: list[dict]) -> None:
    """STU3 names are R4's; DSTU2 families are one-item lists; identifiers keep all but an `old` use."""
    patient = {"resourceType": "Patient", "name": names, "identifier": identifiers}
    stu3, drops = convert("stu3", patient)
    stu3_model("Patient").model_validate(stu3)
    assert stu3["name"] == names
    olds = sum(1 for i in identifiers if i.get("use") == "old")
    assert drops == ({"Patient.identifier.use:unknown-code": olds} if olds else {})
    dstu2, _ = convert("dstu2", patient)
    for r4_name, older in zip(names, dstu2["name"], strict=True):
        assert older == {**r4_name, **({"family": [r4_name["family"]]} if "family" in r4_name else {})}
    for r4_id, older in zip(identifiers, dstu2["identifier"], strict=True):
        expected = {k: v for k, v in r4_id.items() if not (k == "use" and v == "old")}
        if "type" in expected:
            expected["type"] = {"coding": [{**expected["type"]["coding"][0], "system": OLD_MRN}]}
        assert older == expected
