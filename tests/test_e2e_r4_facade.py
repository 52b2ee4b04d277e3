"""The R4 facade (`/api/fhir/r4`, issue #16) on the three demo tenants: the R4 provider passes
through with URL rewriting; the STU3 and DSTU2 sample EHRs are bridged up. Every answer must be R4,
validated with fhir.resources' R4B models (the nearest R4 models it ships). Kept small: the R4
server (Medplum's router) takes about a second per patient-filtered search.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.patient import Patient

from tests.conftest import get_token
from tests.gateway_calls import TIMEOUT


class Facade:
    """The demo client on one demo tenant, through the R4 facade."""

    def __init__(self, facts: dict[str, Any], provider: str) -> None:
        self.base = facts["fhir_base_urls"]["r4"]
        tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == provider)
        self.headers = {"Authorization": f"Bearer {get_token(facts, tenant)}"}

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = requests.request(method, f"{self.base}/{path}", headers=self.headers, timeout=TIMEOUT, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/fhir+json")
        return response.json()


@pytest.fixture(scope="module", params=["r4", "stu3", "dstu2"])
def facade(request: pytest.FixtureRequest, facts: dict[str, Any]) -> Facade:
    return Facade(facts, request.param)


@pytest.fixture(scope="module")
def patient_id(facade: Facade) -> str:
    bundle = facade.call("GET", "Patient", params={"_count": "2"})
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and len(bundle["entry"]) == 2
    assert all(link["url"].startswith(facade.base) for link in bundle.get("link", []))
    return bundle["entry"][0]["resource"]["id"]


def test_metadata_is_an_r4_capability_statement(facts: dict[str, Any]) -> None:
    response = requests.get(f"{facts['fhir_base_urls']['r4']}/metadata", timeout=TIMEOUT)
    assert response.status_code == 200
    statement = CapabilityStatement.model_validate(response.json())
    assert statement.fhirVersion == "4.0.1"
    assert statement.implementation.url == facts["fhir_base_urls"]["r4"]


def test_patient_read_and_search_are_r4(facade: Facade, patient_id: str) -> None:
    patient = facade.call("GET", f"Patient/{patient_id}")
    Patient.model_validate(patient)
    found = facade.call("POST", "Patient/_search", data={"_id": patient_id})
    Bundle.model_validate(found)
    assert [e["resource"]["id"] for e in found["entry"]] == [patient_id]


def test_observation_search_is_r4(facade: Facade, patient_id: str) -> None:
    bundle = facade.call("GET", "Observation", params={"patient": patient_id, "_count": "3"})
    Bundle.model_validate(bundle)
    assert all(e["resource"]["resourceType"] == "Observation" for e in bundle.get("entry", []))


def test_batch_answers_every_entry_in_r4(facade: Facade, patient_id: str) -> None:
    answered = facade.call("POST", "", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{patient_id}"}},
        {"request": {"method": "GET", "url": f"MedicationRequest?patient={patient_id}&_count=2"}}]})
    Bundle.model_validate(answered)
    assert answered["type"] == "batch-response"
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["200", "200"]
    assert answered["entry"][0]["resource"]["id"] == patient_id
    assert answered["entry"][1]["resource"]["type"] == "searchset"
