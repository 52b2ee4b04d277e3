"""The in-memory, read-only store behind the sample EHR, with the indexes its searches need.

Every resource is serialised once, at load time, so a read answers with stored bytes and a
search bundle is assembled from them: no per-request deep copy or re-encoding of resources.
The dicts are shared between threads and must never be mutated after :meth:`Dataset.build`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

# References that tie a resource to "its" patient, most specific first. DSTU2 Coverage has
# only `subscriber`; STU3 Coverage names the covered patient `beneficiary`.
PATIENT_LINKS = ("patient", "subject", "beneficiary", "subscriber")
# The data is static: one fixed instant stands in for every resource's meta.lastUpdated.
LAST_UPDATED = "2019-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What differs between the two FHIR versions at the HTTP and metadata level."""

    name: str
    folder: str
    fhir_version: str
    content_type: str
    capability_type: str


VERSIONS = {
    "stu3": VersionInfo("stu3", "stu3-smart", "3.0.2", "application/fhir+json; charset=utf-8",
                        "CapabilityStatement"),
    "dstu2": VersionInfo("dstu2", "dstu2-synthea", "1.0.2", "application/json+fhir; charset=utf-8",
                         "Conformance"),
}


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON, the one encoding every response uses."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def patient_id(resource: dict) -> str | None:
    """The id of the Patient a resource belongs to, from its first Patient-typed link."""
    for field in PATIENT_LINKS:
        link = resource.get(field)
        reference = link.get("reference", "") if isinstance(link, dict) else ""
        if reference.startswith("Patient/"):
            return reference[len("Patient/"):]
    return None


@dataclass(frozen=True, slots=True)
class Stored:
    """One resource with its pre-encoded body and HTTP validators."""

    type: str
    id: str
    resource: dict
    raw: bytes
    etag: str
    last_modified: str

    @classmethod
    def of(cls, resource: dict) -> Stored:
        meta = resource["meta"]
        modified = datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00"))
        return cls(resource["resourceType"], resource["id"], resource, dumps(resource),
                   f'W/"{meta["versionId"]}"', format_datetime(modified, usegmt=True))


@dataclass
class Dataset:
    """All resources of one FHIR version, indexed by type, by id and by (type, patient)."""

    version: VersionInfo
    by_type: dict[str, list[Stored]]
    by_id: dict[tuple[str, str], Stored]
    by_patient: dict[tuple[str, str], list[Stored]]

    @classmethod
    def build(cls, version: VersionInfo, resources: Iterable[dict]) -> Dataset:
        by_type: dict[str, list[Stored]] = defaultdict(list)
        by_id: dict[tuple[str, str], Stored] = {}
        by_patient: dict[tuple[str, str], list[Stored]] = defaultdict(list)
        for resource in resources:
            stored = Stored.of(resource)
            if (stored.type, stored.id) in by_id:
                raise ValueError(f"duplicate resource {stored.type}/{stored.id}")
            by_type[stored.type].append(stored)
            by_id[stored.type, stored.id] = stored
            owner = patient_id(resource)
            if owner:
                by_patient[stored.type, owner].append(stored)
        return cls(version, dict(by_type), by_id, dict(by_patient))

    @property
    def patient_count(self) -> int:
        return len(self.by_type.get("Patient", ()))

    @property
    def resource_count(self) -> int:
        return len(self.by_id)
