"""The sample EHR (devtools/sample_ehr) as the gateway's tests will use it: a subprocess per version.

Expectations are facts of the synthetic data in ../shared/data (names, birth dates, counts), so
a search that returns the wrong patients fails even when its status and shape look right.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from fhir.resources.STU3 import (
    bundle as stu3_bundle,
)
from fhir.resources.STU3 import (
    capabilitystatement,
    coverage,
    location,
    observation,
    organization,
    patient,
)

from devtools.sample_ehr import build_wsgi_app, load_dataset

REPO = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 60
BEARER = "s3cret-provider-token"
PUBLIC_BASE = "https://ehr.example.test/fhir"
MEDICATION = {"stu3": "MedicationRequest", "dstu2": "MedicationOrder"}
DESC_DATE = {"stu3": {"_sort": "-date"}, "dstu2": {"_sort:desc": "date"}}
# Patients with vital signs: STU3 Brian Brooks, DSTU2 Noelle Crist (who also has 5 allergies).
VITALS_PATIENT = {"stu3": "smart-981968", "dstu2": "c8c2a783-26fd-4462-8701-d6dd031e4e94"}
# Patients with more than two pages of Observations: Brian Brooks again, DSTU2 Brett Yundt.
BUSY_PATIENT = {"stu3": "smart-981968", "dstu2": "8d9eb969-5ea7-4412-9c59-b8b2a3601394"}


@dataclass
class Server:
    """A running sample EHR subprocess and a session to talk to it."""

    version: str
    ready: dict
    log_path: Path
    process: subprocess.Popen
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def base(self) -> str:
        return self.ready["base_url"]

    @property
    def admin(self) -> str:
        return self.base.removesuffix("/fhir") + "/_admin"

    def get(self, path: str, params: dict | None = None, **kwargs) -> requests.Response:
        return self.http.get(self.base + path, params=params, timeout=10, **kwargs)

    def search(self, path: str, params: dict | None = None, **kwargs) -> dict:
        response = self.get(path, params, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def _start(tmp: Path, version: str, *extra: str) -> Server:
    ready_file, log_path = tmp / "ready.json", tmp / "stderr.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.sample_ehr", "--version", version, "--port", "0",
             "--ready-file", str(ready_file), *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sample EHR did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Server(version, json.loads(ready_file.read_text()), log_path, process)


def _stop(server: Server) -> None:
    server.http.close()
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def stu3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(tmp_path_factory.mktemp("stu3"), "stu3")
    yield server
    _stop(server)


@pytest.fixture(scope="session")
def dstu2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(tmp_path_factory.mktemp("dstu2"), "dstu2")
    yield server
    _stop(server)


@pytest.fixture(params=["stu3", "dstu2"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(request.param)


def ids(bundle: dict) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def families(bundle: dict) -> list[str]:
    """The official family names of the Patients in a bundle, sorted (DSTU2 family is a list)."""
    found = []
    for entry in bundle.get("entry", []):
        family = entry["resource"]["name"][0]["family"]
        found.append(family if isinstance(family, str) else family[0])
    return sorted(found)


def all_pages(server: Server, path: str, params: dict) -> tuple[list[dict], list[dict]]:
    """Follow `next` links to the end: (every page, every entry)."""
    pages = [server.search(path, params)]
    while next_url := next_link(pages[-1]):
        response = server.http.get(next_url, timeout=10)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        assert len(pages) < 100, "paging does not end"
    return pages, [entry for page in pages for entry in page.get("entry", [])]


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def effective(resource: dict) -> str:
    return resource.get("effectiveDateTime") or resource["effectivePeriod"]["start"]


def assert_outcome(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    if code:
        assert outcome["issue"][0]["code"] == code
    return outcome


# --- start-up and metadata -------------------------------------------------------------------

def test_ready_file_describes_the_running_server(server: Server) -> None:
    expected_patients = {"stu3": 15, "dstu2": 40}[server.version]
    assert server.ready["fhir_version"] == server.version
    assert server.ready["patients"] == expected_patients
    assert server.ready["resources"] > 1800
    assert server.base.startswith("http://127.0.0.1:") and server.base.endswith("/fhir")


def test_metadata_is_the_versions_capability_statement(server: Server) -> None:
    response = server.get("/metadata")
    statement = response.json()
    if server.version == "stu3":
        assert response.headers["Content-Type"].startswith("application/fhir+json")
        assert (statement["resourceType"], statement["fhirVersion"]) == ("CapabilityStatement", "3.0.2")
    else:
        assert response.headers["Content-Type"].startswith("application/json+fhir")
        assert (statement["resourceType"], statement["fhirVersion"]) == ("Conformance", "1.0.2")
    assert "derived" in statement["description"] and "Coverage" in statement["description"]
    types = {resource["type"] for resource in statement["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Encounter", "Coverage", "Location", MEDICATION[server.version]} <= types
    assert set(MEDICATION.values()) - {MEDICATION[server.version]} & types == set()
    patient_params = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")["searchParam"]
    assert {"family", "given", "name", "birthdate", "gender", "identifier", "_id"} <= {
        p["name"] for p in patient_params}
    assert "security" not in statement["rest"][0]


# --- Patient search ------------------------------------------------------------------------------

PATIENT_SEARCHES = {
    "stu3": [
        ({"family": "HI"}, ["Hill", "Himston"]),
        ({"family:contains": "ill"}, ["Hill", "Williams"]),
        ({"given": "oseph"}, ["Ross", "Shaw"]),
        ({"name": "angel"}, ["Montgomery"]),
        ({"name": "brooks"}, ["Brooks"]),
        ({"birthdate": "2007-03-27"}, ["Ross"]),
        ({"birthdate": "2007"}, ["Revis", "Ross", "Shaw"]),
        ({"birthdate": "ge2015-01-01"}, ["Montgomery", "Richey"]),
        ({"gender": "female"}, ["Hoffman", "Hughes", "Montgomery", "Revis", "Williams"]),
        ({"family": "o", "gender": "female"}, ["Hoffman", "Montgomery"]),
        ({"identifier": "smart-1186747"}, ["Johnson"]),
        ({"identifier": "http://hospital.smarthealthit.org|smart-1186747"}, ["Johnson"]),
        ({"identifier": "http://elsewhere.example|smart-1186747"}, []),
        ({"_id": "smart-7777704,smart-981968"}, ["Brooks", "Revis"]),
        ({"family": "", "given": "oseph", "birthdate": ""}, ["Ross", "Shaw"]),
    ],
    "dstu2": [
        ({"family:contains": "huels"}, ["Huels", "Huels"]),  # Gail and Samella
        ({"family": "UELS"}, ["Huels", "Huels"]),
        ({"family": "hyatt"}, ["Christiansen"]),  # her maiden name
        ({"given": "ann"}, ["Ratke", "Towne"]),
        ({"name": "o'hara"}, ["Hane"]),
        ({"name": "hilll"}, ["Hilll"]),
        ({"birthdate": "1976-06-11"}, ["Baumbach"]),
        ({"birthdate": "1976"}, ["Baumbach", "Cole"]),
        ({"gender": "male", "family": "huels"}, ["Huels"]),
        ({"identifier": "4d5a0f44-e66e-4e53-ac4b-59bfcce6dd5b"}, ["Baumbach"]),
        ({"_id": "48e9a9e8-ddc0-46c3-9d1b-a88f468156f1"}, ["Baumbach"]),
    ],
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("version", "params", "expected"),
                         [(v, p, e) for v, cases in PATIENT_SEARCHES.items() for p, e in cases])
def test_patient_search_finds_the_right_patients(request: pytest.FixtureRequest, method: str, version: str,
                                                 params: dict, expected: list[str]) -> None:
    server: Server = request.getfixturevalue(version)
    if method == "GET":
        bundle = server.search("/Patient", params)
    else:
        response = server.http.post(server.base + "/Patient/_search", data=params, timeout=10)
        assert response.status_code == 200, response.text
        bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert families(bundle) == expected
    assert bundle["total"] == len(expected)
    assert all(entry["search"]["mode"] == "match" for entry in bundle.get("entry", []))


def test_gender_search_counts(server: Server) -> None:
    females = server.search("/Patient", {"gender": "female", "_count": 100})
    males = server.search("/Patient", {"gender": "male", "_count": 100})
    assert {entry["resource"]["gender"] for entry in females["entry"]} == {"female"}
    assert females["total"] + males["total"] == server.ready["patients"]
    assert females["total"] == {"stu3": 5, "dstu2": 22}[server.version]


def test_every_patient_is_found_by_its_mrn(server: Server) -> None:
    everyone = server.search("/Patient", {"_count": 100})
    assert everyone["total"] == len(everyone["entry"]) == server.ready["patients"]
    for entry in everyone["entry"]:
        mrn = next(i for i in entry["resource"]["identifier"]
                   if any(c["code"] == "MR" and c["system"] == "http://hl7.org/fhir/v2/0203"
                          for c in i.get("type", {}).get("coding", [])))
        found = server.http.post(server.base + "/Patient/_search", data={"identifier": mrn["value"]},
                                 timeout=10).json()
        assert ids(found) == [entry["resource"]["id"]]
        assert entry["fullUrl"] == f"{server.base}/Patient/{entry['resource']['id']}"


def test_count_caps_entries_but_total_counts_all(server: Server) -> None:
    capped = server.search("/Patient", {"_count": 3})
    assert len(capped["entry"]) == 3 and capped["total"] == server.ready["patients"]
    summary = server.search("/Patient", {"_summary": "count"})
    assert summary["total"] == server.ready["patients"] and "entry" not in summary
    zero = server.search("/Patient", {"_count": 0, "gender": "female"})
    assert "entry" not in zero and zero["total"] > 0


# --- paging ----------------------------------------------------------------------------------------

def test_next_links_walk_every_result_once(server: Server) -> None:
    params = {"patient": BUSY_PATIENT[server.version]}
    pages, entries = all_pages(server, "/Observation", params)
    total = pages[0]["total"]
    assert total > 40
    assert len(pages) == -(-total // 20)  # default page size 20
    assert all(len(page["entry"]) == 20 for page in pages[:-1])
    assert len(entries) == total == len({entry["fullUrl"] for entry in entries})
    assert all(page["total"] == total for page in pages)
    assert "previous" in {link["relation"] for link in pages[1]["link"]}
    assert "previous" not in {link["relation"] for link in pages[0]["link"]}
    assert "next" not in {link["relation"] for link in pages[-1]["link"]}


def test_paging_after_post_search_with_count(server: Server) -> None:
    response = server.http.post(server.base + "/Observation/_search", timeout=10,
                                data={"patient": VITALS_PATIENT[server.version], "_count": "7",
                                      "category": "vital-signs", **DESC_DATE[server.version]})
    first = response.json()
    pages = [first]
    while next_url := next_link(pages[-1]):
        pages.append(server.http.get(next_url, timeout=10).json())
    dates = [effective(e["resource"]) for page in pages for e in page["entry"]]
    assert len(dates) == first["total"] and all(len(page["entry"]) <= 7 for page in pages)
    assert dates == sorted(dates, reverse=True)


def test_count_is_capped_at_100(dstu2: Server) -> None:
    bundle = dstu2.search("/Observation", {"category": "vital-signs", "_count": 500})
    assert len(bundle["entry"]) == 100 and bundle["total"] > 500


# --- Observation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sort", [{"_sort": "-date"}, {"_sort:desc": "date"}], ids=["minus", "desc-modifier"])
def test_dstu2_vital_signs_newest_first_in_both_sort_syntaxes(dstu2: Server, sort: dict) -> None:
    params = {"patient": VITALS_PATIENT["dstu2"], "category": "vital-signs", "_count": 100, **sort}
    bundle = dstu2.search("/Observation", params)
    dates = [effective(e["resource"]) for e in bundle["entry"]]
    assert bundle["total"] == len(dates) == 20
    assert dates == sorted(dates, reverse=True)
    assert all(e["resource"]["category"]["coding"][0]["code"] == "vital-signs" for e in bundle["entry"])
    unsorted = {k: v for k, v in params.items() if k not in sort}
    ascending = dstu2.search("/Observation", {**unsorted, "_sort:asc": "date"})
    assert [effective(e["resource"]) for e in ascending["entry"]] == sorted(dates)


def test_stu3_vital_signs_newest_first(stu3: Server) -> None:
    params = {"patient": VITALS_PATIENT["stu3"], "category": "vital-signs", "_sort": "-date", "_count": 100}
    bundle = stu3.search("/Observation", params)
    dates = [effective(e["resource"]) for e in bundle["entry"]]
    assert bundle["total"] == 120 and len(dates) == 100
    assert dates == sorted(dates, reverse=True)
    assert all("vital-signs" in {c["code"] for cc in e["resource"]["category"] for c in cc["coding"]}
               for e in bundle["entry"])
    assert_outcome(stu3.get("/Observation", {"patient": VITALS_PATIENT["stu3"], "_sort:desc": "date"}), 400)


def test_observation_patient_reference_forms_agree(server: Server) -> None:
    patient_id = VITALS_PATIENT[server.version]
    totals = {server.search("/Observation", {name: value, "_summary": "count"})["total"]
              for name, value in [("patient", patient_id), ("patient", f"Patient/{patient_id}"),
                                  ("patient", f"{server.base}/Patient/{patient_id}"),
                                  ("subject", f"Patient/{patient_id}"), ("subject", patient_id)]}
    assert len(totals) == 1 and totals.pop() > 0


def test_observation_code_search(server: Server) -> None:
    heights = server.search("/Observation", {"code": "http://loinc.org|8302-2", "_count": 100})
    assert heights["total"] > 0
    assert all(c["code"] == "8302-2" for e in heights["entry"] for c in e["resource"]["code"]["coding"])


# --- Encounter, Location, Coverage ---------------------------------------------------------------------

def test_newest_encounter_has_a_location_display(server: Server) -> None:
    checked = 0
    for patient_id in ids(server.search("/Patient", {"_count": 100})):
        everything = server.search("/Encounter", {"patient": patient_id, "_count": 100})
        if not everything["total"]:
            continue
        newest = server.search("/Encounter", {"patient": patient_id, "_count": 1, **DESC_DATE[server.version]})
        assert newest["total"] == everything["total"] and len(newest["entry"]) == 1
        encounter = newest["entry"][0]["resource"]
        assert encounter["period"]["start"] == max(e["resource"]["period"]["start"] for e in everything["entry"])
        place = encounter["location"][0]["location"]
        assert place["display"]
        assert server.search("/" + place["reference"])["name"] == place["display"]
        checked += 1
    assert checked == {"stu3": 5, "dstu2": 39}[server.version]


def test_every_encounter_references_an_existing_location(server: Server) -> None:
    _, encounters = all_pages(server, "/Encounter", {"_count": 100})
    locations = {e["resource"]["id"]: e["resource"]["name"]
                 for e in server.search("/Location", {"_count": 100})["entry"]}
    assert len(encounters) == {"stu3": 73, "dstu2": 335}[server.version]
    for entry in encounters:
        place = entry["resource"]["location"][0]["location"]
        assert locations[place["reference"].removeprefix("Location/")] == place["display"]
    one = next(iter(locations))
    assert server.search("/Location", {"_id": one})["total"] == 1


def test_every_patient_has_one_coverage(server: Server) -> None:
    for patient_id in ids(server.search("/Patient", {"_count": 100})):
        bundle = server.search("/Coverage", {"patient": patient_id})
        assert bundle["total"] == 1
        cover = bundle["entry"][0]["resource"]
        if server.version == "stu3":
            assert cover["beneficiary"]["reference"] == f"Patient/{patient_id}"
            assert cover["subscriber"]["display"] and cover["subscriberId"]
            assert cover["grouping"]["planDisplay"] and cover["grouping"]["groupDisplay"]
            payor = cover["payor"][0]
            assert server.search("/Coverage", {"beneficiary": f"Patient/{patient_id}"})["total"] == 1
        else:
            assert cover["subscriber"]["reference"] == f"Patient/{patient_id}"
            assert cover["plan"] and cover["subscriberId"]["value"]
            payor = cover["issuer"]
            assert server.search("/Coverage", {"subscriber": patient_id})["total"] == 1
        assert cover["period"]["start"]
        assert server.search("/" + payor["reference"])["name"] == payor["display"]


def test_dstu2_coverage_has_no_beneficiary_parameter(dstu2: Server) -> None:
    assert_outcome(dstu2.get("/Coverage", {"beneficiary": "x"}), 400, "not-supported")


# --- medications, conditions, allergies --------------------------------------------------------------------

MEDICATION_CASES = {"stu3": ("smart-5555003", 18), "dstu2": ("5fe2a4fe-f138-4846-9908-cb6f9e741903", 8)}


def test_medication_search_by_patient(server: Server) -> None:
    kind = MEDICATION[server.version]
    patient_id, expected = MEDICATION_CASES[server.version]
    bundle = server.search(f"/{kind}", {"patient": patient_id, "_count": 5})
    assert bundle["total"] == expected and len(bundle["entry"]) == 5
    owner = "subject" if server.version == "stu3" else "patient"
    for entry in bundle["entry"]:
        medication = entry["resource"]
        assert medication["resourceType"] == kind
        assert medication[owner]["reference"] == f"Patient/{patient_id}"
        assert medication["medicationCodeableConcept"]["text"]
    other = next(k for k in MEDICATION.values() if k != kind)
    assert_outcome(server.get(f"/{other}", {"patient": patient_id}), 404)


def test_condition_and_allergy_search(server: Server) -> None:
    patient_id = VITALS_PATIENT[server.version]
    conditions = server.search("/Condition", {"patient": patient_id, "_count": 2})
    assert conditions["total"] == {"stu3": 13, "dstu2": 9}[server.version] and len(conditions["entry"]) == 2
    allergies = server.search("/AllergyIntolerance", {"patient": patient_id})
    assert allergies["total"] == {"stu3": 1, "dstu2": 5}[server.version]
    assert all(a["resource"]["patient"]["reference"] == f"Patient/{patient_id}" for a in allergies["entry"])


def test_dstu2_references_are_resolved_to_relative_ones(dstu2: Server) -> None:
    response = dstu2.get("/Observation", {"patient": VITALS_PATIENT["dstu2"], "_count": 100})
    assert "urn:uuid:" not in response.text
    care_plans = dstu2.get("/CarePlan", {"_count": 100})
    assert care_plans.json()["total"] == 84
    assert '"reference":""' not in care_plans.text and '"goal"' not in care_plans.text  # all were empty
    immunization = dstu2.search("/Immunization", {"_count": 1})["entry"][0]["resource"]
    assert dstu2.get(f"/Immunization/{immunization['id']}").status_code == 200


# --- read, errors, conditional read -------------------------------------------------------------------------

def test_read_and_not_found(server: Server) -> None:
    patient_id = VITALS_PATIENT[server.version]
    response = server.get(f"/Patient/{patient_id}")
    assert response.status_code == 200 and response.json()["id"] == patient_id
    assert response.headers["ETag"] == 'W/"1"' and response.headers["Last-Modified"].endswith("GMT")
    assert_outcome(server.get("/Patient/no-such-patient"), 404, "not-found")
    assert_outcome(server.get("/Spaceship/1"), 404)
    assert_outcome(server.get("/Spaceship", {"name": "x"}), 404)


@pytest.mark.parametrize("params", [{"foo": "1"}, {"family:sounds-like": "x"}, {"_count": "many"},
                                    {"_include": "Patient:general-practitioner"}, {"_sort": "gender,foo"},
                                    {"birthdate": "yesterday"}, {"_summary": "true"}, {"patient.name": "x"}])
def test_unknown_or_invalid_parameters_are_rejected(server: Server, params: dict) -> None:
    assert_outcome(server.get("/Patient", params), 400)


def test_non_json_format_is_refused(server: Server) -> None:
    assert server.get("/Patient", {"_format": "json"}).status_code == 200
    assert_outcome(server.get("/Patient", {"_format": "xml"}), 406)


def test_if_none_match_gives_304(server: Server) -> None:
    path = f"/Patient/{VITALS_PATIENT[server.version]}"
    etag = server.get(path).headers["ETag"]
    for tag in (etag, '"1"', "*", f'W/"7", {etag}'):
        unchanged = server.get(path, headers={"If-None-Match": tag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["ETag"] == etag
    assert server.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 200


# --- batch and writes ----------------------------------------------------------------------------------------

def test_batch_answers_each_entry_in_order(server: Server) -> None:
    patient_id = VITALS_PATIENT[server.version]
    requests_ = [("GET", f"Patient/{patient_id}"), ("GET", "Patient?family=huels&_count=1"),
                 ("GET", "Patient/no-such-patient"), ("GET", "Observation?bogus=1"),
                 ("PUT", f"Patient/{patient_id}"), ("GET", f"{server.base}/Coverage?patient={patient_id}"),
                 ("GET", "metadata")]
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": m, "url": u}} for m, u in requests_]}
    response = server.http.post(server.base, json=batch, timeout=10,
                                headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "batch-response" and len(answer["entry"]) == len(requests_)
    statuses = [e["response"]["status"].split()[0] for e in answer["entry"]]
    assert statuses == ["200", "200", "404", "400", "405", "200", "200"]
    kinds = [e["resource"]["resourceType"] for e in answer["entry"]]
    assert kinds[:6] == ["Patient", "Bundle", "OperationOutcome", "OperationOutcome", "OperationOutcome", "Bundle"]
    assert answer["entry"][0]["resource"]["id"] == patient_id
    assert answer["entry"][0]["response"]["etag"] == 'W/"1"'
    assert answer["entry"][1]["resource"]["total"] == (2 if server.version == "dstu2" else 0)
    assert answer["entry"][5]["resource"]["total"] == 1
    if server.version == "stu3":
        stu3_bundle.Bundle.model_validate(answer)


def test_transaction_is_refused(server: Server) -> None:
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [{"request": {"method": "GET", "url": "Patient"}}]}
    assert_outcome(server.http.post(server.base, json=transaction, timeout=10), 400, "not-supported")


@pytest.mark.parametrize(("method", "path"), [("PUT", "/Patient/x"), ("DELETE", "/Patient/x"),
                                              ("POST", "/Patient"), ("PATCH", "/Observation/y")])
def test_writes_are_not_allowed(server: Server, method: str, path: str) -> None:
    response = server.http.request(method, server.base + path, json={"resourceType": "Patient"}, timeout=10)
    assert_outcome(response, 405)
    assert response.headers["Allow"] in ("GET", "POST")


# --- links and logs --------------------------------------------------------------------------------------------

def test_full_urls_follow_the_host_header(stu3: Server) -> None:
    bundle = stu3.search("/Patient", {"_count": 1}, headers={"Host": "ehr.internal:8443"})
    assert bundle["entry"][0]["fullUrl"].startswith("http://ehr.internal:8443/fhir/Patient/")
    assert bundle["link"][0]["url"].startswith("http://ehr.internal:8443/fhir/Patient?")


def test_request_log_records_headers_but_not_tokens(server: Server) -> None:
    assert server.http.post(server.admin + "/requests/clear", timeout=10).status_code == 204
    server.get("/Patient", {"family": "huels"}, headers={
        "Authorization": "Bearer do-not-log-me", "X-Request-ID": "req-42", "Prefer": "handling=strict",
        "Accept": "application/fhir+json", "If-None-Match": 'W/"1"'})
    server.get("/metadata")
    log = server.http.get(server.admin + "/requests", timeout=10)
    assert "do-not-log-me" not in log.text
    first, second = log.json()
    assert (first["method"], first["path"], first["query"]) == ("GET", "/fhir/Patient", "family=huels")
    assert first["authorization"] is True and first["authorization_scheme"] == "Bearer"
    assert first["headers"]["x-request-id"] == "req-42"
    assert first["headers"]["prefer"] == "handling=strict"
    assert first["headers"]["if-none-match"] == 'W/"1"'
    assert first["headers"]["accept"] == "application/fhir+json"
    assert second["path"] == "/fhir/metadata" and second["authorization"] is False
    server.http.post(server.admin + "/requests/clear", timeout=10)
    assert server.http.get(server.admin + "/requests", timeout=10).json() == []


def test_access_log_holds_no_patient_data(server: Server) -> None:
    patient_id = VITALS_PATIENT[server.version]
    server.get(f"/Patient/{patient_id}")
    server.get("/Patient", {"family": "zebedee-unique"})
    time.sleep(0.2)
    log = server.log_path.read_text()
    assert "GET read Patient 200" in log and "GET search Patient 200" in log
    assert patient_id not in log and "zebedee" not in log


# --- upstream auth modes --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bearer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(tmp_path_factory.mktemp("bearer"), "stu3", "--auth", f"bearer:{BEARER}",
                    "--public-base", PUBLIC_BASE)
    yield server
    _stop(server)


def test_bearer_mode(bearer_server: Server) -> None:
    statement = bearer_server.search("/metadata")
    assert statement["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "OAuth"
    missing = bearer_server.get("/Patient")
    assert_outcome(missing, 401, "login")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = bearer_server.get("/Patient", headers={"Authorization": "Bearer nope"})
    assert_outcome(wrong, 401)
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert_outcome(bearer_server.get("/Patient", headers={"Authorization": f"Basic {BEARER}"}), 401)
    ok = bearer_server.search("/Patient", {"_count": 1}, headers={"Authorization": f"Bearer {BEARER}"})
    assert ok["entry"][0]["fullUrl"].startswith(PUBLIC_BASE + "/Patient/")


class Introspection(BaseHTTPRequestHandler):
    """A minimal RFC 7662 endpoint: tokens starting with `good` are active, `old` ones expired."""

    calls: list[str] = []

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        token = form["token"][0]
        Introspection.calls.append(token)
        claims: dict = {"active": token.startswith("good")}
        if token.startswith("old"):
            claims = {"active": True, "exp": int(time.time()) - 10}
        body = json.dumps(claims).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture(scope="module")
def introspect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Introspection)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/introspect"
    server = _start(tmp_path_factory.mktemp("introspect"), "dstu2", "--auth", f"introspect:{url}")
    yield server
    _stop(server)
    endpoint.shutdown()
    endpoint.server_close()


def test_introspection_mode(introspect_server: Server) -> None:
    Introspection.calls.clear()
    assert introspect_server.get("/metadata").status_code == 200
    assert_outcome(introspect_server.get("/Patient"), 401)
    assert Introspection.calls == []
    for _ in range(3):
        ok = introspect_server.get("/Patient", headers={"Authorization": "Bearer good-token-1"})
        assert ok.status_code == 200
    assert Introspection.calls == ["good-token-1"]  # cached after the first answer
    for token in ("bad-token", "old-token"):
        rejected = introspect_server.get("/Patient", headers={"Authorization": f"Bearer {token}"})
        assert_outcome(rejected, 401)
        assert 'error="invalid_token"' in rejected.headers["WWW-Authenticate"]
    assert Introspection.calls == ["good-token-1", "bad-token", "old-token"]


# --- STU3 validity of served and derived resources ----------------------------------------------------------------

def test_stu3_output_validates_against_stu3_models(stu3: Server) -> None:
    capabilitystatement.CapabilityStatement.model_validate(stu3.search("/metadata"))
    patients = stu3.search("/Patient", {"_count": 100})
    stu3_bundle.Bundle.model_validate(patients)
    for entry in patients["entry"]:
        patient.Patient.model_validate(entry["resource"])
    vitals = stu3.search("/Observation", {"patient": VITALS_PATIENT["stu3"], "category": "vital-signs",
                                          "_sort": "-date", "_count": 10})
    stu3_bundle.Bundle.model_validate(vitals)
    for entry in vitals["entry"]:
        observation.Observation.model_validate(entry["resource"])
    for kind, model in (("Coverage", coverage.Coverage), ("Location", location.Location),
                        ("Organization", organization.Organization)):
        found = stu3.search(f"/{kind}", {"_count": 100})
        assert found["total"] > 0
        for entry in found["entry"]:
            model.model_validate(entry["resource"])


# --- Python API ----------------------------------------------------------------------------------------------------

def test_python_api_serves_in_process() -> None:
    dataset = load_dataset("dstu2")
    again = load_dataset("dstu2")
    assert [s.id for s in dataset.by_type["Immunization"]] == [s.id for s in again.by_type["Immunization"]]
    app = build_wsgi_app(dataset, public_base=PUBLIC_BASE, auth=f"bearer:{BEARER}")
    captured: dict = {}

    def start_response(status: str, headers: list) -> None:
        captured.update(status=status, headers=dict(headers))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/fhir/Patient", "QUERY_STRING": "family=huels",
               "HTTP_AUTHORIZATION": f"Bearer {BEARER}", "wsgi.input": None, "wsgi.url_scheme": "http",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80"}
    body = json.loads(b"".join(app(environ, start_response)))
    assert captured["status"] == "200 OK" and body["total"] == 2
    assert body["entry"][0]["fullUrl"].startswith(PUBLIC_BASE)
    assert app.requests.snapshot()[0]["path"] == "/fhir/Patient"
