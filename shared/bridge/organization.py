"""Organization: R4 → STU3 (same elements) / DSTU2 (one type, no alias or endpoint).

The app shows organizations only as reference displays (care provider, payer); reading one
passes it through with the datatype fixes (R4's `organization-type` system is renamed).
"""

from __future__ import annotations

from shared.bridge.base import To, first, many
from shared.bridge.datatypes import address, codeable_concept, contact_point, element, human_name, identifier, reference
from shared.bridge.params import string, token
from shared.bridge.resource import ResourceMap

_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "active": To("active"),
    "name": To("name"),
    "telecom": To("telecom", many(contact_point)),
    "address": To("address", many(address)),
    "partOf": To("partOf", reference),
    "contact": To("contact", many(element({
        "purpose": To("purpose", codeable_concept),
        "name": To("name", human_name),
        "telecom": To("telecom", many(contact_point)),
        "address": To("address", address),
    }))),
}
_SEARCH = {"name": string("name"), "identifier": token("identifier"),
           "type": token("type", system="organization-type")}

MAP = ResourceMap(
    "Organization",
    stu3={**_COMMON, "type": To("type", many(codeable_concept)), "alias": To("alias"),
          "endpoint": To("endpoint", many(reference))},
    dstu2={**_COMMON, "type": To("type", first(codeable_concept))},
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
