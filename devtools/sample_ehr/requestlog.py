"""What the sample EHR has been asked, for tests that assert what a provider did or did not see.

Kept in memory (the last 1000 FHIR requests) and served at ``GET /_admin/requests``. The
Authorization header is recorded by presence and scheme only, never by value.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime

CAPACITY = 1000
HEADERS = ("accept", "content-type", "prefer", "if-none-match", "if-modified-since",
           "x-request-id", "traceparent", "user-agent")


class RequestLog:
    """A thread-safe ring buffer of request summaries."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: deque[dict] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, environ: dict, status: int) -> None:
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "status": status,
            "authorization": bool(authorization),
            "authorization_scheme": authorization.partition(" ")[0] or None,
            "headers": {name: environ[key] for name in HEADERS
                        if (key := _environ_key(name)) in environ},
        }
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _environ_key(header: str) -> str:
    """The WSGI environ key of a request header (Content-Type has no HTTP_ prefix)."""
    key = header.upper().replace("-", "_")
    return key if key == "CONTENT_TYPE" else f"HTTP_{key}"
