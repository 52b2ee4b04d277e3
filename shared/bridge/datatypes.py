"""R4 datatypes in their STU3/DSTU2 shapes.

Most datatypes kept their shape; what changed is listed here once so every resource gets it
right: DSTU2 `HumanName.family` is a list; R4-only codes (Identifier.use `old`, Address.use
`billing`, ContactPoint.system `url`/`sms` in DSTU2) have no older equivalent; `Reference.type`
is R4-only and DSTU2 references have no `identifier`; `Meta.profile` names R4 profiles (a claim an
STU3/DSTU2 resource cannot make) and `Meta.source` is R4-only; Coding systems are renamed by
`terminology`; Dosage lost `doseAndRate` (R4) for flat `dose[x]`/`rate[x]`; DSTU2 Timing
spells `durationUnits`/`periodUnits` and holds one `when`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.bridge.base import (
    EXTRA_ITEMS,
    NOT_REPRESENTABLE,
    RENAMED_TYPES,
    TRUNCATED,
    UNKNOWN_CODE,
    ByFacade,
    CodeMap,
    Convert,
    Ctx,
    Datatypes,
    Table,
    To,
    codes,
    convert_elements,
    first,
    identity,
    many,
    same,
    struct,
)
from shared.bridge.terminology import THO, to_facade


def extensions(value: Any, ctx: Ctx, path: str) -> list[dict]:
    """Extensions keep their URL; a value of an R4-only type has no place, and its extension goes."""
    items = value if isinstance(value, list) else [value]
    converted = (convert_elements(item, _EXTENSION[ctx.facade], ctx, path) for item in items
                 if isinstance(item, dict))
    return [e for e in converted if any(k.startswith("value") or k == "extension" for k in e)]


ELEMENT: dict[str, To] = {"id": To("id"), "extension": To("extension", extensions)}


def element(stu3: Table, dstu2: Table | None = None) -> Any:
    """A datatype or backbone element: its own table plus the id and extensions every element has."""
    return struct({**ELEMENT, **stu3}, None if dstu2 is None else {**ELEMENT, **dstu2})


def copied(*names: str) -> dict[str, To]:
    """Elements of the same name and shape in both versions."""
    return {name: To(name) for name in names}


# `Datatypes`' direction members, R4 → older: a table is read as written, R4 name and code first.
coded = codes
single = first


def renamed(r4: str, older: str, convert: Convert = same) -> dict[str, To]:
    """An element the older version names differently, going down: its R4 name is the one read."""
    return {r4: To(older, convert)}


def coding(value: Any, ctx: Ctx, path: str) -> dict | None:
    """A Coding, its system (and for a few FHIR code systems, its code) in the facade's terms."""
    out = _CODING(value, ctx, path)
    if out and isinstance(out.get("system"), str):
        system, code = to_facade(out["system"], out.get("code"), ctx.facade)
        if system != out["system"] and out.pop("version", None) is not None:
            ctx.drop(f"{path}.version", NOT_REPRESENTABLE)  # a terminology.hl7.org release names no older system
        out["system"] = system
        if code is not None:
            out["code"] = code
    return out


_CODING = element(copied("system", "version", "code", "display", "userSelected"))
codeable_concept = element({"coding": To("coding", many(coding)), "text": To("text")})


def system_code(concept: Any, system: str) -> str | None:
    """The code an R4 CodeableConcept holds in one terminology.hl7.org code system, if any."""
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return next((c.get("code") for c in codings if isinstance(c, dict) and c.get("system") == THO + system), None)


def concept_code(system: str, table: CodeMap | dict[str, CodeMap]) -> Any:
    """An R4 status CodeableConcept (one coding in a FHIR code system) as the older plain `code`."""

    def convert(value: Any, ctx: Ctx, path: str) -> str | None:
        code = system_code(value, system)
        if code is None:
            ctx.drop(path, UNKNOWN_CODE)
            return None
        return codes(table)(code, ctx, path)

    return convert


def onset_choice(dt: Datatypes, prefix: str, age: str) -> dict[str, To]:
    """An onset[x]/abatement[x] choice in either direction; `age` is its Age element's older name
    (DSTU2 knows Age only as a profile of Quantity, so there it is `onsetQuantity`)."""
    return {
        **copied(f"{prefix}DateTime", f"{prefix}String"),
        **dt.renamed(f"{prefix}Age", age, dt.quantity),
        f"{prefix}Period": To(f"{prefix}Period", dt.period),
        f"{prefix}Range": To(f"{prefix}Range", dt.range_),
    }


def person_elements(dt: Datatypes) -> dict[str, To]:
    """The demographics Patient and Practitioner both hold, of one name and shape in every version."""
    return {
        "identifier": To("identifier", many(dt.identifier)),
        **copied("active", "gender", "birthDate"),
        "telecom": To("telecom", many(dt.contact_point)),
        "address": To("address", many(dt.address)),
        "photo": To("photo", many(dt.attachment)),
    }


def to_date(value: Any, ctx: Ctx, path: str) -> Any:
    """A dateTime where the facade holds a date: the day is kept, the time of day counted as dropped."""
    if isinstance(value, str) and len(value) > 10:
        ctx.drop(path, TRUNCATED)
        return value[:10]
    return value


def as_list(value: Any, ctx: Ctx, path: str) -> list:
    """DSTU2 repeats some elements R4 holds once (HumanName.family)."""
    return [value]


_TYPE_SEGMENT = re.compile(r"(^|/)([A-Z][A-Za-z]+)(/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?)$")


def renaming_references(renamed: Mapping[str, Mapping[str, str]]) -> Convert:
    """Literal references with the resource type renamed where the other version names it differently."""

    def convert(value: Any, ctx: Ctx, path: str) -> Any:
        names = renamed[ctx.facade]
        match = _TYPE_SEGMENT.search(value) if isinstance(value, str) else None
        if match is None or match.group(2) not in names:
            return value
        return value[:match.start(2)] + names[match.group(2)] + value[match.end(2):]

    return convert


def reference_elements(url: Convert, identifier: Convert) -> tuple[Table, Table]:
    """Reference's elements with and without DSTU2 (which has no `identifier` on a Reference)."""
    dstu2 = {"reference": To("reference", url), "display": To("display")}
    return {**dstu2, "identifier": To("identifier", identifier)}, dstu2


def _identifier(value: Any, ctx: Ctx, path: str) -> Any:
    return identifier(value, ctx, path)  # Reference and Identifier refer to each other


reference_url = renaming_references(RENAMED_TYPES)
reference = element(*reference_elements(reference_url, _identifier))
period = element(copied("start", "end"))


def reference_to(*types: str) -> Any:
    """A Reference whose target must be one of `types` in the facade (DSTU2 has no PractitionerRole)."""

    def convert(value: Any, ctx: Ctx, path: str) -> dict | None:
        target = value.get("reference") if isinstance(value, dict) else None
        match = _TYPE_SEGMENT.search(target) if isinstance(target, str) else None
        if match is not None and match.group(2) not in types:
            ctx.drop(path, NOT_REPRESENTABLE)
            return None
        return reference(value, ctx, path)

    return convert




def identifier_elements(concept: Convert, period: Convert, reference: Convert) -> dict[str, To]:
    """Identifier's elements in both directions (R4 `use` codes beyond these are R4-only: `old`)."""
    return {
        "use": To("use", codes(CodeMap(identity("usual", "official", "temp", "secondary")))),
        "type": To("type", concept),
        **copied("system", "value"),
        "period": To("period", period),
        "assigner": To("assigner", reference),
    }


def human_name_elements(family: Convert, period: Convert) -> dict[str, To]:
    """HumanName's elements in both directions; `family` is a list in DSTU2 only."""
    return {
        "use": To("use", codes(CodeMap(identity("usual", "official", "temp", "nickname", "anonymous", "old",
                                                "maiden")))),
        **copied("text", "given", "prefix", "suffix"),
        "family": To("family", family),
        "period": To("period", period),
    }


def address_elements(period: Convert) -> dict[str, To]:
    """Address's elements in both directions (R4's `billing` use has no older code)."""
    return {
        "use": To("use", codes(CodeMap(identity("home", "work", "temp", "old")))),
        "type": To("type", codes(CodeMap(identity("postal", "physical", "both")))),
        **copied("text", "line", "city", "district", "state", "postalCode", "country"),
        "period": To("period", period),
    }


def contact_point_elements(system: Convert, period: Convert) -> dict[str, To]:
    """ContactPoint's elements in both directions; `system` is each direction's own (DSTU2 lacks `url`, `sms`)."""
    return {
        "system": To("system", system),
        "value": To("value"),
        "use": To("use", codes(CodeMap(identity("home", "work", "temp", "old", "mobile")))),
        "rank": To("rank"),
        "period": To("period", period),
    }


def meta_elements(coding: Convert) -> dict[str, To]:
    """Meta's elements in both directions; `profile` and `source` are left out, and counted."""
    return {**copied("versionId", "lastUpdated"), "security": To("security", many(coding)),
            "tag": To("tag", many(coding))}


identifier = element(identifier_elements(codeable_concept, period, reference))
human_name = element(human_name_elements(ByFacade(same, as_list), period))
contact_point = element(contact_point_elements(codes({
    "stu3": CodeMap(identity("phone", "fax", "email", "pager", "url", "sms", "other")),
    "dstu2": CodeMap({**identity("phone", "fax", "email", "pager", "other"), "url": "other"}),
}), period))
address = element(address_elements(period))
quantity = element(copied("value", "comparator", "unit", "system", "code"))
range_ = element({"low": To("low", quantity), "high": To("high", quantity)})
ratio = element({"numerator": To("numerator", quantity), "denominator": To("denominator", quantity)})
sampled_data = element({"origin": To("origin", quantity),
                        **copied("period", "factor", "lowerLimit", "upperLimit", "dimensions", "data")})
attachment = element(copied("contentType", "language", "data", "url", "size", "hash", "title", "creation"))
annotation = element({"authorReference": To("authorReference", reference), **copied("authorString", "time", "text")})


def annotation_text(value: Any, ctx: Ctx, path: str) -> str | None:
    """Annotations as the older versions' plain string: the texts, in order; authors and times counted."""
    notes = [n for n in (value if isinstance(value, list) else [value]) if isinstance(n, dict)]
    for note in notes:
        for key in note.keys() - {"text"}:
            ctx.drop(f"{path}.{key}", NOT_REPRESENTABLE)
    return "\n\n".join(n["text"] for n in notes if n.get("text")) or None


note_text = annotation_text


narrative = element(copied("status", "div"))
meta = element(meta_elements(coding))

_V3_TIMING = ("HS", "WAKE", "C", "CM", "CD", "CV", "AC", "ACM", "ACD", "ACV", "PC", "PCM", "PCD", "PCV")
_WHEN = {"stu3": CodeMap(identity("MORN", "AFT", "EVE", "NIGHT", "PHS", *_V3_TIMING)),
         "dstu2": CodeMap(identity(*_V3_TIMING))}
# Timing.repeat's elements of one name in every version (DSTU2 spells the units and a bound its own way),
# and those STU3 adds: both directions' tables.
REPEAT_ELEMENTS = {
    "boundsRange": To("boundsRange", range_),
    "boundsPeriod": To("boundsPeriod", period),
    **copied("count", "duration", "durationMax", "frequency", "frequencyMax", "period", "periodMax"),
}
STU3_REPEAT_ELEMENTS = {**REPEAT_ELEMENTS, "boundsDuration": To("boundsDuration", quantity),
                        **copied("countMax", "durationUnit", "periodUnit", "dayOfWeek", "timeOfDay", "offset")}
timing_repeat = element(
    {**STU3_REPEAT_ELEMENTS, "when": To("when", many(codes(_WHEN)))},
    {**REPEAT_ELEMENTS, "boundsDuration": To("boundsQuantity", quantity), "durationUnit": To("durationUnits"),
     "periodUnit": To("periodUnits"), "when": To("when", first(codes(_WHEN)))})
timing = element({"event": To("event"), "repeat": To("repeat", timing_repeat), "code": To("code", codeable_concept)})

# Values of the choice types a Dosage (STU3) or dosage instruction (DSTU2) may hold.
DOSE_AND_RATE = {
    "doseQuantity": To("doseQuantity", quantity),
    "doseRange": To("doseRange", range_),
    "rateRatio": To("rateRatio", ratio),
    "rateRange": To("rateRange", range_),
}
STU3_DOSE_AND_RATE = {**DOSE_AND_RATE, "rateQuantity": To("rateQuantity", quantity)}


def flatten_dose_and_rate(value: Any, ctx: Ctx, path: str) -> Any:
    """R4 nests dose[x]/rate[x] in `doseAndRate` items; the older versions hold one of each flat."""
    if not isinstance(value, dict) or "doseAndRate" not in value:
        return value
    items = value["doseAndRate"] if isinstance(value["doseAndRate"], list) else [value["doseAndRate"]]
    if len(items) > 1:
        ctx.drop(f"{path}.doseAndRate", EXTRA_ITEMS, len(items) - 1)
    chosen = items[0] if items and isinstance(items[0], dict) else {}
    if "type" in chosen:
        ctx.drop(f"{path}.doseAndRate.type", NOT_REPRESENTABLE)
    flat = {k: v for k, v in chosen.items() if k not in ("type", "id", "extension")}
    rest = {k: v for k, v in value.items() if k != "doseAndRate"}
    return {**rest, **flat}


def dosage_elements(concept: Convert, timing: Convert) -> dict[str, To]:
    """What STU3 Dosage and DSTU2 dosageInstruction share with R4 by name, in either direction
    (not the dose and rate, which R4 nests and the older versions hold flat)."""
    return {
        **copied("text", "asNeededBoolean"),
        "timing": To("timing", timing),
        **{name: To(name, concept) for name in ("asNeededCodeableConcept", "route", "method")},
        "maxDosePerPeriod": To("maxDosePerPeriod", ratio),
    }


def stu3_dosage_elements(concept: Convert, timing: Convert) -> dict[str, To]:
    """STU3 Dosage's elements in either direction, dose and rate aside (R4's Dosage has the same names)."""
    return {
        **dosage_elements(concept, timing),
        **copied("sequence", "patientInstruction"),
        "additionalInstruction": To("additionalInstruction", many(concept)),
        "site": To("site", concept),
        "maxDosePerAdministration": To("maxDosePerAdministration", quantity),
        "maxDosePerLifetime": To("maxDosePerLifetime", quantity),
    }


_DOSAGE = element({**stu3_dosage_elements(codeable_concept, timing), **STU3_DOSE_AND_RATE})


def dosage(value: Any, ctx: Ctx, path: str) -> dict | None:
    """An STU3 Dosage (same elements as R4 but for the flattened dose and rate)."""
    return _DOSAGE(flatten_dose_and_rate(value, ctx, path), ctx, path)


# Primitive value[x] types of extensions that STU3, DSTU2 and R4 all have, under the same name.
PRIMITIVE_VALUES = ("Base64Binary", "Boolean", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
                     "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri")
_COMPLEX_VALUES = {
    "Coding": coding, "CodeableConcept": codeable_concept, "Reference": reference, "Identifier": identifier,
    "HumanName": human_name, "Address": address, "ContactPoint": contact_point, "Period": period,
    "Quantity": quantity, "Range": range_, "Ratio": ratio, "Attachment": attachment, "Annotation": annotation,
    "SampledData": sampled_data, "Timing": timing,
}
_QUANTITY_PROFILES = ("Age", "Count", "Distance", "Duration")
_EXTENSION_COMMON = {
    **ELEMENT,
    "url": To("url"),
    **{f"value{t}": To(f"value{t}") for t in PRIMITIVE_VALUES},
    "valueUrl": To("valueUri"),
    "valueCanonical": To("valueUri"),
    **{f"value{t}": To(f"value{t}", convert) for t, convert in _COMPLEX_VALUES.items()},
}
# DSTU2 knows Age, Count, Distance and Duration only as profiles of Quantity, not as types.
_EXTENSION = {
    "stu3": {**_EXTENSION_COMMON, **{f"value{t}": To(f"value{t}", quantity) for t in _QUANTITY_PROFILES}},
    "dstu2": {**_EXTENSION_COMMON, **{f"value{t}": To("valueQuantity", quantity) for t in _QUANTITY_PROFILES}},
}
