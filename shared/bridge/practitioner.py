"""Practitioner: R4 → STU3 (same elements) / DSTU2 (one name only).

The app shows practitioners only as reference displays; reading one passes it through with the
datatype fixes every resource gets (names, identifiers, Coding systems).
"""

from __future__ import annotations

from shared.bridge.base import To, first, many
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
)
from shared.bridge.params import string, token
from shared.bridge.resource import ResourceMap

_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "active": To("active"),
    "telecom": To("telecom", many(contact_point)),
    "address": To("address", many(address)),
    "gender": To("gender"),
    "birthDate": To("birthDate"),
    "photo": To("photo", many(attachment)),
    "qualification": To("qualification", many(element({
        "identifier": To("identifier", many(identifier)),
        "code": To("code", codeable_concept),
        "period": To("period", period),
        "issuer": To("issuer", reference),
    }))),
    "communication": To("communication", many(codeable_concept)),
}
_SEARCH = {"name": string("name"), "family": string("family"), "given": string("given"),
           "identifier": token("identifier")}

MAP = ResourceMap(
    "Practitioner",
    stu3={**_COMMON, "name": To("name", many(human_name))},
    dstu2={**_COMMON, "name": To("name", first(human_name))},
    search={"stu3": _SEARCH, "dstu2": _SEARCH},
)
