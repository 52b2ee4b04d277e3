"""FHIR search for the sample EHR: the parameters each type accepts per version, and their matching.

Semantics follow each version's search page (several parameters AND, comma-separated values
OR; token ``system|code``, ``|code``, ``system|``; references as ``id``, ``Type/id`` or an
absolute URL; ``_sort=a,-b``, and in DSTU2 also ``_sort:asc=a``/``_sort:desc=a``), with
deliberate choices:

* ``family``, ``given`` and ``name`` (and any other string parameter) match case- and
  accent-insensitive substrings by default, where FHIR says "starts with": the Patients app relies
  on "contains" (DSTU2 sends ``family:contains``, STU3 a plain ``family``). ``:contains`` and
  ``:exact`` are accepted.
* Dates compare at the precision of the query value (``birthdate=1976`` is all of 1976), with the
  prefixes eq, ne, lt, le, gt, ge; sorting orders instants in UTC, missing values last.
* Strict: an unknown parameter, modifier or sort key, or STU3 given DSTU2's ``_sort:desc``, is a
  400, so a gateway that forwards something a provider would not understand is caught in tests.
  Empty values are ignored, as most servers do, because the app's search form sends unfilled
  fields.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from devtools.sample_ehr.outcome import FhirError
from devtools.sample_ehr.store import Stored, patient_id

DEFAULT_COUNT = 20
MAX_COUNT = 100
DATE_PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge")
DATE_VALUE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")
STRING_MODIFIERS = ("", "contains", "exact")
# Result-shaping parameters every search accepts; `_format` is checked for all requests upstream.
CONTROL = ("_count", "_offset", "_sort", "_format", "_summary")

Values = Callable[[dict], list]


@dataclass(frozen=True)
class Param:
    """One search parameter: its FHIR type and how to read its values from a resource."""

    kind: str  # string | token | reference | date
    values: Values
    target: str | None = None  # the type a bare id means, for reference parameters


@dataclass
class Query:
    """A parsed search: resource predicates plus paging and sorting."""

    filters: list[Callable[[dict], bool]] = field(default_factory=list)
    sort: list[tuple[Param, bool]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    summary_count: bool = False
    patient_hint: str | None = None  # a single `patient` id, answered from the patient index


def _field(name: str) -> Values:
    return lambda r: [r[name]] if isinstance(r.get(name), str) else []


def _start(name: str) -> Values:
    return lambda r: [r[name]["start"]] if "start" in r.get(name, {}) else []


def _effective(resource: dict) -> list[str]:
    return _field("effectiveDateTime")(resource) or _start("effectivePeriod")(resource)


def _reference(name: str) -> Values:
    return lambda r: [r[name]["reference"]] if "reference" in r.get(name, {}) else []


def _patient(resource: dict) -> list[str]:
    owner = patient_id(resource)
    return [f"Patient/{owner}"] if owner else []


def _code(name: str, system: str | None = None) -> Values:
    return lambda r: [(system, r[name])] if isinstance(r.get(name), str) else []


def _codings(name: str) -> Values:
    """Codings of a CodeableConcept, or of a list of them (STU3 Observation.category)."""
    def get(resource: dict) -> list:
        concepts = resource.get(name) or []
        concepts = [concepts] if isinstance(concepts, dict) else concepts
        return [(c.get("system"), c.get("code")) for cc in concepts for c in cc.get("coding", [])]
    return get


def _identifiers(resource: dict) -> list:
    return [(i.get("system"), i.get("value")) for i in resource.get("identifier", [])]


def _name_parts(*parts: str) -> Values:
    """Strings of HumanName parts (DSTU2 ``family`` is a list), or a plain string ``name``."""
    def get(resource: dict) -> list[str]:
        names = resource.get("name") or []
        if isinstance(names, str):
            return [names]
        found: list[str] = []
        for name in names:
            for part in parts:
                value = name.get(part) or []
                found.extend([value] if isinstance(value, str) else value)
        return found
    return get


ID = Param("token", lambda r: [(None, r["id"])])
PATIENT = Param("reference", _patient, "Patient")
SUBJECT = Param("reference", _reference("subject"), "Patient")
NAME = Param("string", _name_parts("family", "given", "prefix", "suffix", "text"))
PATIENT_PARAMS = {
    "family": Param("string", _name_parts("family")),
    "given": Param("string", _name_parts("given")),
    "name": NAME,
    "birthdate": Param("date", _field("birthDate")),
    "gender": Param("token", _code("gender", "http://hl7.org/fhir/administrative-gender")),
    "identifier": Param("token", _identifiers),
}
OBSERVATION_PARAMS = {"patient": PATIENT, "subject": SUBJECT, "category": Param("token", _codings("category")),
                      "code": Param("token", _codings("code")), "date": Param("date", _effective)}
NAMED = {"name": NAME}
TABLES: dict[str, dict[str, dict[str, Param]]] = {
    "stu3": {
        "Patient": PATIENT_PARAMS,
        "Observation": OBSERVATION_PARAMS,
        "Encounter": {"patient": PATIENT, "subject": SUBJECT, "date": Param("date", _start("period"))},
        "Condition": {"patient": PATIENT, "subject": SUBJECT, "code": Param("token", _codings("code")),
                      "asserted-date": Param("date", _field("assertedDate")),
                      "onset-date": Param("date", _field("onsetDateTime"))},
        "MedicationRequest": {"patient": PATIENT, "subject": SUBJECT, "status": Param("token", _code("status")),
                              "authoredon": Param("date", _field("authoredOn"))},
        "AllergyIntolerance": {"patient": PATIENT, "date": Param("date", _field("assertedDate")),
                               "clinical-status": Param("token", _code("clinicalStatus"))},
        "Coverage": {"patient": PATIENT, "beneficiary": Param("reference", _reference("beneficiary"), "Patient"),
                     "subscriber": Param("reference", _reference("subscriber"), "Patient")},
        "Location": NAMED, "Practitioner": NAMED, "Organization": NAMED,
    },
    "dstu2": {
        "Patient": PATIENT_PARAMS,
        "Observation": OBSERVATION_PARAMS,
        "Encounter": {"patient": PATIENT, "date": Param("date", _start("period"))},
        "Condition": {"patient": PATIENT, "code": Param("token", _codings("code")),
                      "date-asserted": Param("date", _field("dateRecorded")),
                      "onset": Param("date", _field("onsetDateTime"))},
        "MedicationOrder": {"patient": PATIENT, "status": Param("token", _code("status")),
                            "datewritten": Param("date", _field("dateWritten"))},
        "AllergyIntolerance": {"patient": PATIENT, "date": Param("date", _field("recordedDate")),
                               "status": Param("token", _code("status"))},
        "Coverage": {"patient": PATIENT, "subscriber": Param("reference", _reference("subscriber"), "Patient")},
        "Location": NAMED, "Practitioner": NAMED, "Organization": NAMED,
    },
}


def supported_params(version: str, types: Iterable[str], patient_linked: set[str]) -> dict[str, dict[str, Param]]:
    """Parameters per servable type: the table's, or `patient` for other types tied to patients."""
    table = TABLES[version]
    result = {}
    for kind in sorted(set(types) | set(table)):
        own = table.get(kind, {"patient": PATIENT} if kind in patient_linked else {})
        result[kind] = {"_id": ID, **own}
    return result


def parse(version: str, params: dict[str, Param], pairs: list[tuple[str, str]]) -> Query:
    """Validate and compile the (name, value) pairs of a search; FhirError 400 when they are wrong."""
    query = Query()
    for key, value in pairs:
        name, _, modifier = key.partition(":")
        if name == "_sort":
            query.sort.extend(_sort_keys(version, params, modifier, value))
        elif name in CONTROL:
            _control(query, key, value)
        elif name not in params:
            raise FhirError(400, "not-supported", f"Unknown search parameter {name!r} for this type")
        elif value:
            param = params[name]
            query.filters.append(_predicate(param, modifier, value))
            if name == "patient" and "," not in value and modifier in ("", "Patient"):
                query.patient_hint = value.rstrip("/").split("/")[-1]
    return query


def order(results: list[Stored], keys: list[tuple[Param, bool]]) -> list[Stored]:
    """Stable multi-key sort; resources without a value for a key go last either way."""
    for param, descending in reversed(keys):
        keyed = [(_sort_value(param, stored.resource), stored) for stored in results]
        present = sorted(((key, stored) for key, stored in keyed if key is not None), key=lambda kv: kv[0],
                         reverse=descending)
        results = [stored for _, stored in present] + [stored for key, stored in keyed if key is None]
    return results


def _control(query: Query, key: str, value: str) -> None:
    if key == "_count":
        query.count = min(_non_negative(key, value), MAX_COUNT)
    elif key == "_offset":
        query.offset = _non_negative(key, value)
    elif key == "_summary" and value == "count":
        query.summary_count = True
    elif key != "_format":
        raise FhirError(400, "not-supported", f"Unsupported use of {key}={value!r}")


def _non_negative(key: str, value: str) -> int:
    if not value.isdigit():
        raise FhirError(400, "invalid", f"{key} must be a non-negative integer")
    return int(value)


def _sort_keys(version: str, params: dict[str, Param], modifier: str, value: str) -> list[tuple[Param, bool]]:
    """``_sort=a,-b`` in both versions; DSTU2 also ``_sort:asc=a`` and ``_sort:desc=a`` (repeatable)."""
    if modifier and (version != "dstu2" or modifier not in ("asc", "desc")):
        raise FhirError(400, "not-supported", f"_sort:{modifier} is not supported (DSTU2 only has :asc and :desc)")
    if modifier:
        names = [(name, modifier == "desc") for name in value.split(",") if name]
    else:
        names = [(name.removeprefix("-"), name.startswith("-")) for name in value.split(",") if name]
    keys = []
    for name, descending in names:
        param = params.get(name)
        if param is None or param.kind == "reference":
            raise FhirError(400, "not-supported", f"Cannot sort by {name!r} for this type")
        keys.append((param, descending))
    return keys


def _predicate(param: Param, modifier: str, value: str) -> Callable[[dict], bool]:
    tests = [_BUILDERS[param.kind](param, modifier, alternative) for alternative in value.split(",")]

    def matches(resource: dict) -> bool:
        values = param.values(resource)
        return bool(values) and any(test(values) for test in tests)
    return matches


@lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    """Case- and accent-insensitive form for string matching."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _string_test(param: Param, modifier: str, value: str) -> Callable[[list], bool]:
    if modifier not in STRING_MODIFIERS:
        raise FhirError(400, "not-supported", f"Unsupported string modifier :{modifier}")
    if modifier == "exact":
        return lambda values: value in values
    needle = _fold(value)
    return lambda values: any(needle in _fold(v) for v in values)


def _token_test(param: Param, modifier: str, value: str) -> Callable[[list], bool]:
    if modifier:
        raise FhirError(400, "not-supported", f"Unsupported token modifier :{modifier}")
    if "|" not in value:
        return lambda values: any(code == value for _, code in values)
    system, code = value.split("|", 1)
    wanted_system = system or None
    return lambda values: any(s == wanted_system and (not code or c == code) for s, c in values)


def _reference_test(param: Param, modifier: str, value: str) -> Callable[[list], bool]:
    if modifier and not (modifier.isalpha() and modifier[0].isupper()):
        raise FhirError(400, "not-supported", f"Unsupported reference modifier :{modifier}")
    parts = value.rstrip("/").split("/")
    kind = parts[-2] if len(parts) > 1 else modifier or param.target
    target = f"{kind}/{parts[-1]}"
    return lambda values: target in values


def _date_test(param: Param, modifier: str, value: str) -> Callable[[list], bool]:
    if modifier:
        raise FhirError(400, "not-supported", f"Unsupported date modifier :{modifier}")
    prefix, bound = (value[:2], value[2:]) if value[:2] in DATE_PREFIXES else ("eq", value)
    if not DATE_VALUE.fullmatch(bound):
        raise FhirError(400, "invalid", f"Invalid date {value!r}")
    compare = {"eq": str.__eq__, "ne": str.__ne__, "lt": str.__lt__, "le": str.__le__,
               "gt": str.__gt__, "ge": str.__ge__}[prefix]
    return lambda values: any(compare(v[:len(bound)], bound) for v in values)


_BUILDERS = {"string": _string_test, "token": _token_test, "reference": _reference_test, "date": _date_test}


@lru_cache(maxsize=65536)
def _instant(value: str) -> str:
    """A date/dateTime as a string that sorts chronologically (UTC when it has a zone)."""
    if "T" not in value:
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _sort_value(param: Param, resource: dict) -> str | None:
    values = param.values(resource)
    if not values:
        return None
    first = values[0]
    if param.kind == "token":
        return first[1]
    return _instant(first) if param.kind == "date" else _fold(first)
