"""Tables and key/value blocks for people; `--json` prints the API's JSON unchanged for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    """Aligned columns under upper-case headings; an empty list says so instead of printing a bare header."""
    if not rows:
        print("(none)", file=out)
        return
    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(heading), *(len(r[i]) for r in cells)) for i, (_, heading) in enumerate(columns)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def fields(record: Mapping[str, Any], out: TextIO, keys: Sequence[str] | None = None) -> None:
    names = list(keys or record.keys())
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name.ljust(width)}  {cell(record.get(name))}", file=out)


def as_json(payload: Any, out: TextIO) -> None:
    print(json.dumps(payload, indent=2), file=out)
