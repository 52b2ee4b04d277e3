"""The sample EHR's own CapabilityStatement (STU3) or Conformance (DSTU2)."""

from __future__ import annotations

from devtools.sample_ehr.search import Param
from devtools.sample_ehr.store import VersionInfo

DESCRIPTION = (
    "Sample EHR for development, tests and benchmarks; never deployed. Serves the synthetic "
    "{folder} sample data read-only. Not in the source data but derived at load time: one Coverage "
    "per Patient (payor/issuer: one of three fictitious insurer Organizations), four fixed Locations "
    "of a sample hospital, and a location[0] on every Encounter that references one of them. "
    "Searches are strict (unknown parameters are errors) and string parameters match substrings."
)
SECURITY_SERVICE = "http://hl7.org/fhir/restful-security-service"


def capability(info: VersionInfo, params: dict[str, dict[str, Param]], base: str,
               auth_description: str | None, date: str) -> dict:
    """The statement for this server: read and search-type on every type, batch at system level."""
    rest: dict = {
        "mode": "server",
        "resource": [_resource(kind, kind_params) for kind, kind_params in sorted(params.items())],
        "interaction": [_batch_interaction(info)],
    }
    if auth_description:
        rest["security"] = {
            "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "OAuth"}]}],
            "description": auth_description,
        }
    description = DESCRIPTION.format(folder=info.folder)
    return {
        "resourceType": info.capability_type,
        "name": "SampleEHR",
        "status": "active",
        "date": date,
        "publisher": "Sample EHR (development only)",
        "description": description,
        "kind": "instance",
        "software": {"name": "sample-ehr"},
        "implementation": {"description": description, "url": base},
        "fhirVersion": info.fhir_version,
        "acceptUnknown": "no",
        "format": [info.content_type.split(";")[0], "json"],
        "rest": [rest],
    }


def _resource(kind: str, params: dict[str, Param]) -> dict:
    return {
        "type": kind,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": name, "type": param.kind} for name, param in sorted(params.items())],
    }


def _batch_interaction(info: VersionInfo) -> dict:
    """STU3 has a `batch` code; DSTU2 only `transaction`, which covers batch Bundles too."""
    if info.name == "stu3":
        return {"code": "batch"}
    return {"code": "transaction",
            "documentation": "Bundle.type=batch only; transactions are refused (read-only server)."}
