"""The gateway's endpoints as plain functions: `Request` in, `Response` out.

`function_app.py` binds each to an Azure Functions HTTP trigger; nothing here knows the host.
Each endpoint runs under its family's guard (shared/edge.py): errors are answered in the family's
single style (OperationOutcome, RFC 6749, RFC 9457), and an unexpected exception becomes a logged
500 in that style, never a stack trace.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.capability import (
    CONTENT_TYPE,
    backend_services_configuration,
    capability_statement,
    check_format,
    facade_version,
)
from shared.edge import fhir_endpoint, oauth_endpoint, problem_endpoint
from shared.errors import NO_STORE, FhirError, InvalidField, OAuthError, ProblemError
from shared.health import probe, report
from shared.http import Request, Response
from shared.invitations import DEFAULT_HOURS as DEFAULT_INVITATION_HOURS
from shared.jsonbody import InvalidJson, loads_strict
from shared.offloop import inline_first
from shared.outbound import BadUrl, current_policy, normalise_url
from shared.services import Services, get_services
from shared.urls import Urls, urls_for


def urls(req: Request, services: Services) -> Urls:
    return urls_for(services.settings.public_base_url, req.origin)


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
@problem_endpoint
def health(req: Request) -> Response:
    """Anonymous: which Azure part is reachable ("ok", "unavailable", or "throttled" while it asks
    us to wait), from each part's cached probe (shared/health.py: at most one probe per part per
    HEALTH_CACHE_SECONDS per instance). A part the gateway is backing off from is not called.
    Guarded like every endpoint: should the services themselves fail, a 500 problem document."""
    probes = get_services().health_probes
    return _health_response({name: cached.status() for name, cached in probes.items()})


@problem_endpoint
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
        raise InvalidField("body", str(exc), subject="JSON") from exc


def _expiry(body: dict) -> datetime | None:
    raw = body.get("expires_on")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidField("expires_on", "expires_on must be an ISO 8601 date-time", subject="expiry") from exc
    if value.tzinfo is None:
        raise InvalidField("expires_on", "expires_on must include a time zone", subject="expiry")
    return value


def _object(req: Request) -> dict:
    body = _json_body(req)
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object", subject="body")
    return body


def _ok(status: int, payload: Any, etag: str | None = None) -> Response:
    headers = dict(NO_STORE)
    if etag:
        headers["ETag"] = etag
    return Response.json(status, payload, "application/json", headers)


def _keys(body: dict) -> tuple[dict | None, str | None]:
    """A JWK Set (`jwks`) or the https URL where the client publishes one (`jwks_uri`), not both."""
    if "jwks" in body and "jwks_uri" in body:
        raise InvalidField("jwks_uri", "send jwks or jwks_uri, not both", subject="client")
    if "jwks_uri" in body:
        try:
            return None, normalise_url(body["jwks_uri"], current_policy(), base=False)
        except BadUrl as exc:
            raise InvalidField("jwks_uri", f"jwks_uri {exc}", subject="client") from exc
    if "jwks" not in body:
        return None, None
    from shared.client_assertion import validate_jwks  # PyJWT: loaded on first use, not at import

    return validate_jwks(body["jwks"]), None


@problem_endpoint
def create_client(req: Request) -> Response:
    """With `jwks` or `jwks_uri` the client authenticates with `private_key_jwt` and gets no secret."""
    body = _object(req)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidField("name", "name is required (at most 200 characters)", subject="client")
    jwks, jwks_uri = _keys(body)
    if (jwks is not None or jwks_uri is not None) and "expires_on" in body:
        raise InvalidField("expires_on", "expires_on applies to a secret; a client with keys gets none",
                           subject="client")
    client, secret, info = get_services().clients.create(name.strip(), _expiry(body), jwks, jwks_uri)
    if secret is None or info is None:
        return _ok(201, client.to_json())
    return _ok(201, {**client.to_json(), "client_secret": secret, "secret": info.to_json()})


@problem_endpoint
def set_client_jwks(req: Request, client_id: str) -> Response:
    """Replaces the whole set (key rotation: register the new key beside the old, then drop the old).
    The body is the JWK Set itself, or `{"jwks_uri": ...}` to have the gateway fetch it from there."""
    body = _object(req)
    jwks, jwks_uri = _keys({"jwks_uri": body["jwks_uri"]} if "jwks_uri" in body else {"jwks": body})
    return _ok(200, get_services().clients.set_jwks(client_id, jwks, jwks_uri).to_json())


@problem_endpoint
def list_clients(req: Request) -> Response:
    return _ok(200, {"clients": [c.to_json() for c in get_services().clients.list()]})


@problem_endpoint
def get_client(req: Request, client_id: str) -> Response:
    return _ok(200, get_services().clients.get(client_id).to_json())


@problem_endpoint
def disable_client(req: Request, client_id: str) -> Response:
    """Also ends every portal session of the client at once (its session generation moves on)."""
    services = get_services()
    client = services.clients.disable(client_id)
    services.session_generations.end_all(client.client_id)
    return _ok(200, client.to_json())


@problem_endpoint
def add_secret(req: Request, client_id: str) -> Response:
    secret, info = get_services().clients.add_secret(client_id, _expiry(_object(req)))
    return _ok(201, {"client_id": client_id, "client_secret": secret, "secret": info.to_json()})


@problem_endpoint
def list_secrets(req: Request, client_id: str) -> Response:
    return _ok(200, {"secrets": [s.to_json() for s in get_services().clients.list_secrets(client_id)]})


@problem_endpoint
def delete_secret(req: Request, client_id: str, secret_id: str) -> Response:
    get_services().clients.delete_secret(client_id, secret_id)
    return Response(204, b"", dict(NO_STORE))


@problem_endpoint
def put_tenant(req: Request, tenant_id: str) -> Response:
    create_only = req.headers.get("if-none-match", "").strip() == "*"
    route, etag, created = get_services().tenants.put(tenant_id, _json_body(req), req.headers.get("if-match"),
                                                       create_only)
    return _ok(201 if created else 200, route.to_json(), etag)


@problem_endpoint
def get_tenant(req: Request, tenant_id: str) -> Response:
    route, etag = get_services().tenants.get(tenant_id)
    return _ok(200, route.to_json(), etag)


@problem_endpoint
def list_tenants(req: Request) -> Response:
    return _ok(200, {"tenants": [r.to_json() for r in get_services().tenants.list()]})


@problem_endpoint
def disable_tenant(req: Request, tenant_id: str) -> Response:
    route, etag = get_services().tenants.disable(tenant_id, req.headers.get("if-match"))
    return _ok(200, route.to_json(), etag)


@problem_endpoint
def delete_tenant(req: Request, tenant_id: str) -> Response:
    get_services().tenants.delete(tenant_id, req.headers.get("if-match"))
    return Response(204, b"", dict(NO_STORE))


@problem_endpoint
def rotate_signing_key(req: Request) -> Response:
    key = get_services().keys.rotate()
    return _ok(201, {"kid": key.kid, "created": key.created.isoformat(timespec="seconds")})


# --- invitations for the consumer portal (management API) ---------------------------------------

@problem_endpoint
def create_invitation(req: Request) -> Response:
    """The code is in this response only; the gateway keeps just its hash."""
    body = _object(req)
    invitations = get_services().invitations
    invitation, code = invitations.create(body.get("expires_in_hours", DEFAULT_INVITATION_HOURS),
                                          body.get("note", ""))
    return _ok(201, {**invitation.to_json(invitations.now()), "code": code})


@problem_endpoint
def list_invitations(req: Request) -> Response:
    invitations = get_services().invitations
    now = invitations.now()
    return _ok(200, {"invitations": [i.to_json(now) for i in invitations.list()]})


@problem_endpoint
def revoke_invitation(req: Request, invitation_id: str) -> Response:
    get_services().invitations.revoke(invitation_id)
    return Response(204, b"", dict(NO_STORE))
