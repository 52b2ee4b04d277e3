"""Code system URIs that R4 moved to terminology.hl7.org, mapped back to their STU3/DSTU2 names.

R4 names HL7 v2 tables, v3 code systems and several FHIR-defined code systems under
`http://terminology.hl7.org/CodeSystem/`; STU3 and DSTU2 name the same systems under
`http://hl7.org/fhir/` (e.g. the MRN identifier type: R4 `.../CodeSystem/v2-0203`, STU3/DSTU2
`http://hl7.org/fhir/v2/0203`). A Coding is renamed only when its code exists in the older
system; otherwise it keeps its R4 URI, which is still a correct (if unfamiliar) Coding, so nothing
is lost. The reverse direction serves search parameters sent in the facade's terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.bridge.base import identity

THO = "http://terminology.hl7.org/CodeSystem/"
OLD = "http://hl7.org/fhir/"
_V2, _V3 = "v2-", "v3-"


@dataclass(frozen=True)
class SystemMap:
    """One FHIR-defined code system: its older URI and the R4 codes it defines (→ older code)."""

    uri: str
    codes: Mapping[str, str]


_OBSERVATION_CATEGORY = SystemMap(OLD + "observation-category", identity(
    "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam", "therapy"))
_ORGANIZATION_TYPE = SystemMap(OLD + "organization-type", identity(
    "prov", "dept", "team", "govt", "ins", "edu", "reli", "crs", "cg", "bus", "other"))

# R4 `http://terminology.hl7.org/CodeSystem/<name>` → the older system, per facade.
SYSTEMS: Mapping[str, Mapping[str, SystemMap]] = {
    "stu3": {
        "observation-category": _OBSERVATION_CATEGORY,
        "organization-type": _ORGANIZATION_TYPE,
        "condition-category": SystemMap(OLD + "condition-category",
                                        identity("problem-list-item", "encounter-diagnosis")),
        "subscriber-relationship": SystemMap(OLD + "policyholder-relationship",
                                             identity("child", "parent", "spouse", "common", "other", "self")),
    },
    "dstu2": {
        "observation-category": _OBSERVATION_CATEGORY,
        "organization-type": _ORGANIZATION_TYPE,
        "condition-category": SystemMap(OLD + "condition-category", {"encounter-diagnosis": "diagnosis"}),
    },
}


def to_facade(system: str, code: str | None, facade: str) -> tuple[str, str | None]:
    """(system, code) of an R4 Coding in the facade's terms; unchanged when there is no equivalent."""
    if not system.startswith(THO):
        return system, code
    name = system[len(THO):]
    if name.startswith(_V2):
        return f"{OLD}v2/{name[len(_V2):]}", code
    if name.startswith(_V3):
        return f"{OLD}v3/{name[len(_V3):]}", code
    mapped = SYSTEMS[facade].get(name)
    if mapped is None or code is None or code not in mapped.codes:
        return system, code
    return mapped.uri, mapped.codes[code]


def to_r4(system: str, code: str, facade: str) -> tuple[str, str]:
    """The reverse, for a `system|code` search value sent in the facade's terms."""
    if system.startswith(f"{OLD}v2/"):
        return f"{THO}{_V2}{system[len(OLD) + 3:]}", code
    if system.startswith(f"{OLD}v3/"):
        return f"{THO}{_V3}{system[len(OLD) + 3:]}", code
    for name, mapped in SYSTEMS[facade].items():
        if mapped.uri == system:
            return THO + name, r4_code(name, code, facade)
    return system, code


def r4_code(name: str, code: str, facade: str) -> str:
    """An older code of the FHIR-defined system `name` as its R4 code (unchanged if unmapped)."""
    mapped = SYSTEMS[facade].get(name)
    reverse = {older: r4 for r4, older in mapped.codes.items()} if mapped else {}
    return reverse.get(code, code)
