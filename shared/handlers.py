"""The gateway's endpoints as plain functions: `Request` in, `Response` out.

`function_app.py` binds each to an Azure Functions HTTP trigger; nothing here knows the host.
Each endpoint family answers errors in its own single style (OperationOutcome, RFC 6749, RFC
9457), and an unexpected exception becomes a logged 500 in that style, never a stack trace.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from shared.capability import (
    CONTENT_TYPE,
    backend_services_configuration,
    capability_statement,
    check_format,
    facade_version,
)
from shared.errors import (
    NO_STORE,
    AlreadyExists,
    FhirError,
    GatewayError,
    NotFound,
    OAuthError,
    PreconditionFailed,
    ProblemError,
    StoreUnavailable,
)
from shared.health import probe, report
from shared.http import Request, Response
from shared.invitations import DEFAULT_HOURS as DEFAULT_INVITATION_HOURS
from shared.jsonbody import InvalidJson, loads_strict
from shared.offloop import inline_first
from shared.outbound import BadUrl, current_policy, normalise_url
from shared.services import Services, get_services
from shared.urls import Urls, urls_for

log = logging.getLogger("gateway")
Handler = Callable[..., Response]
# A guarded handler keeps its own signature: plain, or async (the proxy streams its answer).
Guarded = TypeVar("Guarded", bound=Callable[..., Any])


def urls(req: Request, services: Services) -> Urls:
    return urls_for(services.settings.public_base_url, req.origin)


def _guard(on_error: Callable[[Exception], Response]) -> Callable[[Guarded], Guarded]:
    """Every failure gets the endpoint family's error shape; async handlers (the proxy) are guarded
    the same way as the plain ones."""
    def decorate(fn: Guarded) -> Guarded:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(req: Request, *args: Any) -> Response:
                try:
                    return await fn(req, *args)
                except Exception as exc:
                    return _failed(fn, exc, on_error)
            return cast(Guarded, run_async)  # functools.wraps: the same name and parameters

        @functools.wraps(fn)
        def run(req: Request, *args: Any) -> Response:
            try:
                return fn(req, *args)
            except Exception as exc:
                return _failed(fn, exc, on_error)
        return cast(Guarded, run)  # functools.wraps: the same name and parameters
    return decorate


def _failed(fn: Callable[..., object], exc: Exception, on_error: Callable[[Exception], Response]) -> Response:
    if not isinstance(exc, GatewayError | StoreUnavailable | NotFound | PreconditionFailed | AlreadyExists):
        log.exception("unhandled error in %s", fn.__name__)
    return on_error(exc)


def _fhir_error(exc: Exception) -> Response:
    if isinstance(exc, FhirError):
        return exc.to_response()
    if isinstance(exc, StoreUnavailable):
        return FhirError(503, "transient", "the gateway's configuration store is unavailable; retry later",
                         exc.retry_after_header()).to_response()
    return FhirError(500, "exception", "internal error").to_response()


def _oauth_error(exc: Exception) -> Response:
    if isinstance(exc, OAuthError):
        return exc.to_response()
    if isinstance(exc, StoreUnavailable):
        return OAuthError("temporarily_unavailable", "the token service is temporarily unavailable", 503,
                          exc.retry_after_header()).to_response()
    return OAuthError("server_error", "internal error", 500).to_response()


def _problem(exc: Exception) -> Response:
    if isinstance(exc, ProblemError):
        return exc.to_response()
    if isinstance(exc, NotFound):
        return ProblemError(404, "Not found", "no such resource").to_response()
    if isinstance(exc, PreconditionFailed):
        return ProblemError(412, "Precondition failed",
                            "the resource changed since you read it (stale If-Match ETag); read it again").to_response()
    if isinstance(exc, AlreadyExists):
        return ProblemError(412, "Precondition failed", "the resource already exists (If-None-Match: *)").to_response()
    if isinstance(exc, StoreUnavailable):
        return ProblemError(503, "Service unavailable", f"{exc.component} is unavailable; retry later").to_response()
    return ProblemError(500, "Internal error", "internal error").to_response()


fhir_endpoint = _guard(_fhir_error)
oauth_endpoint = _guard(_oauth_error)
manage_endpoint = _guard(_problem)


# --- unauthenticated discovery ----------------------------------------------------------------

@inline_first
@fhir_endpoint
def metadata(req: Request, version: str) -> Response:
    version = facade_version(version)
    try:
        check_format(req.params.get("_format"), req.headers.get("accept"))
    except FhirError as exc:  # in the version's own media type (DSTU2: application/json+fhir), as the proxy does
        return exc.to_response(CONTENT_TYPE[version])
    statement = capability_statement(version, urls(req, get_services()))
    return Response.json(200, statement, CONTENT_TYPE[version])


@inline_first
@fhir_endpoint
def smart_config(req: Request, version: str) -> Response:
    facade_version(version)
    return Response.json(200, backend_services_configuration(urls(req, get_services())))


@inline_first
@oauth_endpoint
def jwks(req: Request) -> Response:
    return Response.json(200, get_services().keys.jwks(), "application/jwk-set+json",
                         {"Cache-Control": "public, max-age=300"})


_TOKEN_PARAMETERS = {"grant_type", "grant-type", "client_id", "client_secret", "scope", "client_assertion",
                     "client_assertion_type"}


@inline_first
@oauth_endpoint
def token(req: Request) -> Response:
    services = get_services()
    if len(req.body) > 16 * 1024:
        raise OAuthError("invalid_request", "the token request is too large", 413)
    if {k.lower() for k in req.params} & _TOKEN_PARAMETERS:  # RFC 6749 §2.3.1: never in the URI (access logs)
        raise OAuthError("invalid_request", "send the token request's parameters in the form body, not in the URL")
    issued = services.tokens.issue(req.body, req.headers, urls(req, services))
    return Response.json(200, issued, "application/json", NO_STORE)


@inline_first
def health(req: Request) -> Response:
    """Anonymous: which Azure part is reachable ("ok", "unavailable", or "throttled" while it asks
    us to wait), from each part's cached probe (shared/health.py: at most one probe per part per
    HEALTH_CACHE_SECONDS per instance). A part the gateway is backing off from is not called."""
    probes = get_services().health_probes
    return _health_response({name: cached.status() for name, cached in probes.items()})


@manage_endpoint
def health_deep(req: Request) -> Response:
    """Behind the function key: probes every part now, for operators diagnosing an incident."""
    services = get_services()
    pings = {"table_storage": services.tenant_table.ping, "key_vault": services.secrets.ping}
    return _health_response({name: probe(ping) for name, ping in pings.items()})


def _health_response(statuses: dict[str, str]) -> Response:
    status, body = report(statuses)
    return Response.json(status, body, headers={"Cache-Control": "no-store"})


@fhir_endpoint
async def fhir(req: Request, version: str, path: str) -> Response:
    """Every protected FHIR interaction (read, search, POST _search, batch) goes through the proxy.

    Azure tries overlapping routes in registration order, which follows the function names, not
    route precedence (azure-functions-host#9876), so this catch-all may receive the discovery paths
    too: it answers them exactly as their own functions do. (The local host ranks by precedence and
    warns on the overlap: devtools/functions_host.)
    """
    discovery = {"metadata": metadata, ".well-known/smart-configuration": smart_config}.get(path.strip("/"))
    if discovery is not None and req.method.upper() == "GET":
        return discovery(req, version)
    version = facade_version(version)
    check_format(req.params.get("_format"), req.headers.get("accept"))
    services = get_services()
    return await services.proxy.handle(req, version, path, urls(req, services))


# --- management API ---------------------------------------------------------------------------

def _json_body(req: Request) -> Any:
    if len(req.body) > 64 * 1024:
        raise ProblemError(413, "Body too large", "the request body exceeds 64 KiB")
    if not req.body:
        return {}
    try:
        return loads_strict(req.body)
    except InvalidJson as exc:
        raise ProblemError(400, "Invalid JSON", str(exc), "body") from exc


def _expiry(body: dict) -> datetime | None:
    raw = body.get("expires_on")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProblemError(400, "Invalid expiry", "expires_on must be an ISO 8601 date-time", "expires_on") from exc
    if value.tzinfo is None:
        raise ProblemError(400, "Invalid expiry", "expires_on must include a time zone", "expires_on")
    return value


def _object(req: Request) -> dict:
    body = _json_body(req)
    if not isinstance(body, dict):
        raise ProblemError(400, "Invalid body", "the body must be a JSON object", "body")
    return body


def _ok(status: int, payload: Any, etag: str | None = None) -> Response:
    headers = dict(NO_STORE)
    if etag:
        headers["ETag"] = etag
    return Response.json(status, payload, "application/json", headers)


def _keys(body: dict) -> tuple[dict | None, str | None]:
    """A JWK Set (`jwks`) or the https URL where the client publishes one (`jwks_uri`), not both."""
    if "jwks" in body and "jwks_uri" in body:
        raise ProblemError(400, "Invalid client", "send jwks or jwks_uri, not both", "jwks_uri")
    if "jwks_uri" in body:
        try:
            return None, normalise_url(body["jwks_uri"], current_policy(), base=False)
        except BadUrl as exc:
            raise ProblemError(400, "Invalid client", f"jwks_uri {exc}", "jwks_uri") from exc
    if "jwks" not in body:
        return None, None
    from shared.client_assertion import validate_jwks  # PyJWT: loaded on first use, not at import

    return validate_jwks(body["jwks"]), None


@manage_endpoint
def create_client(req: Request) -> Response:
    """With `jwks` or `jwks_uri` the client authenticates with `private_key_jwt` and gets no secret."""
    body = _object(req)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ProblemError(400, "Invalid client", "name is required (at most 200 characters)", "name")
    jwks, jwks_uri = _keys(body)
    if (jwks is not None or jwks_uri is not None) and "expires_on" in body:
        raise ProblemError(400, "Invalid client", "expires_on applies to a secret; a client with keys gets none",
                           "expires_on")
    client, secret, info = get_services().clients.create(name.strip(), _expiry(body), jwks, jwks_uri)
    if secret is None or info is None:
        return _ok(201, client.to_json())
    return _ok(201, {**client.to_json(), "client_secret": secret, "secret": info.to_json()})


@manage_endpoint
def set_client_jwks(req: Request, client_id: str) -> Response:
    """Replaces the whole set (key rotation: register the new key beside the old, then drop the old).
    The body is the JWK Set itself, or `{"jwks_uri": ...}` to have the gateway fetch it from there."""
    body = _object(req)
    jwks, jwks_uri = _keys({"jwks_uri": body["jwks_uri"]} if "jwks_uri" in body else {"jwks": body})
    return _ok(200, get_services().clients.set_jwks(client_id, jwks, jwks_uri).to_json())


@manage_endpoint
def list_clients(req: Request) -> Response:
    return _ok(200, {"clients": [c.to_json() for c in get_services().clients.list()]})


@manage_endpoint
def get_client(req: Request, client_id: str) -> Response:
    return _ok(200, get_services().clients.get(client_id).to_json())


@manage_endpoint
def disable_client(req: Request, client_id: str) -> Response:
    """Also ends every portal session of the client at once (its session generation moves on)."""
    services = get_services()
    client = services.clients.disable(client_id)
    services.session_generations.end_all(client.client_id)
    return _ok(200, client.to_json())


@manage_endpoint
def add_secret(req: Request, client_id: str) -> Response:
    secret, info = get_services().clients.add_secret(client_id, _expiry(_object(req)))
    return _ok(201, {"client_id": client_id, "client_secret": secret, "secret": info.to_json()})


@manage_endpoint
def list_secrets(req: Request, client_id: str) -> Response:
    return _ok(200, {"secrets": [s.to_json() for s in get_services().clients.list_secrets(client_id)]})


@manage_endpoint
def delete_secret(req: Request, client_id: str, secret_id: str) -> Response:
    get_services().clients.delete_secret(client_id, secret_id)
    return Response(204, b"", dict(NO_STORE))


@manage_endpoint
def put_tenant(req: Request, tenant_id: str) -> Response:
    create_only = req.headers.get("if-none-match", "").strip() == "*"
    route, etag, created = get_services().tenants.put(tenant_id, _json_body(req), req.headers.get("if-match"),
                                                       create_only)
    return _ok(201 if created else 200, route.to_json(), etag)


@manage_endpoint
def get_tenant(req: Request, tenant_id: str) -> Response:
    route, etag = get_services().tenants.get(tenant_id)
    return _ok(200, route.to_json(), etag)


@manage_endpoint
def list_tenants(req: Request) -> Response:
    return _ok(200, {"tenants": [r.to_json() for r in get_services().tenants.list()]})


@manage_endpoint
def disable_tenant(req: Request, tenant_id: str) -> Response:
    route, etag = get_services().tenants.disable(tenant_id, req.headers.get("if-match"))
    return _ok(200, route.to_json(), etag)


@manage_endpoint
def delete_tenant(req: Request, tenant_id: str) -> Response:
    get_services().tenants.delete(tenant_id, req.headers.get("if-match"))
    return Response(204, b"", dict(NO_STORE))


@manage_endpoint
def rotate_signing_key(req: Request) -> Response:
    key = get_services().keys.rotate()
    return _ok(201, {"kid": key.kid, "created": key.created.isoformat(timespec="seconds")})


# --- invitations for the consumer portal (management API) ---------------------------------------

@manage_endpoint
def create_invitation(req: Request) -> Response:
    """The code is in this response only; the gateway keeps just its hash."""
    body = _object(req)
    invitations = get_services().invitations
    invitation, code = invitations.create(body.get("expires_in_hours", DEFAULT_INVITATION_HOURS),
                                          body.get("note", ""))
    return _ok(201, {**invitation.to_json(invitations.now()), "code": code})


@manage_endpoint
def list_invitations(req: Request) -> Response:
    invitations = get_services().invitations
    now = invitations.now()
    return _ok(200, {"invitations": [i.to_json(now) for i in invitations.list()]})


@manage_endpoint
def revoke_invitation(req: Request, invitation_id: str) -> Response:
    get_services().invitations.revoke(invitation_id)
    return Response(204, b"", dict(NO_STORE))
