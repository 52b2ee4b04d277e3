"""Plain request and response values, so the core never depends on the host's HTTP types."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class Headers(dict):
    """Case-insensitive header lookup (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for key, value in (items or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class Request:
    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    params: dict[str, str] = field(default_factory=dict)
    route_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def origin(self) -> str:
        """scheme://host[:port] the client used, for absolute URLs when no public base is configured."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Response:
    """`body` is the whole answer, unless `stream` is set: then the body is that iterator's chunks, sent
    as they come (the proxy's passthrough answers and batch-responses), and `body` stays empty."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, payload: Any, content_type: str = "application/json",
             headers: Mapping[str, str] | None = None) -> Response:
        merged = {"Content-Type": content_type, **(headers or {})}
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), merged)
