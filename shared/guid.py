"""GUIDs: Azure AD tenant ids, managed-identity client ids and the gateway's own client ids.

One pattern, the hyphenated form (`8-4-4-4-12` hex digits), matched whole. The management API's
OpenAPI document states the same pattern (GUID_PATTERN). The local Functions host keeps its own:
its `guid` route constraint mirrors the Azure host's, which also takes the 32-digit, braced and
parenthesised forms (devtools/functions_host/routes.py).
"""

from __future__ import annotations

import re

GUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GUID = re.compile(GUID_PATTERN)


def is_guid(value: str) -> bool:
    """A GUID in the hyphenated form, digits of either case."""
    return _GUID.fullmatch(value) is not None


def is_canonical_guid(value: str) -> bool:
    """A GUID as `str(uuid.uuid4())` writes it, lower case: the form of the gateway's client ids, so
    any other spelling names no client."""
    return is_guid(value) and value == value.lower()
