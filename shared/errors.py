"""The gateway's errors: the shapes a client can see, and the domain errors behind them.

FHIR routes answer with an OperationOutcome, the token endpoint with RFC 6749 §5.2
error JSON, management routes with an RFC 9457 problem document. Handlers raise
these shapes; registries and validators raise domain errors (`DomainError` and the
stores' `NotFound`, `PreconditionFailed`, `AlreadyExists`, `StoreUnavailable`), which
know nothing of HTTP. shared/edge.py turns both into responses, once.
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


# --- domain errors: what a rule refused, said without HTTP ------------------------------------

class DomainError(Exception):
    """A rule of the gateway refused the operation.

    Why these carry no status or title: one registry serves several endpoint families (the
    management API, the portal, the token endpoint), which answer the same refusal in different
    shapes, and the portal answers some refusals with its own page. So the rule says only what was
    refused (`detail`: safe to show, never a secret) and, when one input is to blame, which one
    (`field`); shared/edge.py alone decides the status and the body, per family.
    """

    field: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidField(DomainError):
    """An input broke a rule. `field` names it as a path into the input (`jwks.keys[0].kid`);
    `subject` names what was being checked ("tenant route", "JWK Set"): a refusal's heading."""

    field: str

    def __init__(self, field: str, detail: str, *, subject: str) -> None:
        super().__init__(detail)
        self.field, self.subject = field, subject


class LastLiveSecret(DomainError):
    """Deleting this secret would lock an active client out: it is the last one that still works."""

    field = "secret_id"

    def __init__(self) -> None:
        super().__init__("refusing to delete the client's last live secret: add a new secret first, "
                         "or disable the client")


class InvitationUsed(DomainError):
    """A used invitation cannot be revoked: the client it registered exists, and is what to disable."""

    def __init__(self) -> None:
        super().__init__("this invitation was already used to register a client; disable that client instead")


class VerifierKeyUnavailable(DomainError):
    """The pepper new secret verifiers need is missing or disabled in Key Vault
    (shared/client_secrets.py): an operator has to act, so retrying does not help (unlike
    StoreUnavailable)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Key Vault secret {name} is missing or disabled")
        self.name = name
