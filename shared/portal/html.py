"""Templates that escape by default: every value is HTML-escaped unless it is already `Safe` markup.

Page templates are `string.Template` files in `templates/` (no logic in them: loops and choices
live in `pages.py`), so the only way to put unescaped text on a page is to build a `Safe` value on
purpose, from another template.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parent / "templates"


class Safe(str):
    """Markup that is already escaped: the output of `render`, `fragment` or `join`."""


def escape(value: object) -> Safe:
    return value if isinstance(value, Safe) else Safe(html.escape(str(value), quote=True))


def fragment(template: Template, /, **values: object) -> Safe:
    return Safe(template.substitute({key: escape(value) for key, value in values.items()}))


@lru_cache(maxsize=32)
def _template(name: str) -> Template:
    return Template((TEMPLATES / f"{name}.html").read_text(encoding="utf-8"))


def render(template_name: str, /, **values: object) -> Safe:
    """A template file by name; a missing placeholder is a KeyError (a bug), never an empty hole."""
    return fragment(_template(template_name), **values)


def join(parts: Iterable[object]) -> Safe:
    return Safe("".join(escape(part) for part in parts))
