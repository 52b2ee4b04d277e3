"""The management API as one table: each row is a route, its method, its handler and its description.

`function_app.py` registers one Azure Functions HTTP trigger per row (auth level FUNCTION), and
`openapi_document()` turns the same rows into the OpenAPI 3.1 document served at
`GET /api/manage/openapi.json`, so the document cannot drift from what is served: a route exists
in both or in neither. The schemas below describe what the handlers accept and answer; where a
limit or an allowed value lives in code (FHIR versions, upstream credential kinds, invitation
lifetime), the schema reads it from there. `tests/test_openapi.py` validates the document and
checks every registered `manage/` route against it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared import handlers
from shared.edge import problem_endpoint
from shared.errors import NO_STORE
from shared.guid import GUID_PATTERN
from shared.http import Request, Response
from shared.invitations import MAX_HOURS, MAX_NOTE
from shared.routes import FHIR_VERSIONS
from shared.upstream_auth import KINDS as UPSTREAM_AUTH_KINDS

PREFIX = "manage/"


@dataclass(frozen=True)
class Operation:
    """One management route. `request` and the `responses` values name schemas in the document's
    components (None: no body); `headers` are the request headers the handler reads."""

    method: str
    route: str
    handler: Callable[..., Response]
    summary: str
    responses: Mapping[int, str | None]
    request: str | None = None
    headers: tuple[str, ...] = ()
    etag: bool = False  # the answer carries the resource's ETag
    tag: str = ""

    @property
    def function_name(self) -> str:
        """The Azure Functions function name: unique per row (Azure refuses duplicates)."""
        return f"manage_{self.handler.__name__}"

    @property
    def route_keys(self) -> tuple[str, ...]:
        """The route's parameters, in order: the handler's arguments after the request."""
        return tuple(re.findall(r"\{(\w+)\}", self.route))


@problem_endpoint
def openapi(req: Request) -> Response:
    """The document is built once per process: it depends only on the code."""
    return Response.json(200, openapi_document(), "application/json", NO_STORE)


_IF_MATCH, _IF_NONE_MATCH = "If-Match", "If-None-Match"

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "manage/clients", handlers.list_clients, "List the API clients",
              {200: "ClientList"}, tag="clients"),
    Operation("POST", "manage/clients", handlers.create_client,
              "Create an API client and its first secret (the secret is in this answer only)",
              {201: "ClientCreated"}, request="ClientCreate", tag="clients"),
    Operation("GET", "manage/clients/{client_id}", handlers.get_client, "Read one client",
              {200: "Client"}, tag="clients"),
    Operation("PUT", "manage/clients/{client_id}/jwks", handlers.set_client_jwks,
              "Replace a client's public keys for private_key_jwt (a JWK Set, or {\"jwks_uri\": ...})",
              {200: "Client"}, request="ClientKeys", tag="clients"),
    Operation("POST", "manage/clients/{client_id}/disable", handlers.disable_client,
              "Disable a client and end its portal sessions", {200: "Client"}, tag="clients"),
    Operation("GET", "manage/clients/{client_id}/secrets", handlers.list_secrets,
              "List a client's secrets (hints and dates, never values)", {200: "SecretList"}, tag="clients"),
    Operation("POST", "manage/clients/{client_id}/secrets", handlers.add_secret,
              "Add a secret to a client (the value is in this answer only)", {201: "SecretCreated"},
              request="SecretCreate", tag="clients"),
    Operation("DELETE", "manage/clients/{client_id}/secrets/{secret_id}", handlers.delete_secret,
              "Delete one of a client's secrets", {204: None}, tag="clients"),
    Operation("GET", "manage/tenants", handlers.list_tenants, "List the tenants' routes",
              {200: "TenantList"}, tag="tenants"),
    Operation("GET", "manage/tenants/{tenant_id}", handlers.get_tenant, "Read a tenant's route",
              {200: "Tenant"}, etag=True, tag="tenants"),
    Operation("PUT", "manage/tenants/{tenant_id}", handlers.put_tenant,
              "Create or replace a tenant's route (If-Match for a safe update, If-None-Match: * to create only)",
              {200: "Tenant", 201: "Tenant"}, request="TenantPut", headers=(_IF_MATCH, _IF_NONE_MATCH),
              etag=True, tag="tenants"),
    Operation("DELETE", "manage/tenants/{tenant_id}", handlers.delete_tenant, "Delete a tenant's route",
              {204: None}, headers=(_IF_MATCH,), tag="tenants"),
    Operation("POST", "manage/tenants/{tenant_id}/disable", handlers.disable_tenant,
              "Disable a tenant (every instance stops routing to it within the cache TTL)", {200: "Tenant"},
              headers=(_IF_MATCH,), etag=True, tag="tenants"),
    Operation("POST", "manage/signing-keys/rotate", handlers.rotate_signing_key,
              "Rotate the token signing key (the old key stays in the JWKS while its tokens live)",
              {201: "SigningKey"}, tag="signing keys"),
    Operation("GET", "manage/invitations", handlers.list_invitations, "List the consumer portal's invitations",
              {200: "InvitationList"}, tag="invitations"),
    Operation("POST", "manage/invitations", handlers.create_invitation,
              "Create an invitation (the code is in this answer only)", {201: "InvitationCreated"},
              request="InvitationCreate", tag="invitations"),
    Operation("DELETE", "manage/invitations/{invitation_id}", handlers.revoke_invitation, "Revoke an invitation",
              {204: None}, tag="invitations"),
    Operation("GET", "manage/openapi.json", openapi, "This document", {200: "OpenApiDocument"}, tag="meta"),
)


# --- the document -------------------------------------------------------------------------------------

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_GUID = {"type": "string", "pattern": f"^{GUID_PATTERN}$"}
_PARAMETERS = {
    "client_id": ("The client's id", {"type": "string"}),
    "secret_id": ("The secret's id (the public prefix of its value)", {"type": "string"}),
    "tenant_id": ("The tenant's Azure AD tenant id", _GUID),
    "invitation_id": ("The invitation's id", {"type": "string", "pattern": "^[0-9a-f]{16}$"}),
}
_HEADERS = {
    _IF_MATCH: "The ETag of the version you read: the change is refused (412) if the route changed since",
    _IF_NONE_MATCH: "`*`: create only; refused (412) if the tenant already has a route",
}
_SUCCESS = {200: "OK", 201: "Created", 204: "Done; no body"}
_ERRORS = {400: "The request is invalid (`errors` names the field)", 404: "No such resource",
           412: "The precondition (If-Match, If-None-Match) failed", 413: "The body is larger than 64 KiB",
           500: "Internal error (logged with the request id)",
           503: "Table Storage or Key Vault is unavailable; retry later"}


def _object(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def _list_of(key: str, item: str) -> dict[str, Any]:
    return _object({key: {"type": "array", "items": _ref(item)}}, (key,))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _upstream_auth() -> dict[str, Any]:
    """One alternative per credential kind the gateway knows (shared/upstream_auth/kinds.py), with its fields."""
    variants = []
    for kind, fields in UPSTREAM_AUTH_KINDS.items():
        properties: dict[str, Any] = {"kind": {"const": kind}}
        properties.update({name: {"type": "string", "minLength": 1} for name in (*fields.required, *fields.optional)})
        variants.append(_object(properties, ("kind", *fields.required), additionalProperties=False))
    return {"description": "How the gateway authenticates to the provider; credentials are never inline: "
                           "`secret_name` names a Key Vault secret", "oneOf": variants}


def _tenant_fields() -> dict[str, Any]:
    return {
        "display_name": {"type": "string", "maxLength": 200},
        "provider_base_url": {"type": "string", "format": "uri",
                              "description": "The provider's FHIR base URL (https)"},
        "fhir_version": {"enum": list(FHIR_VERSIONS)},
        "upstream_auth": _ref("UpstreamAuth"),
        "allowed_clients": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
                            "description": "Client ids that may use this tenant"},
        "enabled": {"type": "boolean"},
        "resource_types": {"type": ["array", "null"],
                           "items": {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,63}$"},
                           "description": "The resource types this tenant serves (null: the gateway's default set)"},
        "batch_passthrough": {"type": "boolean", "description": "Send validated batches to the provider whole"},
    }


def _schemas() -> dict[str, Any]:
    keys = {"jwks": _ref("JwkSet"),
            "jwks_uri": {"type": "string", "format": "uri", "description": "https URL of the client's JWK Set"}}
    client = _object({"client_id": {"type": "string"}, "name": {"type": "string"},
                      "status": {"enum": ["active", "disabled"]}, "created": _TIME, **keys},
                     ("client_id", "name", "status", "created"))
    secret = _object({"secret_id": {"type": "string"}, "hint": {"type": "string"}, "created": _TIME,
                      "expires_on": _NULLABLE_TIME, "enabled": {"type": "boolean"}},
                     ("secret_id", "hint", "created", "expires_on", "enabled"))
    expiry = {"expires_on": {**_TIME, "description": "ISO 8601 with a time zone; none: never expires"}}
    tenant_put = _object({**_tenant_fields(), "tenant_id": {**_GUID, "description": "if present, as in the URL"},
                          "created": {"description": "ignored"}, "updated": {"description": "ignored"}},
                         ("provider_base_url", "fhir_version"), additionalProperties=False)
    tenant = _object({"tenant_id": _GUID, **_tenant_fields(), "created": _TIME, "updated": _TIME},
                     ("tenant_id", "provider_base_url", "fhir_version", "upstream_auth", "allowed_clients",
                      "enabled", "created", "updated"))
    invitation = _object({"invitation_id": {"type": "string"}, "note": {"type": "string"}, "created": _TIME,
                          "expires": _TIME, "status": {"type": "string"}, "used_at": _NULLABLE_TIME,
                          "client_id": {"type": ["string", "null"]}},
                         ("invitation_id", "note", "created", "expires", "status"))
    return {
        "Problem": _object({
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": _object({"field": {"type": "string"}, "detail": {"type": "string"}},
                                                          ("field", "detail"))},
            "request_id": {"type": "string", "description": "As in the X-Request-Id header and the traces"},
        }, ("type", "title", "status", "detail"), description="RFC 9457 problem details"),
        "Client": client,
        "ClientList": _list_of("clients", "Client"),
        "ClientCreate": _object({"name": {"type": "string", "minLength": 1, "maxLength": 200}, **expiry, **keys},
                                ("name",), description="with jwks or jwks_uri the client gets no secret"),
        "ClientCreated": {"allOf": [_ref("Client"), _object(
            {"client_secret": {"type": "string"}, "secret": _ref("SecretInfo")},
            description="client_secret and secret are absent for a client created with keys")]},
        "JwkSet": _object({"keys": {"type": "array", "items": _object({"kty": {"enum": ["EC", "RSA"]},
                                                                         "kid": {"type": "string"}},
                                                                        ("kty", "kid"))}},
                          ("keys",), description="Public keys only (RFC 7517); private members are refused"),
        "ClientKeys": {"oneOf": [_ref("JwkSet"), _object({"jwks_uri": keys["jwks_uri"]}, ("jwks_uri",))]},
        "SecretInfo": secret,
        "SecretList": _list_of("secrets", "SecretInfo"),
        "SecretCreate": _object(expiry),
        "SecretCreated": _object({"client_id": {"type": "string"}, "client_secret": {"type": "string"},
                                  "secret": _ref("SecretInfo")}, ("client_id", "client_secret", "secret")),
        "UpstreamAuth": _upstream_auth(),
        "TenantPut": tenant_put,
        "Tenant": tenant,
        "TenantList": _list_of("tenants", "Tenant"),
        "SigningKey": _object({"kid": {"type": "string"}, "created": _TIME}, ("kid", "created")),
        "InvitationCreate": _object({
            "expires_in_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_HOURS},
            "note": {"type": "string", "maxLength": MAX_NOTE}}),
        "Invitation": invitation,
        "InvitationList": _list_of("invitations", "Invitation"),
        "InvitationCreated": {"allOf": [_ref("Invitation"), _object({"code": {"type": "string"}}, ("code",))]},
        "OpenApiDocument": {"type": "object", "description": "This OpenAPI 3.1 document"},
    }


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [{"name": key, "in": "path", "required": True, "description": _PARAMETERS[key][0],
                   "schema": _PARAMETERS[key][1]} for key in op.route_keys]
    parameters += [{"name": name, "in": "header", "required": False, "description": _HEADERS[name],
                    "schema": {"type": "string"}} for name in op.headers]
    responses: dict[str, Any] = {}
    for status, schema in op.responses.items():
        answer: dict[str, Any] = {"description": _SUCCESS[status],
                                  "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}}
        if schema is not None:
            answer["content"] = {"application/json": {"schema": _ref(schema)}}
        if op.etag and schema is not None:
            answer["headers"]["ETag"] = {"$ref": "#/components/headers/ETag"}
        responses[str(status)] = answer
    responses["401"] = {"description": "No or wrong function key (answered by the Functions host, no body)"}
    for status in (400, 404, 412, 413, 500, 503):
        if (status == 412 and not op.headers) or (status == 413 and op.request is None):
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    operation: dict[str, Any] = {"operationId": op.function_name, "summary": op.summary, "tags": [op.tag],
                                 "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if op.request is not None:
        operation["requestBody"] = {"required": "required" in _schemas()[op.request],  # else {} will do
                                    "content": {"application/json": {"schema": _ref(op.request)}}}
    return operation


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The management API as OpenAPI 3.1, from `OPERATIONS`; paths are under the host's `api` prefix."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault("/" + op.route, {})[op.method.lower()] = _operation(op)
    problem = {"application/problem+json": {"schema": _ref("Problem")}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "FHIR gateway management API", "version": "1",
                 "description": "Clients, secrets, tenants' routes, signing keys and portal invitations. Every "
                                "answer carries X-Request-Id; errors are RFC 9457 problem documents naming it."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                                "description": "A function or host key of the Function App"}},
            "schemas": _schemas(),
            "headers": {
                "RequestId": {"description": "The request's id: the trace id in Application Insights",
                              "schema": {"type": "string"}},
                "ETag": {"description": "The route's version, for If-Match", "schema": {"type": "string"}},
            },
            "responses": {f"Problem{status}": {"description": text, "content": problem}
                          for status, text in _ERRORS.items()},
        },
    }
