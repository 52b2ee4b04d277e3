"""Patient: R4 → STU3 (same elements) and DSTU2 (`careProvider`, list-valued family names).

The app reads name.family/given/use/prefix, gender, birthDate, the MRN identifier (type coding
`MR` in `http://hl7.org/fhir/v2/0203`, which `terminology` renames from R4's
`http://terminology.hl7.org/CodeSystem/v2-0203`) and the care provider's display.
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Datatypes, To, identity, many
from shared.bridge.datatypes import copied, person_elements
from shared.bridge.params import date, string, token
from shared.bridge.resource import FacadeTables, ResourceMap

LINK_TYPE = {
    "stu3": CodeMap(identity("replaced-by", "replaces", "refer", "seealso")),
    "dstu2": CodeMap({"replaced-by": "replace", "refer": "refer", "seealso": "seealso"}),
}


def _elements(dt: Datatypes) -> dict[str, To]:
    """Patient's elements that keep their name in every version, in one direction's datatypes."""
    contact = dt.element({
        "relationship": To("relationship", many(dt.codeable_concept)),
        "name": To("name", dt.human_name),
        "telecom": To("telecom", many(dt.contact_point)),
        "address": To("address", dt.address),
        "gender": To("gender"),
        "organization": To("organization", dt.reference),
        "period": To("period", dt.period),
    })
    return {
        **person_elements(dt),
        "name": To("name", many(dt.human_name)),
        **copied("deceasedBoolean", "deceasedDateTime", "multipleBirthBoolean", "multipleBirthInteger"),
        "maritalStatus": To("maritalStatus", dt.codeable_concept),
        "contact": To("contact", many(contact)),
        "communication": To("communication", many(dt.element({
            "language": To("language", dt.codeable_concept), "preferred": To("preferred")}))),
        "managingOrganization": To("managingOrganization", dt.reference),
        "link": To("link", many(dt.element({"other": To("other", dt.reference),
                                            "type": To("type", dt.coded(LINK_TYPE))}))),
    }


def tables(dt: Datatypes) -> FacadeTables:
    """Patient's tables in one direction's datatypes (DSTU2 calls the general practitioners `careProvider`)."""
    return {"stu3": {**_elements(dt), "generalPractitioner": To("generalPractitioner", many(dt.reference))},
            "dstu2": {**_elements(dt), **dt.renamed("generalPractitioner", "careProvider",
                                                    many(dt.reference_to("Organization", "Practitioner")))}}


_SEARCH = {
    "id": token("_id"),  # the Patients app articles write `id`
    "family": string("family", "contains"),
    "given": string("given", "contains"),
    "name": string("name"),
    "birthdate": date("birthdate"),
    "gender": token("gender"),
    "identifier": token("identifier"),
}

MAP = ResourceMap(
    "Patient",
    **tables(datatypes),
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
