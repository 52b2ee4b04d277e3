"""Every error shape a client can see, built in one place.

FHIR routes answer with an OperationOutcome, the token endpoint with RFC 6749 §5.2
error JSON, management routes with an RFC 9457 problem document. Handlers raise
these exceptions; the HTTP layer turns them into responses with `.to_response()`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from shared.http import Response
from shared.requestid import current_id

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class GatewayError(Exception):
    """Base for errors that already know the response they become."""

    def to_response(self) -> Response:  # pragma: no cover - overridden
        raise NotImplementedError


class FhirError(GatewayError):
    """An OperationOutcome with an HTTP status (FHIR issue-type `code`, e.g. not-found, security)."""

    def __init__(self, status: int, code: str, diagnostics: str,
                 headers: Mapping[str, str] | None = None, severity: str = "error") -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics
        self.headers = dict(headers or {})
        self.severity = severity

    def to_response(self, content_type: str = "application/fhir+json") -> Response:
        return Response.json(self.status, operation_outcome(self.code, self.diagnostics, self.severity),
                             content_type, self.headers)


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict:
    """The gateway's own OperationOutcome; its diagnostics name the request id an operator searches for."""
    request_id = current_id()
    if request_id:
        diagnostics = f"{diagnostics} (request id {request_id})"
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


class OAuthError(GatewayError):
    """RFC 6749 §5.2 error response; `invalid_client` is 401 with a challenge when Basic was used."""

    def __init__(self, error: str, description: str, status: int = 400,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        body = {"error": self.error, "error_description": self.description}
        return Response.json(self.status, body, "application/json", {**NO_STORE, **self.headers})


class ProblemError(GatewayError):
    """RFC 9457 problem document for the management API; `field` names the offending input."""

    def __init__(self, status: int, title: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field = status, title, detail, field

    def to_response(self) -> Response:
        body: dict = {"type": "about:blank", "title": self.title, "status": self.status, "detail": self.detail}
        if self.field:
            body["errors"] = [{"field": self.field, "detail": self.detail}]
        request_id = current_id()
        if request_id:
            body["request_id"] = request_id  # an RFC 9457 extension member
        return Response.json(self.status, body, "application/problem+json", NO_STORE)


class StoreUnavailable(Exception):
    """A backing Azure service (Table Storage, Key Vault) could not be reached; callers fail closed.

    `retry_after` is how long the service asked us to wait (Retry-After on a 429/503), or how long
    the store will keep failing fast (shared/stores/backoff.py); `throttled` says the service
    refused for load rather than being down. Both reach the client as the 503's Retry-After.
    """

    def __init__(self, component: str, reason: str, retry_after: float | None = None,
                 throttled: bool = False) -> None:
        super().__init__(f"{component} unavailable: {reason}")
        self.component = component
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled

    def retry_after_header(self) -> dict[str, str]:
        """The Retry-After for the client's 503: the service's own wait when known, else 5 seconds."""
        seconds = 5 if self.retry_after is None else max(1, math.ceil(self.retry_after))
        return {"Retry-After": str(seconds)}


class NotFound(Exception):
    """The entity does not exist in the store."""


class PreconditionFailed(Exception):
    """Optimistic concurrency: the entity changed since the caller read it (stale ETag)."""


class AlreadyExists(Exception):
    """Create-only write found an existing entity."""
