"""Practitioner: R4 → STU3 (same elements) / DSTU2 (one name only).

The app shows practitioners only as reference displays; reading one passes it through with the
datatype fixes every resource gets (names, identifiers, Coding systems).
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import Datatypes, To, many
from shared.bridge.datatypes import person_elements
from shared.bridge.params import string, token
from shared.bridge.resource import FacadeTables, ResourceMap


def tables(dt: Datatypes) -> FacadeTables:
    """Practitioner's tables in one direction's datatypes (DSTU2 holds one name)."""
    common = {
        **person_elements(dt),
        "qualification": To("qualification", many(dt.element({
            "identifier": To("identifier", many(dt.identifier)),
            "code": To("code", dt.codeable_concept),
            "period": To("period", dt.period),
            "issuer": To("issuer", dt.reference),
        }))),
        "communication": To("communication", many(dt.codeable_concept)),
    }
    return {"stu3": {**common, "name": To("name", many(dt.human_name))},
            "dstu2": {**common, "name": To("name", dt.single(dt.human_name))}}


_SEARCH = {"name": string("name"), "family": string("family"), "given": string("given"),
           "identifier": token("identifier")}

MAP = ResourceMap(
    "Practitioner",
    **tables(datatypes),
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
