"""Location: R4 → STU3 / DSTU2 (the app shows it only as Encounter.location's display).

R4 allows several types, STU3 and DSTU2 one: the first is kept, the rest counted. DSTU2 has
no operationalStatus, alias or endpoint; R4 opening hours have no older equivalent.
"""

from __future__ import annotations

from shared.bridge.base import CodeMap, To, codes, first, identity, many
from shared.bridge.datatypes import address, codeable_concept, coding, contact_point, element, identifier, reference
from shared.bridge.params import string, token
from shared.bridge.resource import ResourceMap

_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(CodeMap(identity("active", "suspended", "inactive")))),
    "name": To("name"),
    "description": To("description"),
    "mode": To("mode", codes(CodeMap(identity("instance", "kind")))),
    "type": To("type", first(codeable_concept)),
    "telecom": To("telecom", many(contact_point)),
    "address": To("address", address),
    "physicalType": To("physicalType", codeable_concept),
    "position": To("position", element({"longitude": To("longitude"), "latitude": To("latitude"),
                                        "altitude": To("altitude")})),
    "managingOrganization": To("managingOrganization", reference),
    "partOf": To("partOf", reference),
}
_SEARCH = {"name": string("name"), "identifier": token("identifier")}

MAP = ResourceMap(
    "Location",
    stu3={**_COMMON, "operationalStatus": To("operationalStatus", coding), "alias": To("alias"),
          "endpoint": To("endpoint", many(reference))},
    dstu2=_COMMON,
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
