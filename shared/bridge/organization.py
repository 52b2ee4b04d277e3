"""Organization: R4 → STU3 (same elements) / DSTU2 (one type, no alias or endpoint).

The app shows organizations only as reference displays (care provider, payer); reading one
passes it through with the datatype fixes (R4's `organization-type` system is renamed).
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import Datatypes, To, many
from shared.bridge.params import string, token
from shared.bridge.resource import FacadeTables, ResourceMap


def tables(dt: Datatypes) -> FacadeTables:
    """Organization's tables in one direction's datatypes (DSTU2: one `type`, no alias or endpoint)."""
    common = {
        "identifier": To("identifier", many(dt.identifier)),
        "active": To("active"),
        "name": To("name"),
        "telecom": To("telecom", many(dt.contact_point)),
        "address": To("address", many(dt.address)),
        "partOf": To("partOf", dt.reference),
        "contact": To("contact", many(dt.element({
            "purpose": To("purpose", dt.codeable_concept),
            "name": To("name", dt.human_name),
            "telecom": To("telecom", many(dt.contact_point)),
            "address": To("address", dt.address),
        }))),
    }
    return {"stu3": {**common, "type": To("type", many(dt.codeable_concept)), "alias": To("alias"),
                     "endpoint": To("endpoint", many(dt.reference))},
            "dstu2": {**common, "type": To("type", dt.single(dt.codeable_concept))}}


_SEARCH = {"name": string("name"), "identifier": token("identifier"),
           "type": token("type", system="organization-type")}

MAP = ResourceMap(
    "Organization",
    **tables(datatypes),
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
