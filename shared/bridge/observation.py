"""Observation (vital signs): R4 → STU3 / DSTU2.

The app reads effective[x], code.coding, valueQuantity.value/unit and the same in each
`component`. Category is a list in R4 and STU3 but one CodeableConcept in DSTU2, and its system
moves from `http://terminology.hl7.org/CodeSystem/observation-category` to
`http://hl7.org/fhir/observation-category`. R4 `hasMember`/`derivedFrom` become `related` items;
`note` becomes the plain `comment` (STU3) / `comments` (DSTU2); an integer value becomes a
unitless Quantity, which carries the same number.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Ctx, Datatypes, To, first, identity, many
from shared.bridge.datatypes import codeable_concept, element, reference
from shared.bridge.params import PATIENT, date, token
from shared.bridge.params import reference as reference_param
from shared.bridge.resource import ResourceMap

_STU3_STATUS = ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
                "unknown")
STATUS = {
    "stu3": CodeMap(identity(*_STU3_STATUS)),
    # R4's code system makes `corrected` a kind of `amended`, the nearest DSTU2 code.
    "dstu2": CodeMap({**identity(*(c for c in _STU3_STATUS if c != "corrected")), "corrected": "amended"}),
}


def _integer_quantity(value: Any, ctx: Ctx, path: str) -> dict:
    return {"value": value}


def _related(kind: str) -> Any:
    def convert(value: Any, ctx: Ctx, path: str) -> list[dict]:
        targets = many(reference)(value, ctx, path)
        return [{"type": kind, "target": target} for target in targets]

    return convert


def values(dt: Datatypes) -> dict[str, To]:
    """The value[x] types every version has (R4's valueInteger is a Quantity in the older ones)."""
    return {
        "valueQuantity": To("valueQuantity", dt.quantity),
        "valueCodeableConcept": To("valueCodeableConcept", dt.codeable_concept),
        "valueString": To("valueString"),
        "valueRange": To("valueRange", dt.range_),
        "valueRatio": To("valueRatio", dt.ratio),
        "valueSampledData": To("valueSampledData", dt.sampled_data),
        "valueTime": To("valueTime"),
        "valueDateTime": To("valueDateTime"),
        "valuePeriod": To("valuePeriod", dt.period),
    }


def reference_range(dt: Datatypes) -> Any:
    """referenceRange: DSTU2 calls R4's `type` `meaning` and has no `appliesTo`."""
    common = {"low": To("low", dt.quantity), "high": To("high", dt.quantity), "age": To("age", dt.range_),
              "text": To("text")}
    return dt.element({**common, "type": To("type", dt.codeable_concept),
                       "appliesTo": To("appliesTo", many(dt.codeable_concept))},
                      {**common, "type": To("meaning", dt.codeable_concept)})


def component(dt: Datatypes) -> dict[str, To]:
    """Observation.component's elements in every version (the value[x] choice and `interpretation` aside)."""
    return {
        "code": To("code", dt.codeable_concept),
        **values(dt),
        "dataAbsentReason": To("dataAbsentReason", dt.codeable_concept),
        "referenceRange": To("referenceRange", many(reference_range(dt))),
    }


def elements(dt: Datatypes) -> dict[str, To]:
    """Observation's elements that keep their name in every version (`component` aside: its own in each
    direction); `interpretation` is one CodeableConcept in the older versions."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        "status": To("status", dt.coded(STATUS)),
        "code": To("code", dt.codeable_concept),
        "subject": To("subject", dt.reference),
        "effectiveDateTime": To("effectiveDateTime"),
        "effectivePeriod": To("effectivePeriod", dt.period),
        "issued": To("issued"),
        "performer": To("performer", many(dt.reference)),
        **values(dt),
        "dataAbsentReason": To("dataAbsentReason", dt.codeable_concept),
        "bodySite": To("bodySite", dt.codeable_concept),
        "method": To("method", dt.codeable_concept),
        "specimen": To("specimen", dt.reference),
        "device": To("device", dt.reference),
        "interpretation": To("interpretation", dt.single(dt.codeable_concept)),
        "referenceRange": To("referenceRange", many(reference_range(dt))),
    }


def stu3_elements(dt: Datatypes) -> dict[str, To]:
    """Observation's STU3 elements beyond `elements` (R4 `note` is STU3's plain `comment`)."""
    return {
        "basedOn": To("basedOn", many(dt.reference)),
        "category": To("category", many(dt.codeable_concept)),
        **dt.renamed("encounter", "context", dt.reference),
        "valueBoolean": To("valueBoolean"),
        **dt.renamed("note", "comment", dt.note_text),
    }


def dstu2_elements(dt: Datatypes) -> dict[str, To]:
    """Observation's DSTU2 elements beyond `elements` (one category; R4 `note` is DSTU2's `comments`)."""
    return {
        "category": To("category", dt.single(dt.codeable_concept)),
        "encounter": To("encounter", dt.reference),
        **dt.renamed("note", "comments", dt.note_text),
    }


_INTEGER = {"valueInteger": To("valueQuantity", _integer_quantity)}
_COMPONENT_COMMON = {**component(datatypes), **_INTEGER}
_COMPONENT = element({**_COMPONENT_COMMON, "interpretation": To("interpretation", first(codeable_concept))},
                     _COMPONENT_COMMON)
_COMMON = {
    **elements(datatypes),
    "effectiveInstant": To("effectiveDateTime"),  # an instant is a dateTime
    **_INTEGER,
    "hasMember": To("related", _related("has-member")),
    "derivedFrom": To("related", _related("derived-from")),
    "component": To("component", many(_COMPONENT)),
}
_SEARCH = {
    **PATIENT,
    "category": token("category", system="observation-category"),
    "code": token("code"),
    "date": date("date"),
}

MAP = ResourceMap(
    "Observation",
    stu3={**_COMMON, **stu3_elements(datatypes)},
    dstu2={**_COMMON, **dstu2_elements(datatypes)},
    search={
        "stu3": {**_SEARCH, "status": token("status", STATUS["stu3"]),
                 "context": reference_param("encounter", "Encounter")},
        "dstu2": {**_SEARCH, "status": token("status", STATUS["dstu2"]),
                  "encounter": reference_param("encounter", "Encounter")},
    },
)
