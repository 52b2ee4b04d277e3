"""The Patients app's journey against an R4 EHR, through the STU3 and DSTU2 facades (issue #8).

The R4 provider is an independent implementation (Medplum's FHIR router); every answer the app
gets must be in the facade's version: STU3 output validates with the fhir.resources STU3 models,
DSTU2 output has the DSTU2 shapes the app reads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from fhir.resources.STU3.bundle import Bundle as Stu3Bundle

from tests.conftest import get_token

FACADES = ("stu3", "dstu2")
MEDICATION = {"stu3": "MedicationRequest", "dstu2": "MedicationOrder"}
SORT_NEWEST = {"stu3": ("_sort", "-date"), "dstu2": ("_sort:desc", "date")}


class R4Journey:
    def __init__(self, facts: dict[str, Any], facade: str) -> None:
        self.facade = facade
        self.base = facts["fhir_base_urls"][facade]
        self.provider = facts["provider_base_urls"]["r4"]
        tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == "r4")
        self.headers = {"Authorization": f"Bearer {get_token(facts, tenant)}"}

    def get(self, path: str, **params: str) -> dict:
        response = requests.get(f"{self.base}/{path}", params=params, headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def direct(self, path: str, **params: str) -> dict:
        response = requests.get(f"{self.provider}/{path}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module", params=FACADES)
def journey(request: pytest.FixtureRequest, facts: dict[str, Any]) -> R4Journey:
    return R4Journey(facts, request.param)


@pytest.fixture(scope="module")
def patient(journey: R4Journey) -> dict:
    return find_patient(journey)


def find_patient(journey: R4Journey) -> dict:
    """An R4 patient with vital signs, encounters and medications, found by asking the R4 server directly."""
    for entry in journey.direct("Patient", _count="50")["entry"]:
        ref = f"Patient/{entry['resource']['id']}"
        if all(journey.direct(t, patient=ref, _count="1", _total="accurate").get("total", 0) > 0
               for t in ("Observation", "Encounter", "MedicationRequest")):
            return entry["resource"]
    pytest.fail("no R4 patient with observations, encounters and medications")


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def check_version(journey: R4Journey, bundle: dict) -> None:
    """STU3: validate the whole Bundle with an independent model library; DSTU2: the shapes the app reads."""
    if journey.facade == "stu3":
        Stu3Bundle.model_validate(bundle)
        return
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            assert all(isinstance(n.get("family", []), list) for n in resource["name"])
        if resource["resourceType"] == "Observation":
            assert isinstance(resource.get("category", {}), dict)
        if resource["resourceType"] == "Condition":
            assert isinstance(resource["verificationStatus"], str)
        if resource["resourceType"] == "Encounter":
            assert isinstance(resource.get("class", ""), str)
        assert resource["resourceType"] != "MedicationRequest"


def test_metadata_shows_the_facade_version(journey: R4Journey) -> None:
    statement = requests.get(f"{journey.base}/metadata", timeout=30).json()
    assert statement["fhirVersion"] == {"stu3": "3.0.2", "dstu2": "1.0.2"}[journey.facade]


def test_patient_searches_keep_total_and_count(journey: R4Journey, patient: dict) -> None:
    family = patient["name"][0]["family"]
    response = requests.post(f"{journey.base}/Patient/_search", data={"family": family[1:4], "_count": "50"},
                             headers=journey.headers, timeout=30)
    bundle = response.json()
    assert response.status_code == 200 and patient["id"] in ids(bundle)
    direct = journey.direct("Patient", **{"family:contains": family[1:4], "_count": "50", "_total": "accurate"})
    assert bundle["total"] == direct["total"]
    capped = journey.get("Patient", _count="2")
    assert len(capped["entry"]) == 2 and capped["total"] == journey.direct("Patient", _total="accurate")["total"]
    check_version(journey, bundle)


def test_patient_read_is_converted(journey: R4Journey, patient: dict) -> None:
    resource = journey.get(f"Patient/{patient['id']}")
    check_version(journey, {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]})
    assert resource["birthDate"] == patient["birthDate"]


def test_vital_signs_newest_first_in_the_facade_shape(journey: R4Journey, patient: dict) -> None:
    key, value = SORT_NEWEST[journey.facade]
    bundle = journey.get("Observation", patient=patient["id"], category="vital-signs", **{key: value})
    dates = [e["resource"]["effectiveDateTime"] for e in bundle["entry"]]
    assert dates and dates == sorted(dates, reverse=True)
    check_version(journey, bundle)


@pytest.mark.parametrize("rtype", ["Condition", "medication", "Coverage", "AllergyIntolerance"])
def test_clinical_lists_are_converted(journey: R4Journey, patient: dict, rtype: str) -> None:
    rtype = MEDICATION[journey.facade] if rtype == "medication" else rtype
    bundle = journey.get(rtype, patient=patient["id"], _count="10")
    assert "total" in bundle
    assert all(e["resource"]["resourceType"] == rtype for e in bundle.get("entry", []))
    if rtype != "AllergyIntolerance":  # the R4 sample data has no allergies
        assert bundle["entry"]
    check_version(journey, bundle)


def test_last_encounter_has_a_location_display(journey: R4Journey, patient: dict) -> None:
    bundle = journey.get("Encounter", patient=patient["id"], **{"_sort:desc": "date", "_count": "1"})
    assert len(bundle["entry"]) == 1
    assert bundle["entry"][0]["resource"]["location"][0]["location"]["display"]
    check_version(journey, bundle)


def test_paging_links_are_synthesised_and_walk_through_the_gateway(journey: R4Journey, patient: dict) -> None:
    first = journey.get("Observation", patient=patient["id"], _count="7")
    seen, page, hops = ids(first), first, 0
    while nxt := next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None):
        assert nxt.startswith(journey.base)
        page = requests.get(nxt, headers=journey.headers, timeout=30).json()
        seen += ids(page)
        hops += 1
        assert hops < 100
    assert hops >= 1 and len(seen) == len(set(seen)) == first["total"]


def test_batch_answers_each_entry_in_the_facade_version(journey: R4Journey, patient: dict) -> None:
    pid = patient["id"]
    urls = [f"Patient/{pid}", f"Observation?patient={pid}&category=vital-signs",
            f"{MEDICATION[journey.facade]}?patient={pid}&_count=3", f"Coverage?patient={pid}"]
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    answer = requests.post(journey.base, json=batch, headers=journey.headers, timeout=60).json()
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["200"] * len(urls)
    assert answer["entry"][0]["resource"]["resourceType"] == "Patient"
    assert answer["entry"][2]["resource"]["entry"][0]["resource"]["resourceType"] == MEDICATION[journey.facade]


def test_dropped_fields_are_counted_in_the_audit_log(facts: dict[str, Any], stack: Any) -> None:
    """DSTU2's MedicationOrder has no `intent`: every R4 MedicationRequest loses it, and the audit says so."""
    journey = R4Journey(facts, "dstu2")
    journey.get("MedicationOrder", patient=find_patient(journey)["id"], _count="10")
    log = (stack.state / "logs" / "gateway.log").read_text().splitlines()
    audits = [json.loads(line.split("gateway.audit: ", 1)[1]) for line in log if "gateway.audit: " in line]
    dropped = [a["dropped"] for a in audits if a.get("resource_type") == "MedicationOrder" and a.get("dropped")]
    assert dropped and all("MedicationRequest.intent:not-representable" in d for d in dropped)
