"""The small pieces every JSON dev server here shares (identity endpoint, upstream IdP, Key Vault emulator)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str]) -> None:
    """Answer with a JSON body, or an empty one when payload is None (e.g. 204)."""
    data = b"" if payload is None else json.dumps(payload).encode()
    handler.send_response(status)
    if payload is not None:
        handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
