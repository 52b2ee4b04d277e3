"""STU3/DSTU2 datatypes in their R4 shapes: the inverse of `shared.bridge.datatypes`.

Datatypes whose shape is the same in all three versions (Quantity, Range, Ratio, Period,
Attachment, Narrative, SampledData) are the down bridge's own converters, re-exported here. What
changes on the way up: older code-system URIs become terminology.hl7.org ones
(`terminology.to_r4`); DSTU2 `HumanName.family` (a list) becomes one string; references to DSTU2
`MedicationOrder` become `MedicationRequest`; DSTU2 Timing's `durationUnits`/`periodUnits`/one
`when` take R4's names; flat dose[x]/rate[x] move into `doseAndRate`; the older versions' plain
`comment` strings become Annotations. `Meta.profile` names STU3/DSTU2 profiles, a claim an R4
resource cannot make: dropped and counted. The `Datatypes` direction members (`coded`, `single`,
`renamed`, `reference_to`, `note_text`) read the down bridge's tables backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.bridge.base import (
    NOT_REPRESENTABLE,
    RENAMED_TYPES,
    ByFacade,
    CodeMap,
    Convert,
    Ctx,
    Table,
    To,
    codes,
    convert_elements,
    identity,
    many,
    same,
    struct,
)
from shared.bridge.datatypes import (
    PRIMITIVE_VALUES,
    REPEAT_ELEMENTS,
    STU3_DOSE_AND_RATE,
    STU3_REPEAT_ELEMENTS,
    address_elements,
    attachment,
    contact_point_elements,
    copied,
    human_name_elements,
    identifier_elements,
    meta_elements,
    narrative,
    period,
    quantity,
    range_,
    ratio,
    reference_elements,
    renaming_references,
    sampled_data,
    stu3_dosage_elements,
)
from shared.bridge.terminology import to_r4

# The Datatypes protocol (shared.bridge.base) this module satisfies, with what it re-exports from the
# R4 → older direction; a module that defines __all__ satisfies a protocol only with the names it lists.
__all__ = [
    "address",
    "annotation",
    "attachment",
    "codeable_concept",
    "coded",
    "coding",
    "contact_point",
    "copied",
    "dosage",
    "element",
    "extensions",
    "human_name",
    "identifier",
    "meta",
    "narrative",
    "note_text",
    "period",
    "quantity",
    "range_",
    "ratio",
    "reference",
    "reference_to",
    "renamed",
    "sampled_data",
    "single",
]

# Provider type name → R4 type name (DSTU2 MedicationOrder → MedicationRequest).
R4_TYPES = {facade: {old: r4 for r4, old in names.items()} for facade, names in RENAMED_TYPES.items()}


def extensions(value: Any, ctx: Ctx, path: str) -> list[dict]:
    """Extensions keep their URL; complex values are converted like the same datatype elsewhere.

    One left without a value or nested extension (its value had no R4 form) is left out: R4 forbids it.
    """
    items = value if isinstance(value, list) else [value]
    converted = (convert_elements(item, _EXTENSION, ctx, path) for item in items if isinstance(item, dict))
    return [e for e in converted if any(k.startswith("value") or k == "extension" for k in e)]


ELEMENT: dict[str, To] = {"id": To("id"), "extension": To("extension", extensions)}


def element(stu3: Table, dstu2: Table | None = None) -> Any:
    """A datatype or backbone element: its own table(s) plus the id and extensions every element has."""
    return struct({**ELEMENT, **stu3}, None if dstu2 is None else {**ELEMENT, **dstu2})


_CODING = element(copied("system", "version", "code", "display", "userSelected"))


def coding(value: Any, ctx: Ctx, path: str) -> dict | None:
    """A Coding with R4's name for the system (and, for a few FHIR code systems, R4's code)."""
    out = _CODING(value, ctx, path)
    if out and isinstance(out.get("system"), str):
        system, code = to_r4(out["system"], out.get("code") or "", ctx.facade)
        if system != out["system"] and out.pop("version", None) is not None:
            ctx.drop(f"{path}.version", NOT_REPRESENTABLE)  # an older release's version names no R4 release
        out["system"] = system
        if "code" in out:
            out["code"] = code
    return out


codeable_concept = element({"coding": To("coding", many(coding)), "text": To("text")})


def concept(system: str, table: CodeMap | dict[str, CodeMap]) -> Any:
    """An older plain status `code` as R4's CodeableConcept in its terminology.hl7.org code system."""

    def convert(value: Any, ctx: Ctx, path: str) -> dict | None:
        code = codes(table)(value, ctx, path)
        return {"coding": [{"system": system, "code": code}]} if code else None

    return convert


def inverted(table: CodeMap, **extra: str) -> CodeMap:
    """A down-bridge code table read backwards (older code → R4 code).

    Where several R4 codes map to one older code, the R4 code of the same spelling wins (DSTU2
    `amended` → R4 `amended`, not `corrected`); `extra` names older codes with no such twin.
    """
    back: dict[str, str] = {}
    for r4, older in table.forward.items():
        if older not in back or r4 == older:
            back[older] = r4
    return CodeMap({**back, **extra})


# `Datatypes`' direction members, older → R4: each reads a down-bridge table backwards.
def coded(table: CodeMap | Mapping[str, CodeMap]) -> Convert:
    """A code element through a down-bridge table (one, or one per older version) read backwards."""
    return codes(inverted(table) if isinstance(table, CodeMap) else {f: inverted(t) for f, t in table.items()})


single = many  # the older version's one item is R4's list of one


def renamed(r4: str, older: str, convert: Convert = same) -> dict[str, To]:
    """An element the older version names differently, going up: its older name is the one read."""
    return {older: To(r4, convert)}


def _identifier(value: Any, ctx: Ctx, path: str) -> Any:
    return identifier(value, ctx, path)  # Reference and Identifier refer to each other


reference_url = renaming_references(R4_TYPES)  # MedicationOrder/1 → MedicationRequest/1
reference = element(*reference_elements(reference_url, _identifier))
identifier = element(identifier_elements(codeable_concept, period, reference))


def reference_to(*types: str) -> Convert:
    """A Reference the older version restricts to `types`: every such target is one R4 allows too."""
    return reference


def joined(value: Any, ctx: Ctx, path: str) -> str | None:
    """DSTU2 family name parts in one R4 string, in order (R4 spells multi-part names so)."""
    parts = [p for p in (value if isinstance(value, list) else [value]) if isinstance(p, str) and p]
    return " ".join(parts) or None


human_name = element(human_name_elements(ByFacade(same, joined), period))
contact_point = element(contact_point_elements(
    codes(CodeMap(identity("phone", "fax", "email", "pager", "url", "sms", "other"))), period))
address = element(address_elements(period))
annotation = element({"authorReference": To("authorReference", reference), **copied("authorString", "time", "text")})


DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def absent(reason: str) -> dict[str, Any]:
    """An element R4 requires and the older resource cannot fill, stated as absent rather than invented
    (FHIR's data-absent-reason extension: `unknown`, or `unsupported` for a value R4 has no code for)."""
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": reason}]}


def note_text(value: Any, ctx: Ctx, path: str) -> list[dict] | None:
    """An older plain comment string as R4's one Annotation."""
    return [{"text": value}] if isinstance(value, str) and value else None


meta = element(meta_elements(coding))

_WHEN = identity("HS", "WAKE", "C", "CM", "CD", "CV", "AC", "ACM", "ACD", "ACV", "PC", "PCM", "PCD", "PCV",
                 "MORN", "AFT", "EVE", "NIGHT", "PHS")
timing_repeat = element(
    {**STU3_REPEAT_ELEMENTS, "when": To("when", many(codes(CodeMap(_WHEN))))},
    {**REPEAT_ELEMENTS, "boundsQuantity": To("boundsDuration", quantity), "durationUnits": To("durationUnit"),
     "periodUnits": To("periodUnit"), "when": To("when", many(codes(CodeMap(_WHEN))))})
timing = element({"event": To("event"), "repeat": To("repeat", timing_repeat), "code": To("code", codeable_concept)})

# The older versions' flat dose[x]/rate[x] (STU3's, a superset of DSTU2's) in R4's `doseAndRate` items.
NESTED_DOSE_AND_RATE = {"doseAndRate": To("doseAndRate", many(element(STU3_DOSE_AND_RATE)))}


def nest_dose_and_rate(value: Any) -> Any:
    """The older flat dose[x]/rate[x] as R4's one `doseAndRate` item (the inverse of flattening)."""
    if not isinstance(value, dict) or not any(k in value for k in STU3_DOSE_AND_RATE):
        return value
    nested = {k: v for k, v in value.items() if k in STU3_DOSE_AND_RATE}
    return {**{k: v for k, v in value.items() if k not in STU3_DOSE_AND_RATE}, "doseAndRate": [nested]}


_DOSAGE = element({**stu3_dosage_elements(codeable_concept, timing), **NESTED_DOSE_AND_RATE})


def dosage(value: Any, ctx: Ctx, path: str) -> dict | None:
    """An STU3 Dosage as R4's (the same elements but for the nested dose and rate)."""
    return _DOSAGE(nest_dose_and_rate(value), ctx, path)


_COMPLEX_VALUES = {
    "Coding": coding, "CodeableConcept": codeable_concept, "Reference": reference, "Identifier": identifier,
    "HumanName": human_name, "Address": address, "ContactPoint": contact_point, "Period": period,
    "Quantity": quantity, "Range": range_, "Ratio": ratio, "Attachment": attachment, "Annotation": annotation,
    "SampledData": sampled_data, "Timing": timing, "Age": quantity, "Count": quantity, "Distance": quantity,
    "Duration": quantity,
}


def scalar(value: Any, ctx: Ctx, path: str) -> Any:
    """An extension holds one primitive value; a list or object there (seen in provider data) has no R4 form."""
    if isinstance(value, list | dict):
        ctx.drop(path, NOT_REPRESENTABLE)
        return None
    return value


_EXTENSION = {
    **ELEMENT,
    "url": To("url"),
    **{f"value{t}": To(f"value{t}", scalar) for t in PRIMITIVE_VALUES},
    **{f"value{t}": To(f"value{t}", convert) for t, convert in _COMPLEX_VALUES.items()},
}
