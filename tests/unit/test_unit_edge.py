"""The HTTP edge (shared/edge.py): each error becomes its endpoint family's shape, once.

Why here: the registries raise domain errors that know nothing of HTTP, so what a client sees for
each one (status, title, detail, the field named in `errors`) is decided only by these tables.
These tests pin every row, and that an error a family does not expect is a logged 500 in the
family's own shape: never a stack trace, never the exception's message in the log.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any

import pytest

from shared import edge, handlers, manage_api
from shared.errors import (
    AlreadyExists,
    FhirError,
    InvalidField,
    InvitationUsed,
    LastLiveSecret,
    NotFound,
    OAuthError,
    PreconditionFailed,
    ProblemError,
    StoreUnavailable,
    VerifierKeyUnavailable,
)
from shared.http import Request, Response
from shared.portal import handlers as portal
from shared.portal.web import SECURITY_HEADERS, PortalError, SignInRequired

pytestmark = pytest.mark.unit

LEAK = "Jane Doe 1970-01-01"  # what an exception's message might quote from a request


def _request() -> Request:
    return Request("GET", "https://gateway.example/api/portal/secrets")


def _raising(family: edge.Family, exc: Exception) -> Response:
    @edge.guard(family)
    def endpoint(req: Request) -> Response:
        raise exc
    return endpoint(_request())


def _body(response: Response) -> dict[str, Any]:
    return json.loads(response.body)


def _edge_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.edge"]


# --- management API: every domain error -----------------------------------------------------------------

@pytest.mark.parametrize(("exc", "status", "title", "detail", "field"), [
    (InvalidField("fhir_version", "fhir_version must be one of stu3", subject="tenant route"), 400,
     "Invalid tenant route", "fhir_version must be one of stu3", "fhir_version"),
    (InvalidField("jwks.keys[0].kid", "every key needs a kid", subject="JWK Set"), 400, "Invalid JWK Set",
     "every key needs a kid", "jwks.keys[0].kid"),
    (LastLiveSecret(), 409, "Last live secret", "refusing to delete the client's last live secret: add a new "
     "secret first, or disable the client", "secret_id"),
    (InvitationUsed(), 409, "Invitation already used",
     "this invitation was already used to register a client; disable that client instead", None),
    (VerifierKeyUnavailable("client-secret-pepper-0123456789abcdef"), 503, "Verifier key unavailable",
     "Key Vault secret client-secret-pepper-0123456789abcdef is missing or disabled", None),
    (NotFound(), 404, "Not found", "no such resource", None),
    (PreconditionFailed(), 412, "Precondition failed",
     "the resource changed since you read it (stale If-Match ETag); read it again", None),
    (AlreadyExists(), 412, "Precondition failed", "the resource already exists (If-None-Match: *)", None),
    (StoreUnavailable("Key Vault", "connection refused"), 503, "Service unavailable",
     "Key Vault is unavailable; retry later", None),
    (ProblemError(413, "Body too large", "the request body exceeds 64 KiB"), 413, "Body too large",
     "the request body exceeds 64 KiB", None),
])
def test_each_domain_error_is_the_management_apis_problem_document_and_is_not_logged(
        exc: Exception, status: int, title: str, detail: str, field: str | None,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        response = _raising(edge.PROBLEM, exc)
    body = _body(response)
    assert response.status == status and response.headers["Content-Type"] == "application/problem+json"
    assert (body["status"], body["title"], body["detail"]) == (status, title, detail)
    assert body.get("errors") == ([{"field": field, "detail": detail}] if field else None)
    assert response.headers["Cache-Control"] == "no-store"
    assert _edge_records(caplog) == []


def test_the_problem_table_answers_none_for_what_it_does_not_expect() -> None:
    assert edge.problem(RuntimeError(LEAK)) is None
    assert edge.problem(OAuthError("invalid_request", "x")) is None


# --- FHIR and token endpoint: their own errors and store outages -----------------------------------------

def test_the_fhir_family_answers_its_outcome_and_a_store_outage_as_transient_with_retry_after() -> None:
    own = _raising(edge.FHIR, FhirError(404, "not-found", "no such tenant"))
    assert own.status == 404 and _body(own)["issue"][0]["code"] == "not-found"
    outage = _raising(edge.FHIR, StoreUnavailable("Table Storage", "throttled", retry_after=7.2, throttled=True))
    issue = _body(outage)["issue"][0]
    assert outage.status == 503 and issue["code"] == "transient"
    assert issue["diagnostics"].startswith("the gateway's configuration store is unavailable; retry later")
    assert outage.headers["Retry-After"] == "8"
    assert outage.headers["Content-Type"] == "application/fhir+json"


def test_the_token_family_answers_its_error_and_a_store_outage_as_temporarily_unavailable() -> None:
    own = _raising(edge.OAUTH, OAuthError("invalid_scope", "unknown tenant"))
    assert own.status == 400 and _body(own) == {"error": "invalid_scope", "error_description": "unknown tenant"}
    outage = _raising(edge.OAUTH, StoreUnavailable("Key Vault", "down"))
    assert outage.status == 503 and outage.headers["Retry-After"] == "5"
    assert _body(outage) == {"error": "temporarily_unavailable",
                             "error_description": "the token service is temporarily unavailable"}
    assert outage.headers["Cache-Control"] == "no-store"


_FHIR_500 = (edge.FHIR, lambda body: body["issue"][0]["code"] == "exception")
_OAUTH_500 = (edge.OAUTH, lambda body: body == {"error": "server_error", "error_description": "internal error"})
_PROBLEM_500 = (edge.PROBLEM, lambda body: (body["title"], body["detail"]) == ("Internal error", "internal error"))


@pytest.mark.parametrize(("family", "shape", "exc"), [
    *[(*family, exc) for family in (_FHIR_500, _OAUTH_500)
      for exc in (RuntimeError(LEAK), VerifierKeyUnavailable(LEAK), LastLiveSecret())],
    (*_PROBLEM_500, RuntimeError(LEAK)),  # the management API expects every domain error
])
def test_an_error_the_family_does_not_expect_is_its_500_logged_once_by_type_without_the_message(
        family: edge.Family, shape: Any, exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        response = _raising(family, exc)
    assert response.status == 500 and shape(_body(response))
    assert LEAK not in response.body.decode() and "Traceback" not in response.body.decode()
    [record] = _edge_records(caplog)
    text = record.getMessage()
    assert type(exc).__name__ in text and "endpoint" in text and record.exc_info is None
    assert LEAK not in text


def test_an_async_handler_is_guarded_like_a_plain_one() -> None:
    @edge.fhir_endpoint
    async def endpoint(req: Request) -> Response:
        raise StoreUnavailable("Table Storage", "down")

    assert inspect.iscoroutinefunction(endpoint)
    assert asyncio.run(endpoint(_request())).status == 503


# --- the portal: pages, never JSON -------------------------------------------------------------------------

def test_the_portal_sends_a_browser_without_a_session_to_sign_in() -> None:
    response = _raising(edge.PORTAL, SignInRequired())
    assert response.status == 303 and response.headers["Location"] == "/api/portal/signin"
    assert SECURITY_HEADERS.items() <= response.headers.items()


@pytest.mark.parametrize(("exc", "status", "text", "retry_after"), [
    (PortalError(429, "Too many attempts", "Wait 30 seconds.", {"Retry-After": "30"}), 429, "Wait 30 seconds.",
     "30"),
    (StoreUnavailable("Table Storage", "down"), 503, "The portal cannot reach its storage. Try again in a minute.",
     "30"),
    (RuntimeError(LEAK), 500, "The portal hit an internal error.", None),
    (LastLiveSecret(), 500, "The portal hit an internal error.", None),
])
def test_a_portal_failure_is_a_message_page_with_the_security_headers(
        exc: Exception, status: int, text: str, retry_after: str | None) -> None:
    response = _raising(edge.PORTAL, exc)
    assert response.status == status and response.headers["Content-Type"].startswith("text/html")
    assert text in response.body.decode() and LEAK not in response.body.decode()
    assert SECURITY_HEADERS.items() <= response.headers.items()
    assert response.headers.get("Retry-After") == retry_after


# --- every handler runs under a guard ------------------------------------------------------------------------

def _endpoints() -> list[Any]:
    found = [fn for module in (handlers, portal) for name, fn in vars(module).items()
             if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == module.__name__
             and fn.__annotations__.get("return") == "Response"]
    return found + [op.handler for op in manage_api.OPERATIONS]


def test_every_endpoint_runs_under_a_guard() -> None:
    endpoints = _endpoints()
    assert {"health", "health_deep", "token", "fhir", "signin", "static", "openapi"} <= {
        fn.__name__ for fn in endpoints}
    unguarded = [fn.__name__ for fn in endpoints if not hasattr(fn, "__wrapped__")]
    assert unguarded == []


def test_health_fails_as_a_problem_document_not_a_stack_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError(LEAK)

    monkeypatch.setattr(handlers, "get_services", broken)
    response = handlers.health(Request("GET", "https://gateway.example/api/health"))
    assert response.status == 500 and _body(response)["title"] == "Internal error"
