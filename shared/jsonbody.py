"""Strict JSON for request bodies: one parse that every part of the gateway agrees on.

Python's `json.loads` keeps the LAST of two duplicate keys; other parsers (a provider's, a WAF's,
a log pipeline's) may keep the first, so `{"kind": "none", "kind": "bearer"}` or a batch entry
with two `url`s could be validated as one thing and acted on as another. Duplicate keys, the
non-standard constants NaN/Infinity, and bytes that are not UTF-8 are refused here instead.
"""

from __future__ import annotations

import json
from typing import Any

_MAX_KEY_SHOWN = 40


class InvalidJson(ValueError):
    """The body is not strict JSON; the message says why and is safe to return to the sender."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidJson(f"duplicate key {key[:_MAX_KEY_SHOWN]!r} in a JSON object")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON")


def loads_strict(data: bytes | str) -> Any:
    """Parse `data` as RFC 8259 JSON, refusing duplicate object keys; raises InvalidJson."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InvalidJson:
        raise
    except UnicodeDecodeError as exc:
        raise InvalidJson("the body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidJson("the JSON is nested too deeply") from exc
