"""Patient: R4 → STU3 (same elements) and DSTU2 (`careProvider`, list-valued family names).

The app reads name.family/given/use/prefix, gender, birthDate, the MRN identifier (type coding
`MR` in `http://hl7.org/fhir/v2/0203`, which `terminology` renames from R4's
`http://terminology.hl7.org/CodeSystem/v2-0203`) and the care provider's display.
"""

from __future__ import annotations

from shared.bridge.base import CodeMap, To, codes, identity, many
from shared.bridge.datatypes import (
    address,
    attachment,
    codeable_concept,
    contact_point,
    element,
    human_name,
    identifier,
    period,
    reference,
    reference_to,
)
from shared.bridge.params import date, string, token
from shared.bridge.resource import ResourceMap

LINK_TYPE = {
    "stu3": CodeMap(identity("replaced-by", "replaces", "refer", "seealso")),
    "dstu2": CodeMap({"replaced-by": "replace", "refer": "refer", "seealso": "seealso"}),
}

_CONTACT = element({
    "relationship": To("relationship", many(codeable_concept)),
    "name": To("name", human_name),
    "telecom": To("telecom", many(contact_point)),
    "address": To("address", address),
    "gender": To("gender"),
    "organization": To("organization", reference),
    "period": To("period", period),
})
_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "active": To("active"),
    "name": To("name", many(human_name)),
    "telecom": To("telecom", many(contact_point)),
    "gender": To("gender"),
    "birthDate": To("birthDate"),
    "deceasedBoolean": To("deceasedBoolean"),
    "deceasedDateTime": To("deceasedDateTime"),
    "address": To("address", many(address)),
    "maritalStatus": To("maritalStatus", codeable_concept),
    "multipleBirthBoolean": To("multipleBirthBoolean"),
    "multipleBirthInteger": To("multipleBirthInteger"),
    "photo": To("photo", many(attachment)),
    "contact": To("contact", many(_CONTACT)),
    "communication": To("communication", many(element({
        "language": To("language", codeable_concept), "preferred": To("preferred")}))),
    "managingOrganization": To("managingOrganization", reference),
    "link": To("link", many(element({"other": To("other", reference), "type": To("type", codes(LINK_TYPE))}))),
}
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
    stu3={**_COMMON, "generalPractitioner": To("generalPractitioner", many(reference))},
    dstu2={**_COMMON, "generalPractitioner": To("careProvider", many(reference_to("Organization", "Practitioner")))},
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
