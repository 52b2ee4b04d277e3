"""Test-traffic shaping: injected faults, request counts and the ``/_control`` routes serving both.

The routes ride on the identity endpoint's plain-HTTP server, unauthenticated, because they only
shape test traffic (see the package docstring for the API).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from devtools.identity_endpoint import RouteResult
from devtools.keyvault_emulator.protocol import KeyVaultError

_FAULT_CODES = {
    429: ("Throttled", "Request was not processed because too many requests were received."),
    500: ("InternalServerError", "An internal server error occurred (injected fault)."),
    502: ("BadGateway", "Bad gateway (injected fault)."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable (injected fault)."),
    504: ("GatewayTimeout", "Gateway timeout (injected fault)."),
}


@dataclass
class _Fault:
    status: int
    retry_after: float | None
    remaining: int


class FaultInjector:
    """Makes the next N authenticated vault requests fail, for retry and resilience tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: _Fault | None = None

    def arm(self, status: int, retry_after: float | None, count: int) -> dict[str, Any]:
        with self._lock:
            self._fault = _Fault(status, retry_after, count) if count > 0 else None
            return self._describe()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return self._describe()

    def _describe(self) -> dict[str, Any]:
        if self._fault is None:
            return {"status": None, "retry_after": None, "remaining": 0}
        return {
            "status": self._fault.status,
            "retry_after": self._fault.retry_after,
            "remaining": self._fault.remaining,
        }

    def take(self) -> KeyVaultError | None:
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        code, message = _FAULT_CODES[fault.status]
        headers = {} if fault.retry_after is None else {"Retry-After": _format_seconds(fault.retry_after)}
        return KeyVaultError(fault.status, code, message, headers=headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class RequestStats:
    """Counts every vault request so benchmarks can see what a client really sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()

    def record(self, operation: str, status: int) -> None:
        with self._lock:
            self._operations[operation] += 1
            self._statuses[str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._operations.values()),
                "operations": dict(self._operations),
                "statuses": dict(self._statuses),
            }

    def reset(self) -> None:
        with self._lock:
            self._operations.clear()
            self._statuses.clear()


class ControlApi:
    """The ``/_control`` routes, served by the identity endpoint's plain-HTTP server."""

    def __init__(self, faults: FaultInjector, stats: RequestStats) -> None:
        self._faults = faults
        self._stats = stats

    def route(self, method: str, path: str, body: bytes) -> RouteResult | None:
        key = (method, path.rstrip("/"))
        if key == ("POST", "/_control/faults"):
            return self._arm(body)
        if key == ("GET", "/_control/faults"):
            return 200, self._faults.describe(), {}
        if key == ("GET", "/_control/stats"):
            return 200, self._stats.snapshot(), {}
        if key == ("POST", "/_control/reset-stats"):
            self._stats.reset()
            return 200, self._stats.snapshot(), {}
        return None

    def _arm(self, body: bytes) -> RouteResult:
        try:
            spec = json.loads(body or b"{}")
            status, retry_after, count = _fault_spec(spec)
        except (ValueError, TypeError) as exc:
            return 400, {"error": {"code": "BadParameter", "message": str(exc)}}, {}
        return 200, self._faults.arm(status, retry_after, count), {}


def _fault_spec(spec: Any) -> tuple[int, float | None, int]:
    if not isinstance(spec, dict):
        raise ValueError("Body must be a JSON object.")
    status, retry_after, count = spec.get("status"), spec.get("retry_after"), spec.get("count", 1)
    if status not in _FAULT_CODES:
        raise ValueError(f"status must be one of {sorted(_FAULT_CODES)}.")
    if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
        raise ValueError("retry_after must be a non-negative number of seconds or null.")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("count must be a non-negative integer.")
    return status, retry_after, count
