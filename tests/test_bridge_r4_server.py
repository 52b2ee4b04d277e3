"""The bridge against a real, independently written R4 server (Medplum's router, devtools/r4_server).

Every search of both Patients app interface specs goes through `translate_request`, is sent to the
R4 server as the proxy would send it, and comes back through `convert_response`; the checks are
on content the app shows (vitals newest first, the last encounter's location, coverage, DSTU2
MedicationOrder). Paging links the bridge synthesizes are followed on the provider and, as the
gateway would after rewriting them, through the bridge again.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from shared.bridge import convert_response, translate_request
from shared.policy import Interaction, batch_entry_interaction, interaction_for

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "devtools" / "r4_server" / "server.mjs"
OLD_MRN = "http://hl7.org/fhir/v2/0203"
OLD_CATEGORY = "http://hl7.org/fhir/observation-category"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Provider:
    """The R4 server, reached the way the proxy reaches a provider."""

    base: str
    session: requests.Session

    def send(self, action: Interaction, expect: int = 200) -> dict[str, Any]:
        url = f"{self.base}/{action.upstream_path}"
        if action.kind == "search-post":
            response = self.session.post(url, data=action.query_string(), headers=FORM, timeout=30)
        else:
            query = action.query_string()
            response = self.session.get(url + (f"?{query}" if query else ""), timeout=30)
        assert response.status_code == expect, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        return response.json()

    def through(self, facade: str, action: Interaction, expect: int = 200) -> tuple[dict, dict[str, int]]:
        """translate_request → the R4 server → convert_response, as the proxy will do it."""
        r4 = translate_request(facade, action)
        return convert_response(facade, r4, self.send(r4, expect), self.base)

    def follow(self, facade: str, url: str) -> tuple[dict, dict[str, int]]:
        """A link the gateway rewrote to its own base comes back as a request on the same path."""
        assert url.startswith(f"{self.base}/"), url
        path, _, query = url[len(self.base) + 1:].partition("?")
        return self.through(facade, interaction_for("GET", path, query))

    def admin(self, method: str, path: str) -> requests.Response:
        origin = self.base.removesuffix("/fhir")
        return self.session.request(method, f"{origin}/_admin/{path}", timeout=10)


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server on an ephemeral port, started and stopped (SIGTERM) like every dev-stack service."""
    stack = Stack(tmp_path_factory.mktemp("r4-server"))
    try:
        server = stack.spawn("r4", ["node", str(SERVER), "--port", "0"])
        yield server.ready
    finally:
        stack.stop()
    assert server.popen.returncode == 0, server.log_path.read_text()[-2000:]


@pytest.fixture(scope="module")
def provider(ready: dict[str, Any]) -> Iterator[Provider]:
    session = requests.Session()
    session.trust_env = False
    yield Provider(ready["base_url"], session)
    session.close()


@pytest.fixture(scope="module")
def anderson(provider: Provider) -> dict[str, Any]:
    """Antony Anderson of the sample data, as the R4 server stores him (ids are the server's)."""
    bundle = provider.send(Interaction("search", "Patient", None, (("family", "Anderson"),)))
    assert bundle["total"] == 1
    return bundle["entry"][0]["resource"]


def _search(kind: str, *query: tuple[str, str], post: bool = False) -> Interaction:
    return Interaction("search-post" if post else "search", kind, None, tuple(query))


def _resources(bundle: dict) -> list[dict]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [entry["resource"] for entry in bundle.get("entry", [])]


def _stu3_valid(resource: dict) -> None:
    kind = resource["resourceType"]
    getattr(importlib.import_module(f"fhir.resources.STU3.{kind.lower()}"), kind).model_validate(resource)


def _all(provider: Provider, kind: str, patient_id: str) -> list[dict]:
    """Everything of one type for a patient, straight from the R4 server (the reference answer)."""
    bundle = provider.send(Interaction("search", kind, None, (("patient", f"Patient/{patient_id}"),)))
    return [entry["resource"] for entry in bundle.get("entry", [])]


# --- the server itself --------------------------------------------------------------------

def test_ready_file_and_kept_quirks(ready: dict[str, Any], provider: Provider, anderson: dict) -> None:
    assert set(ready) >= {"base_url", "fhir_version", "patients"}
    assert ready["fhir_version"] == "r4" and ready["patients"] == 9
    assert ready["base_url"].startswith("http://127.0.0.1:") and ready["base_url"].endswith("/fhir")
    raw = provider.send(_search("Observation", ("patient", f"Patient/{anderson['id']}"), ("_count", "2")))
    assert raw["total"] > 2 and "link" not in raw  # no paging links: the bridge must cope
    assert provider.send(_search("Observation", ("patient", anderson["id"])))["total"] == 0  # bare ids match nothing
    assert provider.session.get(f"{provider.base}/metadata", timeout=10).json().get("resourceType") != (
        "CapabilityStatement")
    refused = provider.session.put(f"{provider.base}/Patient/{anderson['id']}", json=anderson, timeout=10)
    assert refused.status_code == 405


def test_derived_coverage_and_locations(provider: Provider, anderson: dict) -> None:
    coverages = _all(provider, "Coverage", anderson["id"])
    assert len(coverages) == 1 and coverages[0]["beneficiary"]["reference"] == f"Patient/{anderson['id']}"
    encounters = _all(provider, "Encounter", anderson["id"])
    assert encounters and all(e["location"][0]["location"]["display"] for e in encounters)


# --- STU3: the STU3 interface article's searches ---------------------------------------------

def test_stu3_patient_search_and_read(provider: Provider, anderson: dict) -> None:
    mrn = next(i["value"] for i in anderson["identifier"]
               if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR")
    for query in ((("_id", anderson["id"]),), (("family", "nderso"),), (("given", "ntony"),),
                  (("birthdate", "1986-01-27"), ("gender", "male")), (("identifier", mrn),)):
        bundle, _ = provider.through("stu3", _search("Patient", *query, post=True))
        assert [p["id"] for p in _resources(bundle)] == [anderson["id"]], query
    capped, _ = provider.through("stu3", _search("Patient", ("gender", "male"), ("_count", "2"), post=True))
    assert len(_resources(capped)) == 2 and capped["total"] == 6
    patient, _ = provider.through("stu3", Interaction("read", "Patient", anderson["id"]))
    _stu3_valid(patient)
    assert patient["name"][0]["family"] == "Anderson" and patient["name"][0]["prefix"] == ["Mr."]
    assert any(i["type"]["coding"][0] == {"system": OLD_MRN, "code": "MR", "display": "Medical Record Number"}
               for i in patient["identifier"] if "type" in i)


def _effective(observation: dict) -> str:
    return observation["effectiveDateTime"]


def test_stu3_vital_signs_newest_first(provider: Provider, anderson: dict) -> None:
    bundle, _ = provider.through("stu3", _search("Observation", ("patient", anderson["id"]),
                                                 ("category", "vital-signs"), ("_sort", "-date")))
    vitals = _resources(bundle)
    assert len(vitals) == bundle["total"] > 5
    assert [_effective(o) for o in vitals] == sorted((_effective(o) for o in vitals), reverse=True)
    for observation in vitals:
        _stu3_valid(observation)
        assert observation["category"][0]["coding"][0]["system"] == OLD_CATEGORY
    pressures = [o for o in vitals if o["code"]["coding"][0]["code"] == "55284-4"]
    assert pressures and all(c["valueQuantity"]["unit"] == "mm[Hg]" for c in pressures[0]["component"])


def test_stu3_conditions_encounter_allergies_medications_coverage(provider: Provider, anderson: dict) -> None:
    conditions, _ = provider.through("stu3", _search("Condition", ("patient", anderson["id"]), ("_count", "3")))
    assert 0 < len(_resources(conditions)) <= 3 and conditions["total"] == len(_all(provider, "Condition",
                                                                                        anderson["id"]))
    assert all(c["assertedDate"] and c["code"]["coding"][0]["display"] for c in _resources(conditions))
    last, _ = provider.through("stu3", _search("Encounter", ("patient", anderson["id"]), ("_sort", "-date"),
                                               ("_count", "1")))
    [encounter] = _resources(last)
    newest = max(e["period"]["start"] for e in _all(provider, "Encounter", anderson["id"]))
    assert encounter["period"]["start"] == newest and encounter["status"] == "finished"
    assert encounter["location"][0]["location"]["display"] and encounter["type"][0]["coding"][0]["display"]
    allergies, _ = provider.through("stu3", _search("AllergyIntolerance", ("patient", anderson["id"])))
    assert allergies["total"] == 0 and _resources(allergies) == []  # the R4 sample data has none
    orders, _ = provider.through("stu3", _search("MedicationRequest", ("patient", anderson["id"]), ("_count", "5")))
    assert _resources(orders)
    for order in _resources(orders):
        assert order["requester"]["agent"]["display"].startswith("Dr.") and order["authoredOn"]
        assert order["medicationCodeableConcept"]["text"]
    coverage_bundle, drops = provider.through("stu3", _search("Coverage", ("patient", anderson["id"])))
    [coverage] = _resources(coverage_bundle)
    assert coverage["grouping"]["groupDisplay"] and coverage["grouping"]["planDisplay"]
    assert coverage["period"]["start"] and coverage["subscriberId"] and coverage["payor"][0]["display"]
    assert drops == {}
    for resource in (*_resources(conditions), encounter, *_resources(orders), coverage):
        _stu3_valid(resource)


# --- DSTU2: the DSTU2 interface article's searches -------------------------------------------

def test_dstu2_patient_search(provider: Provider, anderson: dict) -> None:
    for query in ((("id", anderson["id"]),), (("family:contains", "nders"),), (("name", "Antony"),),
                  (("given", "nton"),), (("birthdate", "1986-01-27"),)):
        bundle, _ = provider.through("dstu2", _search("Patient", *query, ("_count", "10"), post=True))
        patients = _resources(bundle)
        assert [p["id"] for p in patients] == [anderson["id"]], query
        assert patients[0]["name"][0]["family"] == ["Anderson"]


def test_dstu2_vitals_conditions_encounter(provider: Provider, anderson: dict) -> None:
    vitals, _ = provider.through("dstu2", _search("Observation", ("patient", anderson["id"]),
                                                  ("category", "vital-signs"), ("_sort:desc", "date")))
    observations = _resources(vitals)
    assert [_effective(o) for o in observations] == sorted((_effective(o) for o in observations), reverse=True)
    assert all(o["category"]["coding"][0]["system"] == OLD_CATEGORY for o in observations)
    conditions, drops = provider.through("dstu2", _search("Condition", ("patient", anderson["id"]), ("_count", "2")))
    assert all(len(c["dateRecorded"]) == 10 and c["patient"]["reference"] == f"Patient/{anderson['id']}"
               for c in _resources(conditions))
    assert drops == {"Condition.recordedDate:truncated": len(_resources(conditions))}
    last, _ = provider.through("dstu2", _search("Encounter", ("patient", anderson["id"]), ("_sort:desc", "date"),
                                                ("_count", "1")))
    [encounter] = _resources(last)
    assert encounter["period"]["start"] == max(e["period"]["start"] for e in _all(provider, "Encounter",
                                                                                     anderson["id"]))
    assert encounter["class"] in ("ambulatory", "emergency", "inpatient")
    assert encounter["location"][0]["location"]["display"] and "subject" not in encounter


def test_dstu2_medication_orders_allergies_coverage(provider: Provider, anderson: dict) -> None:
    orders, drops = provider.through("dstu2", _search("MedicationOrder", ("patient", anderson["id"]),
                                                      ("_count", "5")))
    assert _resources(orders) and drops["MedicationRequest.intent:not-representable"] == len(_resources(orders))
    for order in _resources(orders):
        assert order["resourceType"] == "MedicationOrder" and order["dateWritten"]
        assert order["prescriber"]["display"].startswith("Dr.") and order["medicationCodeableConcept"]["text"]
    one, _ = provider.through("dstu2", Interaction("read", "MedicationOrder", _resources(orders)[0]["id"]))
    assert one["resourceType"] == "MedicationOrder"
    allergies, _ = provider.through("dstu2", _search("AllergyIntolerance", ("patient", anderson["id"])))
    assert allergies["total"] == 0
    coverage_bundle, _ = provider.through("dstu2", _search("Coverage", ("patient", anderson["id"])))
    [coverage] = _resources(coverage_bundle)
    assert coverage["issuer"]["display"] and coverage["plan"] and coverage["group"]
    assert coverage["subscriber"]["reference"] == f"Patient/{anderson['id']}" and coverage["subscriberId"]["value"]


def test_provider_receives_r4_requests(provider: Provider, anderson: dict) -> None:
    assert provider.admin("POST", "requests/clear").status_code == 204
    provider.through("dstu2", _search("Observation", ("patient", anderson["id"]), ("category", "vital-signs"),
                                      ("_sort:desc", "date")))
    provider.through("dstu2", _search("Patient", ("family:contains", "nders"), ("given", "nton"), post=True))
    seen = provider.admin("GET", "requests").json()
    assert [(r["method"], r["path"]) for r in seen] == [("GET", "/fhir/Observation"), ("POST", "/fhir/Patient/_search")]
    assert seen[0]["query"] == f"patient=Patient%2F{anderson['id']}&category=vital-signs&_sort=-date"
    assert seen[1]["form"] == "family%3Acontains=nders&given%3Acontains=nton"


def test_missing_resource_is_a_converted_operation_outcome(provider: Provider) -> None:
    outcome, _ = provider.through("dstu2", Interaction("read", "Patient", "no-such-patient"), expect=404)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-found"


# --- paging links synthesized by the bridge ---------------------------------------------------

def _links(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def test_synthesized_paging_walks_every_vital_sign(provider: Provider, anderson: dict) -> None:
    first, _ = provider.through("stu3", _search("Observation", ("patient", anderson["id"]),
                                                ("category", "vital-signs"), ("_sort", "-date"), ("_count", "7")))
    total, pages, bundle = first["total"], [first], first
    while "next" in _links(bundle):
        on_provider = provider.session.get(_links(bundle)["next"], timeout=30).json()  # followable on the provider
        bundle, _ = provider.follow("stu3", _links(bundle)["next"])
        assert [e["resource"]["id"] for e in on_provider["entry"]] == [r["id"] for r in _resources(bundle)]
        pages.append(bundle)
    ids = [r["id"] for page in pages for r in _resources(page)]
    assert len(pages) == -(-total // 7) and len(ids) == len(set(ids)) == total
    dates = [_effective(r) for page in pages for r in _resources(page)]
    assert dates == sorted(dates, reverse=True)
    assert "previous" in _links(pages[-1]) and "previous" not in _links(pages[0])


def test_synthesized_paging_of_dstu2_medication_orders(provider: Provider, ready: dict[str, Any]) -> None:
    patients = provider.send(_search("Patient", ("_count", "20")))
    counts = {p["resource"]["id"]: len(_all(provider, "MedicationRequest", p["resource"]["id"]))
              for p in patients["entry"]}
    patient_id, count = max(counts.items(), key=lambda item: item[1])
    assert count >= 2
    bundle, _ = provider.through("dstu2", _search("MedicationOrder", ("patient", patient_id), ("_count", "1")))
    seen = [r["id"] for r in _resources(bundle)]
    while "next" in _links(bundle):
        assert "/MedicationRequest?" in _links(bundle)["next"]  # R4 names, so the provider can follow it
        bundle, _ = provider.follow("dstu2", _links(bundle)["next"])
        assert all(r["resourceType"] == "MedicationOrder" for r in _resources(bundle))
        seen += [r["id"] for r in _resources(bundle)]
    assert len(seen) == len(set(seen)) == count


# --- batch, entry by entry as the proxy runs it ----------------------------------------------

def test_batch_entries_translated_and_converted(provider: Provider, anderson: dict) -> None:
    requests_ = [f"Patient/{anderson['id']}", f"Observation?patient={anderson['id']}&_count=1",
                 f"MedicationOrder?patient={anderson['id']}", "Patient/no-such-patient"]
    actions = [translate_request("dstu2", batch_entry_interaction({"request": {"method": "GET", "url": url}}))
               for url in requests_]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": a.upstream_path + (f"?{a.query_string()}" if a.query else "")}}
        for a in actions]}
    response = provider.session.post(provider.base, json=batch, timeout=30).json()
    assert response["type"] == "batch-response" and len(response["entry"]) == len(actions)
    converted = []
    for action, entry in zip(actions, response["entry"], strict=True):
        body = entry.get("resource") or entry["response"]["outcome"]
        converted.append(convert_response("dstu2", action, body, provider.base)[0])
    assert converted[0]["resourceType"] == "Patient" and converted[0]["name"][0]["family"] == ["Anderson"]
    assert isinstance(converted[1]["entry"][0]["resource"]["category"], dict)
    assert {e["resource"]["resourceType"] for e in converted[2]["entry"]} == {"MedicationOrder"}
    assert converted[3]["resourceType"] == "OperationOutcome"
