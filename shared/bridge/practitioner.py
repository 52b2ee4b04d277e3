"""Practitioner: R4 → STU3 (same elements) / DSTU2 (one name only).

The app shows practitioners only as reference displays; reading one passes it through with the
datatype fixes every resource gets (names, identifiers, Coding systems).
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import Datatypes, To, first, many
from shared.bridge.datatypes import human_name, person_elements
from shared.bridge.params import string, token
from shared.bridge.resource import ResourceMap


def elements(dt: Datatypes) -> dict[str, To]:
    """Practitioner's elements that keep their name and cardinality in every version (not `name`)."""
    return {
        **person_elements(dt),
        "qualification": To("qualification", many(dt.element({
            "identifier": To("identifier", many(dt.identifier)),
            "code": To("code", dt.codeable_concept),
            "period": To("period", dt.period),
            "issuer": To("issuer", dt.reference),
        }))),
        "communication": To("communication", many(dt.codeable_concept)),
    }


_COMMON = elements(datatypes)
_SEARCH = {"name": string("name"), "family": string("family"), "given": string("given"),
           "identifier": token("identifier")}

MAP = ResourceMap(
    "Practitioner",
    stu3={**_COMMON, "name": To("name", many(human_name))},
    dstu2={**_COMMON, "name": To("name", first(human_name))},
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
