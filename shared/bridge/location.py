"""Location: R4 → STU3 / DSTU2 (the app shows it only as Encounter.location's display).

R4 allows several types, STU3 and DSTU2 one: the first is kept, the rest counted. DSTU2 has
no operationalStatus, alias or endpoint; R4 opening hours have no older equivalent.
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Datatypes, To, codes, identity, many
from shared.bridge.params import string, token
from shared.bridge.resource import FacadeTables, ResourceMap


def tables(dt: Datatypes) -> FacadeTables:
    """Location's tables in one direction's datatypes (one `type`; DSTU2 has no operationalStatus, alias, endpoint)."""
    common = {
        "identifier": To("identifier", many(dt.identifier)),
        "status": To("status", codes(CodeMap(identity("active", "suspended", "inactive")))),
        "name": To("name"),
        "description": To("description"),
        "mode": To("mode", codes(CodeMap(identity("instance", "kind")))),
        "telecom": To("telecom", many(dt.contact_point)),
        "address": To("address", dt.address),
        "physicalType": To("physicalType", dt.codeable_concept),
        "position": To("position", dt.element({"longitude": To("longitude"), "latitude": To("latitude"),
                                               "altitude": To("altitude")})),
        "managingOrganization": To("managingOrganization", dt.reference),
        "partOf": To("partOf", dt.reference),
        "type": To("type", dt.single(dt.codeable_concept)),
    }
    return {"stu3": {**common, "operationalStatus": To("operationalStatus", dt.coding), "alias": To("alias"),
                     "endpoint": To("endpoint", many(dt.reference))},
            "dstu2": common}


_SEARCH = {"name": string("name"), "identifier": token("identifier")}

MAP = ResourceMap(
    "Location",
    **tables(datatypes),
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
