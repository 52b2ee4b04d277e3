"""Precomputed FHIR answers for the fixed-bytes provider, taken from the sample EHR once per run.

The nginx provider serves the sample EHR's own answers for the Patients app's requests, with the
EHR's base URL replaced by the nginx base (so the gateway's URL rewriting does its real work),
plus search Bundles of configurable sizes for the memory figure (issue #12: 6, 60 and 300 MB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

TIMEOUT = 30
_BLOCK = "BENCHBLOCKNO"  # stands for the block number in the ids of one block of Bundle entries


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


def write_static_tree(www: Path, ehr_base: str, bases: dict[str, str], reqs: PageRequests) -> dict[str, int]:
    """Files for `bench.nginx.static_provider`: each tree in `bases` mirrors the EHR's answers with
    its own base URL in them. Returns the size of each answer."""
    sizes: dict[str, int] = {}
    for path in (reqs.read, reqs.search, *reqs.page):
        raw = _raw(ehr_base, path)
        rtype, _, rid = path.partition("?")[0].partition("/")
        for tree, base in bases.items():
            target = www / tree / "read" / rtype / f"{rid}.json" if rid else www / tree / "search" / f"{rtype}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw.replace(f'"{ehr_base}'.encode(), f'"{base}'.encode()))
        sizes[path] = len(raw)
    return sizes


def write_big_bundles(www: Path, ehr_base: str, bundles: dict[str, tuple[str, int]]) -> dict[str, int]:
    """One Patient search Bundle per tree (`bundles`: tree -> (its base URL, bytes at least)), served at
    `<base>/Patient`; returns the bytes written per tree. Each tree has its own base URL so that each
    size is a tenant of its own and the gateway rewrites every entry's URLs."""
    entries = _get(ehr_base, "Patient?_count=100")["entry"]
    written = {}
    for tree, (base, size) in bundles.items():
        target = www / tree / "search" / "Patient.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        written[tree] = _write_big_bundle(target, entries, ehr_base, base, size)
    return written


def _write_big_bundle(target: Path, entries: list[dict[str, Any]], ehr_base: str, base: str, size: int) -> int:
    """A searchset of copies of real Patient entries with distinct ids, written block by block: one
    block of all the entries is serialised once and repeated with its block number in the ids, which
    keeps writing 300 MB to a few seconds."""
    texts = [json.dumps({"fullUrl": f"{base}/Patient/big-{_BLOCK}-{i}",
                         "resource": {**entry["resource"], "id": f"big-{_BLOCK}-{i}"}, "search": {"mode": "match"}})
             for i, entry in enumerate(entries)]
    block = ", ".join(texts).replace(ehr_base, base)
    if block.count(_BLOCK) != 2 * len(entries):
        raise RuntimeError(f"{_BLOCK} occurs in the sample data: pick another placeholder")
    head = json.dumps({"resourceType": "Bundle", "type": "searchset",
                       "link": [{"relation": "self", "url": f"{base}/Patient?_count=1000"}]})
    blocks = 0
    with target.open("wb") as out:
        written = out.write(head[:-1].encode() + b', "entry": [')
        while written < size:
            written += out.write((", " if blocks else "").encode() + block.replace(_BLOCK, str(blocks)).encode())
            blocks += 1
        written += out.write(f'], "total": {blocks * len(entries)}}}'.encode())
    return written


def _raw(base: str, path: str) -> bytes:
    response = requests.get(f"{base}/{path}", timeout=TIMEOUT)
    response.raise_for_status()
    return response.content


def _get(base: str, path: str) -> dict[str, Any]:
    return json.loads(_raw(base, path))


def _total(base: str, path: str) -> int:
    return int(_get(base, path).get("total", 0))
