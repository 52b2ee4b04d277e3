"""The Patients app's whole journey through the gateway, request by request, in STU3 and DSTU2.

Every answer is checked against what the sample EHR itself says for the same question (FHIR-2,
FHIR-3, FHIR-4, ROUTE-3), with the provider's URLs rewritten to the gateway's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.conftest import get_token

VERSIONS = ("stu3", "dstu2")
MR_CODES = {"MR"}
SORT_NEWEST = {"stu3": ("_sort", "-date"), "dstu2": ("_sort:desc", "date")}
MEDICATION = {"stu3": "MedicationRequest", "dstu2": "MedicationOrder"}


class Journey:
    """One facade version: the gateway's base, the provider's base, and a token for the demo tenant."""

    def __init__(self, facts: dict[str, Any], version: str) -> None:
        self.version = version
        self.base = facts["fhir_base_urls"][version]
        self.provider = facts["provider_base_urls"][version]
        tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == version)
        self.tenant = tenant
        self.headers = {"Authorization": f"Bearer {get_token(facts, tenant)}"}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.get(f"{self.base}/{path}", headers=headers, timeout=30, **kwargs)

    def search_post(self, rtype: str, form: dict[str, str]) -> requests.Response:
        return requests.post(f"{self.base}/{rtype}/_search", data=form, headers=self.headers, timeout=30)

    def direct(self, path: str, **kwargs: Any) -> dict:
        response = requests.get(f"{self.provider}/{path}", timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        return self.as_gateway(response.json())

    def as_gateway(self, payload: dict) -> dict:
        return json.loads(json.dumps(payload).replace(f'"{self.provider}', f'"{self.base}'))


@pytest.fixture(scope="module", params=VERSIONS)
def journey(request: pytest.FixtureRequest, facts: dict[str, Any]) -> Journey:
    return Journey(facts, request.param)


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def mrn(patient: dict) -> str | None:
    for ident in patient.get("identifier", []):
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])}
        if codes & MR_CODES:
            return ident.get("value")
    return None


@pytest.fixture(scope="module")
def patient(journey: Journey) -> dict:
    """A patient with an MRN, vital signs and encounters, chosen by asking the provider directly."""
    for entry in journey.direct("Patient", params={"_count": "100"})["entry"]:
        candidate = entry["resource"]
        vitals = journey.direct("Observation", params={"patient": candidate["id"], "category": "vital-signs",
                                                       "_count": "1"})
        encounters = journey.direct("Encounter", params={"patient": candidate["id"], "_count": "1"})
        if mrn(candidate) and vitals.get("total", 0) > 0 and encounters.get("total", 0) > 0:
            return candidate
    pytest.fail("no patient with an MRN, vital signs and encounters in the sample data")


def test_metadata_needs_no_token_and_names_the_version(journey: Journey) -> None:
    """FHIR-1, AUTH-4: the app reads fhirVersion and the token URL before it has a token."""
    statement = requests.get(f"{journey.base}/metadata", timeout=30).json()
    assert statement["fhirVersion"] == {"stu3": "3.0.2", "dstu2": "1.0.2"}[journey.version]
    token_ext = statement["rest"][0]["security"]["extension"][0]["extension"]
    assert any(e["url"] == "token" and e["valueUri"].endswith("/api/oauth2/token") for e in token_ext)


def _search_forms(journey: Journey, patient: dict) -> list[dict[str, str]]:
    name = patient["name"][0]
    family = name["family"] if isinstance(name["family"], str) else name["family"][0]
    given = name["given"][0]
    forms = [{"_id": patient["id"]}, {"given": given[:3].lower()}, {"birthdate": patient["birthDate"]},
             {"identifier": mrn(patient) or ""}]
    if journey.version == "dstu2":
        forms += [{"family:contains": family[1:4]}, {"name": family[:4].upper()}]
    else:
        forms += [{"family": family[:4]}, {"gender": patient["gender"], "family": family}]
    return forms


def test_every_patient_search_form_returns_the_providers_answer(journey: Journey, patient: dict) -> None:
    """FHIR-4: POST Patient/_search with each form the app sends; total and entries match the provider."""
    for form in _search_forms(journey, patient):
        response = journey.search_post("Patient", {**form, "_count": "50"})
        assert response.status_code == 200, (form, response.text)
        bundle = response.json()
        direct = journey.direct("Patient", params={**form, "_count": "50"})
        assert bundle["total"] == direct["total"] >= 1, form
        assert ids(bundle) == ids(direct), form
        assert patient["id"] in ids(bundle), form


def test_count_caps_entries_while_total_counts_all(journey: Journey) -> None:
    bundle = journey.search_post("Patient", {"_count": "2"}).json()
    assert len(bundle["entry"]) == 2
    assert bundle["total"] > 2


def test_patient_read_by_reference_returns_the_providers_resource(journey: Journey, patient: dict) -> None:
    """FHIR-3: GET <base>/Patient/<id>."""
    response = journey.get(f"Patient/{patient['id']}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        {"stu3": "application/fhir+json", "dstu2": "application/json+fhir"}[journey.version])
    assert response.json() == journey.direct(f"Patient/{patient['id']}")


def test_vital_signs_come_newest_first(journey: Journey, patient: dict) -> None:
    key, value = SORT_NEWEST[journey.version]
    params = {"patient": patient["id"], "category": "vital-signs", key: value}
    bundle = journey.get("Observation", params=params).json()
    dates = [e["resource"].get("effectiveDateTime", "") for e in bundle["entry"]]
    assert dates and dates == sorted(dates, reverse=True)
    assert ids(bundle) == ids(journey.direct("Observation", params=params))


@pytest.mark.parametrize("rtype", ["Condition", "medication", "AllergyIntolerance", "Coverage"])
def test_clinical_lists_match_the_provider(journey: Journey, patient: dict, rtype: str) -> None:
    rtype = MEDICATION[journey.version] if rtype == "medication" else rtype
    params = {"patient": patient["id"], "_count": "10"}
    bundle = journey.get(rtype, params=params).json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle == journey.direct(rtype, params=params)
    if rtype == "Coverage":
        assert bundle["total"] >= 1


def test_last_encounter_carries_a_location_that_can_be_read(journey: Journey, patient: dict) -> None:
    """Encounter?patient&_sort:desc=date&_count=1, then its location by reference."""
    params = {"patient": patient["id"], "_sort:desc": "date", "_count": "1"}
    bundle = journey.get("Encounter", params=params).json()
    assert len(bundle["entry"]) == 1
    native = dict([SORT_NEWEST[journey.version], ("patient", patient["id"]), ("_count", "1")])
    assert ids(bundle) == ids(journey.direct("Encounter", params=native))
    encounter = bundle["entry"][0]["resource"]
    location = encounter["location"][0]["location"]
    assert location["display"]
    assert journey.get(location["reference"]).json()["resourceType"] == "Location"


def test_batch_answers_every_entry_in_order_like_single_requests(journey: Journey, patient: dict) -> None:
    """FHIR-2: the app's page as one batch; each entry equals the single request's answer."""
    pid = patient["id"]
    key, value = SORT_NEWEST[journey.version]
    urls = [f"Patient/{pid}", f"Observation?patient={pid}&category=vital-signs&{key}={value}",
            f"Condition?patient={pid}&_count=10", f"Encounter?patient={pid}&_sort:desc=date&_count=1",
            f"AllergyIntolerance?patient={pid}", f"{MEDICATION[journey.version]}?patient={pid}&_count=10",
            f"Coverage?patient={pid}", "Patient/does-not-exist"]
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    response = requests.post(journey.base, json=batch, headers=journey.headers, timeout=60)
    assert response.status_code == 200
    answer = response.json()
    assert answer["type"] == "batch-response" and len(answer["entry"]) == len(urls)
    for url, entry in zip(urls[:-1], answer["entry"][:-1], strict=True):
        assert entry["response"]["status"].startswith("200"), url
        assert entry["resource"] == journey.get(url).json(), url
    assert answer["entry"][-1]["response"]["status"].startswith("404")
    assert answer["entry"][-1]["resource"]["resourceType"] == "OperationOutcome"


def test_next_links_point_at_the_gateway_and_walk_every_page(journey: Journey) -> None:
    """Paging through the gateway: every link is the gateway's, and the pages add up to the provider's list."""
    seen: list[str] = []
    url: str | None = f"{journey.base}/Patient?_count=3"
    while url:
        bundle = requests.get(url, headers=journey.headers, timeout=30).json()
        assert all(link["url"].startswith(journey.base) for link in bundle.get("link", []))
        assert all(e["fullUrl"].startswith(journey.base) for e in bundle.get("entry", []))
        seen += ids(bundle)
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        assert len(seen) <= 500
    assert seen == ids(journey.direct("Patient", params={"_count": "100"}))


def test_conditional_read_and_request_id_pass_through(journey: Journey, patient: dict, stack: Any) -> None:
    first = journey.get(f"Patient/{patient['id']}")
    assert first.headers.get("ETag")
    again = journey.get(f"Patient/{patient['id']}", headers={"If-None-Match": first.headers["ETag"],
                                                             "X-Request-Id": "journey-check-1"})
    assert again.status_code == 304
    assert again.headers["X-Request-Id"] == "journey-check-1"
    seen = requests.get(provider_admin(journey), timeout=10).json()
    upstream = [r for r in seen if r["headers"].get("x-request-id") == "journey-check-1"]
    assert upstream and upstream[-1]["headers"]["if-none-match"] == first.headers["ETag"]
    assert upstream[-1]["authorization"] is False, "the client's own token must not reach the provider"


def provider_admin(journey: Journey) -> str:
    return journey.provider.rsplit("/fhir", 1)[0] + "/_admin/requests"


def test_a_token_is_good_only_for_its_own_versions_base(facts: dict[str, Any]) -> None:
    stu3 = Journey(facts, "stu3")
    response = requests.get(f"{facts['fhir_base_urls']['dstu2']}/Patient", headers=stu3.headers, timeout=30)
    assert response.status_code == 400
    assert "STU3" in response.json()["issue"][0]["diagnostics"]
