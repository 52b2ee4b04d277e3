"""Table-driven element mapping, the machinery every converter of the bridge shares.

A converter maps one R4 element value to its facade form (or to None, meaning "nothing to
emit"). A `Table` maps R4 element names to `To(facade name, converter)`. Whatever an R4 object
holds that its table does not name cannot be represented in the facade version: it is left out
and counted in `Ctx.drops` as `<path>:not-representable`, so nothing is dropped silently and
nothing is ever invented to fill a gap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

FACADES = ("stu3", "dstu2")
# R4 resource types that have another name in a facade version.
RENAMED_TYPES: Mapping[str, Mapping[str, str]] = {"stu3": {}, "dstu2": {"MedicationRequest": "MedicationOrder"}}
NOT_REPRESENTABLE = "not-representable"
UNKNOWN_CODE = "unknown-code"
EXTRA_ITEMS = "extra-items"
TRUNCATED = "truncated"


@dataclass
class Ctx:
    """One conversion: the facade version and the counters of what could not be carried over."""

    facade: str
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, path: str, reason: str, count: int = 1) -> None:
        self.drops[f"{path}:{reason}"] += count

    @property
    def dstu2(self) -> bool:
        return self.facade == "dstu2"


Convert = Callable[[Any, Ctx, str], Any]


def same(value: Any, ctx: Ctx, path: str) -> Any:
    """Elements whose type and meaning are identical in R4 and the facade are copied."""
    return value


def consumed(value: Any, ctx: Ctx, path: str) -> None:
    """Elements a resource's `finish` hook reads itself (e.g. two R4 statuses → one DSTU2 status)."""
    return None


@dataclass(frozen=True)
class To:
    """Where an R4 element goes in the facade, and how its value is converted."""

    name: str
    convert: Convert = same


Table = Mapping[str, To]


def convert_elements(source: Mapping[str, Any], table: Table, ctx: Ctx, path: str) -> dict[str, Any]:
    """Map every element of one R4 object through its table; count what has no place."""
    out: dict[str, Any] = {}
    for key, value in source.items():
        if key.startswith("_"):
            _primitive_extension(out, key, value, table, ctx, path)
            continue
        rule = table.get(key)
        if rule is None:
            ctx.drop(f"{path}.{key}", NOT_REPRESENTABLE)
            continue
        converted = rule.convert(value, ctx, f"{path}.{key}")
        if converted not in (None, [], {}, ""):
            _put(out, rule.name, converted, ctx, path)
    return out


def _put(out: dict[str, Any], name: str, value: Any, ctx: Ctx, path: str) -> None:
    """Two R4 elements may feed one facade list (hasMember + derivedFrom → related)."""
    if name not in out:
        out[name] = value
    elif isinstance(out[name], list) and isinstance(value, list):
        out[name] = out[name] + value
    else:
        ctx.drop(f"{path}.{name}", EXTRA_ITEMS)


def _primitive_extension(out: dict[str, Any], key: str, value: Any, table: Table, ctx: Ctx, path: str) -> None:
    """`_birthDate`-style id/extensions follow their primitive when it is copied unchanged."""
    rule = table.get(key[1:])
    convert = rule.convert if rule is not None else None
    if isinstance(convert, ByFacade):
        convert = convert.pick(ctx)
    if rule is None or convert is not same:
        ctx.drop(f"{path}.{key}", NOT_REPRESENTABLE)
        return
    element = {name: table[name] for name in ("id", "extension") if name in table}
    items = value if isinstance(value, list) else [value]
    converted = [convert_elements(i, element, ctx, f"{path}.{key}") if isinstance(i, dict) else None for i in items]
    out[f"_{rule.name}"] = converted if isinstance(value, list) else converted[0]


def struct(stu3: Table, dstu2: Table | None = None) -> Convert:
    """A backbone element or complex datatype, mapped through its (per-facade) table."""
    tables = {"stu3": stu3, "dstu2": stu3 if dstu2 is None else dstu2}

    def convert(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            ctx.drop(path, NOT_REPRESENTABLE)
            return None
        return convert_elements(value, tables[ctx.facade], ctx, path)

    return convert


def many(convert: Convert) -> Convert:
    """A repeating element: each item converted, empties left out."""

    def each(value: Any, ctx: Ctx, path: str) -> list[Any]:
        items = value if isinstance(value, list) else [value]
        return [v for v in (convert(item, ctx, path) for item in items) if v not in (None, {}, "")]

    return each


def first(convert: Convert) -> Convert:
    """An R4 list whose facade element holds one item: the first is kept, the rest counted."""

    def single(value: Any, ctx: Ctx, path: str) -> Any:
        items = value if isinstance(value, list) else [value]
        if len(items) > 1:
            ctx.drop(path, EXTRA_ITEMS, len(items) - 1)
        return convert(items[0], ctx, path) if items else None

    return single


@dataclass(frozen=True)
class ByFacade:
    """An element converted differently for each facade version."""

    stu3: Convert
    dstu2: Convert

    def pick(self, ctx: Ctx) -> Convert:
        return self.dstu2 if ctx.dstu2 else self.stu3

    def __call__(self, value: Any, ctx: Ctx, path: str) -> Any:
        return self.pick(ctx)(value, ctx, path)


@dataclass(frozen=True)
class CodeMap:
    """A status value set that differs between versions: R4 code → facade code, explicitly.

    An R4 code that is not a key has no equivalent: it is dropped and counted. Several R4 codes
    may map to one facade code (a generalisation the R4 code system's hierarchy allows); the
    reverse, for searches, is the set of R4 codes that map to a facade code.
    """

    forward: Mapping[str, str]

    def to_facade(self, code: Any, ctx: Ctx, path: str) -> str | None:
        mapped = self.forward.get(code) if isinstance(code, str) else None
        if mapped is None:
            ctx.drop(path, UNKNOWN_CODE)
        return mapped

    def to_r4(self, code: str) -> tuple[str, ...]:
        return tuple(r4 for r4, facade in self.forward.items() if facade == code)


def identity(*codes: str) -> dict[str, str]:
    """Codes that are the same in R4 and the facade."""
    return {code: code for code in codes}


def codes(table: CodeMap | Mapping[str, CodeMap]) -> Convert:
    """A `code` element mapped through a CodeMap (one for both facades, or one per facade)."""

    def convert(value: Any, ctx: Ctx, path: str) -> str | None:
        chosen = table if isinstance(table, CodeMap) else table[ctx.facade]
        return chosen.to_facade(value, ctx, path)

    return convert


class Datatypes(Protocol):
    """The datatype converters of one direction: `shared.bridge.datatypes` (R4 → older) or
    `shared.bridge.up.datatypes` (older → R4). Element tables that name the same elements in
    both directions are written once, as functions of it, so the two bridges cannot drift apart.

    The last five members carry what a table says about both versions into one direction: a code
    table written R4 → older (`coded`), an element R4 repeats and the older version holds once
    (`single`), one with another name in the older version (`renamed`), a Reference the older
    version restricts (`reference_to`), and R4 Annotations the older versions hold as text (`note_text`).
    """

    def coding(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def codeable_concept(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def reference(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def identifier(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def human_name(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def contact_point(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def address(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def period(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def quantity(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def range_(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def ratio(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def sampled_data(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def attachment(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def annotation(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def meta(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def narrative(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def extensions(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
    def dosage(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...

    def element(self, stu3: Table, dstu2: Table | None = None) -> Convert: ...

    def coded(self, table: CodeMap | Mapping[str, CodeMap], /) -> Convert: ...
    def single(self, convert: Convert, /) -> Convert: ...
    def renamed(self, r4: str, older: str, convert: Convert = same, /) -> dict[str, To]: ...
    def reference_to(self, *types: str) -> Convert: ...
    def note_text(self, value: Any, ctx: Ctx, path: str, /) -> Any: ...
