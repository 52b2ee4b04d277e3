"""The R4 facade over STU3/DSTU2 providers (`shared.bridge.up`): response up-conversion and request translation.

Resources come from the real STU3 and DSTU2 sample data (`../shared/data/stu3-smart`,
`../shared/data/dstu2-synthea`); the types it lacks (Coverage, Location, OperationOutcome) are
hand-written below. Every R4 result is validated with the independent `fhir.resources.R4B`
models. Down+up round trips run on the R4 sample data and on generated resources.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bridge import convert_response
from shared.bridge.terminology import THO
from shared.bridge.up import convert_response_up, translate_request_up
from shared.errors import FhirError
from shared.policy import Interaction
from tests.test_bridge_convert import ALLERGY, COVERAGE, LOCATION, OUTCOME

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = {"stu3": DATA / "stu3-smart", "dstu2": DATA / "dstu2-synthea"}
PROVIDER = "http://provider.example/fhir"
IN_SCOPE = {"Patient", "Observation", "Condition", "Encounter", "AllergyIntolerance", "MedicationRequest",
            "MedicationOrder", "Coverage", "Location", "Practitioner", "Organization", "OperationOutcome"}
# Drops the sample data causes, each for a reason that is the provider data's, not the bridge's.
EXPECTED_SAMPLE_DROPS = {
    "stu3": {"Observation.extension.valueString:not-representable"},  # lists where STU3 allows one string
    "dstu2": {"AllergyIntolerance.criticality:unknown-code"},  # Synthea writes low/high, DSTU2 says CRITL/CRITH
}


def validate_r4(resource: dict) -> Any:
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def up(provider: str, body: dict) -> tuple[dict, dict[str, int]]:
    return convert_response_up(provider, copy.deepcopy(body), PROVIDER)


@cache
def sample_bundles(provider: str) -> tuple[dict, ...]:
    return tuple(json.loads(path.read_text()) for path in sorted(SAMPLES[provider].glob("*.json")))


# --- every sample resource, validated as R4 --------------------------------------------------------

@pytest.mark.parametrize("provider", ["stu3", "dstu2"])
def test_every_sample_resource_in_scope_converts_to_valid_r4(provider):
    drops: Counter[str] = Counter()
    converted: Counter[str] = Counter()
    for bundle in sample_bundles(provider):
        out, dropped = up(provider, bundle)
        drops.update(dropped)
        for entry in out.get("entry", []):
            validate_r4(entry["resource"])
            converted[entry["resource"]["resourceType"]] += 1
    expected = Counter(e["resource"]["resourceType"] for b in sample_bundles(provider) for e in b["entry"]
                       if e["resource"]["resourceType"] in IN_SCOPE)
    renamed = {("MedicationRequest" if kind == "MedicationOrder" else kind): n for kind, n in expected.items()}
    assert converted == Counter(renamed)
    kept = {k for k in drops if not k.startswith("Bundle.entry.resource.")}
    assert kept == EXPECTED_SAMPLE_DROPS[provider], kept


@pytest.mark.parametrize("provider", ["stu3", "dstu2"])
def test_types_outside_the_patients_app_set_are_left_out_and_counted(provider):
    bundle = sample_bundles(provider)[-1]
    out, drops = up(provider, bundle)
    outside = Counter(e["resource"]["resourceType"] for e in bundle["entry"]
                      if e["resource"]["resourceType"] not in IN_SCOPE)
    counted = {f"Bundle.entry.resource.{kind}:not-representable": n for kind, n in outside.items()}
    assert counted.items() <= drops.items()
    assert len(out.get("entry", [])) == len(bundle["entry"]) - sum(outside.values())


def first_of(provider: str, kind: str, having: str | None = None) -> dict:
    return next(e["resource"] for b in sample_bundles(provider) for e in b["entry"]
                if e["resource"]["resourceType"] == kind and (having is None or having in e["resource"]))


def test_dstu2_medication_order_becomes_an_r4_medication_request_order():
    order = first_of("dstu2", "MedicationOrder", "dosageInstruction")
    out, _ = up("dstu2", order)
    assert out["resourceType"] == "MedicationRequest" and out["intent"] == "order"
    assert out["authoredOn"] == order["dateWritten"] and out["subject"] == order["patient"]
    assert out["status"] == order["status"]
    validate_r4(out)


def test_dstu2_medication_order_dosage_and_prescriber_take_r4_shapes():
    order = {"resourceType": "MedicationOrder", "id": "m1", "status": "active", "dateWritten": "2020-01-02",
             "dateEnded": "2020-02-01", "patient": {"reference": "Patient/p1"},
             "prescriber": {"reference": "Practitioner/d1", "display": "Dr. One"},
             "medicationCodeableConcept": {"text": "aspirin"}, "note": "with food",
             "reasonCodeableConcept": {"text": "pain"},
             "dosageInstruction": [{"text": "1 tab", "siteCodeableConcept": {"text": "mouth"},
                                    "doseQuantity": {"value": 1, "unit": "tab"},
                                    "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnits": "h"}}}]}
    out, drops = up("dstu2", order)
    assert out["requester"] == {"reference": "Practitioner/d1", "display": "Dr. One"}
    assert out["note"] == [{"text": "with food"}] and out["reasonCode"] == [{"text": "pain"}]
    dose = out["dosageInstruction"][0]
    assert dose["doseAndRate"] == [{"doseQuantity": {"value": 1, "unit": "tab"}}] and dose["site"] == {"text": "mouth"}
    assert dose["timing"]["repeat"] == {"frequency": 1, "period": 4, "periodUnit": "h"}
    assert drops == {"MedicationOrder.dateEnded:not-representable": 1}
    validate_r4(out)


def test_stu3_medication_request_requester_agent_and_context_move():
    request = first_of("stu3", "MedicationRequest", "dosageInstruction")
    request = {**request, "requester": {"agent": {"reference": "Practitioner/d1"},
                                        "onBehalfOf": {"reference": "Organization/o1"}},
               "context": {"reference": "Encounter/e1"}}
    out, drops = up("stu3", request)
    assert out["requester"] == {"reference": "Practitioner/d1"} and out["encounter"] == {"reference": "Encounter/e1"}
    assert drops == {"MedicationRequest.requester.onBehalfOf:not-representable": 1}
    assert all("doseAndRate" in d or "doseQuantity" not in d for d in out["dosageInstruction"])
    validate_r4(out)


@pytest.mark.parametrize(("provider", "status", "clinical", "verification"), [
    ("stu3", "active", "active", "confirmed"),
    ("dstu2", "active", "active", "confirmed"),
])
def test_condition_status_codes_become_r4_codeable_concepts(provider, status, clinical, verification):
    out, _ = up(provider, first_of(provider, "Condition"))
    assert out["clinicalStatus"] == {"coding": [{"system": THO + "condition-clinical", "code": clinical}]}
    assert out["verificationStatus"] == {"coding": [{"system": THO + "condition-ver-status", "code": verification}]}
    assert "subject" in out


def test_dstu2_condition_relapse_is_r4_recurrence_and_unknown_is_dropped():
    condition = {"resourceType": "Condition", "patient": {"reference": "Patient/p1"}, "code": {"text": "x"},
                 "clinicalStatus": "relapse", "verificationStatus": "unknown", "dateRecorded": "2020-01-01",
                 "category": {"coding": [{"system": "http://hl7.org/fhir/condition-category", "code": "diagnosis"}]},
                 "abatementBoolean": True}
    out, drops = up("dstu2", condition)
    assert out["clinicalStatus"]["coding"][0]["code"] == "recurrence"
    assert "verificationStatus" not in out and out["recordedDate"] == "2020-01-01"
    assert out["category"] == [{"coding": [{"system": THO + "condition-category", "code": "encounter-diagnosis"}]}]
    assert drops == {"Condition.verificationStatus:unknown-code": 1,
                     "Condition.abatementBoolean:not-representable": 1}
    validate_r4(out)


@pytest.mark.parametrize(("dstu2_class", "act_code"), [("outpatient", "AMB"), ("ambulatory", "AMB"),
                                                      ("emergency", "EMER"), ("inpatient", "IMP")])
def test_dstu2_encounter_class_becomes_a_v3_act_code(dstu2_class, act_code):
    encounter = {**first_of("dstu2", "Encounter"), "class": dstu2_class}
    out, _ = up("dstu2", encounter)
    assert out["class"] == {"system": THO + "v3-ActCode", "code": act_code}
    assert out["subject"] == encounter["patient"]
    validate_r4(out)


DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def test_dstu2_encounter_class_other_has_no_r4_code_so_it_is_stated_unsupported_and_counted():
    out, drops = up("dstu2", {**first_of("dstu2", "Encounter"), "class": "other"})
    assert out["class"] == {"extension": [{"url": DAR, "valueCode": "unsupported"}]}
    assert drops == {"Encounter.class:unknown-code": 1}
    validate_r4(out)


def test_dstu2_encounter_without_class_states_r4s_required_class_unknown():
    encounter = {k: v for k, v in first_of("dstu2", "Encounter").items() if k != "class"}
    out, _ = up("dstu2", encounter)
    assert out["class"] == {"extension": [{"url": DAR, "valueCode": "unknown"}]}
    validate_r4(out)


@pytest.mark.parametrize(("status", "clinical", "verification"), [
    ("active", "active", None), ("confirmed", "active", "confirmed"), ("unconfirmed", "active", "unconfirmed"),
    ("resolved", "resolved", None), ("refuted", None, "refuted"), ("entered-in-error", None, "entered-in-error"),
])
def test_dstu2_allergy_status_splits_into_r4_clinical_and_verification(status, clinical, verification):
    allergy = {**first_of("dstu2", "AllergyIntolerance"), "status": status, "criticality": "CRITH",
               "category": "other"}
    out, drops = up("dstu2", allergy)
    assert out.get("clinicalStatus", {}).get("coding", [{}])[0].get("code") == clinical
    assert out.get("verificationStatus", {}).get("coding", [{}])[0].get("code") == verification
    assert out["criticality"] == "high" and out["code"] == allergy["substance"] and "category" not in out
    assert drops == {"AllergyIntolerance.category:unknown-code": 1}  # DSTU2 `other` is broader than R4 `biologic`
    validate_r4(out)


def test_stu3_observation_context_related_and_comment_move():
    observation = {**first_of("stu3", "Observation", "context"), "comment": "checked twice",
                   "related": [{"type": "has-member", "target": {"reference": "Observation/o2"}},
                               {"type": "sequel-to", "target": {"reference": "Observation/o3"}}]}
    out, drops = up("stu3", observation)
    assert out["encounter"] == observation["context"] and out["note"] == [{"text": "checked twice"}]
    assert out["hasMember"] == [{"reference": "Observation/o2"}]
    assert out["category"][0]["coding"][0]["system"] == THO + "observation-category"
    assert drops == {"Observation.related:not-representable": 1}
    validate_r4(out)


def test_dstu2_patient_family_parts_join_and_care_provider_is_general_practitioner():
    patient = {**first_of("dstu2", "Patient"), "careProvider": [{"reference": "Organization/o1"}],
               "link": [{"other": {"reference": "Patient/p2"}, "type": "replace"}]}
    patient["name"] = [{"family": ["van", "Beethoven"], "given": ["Ludwig"]}]
    out, _ = up("dstu2", patient)
    assert out["name"] == [{"family": "van Beethoven", "given": ["Ludwig"]}]
    assert out["generalPractitioner"] == [{"reference": "Organization/o1"}]
    assert out["link"][0]["type"] == "replaced-by"
    validate_r4(out)


def test_stu3_patient_mrn_type_gets_the_r4_system():
    out, _ = up("stu3", first_of("stu3", "Patient"))
    assert out["identifier"][0]["type"]["coding"][0]["system"] == THO + "v2-0203"


def test_a_renamed_code_system_loses_its_older_release_version_and_counts_it():
    observation = copy.deepcopy(first_of("stu3", "Observation"))
    observation["category"][0]["coding"][0]["version"] = "3.0.1"
    out, drops = up("stu3", observation)
    assert "version" not in out["category"][0]["coding"][0]
    assert drops == {"Observation.category.coding.version:not-representable": 1}


# --- hand-written STU3/DSTU2 resources for the types the sample data lacks ----------------------

STU3_COVERAGE = {
    "resourceType": "Coverage", "id": "c1", "status": "active", "subscriberId": "EXM1",
    "type": {"coding": [{"system": "http://hl7.org/fhir/v3/ActCode", "code": "PPO"}]},
    "beneficiary": {"reference": "Patient/p1"}, "subscriber": {"reference": "Patient/p1"},
    "relationship": {"coding": [{"system": "http://hl7.org/fhir/policyholder-relationship", "code": "self"}]},
    "payor": [{"reference": "Organization/pay1", "display": "Example Mutual"}], "period": {"start": "2010-01-01"},
    "grouping": {"group": "GRP-1", "groupDisplay": "Group one", "plan": "PPO-SILVER", "subPlanDisplay": "orphan"},
    "sequence": "1",
}
DSTU2_COVERAGE = {
    "resourceType": "Coverage", "id": "c2", "issuer": {"reference": "Organization/pay1"},
    "bin": {"value": "610014"}, "period": {"start": "2010-01-01"},
    "type": {"system": "http://hl7.org/fhir/v3/ActCode", "code": "PPO"},
    "subscriberId": {"system": "https://payer.example/member", "value": "EXM2"},
    "group": "GRP-2", "plan": "GOLD", "dependent": 1, "sequence": 2, "subscriber": {"reference": "Patient/p1"},
}
LOCATIONS = {
    "stu3": {"resourceType": "Location", "id": "l1", "status": "active", "name": "Clinic", "alias": ["GIM"],
             "type": {"coding": [{"system": "http://hl7.org/fhir/v3/RoleCode", "code": "GIM"}]}, "mode": "instance"},
    "dstu2": {"resourceType": "Location", "id": "l1", "status": "active", "name": "Clinic",
              "type": {"coding": [{"system": "http://hl7.org/fhir/v3/RoleCode", "code": "GIM"}]}},
}


def class_items(coverage: dict) -> dict[str, tuple[str, str | None]]:
    return {c["type"]["coding"][0]["code"]: (c["value"], c.get("name")) for c in coverage["class"]}


def test_stu3_coverage_grouping_becomes_r4_class_items():
    out, drops = up("stu3", STU3_COVERAGE)
    assert class_items(out) == {"group": ("GRP-1", "Group one"), "plan": ("PPO-SILVER", None), "sequence": ("1", None)}
    assert out["type"]["coding"][0]["system"] == THO + "v3-ActCode"
    assert out["relationship"]["coding"][0]["system"] == THO + "subscriber-relationship"
    assert drops == {"Coverage.grouping.subPlanDisplay:not-representable": 1}
    validate_r4(out)


def test_dstu2_coverage_slots_become_class_items_and_issuer_the_payor():
    out, drops = up("dstu2", DSTU2_COVERAGE)
    assert class_items(out) == {"group": ("GRP-2", None), "plan": ("GOLD", None), "rxbin": ("610014", None),
                                "sequence": ("2", None)}
    assert out["payor"] == [{"reference": "Organization/pay1"}] and out["subscriberId"] == "EXM2"
    assert out["type"] == {"coding": [{"system": THO + "v3-ActCode", "code": "PPO"}]} and out["dependent"] == "1"
    assert drops == {"Coverage.subscriberId.system:not-representable": 1}
    # R4 requires a status, which DSTU2 Coverage does not have: stated absent, never invented.
    assert "status" not in out and out["_status"] == {"extension": [{"url": DAR, "valueCode": "unknown"}]}
    # A dependent's coverage names no beneficiary in DSTU2; without `dependent` it covers the subscriber.
    assert "beneficiary" not in out


def test_dstu2_coverage_without_a_dependent_covers_its_subscriber():
    coverage = {k: v for k, v in DSTU2_COVERAGE.items() if k != "dependent"}
    out, _ = up("dstu2", coverage)
    assert out["beneficiary"] == out["subscriber"] == {"reference": "Patient/p1"}
    validate_r4(out)


@pytest.mark.parametrize("provider", ["stu3", "dstu2"])
def test_location_type_becomes_a_list(provider):
    out, _ = up(provider, LOCATIONS[provider])
    assert out["type"] == [{"coding": [{"system": THO + "v3-RoleCode", "code": "GIM"}]}]
    validate_r4(out)


@pytest.mark.parametrize("provider", ["stu3", "dstu2"])
def test_practitioner_and_organization_become_valid_r4(provider):
    kind = "Practitioner" if provider == "stu3" else "Organization"
    validate_r4(up(provider, first_of(provider, kind))[0])
    practitioner = {"resourceType": "Practitioner", "id": "d1", "name": {"family": ["Who"], "given": ["Doctor"]},
                    "practitionerRole": [{"role": {"text": "doctor"}}]}
    if provider == "dstu2":
        out, drops = up(provider, practitioner)
        assert out["name"] == [{"family": "Who", "given": ["Doctor"]}]
        assert drops == {"Practitioner.practitionerRole:not-representable": 1}
        validate_r4(out)


@pytest.mark.parametrize("provider", ["stu3", "dstu2"])
def test_operation_outcome_passes_with_its_issues(provider):
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Patient/x is not known"}]}
    out, drops = up(provider, outcome)
    assert out == outcome and drops == {}
    validate_r4(out)


# --- Bundles: searchsets and batch-responses ----------------------------------------------------------

def searchset(provider: str, kind: str, query: str) -> dict:
    resources = [e["resource"] for b in sample_bundles(provider) for e in b["entry"]
                 if e["resource"]["resourceType"] == kind][:3]
    return {"resourceType": "Bundle", "type": "searchset", "total": 42,
            "link": [{"relation": "self", "url": f"{PROVIDER}/{kind}?{query}"},
                     {"relation": "next", "url": f"{PROVIDER}/{kind}?{query}&_offset=3"}],
            "entry": [{"fullUrl": f"{PROVIDER}/{kind}/{r.get('id', i)}", "resource": r, "search": {"mode": "match"}}
                      for i, r in enumerate(resources)]}


def test_searchset_keeps_total_and_rewrites_links_to_the_r4_query():
    bundle = searchset("dstu2", "MedicationOrder", "patient=p1&_sort%3Adesc=datewritten&_count=3")
    out, drops = up("dstu2", bundle)
    assert out["total"] == 42 and drops == {}
    links = {link["relation"]: link["url"] for link in out["link"]}
    assert links["next"] == f"{PROVIDER}/MedicationRequest?patient=Patient/p1&_sort=-authoredon&_count=3&_offset=3"
    assert all(e["fullUrl"].startswith(f"{PROVIDER}/MedicationRequest/") for e in out["entry"])
    validate_r4(out)


def test_following_a_rewritten_link_sends_the_provider_its_own_query_again():
    bundle = searchset("dstu2", "Observation", "patient=p1&category=vital-signs&_sort%3Adesc=date&_count=3")
    out, _ = up("dstu2", bundle)
    next_url = next(link["url"] for link in out["link"] if link["relation"] == "next")
    parts = urlsplit(next_url)
    followed = Interaction("search", parts.path.rsplit("/", 1)[1], None, tuple(parse_qsl(parts.query)))
    sent = translate_request_up("dstu2", followed)
    assert sent.resource_type == "Observation"
    assert sent.query == (("patient", "Patient/p1"), ("category", "vital-signs"), ("_sort:desc", "date"),
                          ("_count", "3"), ("_offset", "3"))


def test_links_the_r4_facade_could_not_send_back_are_dropped_and_counted():
    bundle = searchset("stu3", "Observation", "patient=p1&_summary=count")
    out, drops = up("stu3", bundle)
    assert "link" not in out
    assert drops == {"Bundle.link.self:not-representable": 1, "Bundle.link.next:not-representable": 1}


def test_opaque_paging_links_pass_unchanged():
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0,
              "link": [{"relation": "next", "url": f"{PROVIDER}?_getpages=abc&_getpagesoffset=20"}]}
    assert up("stu3", bundle)[0]["link"] == bundle["link"]


def test_batch_response_converts_each_entry_including_nested_searchsets_and_outcomes():
    nested = searchset("dstu2", "Condition", "patient=p1")
    batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": first_of("dstu2", "Patient"), "response": {"status": "200 OK"}},
        {"resource": nested, "response": {"status": "200 OK"}},
        {"response": {"status": "404 Not Found", "outcome": {
            "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}}},
    ]}
    out, drops = up("dstu2", batch)
    assert [e["response"]["status"] for e in out["entry"]] == ["200 OK", "200 OK", "404 Not Found"]
    assert out["entry"][1]["resource"]["link"][1]["url"].endswith("Condition?patient=Patient/p1&_offset=3")
    assert out["entry"][2]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert drops == {}
    validate_r4(out)


def test_an_answer_of_a_type_the_facade_lacks_is_a_502():
    with pytest.raises(FhirError) as info:
        up("stu3", {"resourceType": "Immunization", "status": "completed"})
    assert info.value.status == 502


def test_unknown_provider_versions_are_a_programming_error():
    with pytest.raises(ValueError, match="no R4 facade"):
        convert_response_up("r5", {}, PROVIDER)


# --- round trips: R4 → STU3/DSTU2 (today's bridge) → R4 --------------------------------------------

R4_DATA = DATA / "r4-synthea"
ROUND_TRIP_TYPES = ("Patient", "Observation", "Condition", "Encounter", "MedicationRequest", "Practitioner",
                    "Organization")


@cache
def r4_samples() -> tuple[dict, ...]:
    found = [e["resource"] for path in sorted(R4_DATA.glob("*.json"))[:3] for e in json.loads(path.read_text())["entry"]
             if e["resource"]["resourceType"] in ROUND_TRIP_TYPES]
    return (*found, ALLERGY, COVERAGE, LOCATION, OUTCOME)


def down(facade: str, resource: dict) -> dict:
    action = Interaction("read", resource["resourceType"], resource.get("id"))
    return convert_response(facade, action, copy.deepcopy(resource), PROVIDER)[0]


def round_trip(facade: str, resource: dict) -> dict:
    return up(facade, down(facade, resource))[0]


@pytest.mark.parametrize("facade", ["stu3", "dstu2"])
def test_down_and_up_reaches_a_fixed_point_after_one_trip(facade):
    """What survives one trip survives every further trip: the two bridges agree on every mapping."""
    for resource in r4_samples():
        once = round_trip(facade, resource)
        assert round_trip(facade, once) == once, resource.get("id")


@pytest.mark.parametrize("facade", ["stu3", "dstu2"])
def test_round_trip_keeps_what_the_patients_app_reads(facade):
    kept = {"Patient": ("gender", "birthDate"), "Observation": ("status", "code", "valueQuantity", "subject"),
            "Condition": ("clinicalStatus", "code", "subject"), "Encounter": ("status", "class", "period"),
            "MedicationRequest": ("status", "medicationCodeableConcept", "subject", "authoredOn")}
    for resource in r4_samples():
        back = round_trip(facade, resource)
        for name in kept.get(resource["resourceType"], ()):
            assert back.get(name) == resource.get(name), (resource["resourceType"], name)


_R4_TELECOM = st.sampled_from(["phone", "fax", "email", "pager", "other"])
_TEXT = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12)
patients = st.fixed_dictionaries({
    "resourceType": st.just("Patient"),
    "id": st.from_regex(r"[A-Za-z0-9\-]{1,20}", fullmatch=True),
    "gender": st.sampled_from(["male", "female", "other", "unknown"]),
    "birthDate": st.dates().map(lambda d: d.isoformat()),
    "name": st.lists(st.fixed_dictionaries({
        "use": st.sampled_from(["usual", "official", "nickname", "maiden"]), "family": _TEXT,
        "given": st.lists(_TEXT, min_size=1, max_size=2)}), min_size=1, max_size=2),
    "identifier": st.lists(st.fixed_dictionaries({
        "type": st.just({"coding": [{"system": THO + "v2-0203", "code": "MR"}]}),
        "system": st.just("http://hospital.example/mrn"), "value": _TEXT}), max_size=2),
    "telecom": st.lists(st.fixed_dictionaries({"system": _R4_TELECOM, "value": _TEXT,
                                               "use": st.sampled_from(["home", "work", "mobile"])}), max_size=2),
    "address": st.lists(st.fixed_dictionaries({"use": st.sampled_from(["home", "work", "temp", "old"]),
                                               "city": _TEXT, "line": st.lists(_TEXT, min_size=1, max_size=2)}),
                        max_size=1),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient=patients, facade=st.sampled_from(["stu3", "dstu2"]))
def test_patients_survive_down_and_up_unchanged(patient, facade):
    back = round_trip(facade, {k: v for k, v in patient.items() if v != []})
    assert back == {k: v for k, v in patient.items() if v != []}
    validate_r4(back)


_STATUS_CASES = [
    ("Observation", "status", ["registered", "preliminary", "final", "amended", "cancelled", "entered-in-error",
                               "unknown"]),
    ("Encounter", "status", ["planned", "arrived", "in-progress", "onleave", "finished", "cancelled"]),
    ("MedicationRequest", "status", ["active", "on-hold", "completed", "entered-in-error", "stopped", "draft"]),
]
_MINIMAL = {"Observation": {"code": {"text": "x"}},
            "Encounter": {"class": {"system": THO + "v3-ActCode", "code": "AMB"}},
            "MedicationRequest": {"intent": "order", "subject": {"reference": "Patient/p1"},
                                  "medicationCodeableConcept": {"text": "x"}}}


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(_STATUS_CASES).flatmap(lambda c: st.tuples(st.just(c[0]), st.just(c[1]),
                                                                       st.sampled_from(c[2]))),
       facade=st.sampled_from(["stu3", "dstu2"]))
def test_status_codes_both_versions_know_survive_down_and_up(case, facade):
    kind, element, code = case
    resource = {"resourceType": kind, element: code, **_MINIMAL[kind]}
    assert round_trip(facade, resource)[element] == code


# --- request translation: R4 facade → STU3/DSTU2 provider -------------------------------------------

def search(kind: str, *pairs: tuple[str, str]) -> Interaction:
    return Interaction("search", kind, None, tuple(pairs))


@pytest.mark.parametrize(("provider", "sort"), [("stu3", ("_sort", "-date")), ("dstu2", ("_sort:desc", "date"))])
def test_sort_descending_is_spelled_per_version(provider, sort):
    sent = translate_request_up(provider, search("Observation", ("patient", "Patient/p1"), ("_sort", "-date")))
    assert sent.query == (("patient", "Patient/p1"), sort)


def test_dstu2_sorts_each_key_in_its_own_pair():
    sent = translate_request_up("dstu2", search("Patient", ("_sort", "family,-birthdate")))
    assert sent.query == (("_sort", "family"), ("_sort:desc", "birthdate"))


def test_medication_request_is_a_dstu2_medication_order_with_its_parameter_names():
    sent = translate_request_up("dstu2", search("MedicationRequest", ("subject", "Patient/p1"),
                                                ("authoredon", "ge2020"), ("status", "active"),
                                                ("encounter", "Encounter/e1")))
    assert sent.resource_type == "MedicationOrder"
    assert sent.query == (("subject", "Patient/p1"), ("datewritten", "ge2020"), ("status", "active"),
                          ("encounter", "Encounter/e1"))
    assert translate_request_up("stu3", search("MedicationRequest", ("encounter", "Encounter/e1"))).query == (
        ("context", "Encounter/e1"),)


def test_reads_rename_the_type_and_keep_the_id():
    sent = translate_request_up("dstu2", Interaction("read", "MedicationRequest", "m1"))
    assert (sent.kind, sent.resource_type, sent.resource_id) == ("read", "MedicationOrder", "m1")


@pytest.mark.parametrize(("provider", "name"), [("stu3", "asserted-date"), ("dstu2", "date-asserted")])
def test_condition_recorded_date_has_each_versions_name(provider, name):
    sent = translate_request_up(provider, search("Condition", ("recorded-date", "ge2020-01-01")))
    assert sent.query == ((name, "ge2020-01-01"),)


def test_status_and_category_codes_take_the_older_codes():
    sent = translate_request_up("dstu2", search("Condition", ("clinical-status", "recurrence,relapse"),
                                                ("category", "encounter-diagnosis")))
    assert sent.query == (("clinicalstatus", "relapse"), ("category", "diagnosis"))
    sent = translate_request_up("stu3", search("Observation", ("status", "final,corrected")))
    assert sent.query == (("status", "final,corrected"),)


def test_terminology_systems_take_their_older_uris():
    sent = translate_request_up("stu3", search("Observation", ("category", f"{THO}observation-category|vital-signs")))
    assert sent.query == (("category", "http://hl7.org/fhir/observation-category|vital-signs"),)


def test_string_modifiers_and_missing_pass():
    sent = translate_request_up("dstu2", search("Patient", ("family:contains", "smi"), ("birthdate:missing", "false"),
                                                ("_count", "10")))
    assert sent.query == (("family:contains", "smi"), ("birthdate:missing", "false"), ("_count", "10"))


@pytest.mark.parametrize(("provider", "action", "says"), [
    ("dstu2", search("Encounter", ("status", "triaged")), "no DSTU2 equivalent"),
    ("stu3", search("Observation", ("value-quantity", "5")), "no STU3 equivalent"),
    ("dstu2", search("Observation", ("_sort:desc", "date")), "_sort:desc is not R4"),
    ("dstu2", search("Observation", ("_sort", "-code-value")), "sorting"),
    ("dstu2", search("MedicationOrder", ("patient", "p1")), "not available"),
    ("stu3", search("Immunization"), "not available"),
    ("stu3", search("Observation", ("patient", "http://elsewhere/Patient/1")), "absolute references"),
    ("stu3", search("Patient", ("family:above", "x")), "modifier :above"),
    ("stu3", search("Patient", ("birthdate:missing", "maybe")), "true or false"),
    ("stu3", Interaction("read", "Patient", "p1", (("_elements", "id"),)), "not supported on a read"),
    ("stu3", search("Patient", ("_count", "ten")), "non-negative integer"),
])
def test_what_the_provider_version_cannot_express_is_a_400(provider, action, says):
    with pytest.raises(FhirError) as info:
        translate_request_up(provider, action)
    assert info.value.status == 400 and says in info.value.diagnostics


def test_paging_requests_pass_unchanged():
    page = Interaction("page", None, None, (("_getpages", "abc"),))
    assert translate_request_up("dstu2", page) == page
