"""One id per request, the same in the response header, the error bodies, the audit line and the trace.

W3C Trace Context (`traceparent: 00-<trace id>-<parent span id>-<flags>`): an incoming trace is
continued, so the request id is its trace id and an operator can follow one request from the
caller through the gateway to the provider. Without one, a valid client `X-Request-Id` is kept
(the Patients app's own correlation), and otherwise a new trace id is made. Each upstream request
carries `traceparent` with this trace id and a fresh span id.

The context lives in a ContextVar set at the HTTP edge: it follows the request through `await`s
and into the thread pool (asyncio and anyio copy the context), so no function has to pass it on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    trace_id: str
    parent_span_id: str | None = None
    sampled: bool = True

    def upstream_traceparent(self) -> str:
        """The traceparent for one upstream request: this trace, a new span."""
        return f"00-{self.trace_id}-{secrets.token_hex(8)}-{'01' if self.sampled else '00'}"


_CURRENT: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def begin(headers: Mapping[str, str]) -> RequestContext:
    """Set the context of the request being served, from its headers."""
    context = from_headers(headers)
    _CURRENT.set(context)
    return context


def use(context: RequestContext) -> RequestContext:
    """Set the context of the request being served (the server span's, shared/telemetry.py)."""
    _CURRENT.set(context)
    return context


def from_headers(headers: Mapping[str, str]) -> RequestContext:
    match = _TRACEPARENT.match((headers.get("traceparent") or "").strip())
    if match and match.group(1) != _INVALID_TRACE and match.group(2) != _INVALID_SPAN:
        trace_id, parent, flags = match.groups()
        return RequestContext(trace_id, trace_id, parent, bool(int(flags, 16) & 1))
    trace_id = secrets.token_hex(16)
    incoming = headers.get("x-request-id")
    request_id = incoming if incoming and _CLIENT_ID.match(incoming) else trace_id
    return RequestContext(request_id, trace_id)


def current() -> RequestContext | None:
    return _CURRENT.get()


def current_id() -> str | None:
    context = _CURRENT.get()
    return context.request_id if context else None
