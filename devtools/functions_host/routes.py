"""Route templates as the Functions host reads them: ASP.NET Core syntax, inline constraints, precedence.

Matching works on percent-decoded path segments, so ``%2F`` inside a segment stays in that segment's
value, and a catch-all ``{*name}`` gets the decoded remainder joined with ``/``.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from azure.functions.decorators.http import HttpTrigger

Constraint = Callable[[str], bool]

_PARAMETER = re.compile(
    r"\{(?P<star>\*{1,2})?(?P<name>\w+)(?P<constraints>(?::\w+(?:\(.*?\))?)*)(?P<optional>\?)?\}"
)
_CONSTRAINT = re.compile(r":(?P<name>\w+)(?:\((?P<arg>.*?)\))?(?=:\w|$)")
_ALPHA = re.compile(r"[a-z]+", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?[0-9]+")
# The Azure host's `guid` constraint parses like .NET Guid.TryParse: the 32-digit (N), hyphenated (D), braced (B)
# and parenthesised (P) forms. The app's own GUID rule is shared/guid.py (the host does not import the app).
_GUID_D = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_GUID = re.compile(rf"[0-9a-f]{{32}}|{_GUID_D}|\{{{_GUID_D}\}}|\({_GUID_D}\)", re.IGNORECASE)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _integer_between(low: int, high: int) -> Constraint:
    return lambda value: _INTEGER.fullmatch(value) is not None and low <= int(value) <= high


def _length_between(low: int, high: int) -> Constraint:
    return lambda value: low <= len(value) <= high


def _regex(pattern: str) -> Constraint:
    """Unanchored and case-insensitive like ASP.NET's; braces arrive doubled, as templates escape them."""
    compiled = re.compile(pattern.replace("{{", "{").replace("}}", "}"), re.IGNORECASE)
    return lambda value: compiled.search(value) is not None


def _constraint(name: str, arg: str | None) -> Constraint:
    """One inline route constraint; an unknown one is refused rather than silently ignored."""
    name = name.lower()
    if name == "regex" and arg:
        return _regex(arg)
    unsupported = ValueError(f"unsupported route constraint :{name}({arg or ''})")
    try:
        numbers = [int(part) for part in arg.split(",")] if arg else []
    except ValueError:
        raise unsupported from None
    match name, numbers:
        case "alpha", []:
            return lambda value: _ALPHA.fullmatch(value) is not None
        case "bool", []:
            return lambda value: value.lower() in ("true", "false")
        case "guid", []:
            return lambda value: _GUID.fullmatch(value) is not None
        case "int", []:
            return _integer_between(-(2**31), 2**31 - 1)
        case "long", []:
            return _integer_between(_LONG_MIN, _LONG_MAX)
        case "min", [low]:
            return _integer_between(low, _LONG_MAX)
        case "max", [high]:
            return _integer_between(_LONG_MIN, high)
        case "range", [low, high]:
            return _integer_between(low, high)
        case "length", [exact]:
            return _length_between(exact, exact)
        case "length", [low, high]:
            return _length_between(low, high)
        case "minlength", [low]:
            return _length_between(low, sys.maxsize)
        case "maxlength", [high]:
            return _length_between(0, high)
    raise unsupported


@dataclass(frozen=True)
class _Segment:
    literal: str | None  # case-folded literal text; None for a parameter
    name: str = ""
    optional: bool = False
    catch_all: bool = False
    constraints: tuple[Constraint, ...] = ()

    @property
    def precedence(self) -> int:
        """ASP.NET Core's inbound precedence digit: lower wins (literal, constrained, plain, catch-all)."""
        if self.literal is not None:
            return 1
        digit = 5 if self.catch_all else 3
        return digit - 1 if self.constraints else digit

    def accepts(self, value: str) -> bool:
        if self.literal is not None:
            return value.casefold() == self.literal
        return all(check(value) for check in self.constraints)


def _parse_segment(text: str) -> _Segment:
    if not text:
        raise ValueError("empty path segment")
    if "{" not in text and "}" not in text:
        return _Segment(literal=text.casefold())
    found = _PARAMETER.fullmatch(text)
    if found is None:
        raise ValueError(f"unsupported segment {text!r} (one literal or one parameter per segment)")
    spec = found["constraints"]
    tokens = list(_CONSTRAINT.finditer(spec))
    if "".join(token[0] for token in tokens) != spec:
        raise ValueError(f"cannot parse the constraints of {text!r}")
    constraints = tuple(_constraint(token["name"], token["arg"]) for token in tokens)
    return _Segment(None, found["name"], bool(found["optional"]), bool(found["star"]), constraints)


def _parse_template(template: str) -> tuple[_Segment, ...]:
    segments = tuple(_parse_segment(part) for part in template.split("/"))
    names = [segment.name for segment in segments if segment.literal is None]
    if len(names) != len(set(names)):
        raise ValueError("a route parameter name appears more than once")
    for index, segment in enumerate(segments):
        if segment.catch_all and (segment.optional or index != len(segments) - 1):
            raise ValueError("a catch-all parameter must be the last segment and cannot be optional")
        if index and segments[index - 1].optional and not segment.optional:
            raise ValueError("only optional parameters may follow an optional parameter")
    return segments


@dataclass(frozen=True)
class Route:
    """One HTTP function: where it is served, to which methods, behind which key level."""

    function_name: str
    template: str
    segments: tuple[_Segment, ...]
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    handler: Callable[..., Awaitable[Any]]  # an async def function
    arg_name: str

    def sort_key(self) -> tuple[tuple[int, ...], str, str]:
        """Precedence first; the rest only makes ties deterministic."""
        return tuple(s.precedence for s in self.segments), self.template.casefold(), self.function_name

    def match(self, method: str, parts: Sequence[str]) -> dict[str, str] | None:
        """Route values for decoded path segments, or None; a disallowed method is a mismatch."""
        if self.methods is not None and method not in self.methods:
            return None
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                return _bound(segment, rest, values) if rest else values
            if index >= len(parts):
                return values if segment.optional else None  # what follows is optional too
            if not parts[index] or _bound(segment, parts[index], values) is None:
                return None
        return values if len(parts) == len(self.segments) else None


def _bound(segment: _Segment, value: str, values: dict[str, str]) -> dict[str, str] | None:
    if not segment.accepts(value):
        return None
    if segment.literal is None:
        values[segment.name] = value
    return values


def route_for(function: Any, trigger: HttpTrigger, route_prefix: str) -> Route:
    """The served route of one function from ``FunctionApp.get_functions()``; refuses what Azure would."""
    name = function.get_function_name()
    route = (trigger.route or name).strip("/")
    template = "/".join(part for part in (route_prefix.strip("/"), route) if part)
    if route.lower().startswith("admin"):
        reserved = "routes starting with 'admin' are reserved by the Functions host"
        raise ValueError(f"function {name}, route {route!r}: {reserved}")
    try:
        segments = _parse_template(template)
    except ValueError as error:
        raise ValueError(f"function {name}, route {route!r}: {error}") from error
    methods = None
    if trigger.methods is not None:
        methods = frozenset(str(getattr(method, "value", method)).upper() for method in trigger.methods)
    level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
    handler = function.get_user_function()
    if not inspect.iscoroutinefunction(handler):
        # The host awaits functions on its one event loop, where a blocking function would stall every request.
        raise ValueError(f"function {name}: must be 'async def' (HTTP streams functions take a FastAPI Request)")
    return Route(name, template, segments, methods, level, handler, trigger.name)


def path_parts(raw_path: str) -> list[str]:
    """Segments of a still percent-encoded path, each decoded; an empty path and a lone '/' have none."""
    path = raw_path.removeprefix("/").removesuffix("/")
    return [unquote(part) for part in path.split("/")] if path else []
