"""Precomputed FHIR answers for the fixed-bytes provider, taken from the sample EHR once per run.

The nginx provider serves the sample EHR's own answers for the Patients app's requests, with the
EHR's base URL replaced by the nginx base (so the gateway's URL rewriting does its real work),
plus a search Bundle of about 50 MB for the memory figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

BIG_BUNDLE_BYTES = 50 * 1024 * 1024
TIMEOUT = 30


@dataclass(frozen=True)
class PageRequests:
    """The Patients app's patient page: one read, one patient search, and the six lists it shows."""

    patient_id: str
    read: str
    search: str
    page: tuple[str, ...]


def page_requests(ehr_base: str) -> PageRequests:
    """Picks a patient with vital signs and encounters, the way the journey tests do."""
    bundle = _get(ehr_base, "Patient?_count=100")
    for entry in bundle["entry"]:
        patient = entry["resource"]
        pid = patient["id"]
        if _total(ehr_base, f"Observation?patient={pid}&category=vital-signs&_count=1") and \
                _total(ehr_base, f"Encounter?patient={pid}&_count=1"):
            family = patient["name"][0]["family"]
            family = family if isinstance(family, str) else family[0]
            page = (f"Observation?patient={pid}&category=vital-signs&_sort=-date",
                    f"Condition?patient={pid}&_count=10", f"Encounter?patient={pid}&_sort=-date&_count=1",
                    f"AllergyIntolerance?patient={pid}", f"MedicationRequest?patient={pid}&_count=10",
                    f"Coverage?patient={pid}")
            return PageRequests(pid, f"Patient/{pid}", f"Patient?family={family}", page)
    raise RuntimeError("no patient with vital signs and encounters in the sample EHR")


def write_static_tree(www: Path, ehr_base: str, bases: dict[str, str], big_base: str, reqs: PageRequests) -> dict:
    """Files for `bench.nginx.static_provider`: each tree in `bases` mirrors the EHR's answers with
    its own base URL in them; `big/` holds the 50 MB Bundle."""
    sizes: dict[str, int] = {}
    for path in (reqs.read, reqs.search, *reqs.page):
        raw = _raw(ehr_base, path)
        rtype, _, rid = path.partition("?")[0].partition("/")
        for tree, base in bases.items():
            target = www / tree / "read" / rtype / f"{rid}.json" if rid else www / tree / "search" / f"{rtype}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw.replace(f'"{ehr_base}'.encode(), f'"{base}'.encode()))
        sizes[path] = len(raw)
    big = www / "big" / "search" / "Patient.json"
    big.parent.mkdir(parents=True, exist_ok=True)
    sizes["big"] = _write_big_bundle(big, _get(ehr_base, "Patient?_count=100")["entry"], ehr_base, big_base)
    return sizes


def _write_big_bundle(target: Path, entries: list[dict[str, Any]], ehr_base: str, big_base: str) -> int:
    """A searchset of copies of real Patient entries with distinct ids, written as it grows."""
    size = 0
    with target.open("wb") as out:
        head = json.dumps({"resourceType": "Bundle", "type": "searchset",
                           "link": [{"relation": "self", "url": f"{big_base}/Patient?_count=large"}]})
        size += out.write(head[:-1].encode() + b', "entry": [')
        n = 0
        while size < BIG_BUNDLE_BYTES:
            entry = entries[n % len(entries)]
            resource = {**entry["resource"], "id": f"big-{n}"}
            text = json.dumps({"fullUrl": f"{big_base}/Patient/big-{n}", "resource": resource,
                               "search": {"mode": "match"}})
            size += out.write((", " if n else "").encode() + text.replace(ehr_base, big_base).encode())
            n += 1
        size += out.write(f'], "total": {n}}}'.encode())
    return size


def _raw(base: str, path: str) -> bytes:
    response = requests.get(f"{base}/{path}", timeout=TIMEOUT)
    response.raise_for_status()
    return response.content


def _get(base: str, path: str) -> dict[str, Any]:
    return json.loads(_raw(base, path))


def _total(base: str, path: str) -> int:
    return int(_get(base, path).get("total", 0))
