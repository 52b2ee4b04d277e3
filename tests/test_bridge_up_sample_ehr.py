"""The R4 facade's bridge against the strict sample STU3 and DSTU2 EHRs (devtools/sample_ehr), in process.

The Patients app's journey, spelled in R4, goes through `translate_request_up`, is sent to the
sample EHR as the proxy would send it (the EHR answers 400 to any parameter, modifier or sort it
does not know), and comes back through `convert_response_up`; every R4 resource is validated with
`fhir.resources.R4B`. Paging links are followed as the gateway would after rewriting them, and
the app's page is sent as one batch whose entries are translated one by one.
"""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class

from devtools.sample_ehr import build_wsgi_app, load_dataset
from shared.bridge.up import convert_response_up, translate_request_up
from shared.policy import Interaction, batch_entry_interaction

BASE = "http://ehr.example/fhir"
PROVIDERS = ["stu3", "dstu2"]
EXPECTED_DROPS = {
    "AllergyIntolerance.criticality:unknown-code",  # Synthea's DSTU2 data says low/high, DSTU2 CRITL/CRITH
    "Coverage.subscriberId.system:not-representable",  # a DSTU2 Identifier, an R4 string
}


@cache
def ehr(version: str) -> Any:
    return build_wsgi_app(load_dataset(version), public_base=BASE, auth="none")


def send(version: str, method: str, path: str, query: str = "", body: bytes = b"",
         content_type: str = "") -> tuple[int, dict]:
    captured: dict[str, str] = {}

    def start_response(status: str, headers: list) -> None:
        captured["status"] = status

    environ = {"REQUEST_METHOD": method, "PATH_INFO": f"/fhir/{path}", "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type, "wsgi.input": io.BytesIO(body),
               "wsgi.url_scheme": "http", "SERVER_NAME": "ehr.example", "SERVER_PORT": "80"}
    raw = b"".join(ehr(version)(environ, start_response))
    return int(captured["status"].split()[0]), json.loads(raw) if raw else {}


def through(version: str, action: Interaction) -> tuple[dict, dict[str, int]]:
    """One R4-facade request, as the proxy will make it: translate, forward, convert."""
    sent = translate_request_up(version, action)
    if sent.kind == "search-post":
        status, body = send(version, "POST", sent.upstream_path, body=sent.query_string().encode(),
                            content_type="application/x-www-form-urlencoded")
    else:
        status, body = send(version, "GET", sent.upstream_path, sent.query_string())
    assert status == 200, body
    return convert_response_up(version, body, BASE)


def resources(bundle: dict) -> list[dict]:
    found = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    for resource in found:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return found


def search(kind: str, *query: tuple[str, str], post: bool = False) -> Interaction:
    return Interaction("search-post" if post else "search", kind, None, tuple(query))


@cache
def patient_with_vitals(version: str) -> dict:
    """A patient with enough vital signs to page through (found through the bridge, in R4)."""
    for patient in resources(through(version, search("Patient", ("_count", "50")))[0]):
        bundle, _ = through(version, search("Observation", ("patient", patient["id"]), ("category", "vital-signs"),
                                            ("_count", "1")))
        if bundle["total"] > 3:
            return patient
    raise AssertionError("no patient with vital signs")


@pytest.mark.parametrize("version", PROVIDERS)
def test_patient_search_by_post_and_read_give_valid_r4(version):
    patient = patient_with_vitals(version)
    family = patient["name"][0]["family"][:4]
    found, drops = through(version, search("Patient", ("family", family), ("_count", "5"), post=True))
    assert patient["id"] in {p["id"] for p in resources(found)} and drops == {}
    read, _ = through(version, Interaction("read", "Patient", patient["id"]))
    assert read["resourceType"] == "Patient" and isinstance(read["name"][0]["family"], str)
    resources({"entry": [{"resource": read}]})


@pytest.mark.parametrize("version", PROVIDERS)
def test_vital_signs_newest_first_and_paging_through_rewritten_links(version):
    patient = patient_with_vitals(version)
    first, _ = through(version, search("Observation", ("patient", patient["id"]), ("category", "vital-signs"),
                                       ("_sort", "-date"), ("_count", "2")))
    seen = resources(first)
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert "_sort=-date" in nxt and "_sort:desc" not in nxt  # R4 spelling, whatever the provider's
    parts = urlsplit(nxt)
    second, _ = through(version, search(parts.path.rsplit("/", 1)[1], *parse_qsl(parts.query)))
    seen += resources(second)
    dates = [o["effectiveDateTime"] for o in seen]
    assert dates == sorted(dates, reverse=True) and len({o["id"] for o in seen}) == 4


@pytest.mark.parametrize("version", PROVIDERS)
@pytest.mark.parametrize(("kind", "query"), [
    ("Condition", (("_count", "10"),)),
    ("Encounter", (("_sort", "-date"), ("_count", "1"))),
    ("AllergyIntolerance", ()),
    ("MedicationRequest", (("_count", "10"),)),
    ("Coverage", ()),
])
def test_the_patients_app_searches_give_valid_r4(version, kind, query):
    patient = patient_with_vitals(version)
    bundle, drops = through(version, search(kind, ("patient", patient["id"]), *query))
    assert bundle["type"] == "searchset" and isinstance(bundle["total"], int)
    assert all(r["resourceType"] == kind for r in resources(bundle))
    assert set(drops) <= EXPECTED_DROPS, drops


@pytest.mark.parametrize("version", PROVIDERS)
def test_the_apps_page_as_one_batch_translates_each_entry(version):
    patient = patient_with_vitals(version)["id"]
    r4_urls = [f"Patient/{patient}", f"Observation?patient={patient}&category=vital-signs&_sort=-date",
               f"MedicationRequest?patient={patient}", f"Coverage?patient={patient}"]
    entries = []
    for url in r4_urls:
        sent = translate_request_up(version, batch_entry_interaction({"request": {"method": "GET", "url": url}}))
        query = urlencode(sent.query, safe=":/,|")
        entries.append({"request": {"method": "GET", "url": sent.upstream_path + (f"?{query}" if query else "")}})
    batch = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()
    status, body = send(version, "POST", "", body=batch, content_type="application/fhir+json")
    assert status == 200, body
    out, _ = convert_response_up(version, body, BASE)
    assert [e["response"]["status"].split()[0] for e in out["entry"]] == ["200"] * 4
    assert out["entry"][0]["resource"]["resourceType"] == "Patient"
    assert {r["resourceType"] for r in resources(out["entry"][2]["resource"])} <= {"MedicationRequest"}
    get_fhir_model_class("Bundle").model_validate(out)
