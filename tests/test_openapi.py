"""The management API's OpenAPI 3.1 document (issue #15): complete, valid, served behind the key, and true.

The document is generated from the table the routes are registered from (shared/manage_api.py); these
tests hold it to what the Function App registers and to what the running gateway answers.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import requests
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import function_app
from devtools.stack import DEMO_TENANTS, Stack
from shared.manage_api import openapi_document


def registered_routes() -> dict[str, set[str]]:
    """Route -> methods of every function the app registers. `get_functions()` refuses to run twice on
    one app (it remembers the names it has seen), so that memory is cleared first."""
    function_app.app.functions_bindings = None
    routes: dict[str, set[str]] = {}
    for function in function_app.app.get_functions():
        trigger = function.get_trigger()
        methods = {str(getattr(m, "value", m)).upper() for m in trigger.methods or ()}
        routes.setdefault(trigger.route, set()).update(methods)
    return routes


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) for one named schema of the document."""
    document = openapi_document()
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": document["components"]})


def test_every_registered_management_route_is_documented_with_its_methods() -> None:
    registered = {route: methods for route, methods in registered_routes().items() if route.startswith("manage/")}
    paths = openapi_document()["paths"]
    assert len(registered) >= 10, registered
    for route, methods in registered.items():
        assert f"/{route}" in paths, f"{route} is served but not documented"
        assert {m.upper() for m in paths[f"/{route}"]} == methods, route
    assert {p.removeprefix("/") for p in paths} == set(registered), "the document lists a route nobody serves"


def test_every_management_route_needs_the_function_key() -> None:
    function_app.app.functions_bindings = None
    for function in function_app.app.get_functions():
        trigger = function.get_trigger()
        if trigger.route.startswith("manage/"):
            assert str(getattr(trigger.auth_level, "value", trigger.auth_level)).lower() == "function", trigger.route


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_create_and_put_operations_document_their_request_bodies_and_errors_are_problem_documents() -> None:
    paths = openapi_document()["paths"]
    bodies = {("/manage/clients", "post"): "ClientCreate", ("/manage/clients/{client_id}/secrets", "post"):
              "SecretCreate", ("/manage/tenants/{tenant_id}", "put"): "TenantPut",
              ("/manage/invitations", "post"): "InvitationCreate"}
    for (path, method), schema in bodies.items():
        body = paths[path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{schema}"}
    problems = openapi_document()["components"]["responses"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation["responses"]["500"] == {"$ref": "#/components/responses/Problem500"}, (path, method)
    assert all(list(r["content"]) == ["application/problem+json"] for r in problems.values())


def test_the_tenant_schema_knows_every_upstream_credential_kind() -> None:
    kinds = {variant["properties"]["kind"]["const"]
             for variant in openapi_document()["components"]["schemas"]["UpstreamAuth"]["oneOf"]}
    assert kinds == {"none", "bearer", "client_credentials", "smart_backend", "azure_ad"}


# --- against the running gateway ------------------------------------------------------------------------

def test_the_document_is_served_behind_the_function_key(stack: Stack, facts: dict[str, Any]) -> None:
    served = stack.manage("GET", "/openapi.json")
    assert served.status_code == 200 and served.json() == openapi_document()
    assert served.headers["X-Request-Id"]
    assert requests.get(f"{facts['manage_url']}/openapi.json", timeout=30).status_code == 401


def test_what_the_api_accepts_and_answers_matches_the_document(stack: Stack, facts: dict[str, Any]) -> None:
    created = stack.manage("POST", "/clients", json={"name": "OpenAPI check"})
    assert created.status_code == 201
    schema_validator("ClientCreated").validate(created.json())
    client_id = created.json()["client_id"]
    answers = {
        "ClientList": stack.manage("GET", "/clients"),
        "Client": stack.manage("GET", f"/clients/{client_id}"),
        "SecretCreated": stack.manage("POST", f"/clients/{client_id}/secrets", json={}),
        "SecretList": stack.manage("GET", f"/clients/{client_id}/secrets"),
        "TenantList": stack.manage("GET", "/tenants"),
        "Tenant": stack.manage("GET", f"/tenants/{DEMO_TENANTS['stu3']}"),
        "InvitationCreated": stack.manage("POST", "/invitations", json={"note": "n", "expires_in_hours": 1}),
        "InvitationList": stack.manage("GET", "/invitations"),
    }
    for schema, answer in answers.items():
        assert answer.status_code in (200, 201), (schema, answer.text)
        schema_validator(schema).validate(answer.json())
    tenant = answers["Tenant"].json()
    body = {k: v for k, v in tenant.items() if k not in ("created", "updated")}
    schema_validator("TenantPut").validate(body)
    assert stack.manage("PUT", f"/tenants/{DEMO_TENANTS['stu3']}", json=body).status_code == 200


@pytest.mark.parametrize("body", [{"provider_base_url": "https://ehr.example", "fhir_version": "stu3", "colour": 1},
                                  {"provider_base_url": "https://ehr.example", "fhir_version": "r5"}])
def test_a_body_the_schema_refuses_is_refused_with_a_problem_document(stack: Stack, body: dict[str, Any]) -> None:
    assert not schema_validator("TenantPut").is_valid(body)
    refused = stack.manage("PUT", "/tenants/0b6c1d9e-3f4a-4b5c-8d7e-9f0a1b2c3d4e", json=body)
    assert refused.status_code == 400 and refused.headers["Content-Type"] == "application/problem+json"
    schema_validator("Problem").validate(refused.json())
