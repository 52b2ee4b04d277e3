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

from shared.bridge.base import CodeMap, Ctx, To, codes, first, identity, many
from shared.bridge.datatypes import (
    annotation_text,
    codeable_concept,
    element,
    identifier,
    period,
    quantity,
    range_,
    ratio,
    reference,
    sampled_data,
)
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


_VALUES = {
    "valueQuantity": To("valueQuantity", quantity),
    "valueCodeableConcept": To("valueCodeableConcept", codeable_concept),
    "valueString": To("valueString"),
    "valueInteger": To("valueQuantity", _integer_quantity),
    "valueRange": To("valueRange", range_),
    "valueRatio": To("valueRatio", ratio),
    "valueSampledData": To("valueSampledData", sampled_data),
    "valueTime": To("valueTime"),
    "valueDateTime": To("valueDateTime"),
    "valuePeriod": To("valuePeriod", period),
}
_REFERENCE_RANGE = element(
    {"low": To("low", quantity), "high": To("high", quantity), "type": To("type", codeable_concept),
     "appliesTo": To("appliesTo", many(codeable_concept)), "age": To("age", range_), "text": To("text")},
    {"low": To("low", quantity), "high": To("high", quantity), "type": To("meaning", codeable_concept),
     "age": To("age", range_), "text": To("text")})
_COMPONENT_COMMON = {
    "code": To("code", codeable_concept),
    **_VALUES,
    "dataAbsentReason": To("dataAbsentReason", codeable_concept),
    "referenceRange": To("referenceRange", many(_REFERENCE_RANGE)),
}
_COMPONENT = element({**_COMPONENT_COMMON, "interpretation": To("interpretation", first(codeable_concept))},
                     _COMPONENT_COMMON)
_COMMON = {
    "identifier": To("identifier", many(identifier)),
    "status": To("status", codes(STATUS)),
    "code": To("code", codeable_concept),
    "subject": To("subject", reference),
    "effectiveDateTime": To("effectiveDateTime"),
    "effectivePeriod": To("effectivePeriod", period),
    "effectiveInstant": To("effectiveDateTime"),  # an instant is a dateTime
    "issued": To("issued"),
    "performer": To("performer", many(reference)),
    **_VALUES,
    "dataAbsentReason": To("dataAbsentReason", codeable_concept),
    "interpretation": To("interpretation", first(codeable_concept)),
    "bodySite": To("bodySite", codeable_concept),
    "method": To("method", codeable_concept),
    "specimen": To("specimen", reference),
    "device": To("device", reference),
    "referenceRange": To("referenceRange", many(_REFERENCE_RANGE)),
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
    stu3={**_COMMON, "basedOn": To("basedOn", many(reference)), "category": To("category", many(codeable_concept)),
          "encounter": To("context", reference), "valueBoolean": To("valueBoolean"),
          "note": To("comment", annotation_text)},
    dstu2={**_COMMON, "category": To("category", first(codeable_concept)), "encounter": To("encounter", reference),
           "note": To("comments", annotation_text)},
    search={
        "stu3": {**_SEARCH, "status": token("status", STATUS["stu3"]),
                 "context": reference_param("encounter", "Encounter")},
        "dstu2": {**_SEARCH, "status": token("status", STATUS["dstu2"]),
                  "encounter": reference_param("encounter", "Encounter")},
    },
)
