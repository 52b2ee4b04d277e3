"""The one place a failure becomes an HTTP answer, in the shape of the endpoint's family.

Registries and validators raise domain errors (shared/errors.py) that know nothing of HTTP, and
handlers raise their own family's shape. Here each family lists, once, the errors it expects and
how it answers them: FHIR routes with an OperationOutcome, the token endpoint with RFC 6749 error
JSON, the management API (and health) with an RFC 9457 problem document, the portal with an HTML
page. Every handler runs under `guard(family)`. An error its family does not list is a bug at that
edge: it is logged once, by type and stack only (an exception's message can quote the request: a
patient's name in a search, a secret in a form), and answered with the family's 500, never a
stack trace.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

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
from shared.portal.web import PortalError, SignInRequired, error_page, portal_links, portal_urls, redirect

log = logging.getLogger("gateway.edge")
# A guarded handler keeps its own signature: plain, or async (the proxy streams its answer).
Guarded = TypeVar("Guarded", bound=Callable[..., Any])


@dataclass(frozen=True)
class Family:
    """One endpoint family's error style: its answer to each error it expects (None for any other)
    and its 500."""

    name: str
    expected: Callable[[Request, Exception], Response | None]
    internal: Callable[[Request], Response]

    def answer(self, req: Request, exc: Exception, handler: str) -> Response:
        response = self.expected(req, exc)
        if response is None:
            stack = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
            log.error("unhandled %s in %s handler %s\n%s", type(exc).__name__, self.name, handler, stack)
            return self.internal(req)
        return response


def guard(family: Family) -> Callable[[Guarded], Guarded]:
    """Every failure of the handler gets the family's answer; async handlers (the proxy) are guarded
    the same way as the plain ones."""
    def decorate(fn: Guarded) -> Guarded:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(req: Request, *args: Any) -> Response:
                try:
                    return await fn(req, *args)
                except Exception as exc:
                    return family.answer(req, exc, fn.__name__)
            return cast(Guarded, run_async)  # functools.wraps: the same name and parameters

        @functools.wraps(fn)
        def run(req: Request, *args: Any) -> Response:
            try:
                return fn(req, *args)
            except Exception as exc:
                return family.answer(req, exc, fn.__name__)
        return cast(Guarded, run)  # functools.wraps: the same name and parameters
    return decorate


# --- the families -----------------------------------------------------------------------------------

def problem(exc: Exception) -> ProblemError | None:
    """The management API's problem document for each error it expects: every domain error, since
    the registries it drives raise them all."""
    match exc:
        case ProblemError():
            return exc
        case InvalidField():
            return ProblemError(400, f"Invalid {exc.subject}", exc.detail, exc.field)
        case LastLiveSecret():
            return ProblemError(409, "Last live secret", exc.detail, exc.field)
        case InvitationUsed():
            return ProblemError(409, "Invitation already used", exc.detail, exc.field)
        case VerifierKeyUnavailable():
            return ProblemError(503, "Verifier key unavailable", exc.detail, exc.field)
        case NotFound():
            return ProblemError(404, "Not found", "no such resource")
        case PreconditionFailed():
            return ProblemError(412, "Precondition failed",
                                "the resource changed since you read it (stale If-Match ETag); read it again")
        case AlreadyExists():
            return ProblemError(412, "Precondition failed", "the resource already exists (If-None-Match: *)")
        case StoreUnavailable():
            return ProblemError(503, "Service unavailable", f"{exc.component} is unavailable; retry later")
    return None


def _problem_answer(req: Request, exc: Exception) -> Response | None:
    expected = problem(exc)
    return expected.to_response() if expected is not None else None


def _fhir_answer(req: Request, exc: Exception) -> Response | None:
    """The proxy and discovery raise their OperationOutcomes themselves; a registry refusal here is a bug."""
    match exc:
        case FhirError():
            return exc.to_response()
        case StoreUnavailable():
            return FhirError(503, "transient", "the gateway's configuration store is unavailable; retry later",
                             exc.retry_after_header()).to_response()
    return None


def _oauth_answer(req: Request, exc: Exception) -> Response | None:
    """The token service raises its RFC 6749 errors itself (a client that fails to authenticate is
    `invalid_client` there, whatever the reason); a registry refusal here is a bug."""
    match exc:
        case OAuthError():
            return exc.to_response()
        case StoreUnavailable():
            return OAuthError("temporarily_unavailable", "the token service is temporarily unavailable", 503,
                              exc.retry_after_header()).to_response()
    return None


def _portal_answer(req: Request, exc: Exception) -> Response | None:
    """The portal's handlers catch the domain errors they answer with their own form (a refused JWK
    Set, the last live secret); what reaches here is a message page, or the way to sign in."""
    match exc:
        case SignInRequired():
            return redirect(portal_links(portal_urls(req)).signin)
        case PortalError():
            return error_page(req, exc)
        case StoreUnavailable():
            return error_page(req, PortalError(503, "Temporarily unavailable",
                                               "The portal cannot reach its storage. Try again in a minute.",
                                               {"Retry-After": "30"}))
    return None


FHIR = Family("FHIR", _fhir_answer, lambda req: FhirError(500, "exception", "internal error").to_response())
OAUTH = Family("OAuth", _oauth_answer, lambda req: OAuthError("server_error", "internal error", 500).to_response())
PROBLEM = Family("management", _problem_answer,
                 lambda req: ProblemError(500, "Internal error", "internal error").to_response())
PORTAL = Family("portal", _portal_answer, lambda req: error_page(
    req, PortalError(500, "Something went wrong", "The portal hit an internal error.")))

fhir_endpoint = guard(FHIR)
oauth_endpoint = guard(OAUTH)
problem_endpoint = guard(PROBLEM)
portal_endpoint = guard(PORTAL)
