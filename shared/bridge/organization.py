"""Organization: R4 → STU3 (same elements) / DSTU2 (one type, no alias or endpoint).

The app shows organizations only as reference displays (care provider, payer); reading one
passes it through with the datatype fixes (R4's `organization-type` system is renamed).
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import Datatypes, To, first, many
from shared.bridge.datatypes import codeable_concept, reference
from shared.bridge.params import string, token
from shared.bridge.resource import ResourceMap


def elements(dt: Datatypes) -> dict[str, To]:
    """Organization's elements that keep their name and cardinality in every version (not `type`)."""
    return {
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


_COMMON = elements(datatypes)
_SEARCH = {"name": string("name"), "identifier": token("identifier"),
           "type": token("type", system="organization-type")}

MAP = ResourceMap(
    "Organization",
    stu3={**_COMMON, "type": To("type", many(codeable_concept)), "alias": To("alias"),
          "endpoint": To("endpoint", many(reference))},
    dstu2={**_COMMON, "type": To("type", first(codeable_concept))},
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
