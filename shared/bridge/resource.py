"""What the bridge knows about one R4 resource type: its element tables and search parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from shared.bridge.base import RENAMED_TYPES, Ctx, Table
from shared.bridge.params import Param

# Called after the table with (R4 resource, facade resource being built, ctx, path), for elements
# that combine several R4 elements or need the whole resource.
Finish = Callable[[dict[str, Any], dict[str, Any], Ctx, str], None]


class FacadeTables(TypedDict):
    """A ResourceMap's two tables, by keyword: `ResourceMap(r4_type, **tables)`."""

    stu3: Table
    dstu2: Table


@dataclass(frozen=True)
class ResourceMap:
    r4_type: str
    stu3: Table
    dstu2: Table
    search: Mapping[str, Mapping[str, Param]] = field(default_factory=dict)  # facade → name → Param
    finish: Finish | None = None

    def table(self, facade: str) -> Table:
        return self.stu3 if facade == "stu3" else self.dstu2

    def facade_type(self, facade: str) -> str:
        return RENAMED_TYPES[facade].get(self.r4_type, self.r4_type)

    def params(self, facade: str) -> Mapping[str, Param]:
        return self.search.get(facade, {})
