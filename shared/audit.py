"""The gateway's audit lines, all written here: one JSON line per FHIR request and per token request.

Logger `gateway.audit`, one compact JSON object per line, whose `event` says what it records
(`fhir-request`, `token-request`); the alerts and the workbook read these fields
(infra/modules/monitoring-alerts.bicep, checked by tests/test_infra.py). Ids, names and parameter
values never go in (no PHI), nor secrets or tokens: a line says who (client, tenant), what was asked
(interaction and resource type, or a token), how it ended and how long it took.

A streamed FHIR answer is audited when its last byte is sent, or when it is cut off (`aborted`).
The FHIR line's fields also go on the request's trace span (shared/telemetry.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.telemetry import annotate_request

audit_log = logging.getLogger("gateway.audit")


def _write(record: dict[str, Any]) -> None:
    """The one way a line is written, so every event has the same shape: `event` first, compact JSON."""
    audit_log.info(orjson.dumps(record).decode())


@dataclass
class Audit:
    """A FHIR request's line, filled in as the proxy learns who asked for what."""

    request_id: str
    started: float = field(default_factory=time.monotonic)
    client_id: str | None = None
    tenant_id: str | None = None
    interaction: str | None = None
    resource_type: str | None = None
    upstream_ms: float = 0.0
    entries: int | None = None
    dropped: Counter[str] = field(default_factory=Counter)

    def add_upstream_time(self, seconds: float) -> None:
        """Batch entries run concurrently on one event loop: plain addition cannot interleave."""
        self.upstream_ms += seconds * 1000

    def count_dropped(self, dropped: dict[str, int]) -> None:
        """What the R4 bridge could not represent (element paths only, never values)."""
        self.dropped.update(dropped)

    def emit(self, status: int, size: int, aborted: bool = False) -> None:
        record: dict[str, Any] = {"event": "fhir-request", "request_id": self.request_id, "client_id": self.client_id,
                  "tenant_id": self.tenant_id, "interaction": self.interaction,
                  "resource_type": self.resource_type, "status": status,
                  "upstream_ms": round(self.upstream_ms, 1), "bytes": size,
                  "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if aborted:
            record["aborted"] = True
        if self.entries is not None:
            record["entries"] = self.entries
        if self.dropped:
            record["dropped"] = dict(self.dropped)
        _write(record)
        # The same fields, and no others, on the request's span and in the request metric.
        annotate_request(tenant_id=self.tenant_id, client_id=self.client_id, interaction=self.interaction,
                         resource_type=self.resource_type, batch_entries=self.entries)

    async def tracked(self, stream: AsyncIterator[bytes], status: int) -> AsyncIterator[bytes]:
        """Pass a streamed body through, then write the line with the bytes actually sent."""
        sent, aborted = 0, True
        try:
            async for chunk in stream:
                sent += len(chunk)
                yield chunk
            aborted = False
        finally:
            self.emit(status, sent, aborted)


@dataclass
class TokenAudit:
    """A token request's line: which client got a token (`jti`) for which tenant, or the RFC 6749
    error it got. The client id is set only once the client has authenticated: an unauthenticated
    caller's claim about who it is proves nothing."""

    client_id: str | None = None
    tenant_id: str | None = None
    jti: str | None = None

    def emit(self, outcome: str) -> None:
        """`outcome`: "issued", the OAuth error code, or "error" for a failure of the gateway's own."""
        record = {"event": "token-request", "outcome": outcome, "client_id": self.client_id,
                  "tenant_id": self.tenant_id, "jti": self.jti}
        _write(record)
