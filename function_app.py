"""The gateway's HTTP surface: one Azure Functions HTTP trigger per concern, read top to bottom.

Each function converts the host's request into a plain `shared.http.Request`, calls one handler
in `shared/`, and converts the plain response back. Management routes use auth level FUNCTION
(a function or host key, `x-functions-key`); everything the Patients app calls is anonymous at
the host and authorised by the gateway's own OAuth tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from shared import handlers
from shared.http import Headers, Request, Response
from shared.portal import handlers as portal

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ANON, KEY = func.AuthLevel.ANONYMOUS, func.AuthLevel.FUNCTION


def serve(handler: Callable[..., Response], req: func.HttpRequest, *route_keys: str) -> func.HttpResponse:
    plain = Request(req.method, req.url, Headers(dict(req.headers)), dict(req.params), dict(req.route_params),
                    req.get_body() or b"")
    result = handler(plain, *(plain.route_params.get(k, "") for k in route_keys))
    return func.HttpResponse(result.body, status_code=result.status, headers=result.headers)


# --- discovery and OAuth (anonymous: AUTH-4) --------------------------------------------------

@app.route(route="fhir/{version}/metadata", methods=["GET"], auth_level=ANON)
def fhir_metadata(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.metadata, req, "version")


@app.route(route="fhir/{version}/.well-known/smart-configuration", methods=["GET"], auth_level=ANON)
def smart_configuration(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.smart_config, req, "version")


@app.route(route="oauth2/jwks", methods=["GET"], auth_level=ANON)
def oauth_jwks(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.jwks, req)


@app.route(route="oauth2/token", methods=["POST"], auth_level=ANON)
def oauth_token(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.token, req)


@app.route(route="health", methods=["GET"], auth_level=ANON)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.health, req)


# --- the FHIR proxy (gateway bearer token, checked by the proxy: ROUTE-3) -------------------

@app.route(route="fhir/{version}", methods=["POST"], auth_level=ANON)
def fhir_batch(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.fhir, req, "version", "path")


@app.route(route="fhir/{version}/{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], auth_level=ANON)
def fhir_proxy(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.fhir, req, "version", "path")


# --- management API (function key) ------------------------------------------------------------

@app.route(route="manage/clients", methods=["GET"], auth_level=KEY)
def manage_list_clients(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.list_clients, req)


@app.route(route="manage/clients", methods=["POST"], auth_level=KEY)
def manage_create_client(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.create_client, req)


@app.route(route="manage/clients/{client_id}", methods=["GET"], auth_level=KEY)
def manage_get_client(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.get_client, req, "client_id")


@app.route(route="manage/clients/{client_id}/disable", methods=["POST"], auth_level=KEY)
def manage_disable_client(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.disable_client, req, "client_id")


@app.route(route="manage/clients/{client_id}/secrets", methods=["GET"], auth_level=KEY)
def manage_list_secrets(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.list_secrets, req, "client_id")


@app.route(route="manage/clients/{client_id}/secrets", methods=["POST"], auth_level=KEY)
def manage_add_secret(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.add_secret, req, "client_id")


@app.route(route="manage/clients/{client_id}/secrets/{secret_id}", methods=["DELETE"], auth_level=KEY)
def manage_delete_secret(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.delete_secret, req, "client_id", "secret_id")


@app.route(route="manage/tenants", methods=["GET"], auth_level=KEY)
def manage_list_tenants(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.list_tenants, req)


@app.route(route="manage/tenants/{tenant_id}", methods=["GET"], auth_level=KEY)
def manage_get_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.get_tenant, req, "tenant_id")


@app.route(route="manage/tenants/{tenant_id}", methods=["PUT"], auth_level=KEY)
def manage_put_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.put_tenant, req, "tenant_id")


@app.route(route="manage/tenants/{tenant_id}", methods=["DELETE"], auth_level=KEY)
def manage_delete_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.delete_tenant, req, "tenant_id")


@app.route(route="manage/tenants/{tenant_id}/disable", methods=["POST"], auth_level=KEY)
def manage_disable_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.disable_tenant, req, "tenant_id")


@app.route(route="manage/signing-keys/rotate", methods=["POST"], auth_level=KEY)
def manage_rotate_signing_key(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.rotate_signing_key, req)


# --- consumer portal (AUTH-5, AUTH-6; anonymous at the host: sessions, CSRF and rate limits in shared/portal) ---

@app.route(route="portal", methods=["GET"], auth_level=ANON)
def portal_home(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.home, req)


@app.route(route="portal/signin", methods=["GET"], auth_level=ANON)
def portal_signin_form(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.signin_form, req)


@app.route(route="portal/signin", methods=["POST"], auth_level=ANON)
def portal_signin(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.signin, req)


@app.route(route="portal/register", methods=["GET"], auth_level=ANON)
def portal_register_form(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.register_form, req)


@app.route(route="portal/register", methods=["POST"], auth_level=ANON)
def portal_register(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.register, req)


@app.route(route="portal/signout", methods=["POST"], auth_level=ANON)
def portal_signout(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.signout, req)


@app.route(route="portal/secrets", methods=["GET"], auth_level=ANON)
def portal_secrets(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.secrets, req)


@app.route(route="portal/secrets", methods=["POST"], auth_level=ANON)
def portal_add_secret(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.add_secret, req)


@app.route(route="portal/secrets/{secret_id}/delete", methods=["POST"], auth_level=ANON)
def portal_delete_secret(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.delete_secret, req, "secret_id")


@app.route(route="portal/static/{name}", methods=["GET"], auth_level=ANON)
def portal_static(req: func.HttpRequest) -> func.HttpResponse:
    return serve(portal.static, req, "name")


# --- invitation codes for the portal (management API, function key) --------------------------------

@app.route(route="manage/invitations", methods=["GET"], auth_level=KEY)
def manage_list_invitations(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.list_invitations, req)


@app.route(route="manage/invitations", methods=["POST"], auth_level=KEY)
def manage_create_invitation(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.create_invitation, req)


@app.route(route="manage/invitations/{invitation_id}", methods=["DELETE"], auth_level=KEY)
def manage_revoke_invitation(req: func.HttpRequest) -> func.HttpResponse:
    return serve(handlers.revoke_invitation, req, "invitation_id")
