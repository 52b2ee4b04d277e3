"""The unauthenticated discovery surface: capability statements, SMART configuration, JWKS.

FHIR-1 (capability statement content), AUTH-3 (token URL published in rest.security), AUTH-4
(metadata needs no token). STU3 is validated with fhir.resources' STU3 model; DSTU2 has no model
in fhir.resources 8, so its Conformance is checked element by element against the DSTU2 (1.0.2)
definition: cardinalities, the code systems of coded elements, and no element DSTU2 lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from fhir.resources.STU3.capabilitystatement import CapabilityStatement

from tests.gateway_calls import (
    TIMEOUT,
    access_token,
    assert_operation_outcome,
    create_client,
    onboard,
    request_token,
    start_stack,
)

VERSIONS = ("stu3", "dstu2")
RESOURCE_TYPE = {"stu3": "CapabilityStatement", "dstu2": "Conformance"}
FHIR_VERSION = {"stu3": "3.0.2", "dstu2": "1.0.2"}
CONTENT_TYPE = {"stu3": "application/fhir+json", "dstu2": "application/json+fhir"}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://hl7.org/fhir/restful-security-service"

# What the Patients app searches with, per the interface spec (result parameters such as _count and
# _sort are not search parameters; _sort=date needs `date`).
_BY_PATIENT = {"patient"}
APP_SEARCHES: dict[str, dict[str, set[str]]] = {
    "stu3": {
        "Patient": {"_id", "family", "given", "birthdate", "gender", "identifier"},
        "Observation": {"patient", "category", "date"},
        "Condition": _BY_PATIENT,
        "Encounter": {"patient", "date"},
        "AllergyIntolerance": _BY_PATIENT,
        "MedicationRequest": _BY_PATIENT,
        "Coverage": _BY_PATIENT,
    },
    "dstu2": {
        "Patient": {"_id", "family", "given", "name", "birthdate", "identifier"},
        "Observation": {"patient", "category", "date"},
        "Condition": _BY_PATIENT,
        "Encounter": {"patient", "date"},
        "AllergyIntolerance": _BY_PATIENT,
        "MedicationOrder": _BY_PATIENT,
        "Coverage": _BY_PATIENT,
        "Location": set(),  # DSTU2 lists Location as a resource of its own (read by reference)
    },
}
WRONG_MEDICATION_TYPE = {"stu3": "MedicationOrder", "dstu2": "MedicationRequest"}

# DSTU2 (1.0.2) Conformance: every element name, and the value sets of the coded elements used here.
DSTU2_CONFORMANCE_ELEMENTS = {
    "resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
    "modifierExtension", "url", "version", "name", "status", "experimental", "publisher", "contact", "date",
    "description", "requirements", "copyright", "kind", "software", "implementation", "fhirVersion",
    "acceptUnknown", "format", "profile", "rest", "messaging", "document",
}
DSTU2_REST_ELEMENTS = {"id", "extension", "modifierExtension", "mode", "documentation", "security", "resource",
                       "interaction", "transactionMode", "searchParam", "operation", "compartment"}
DSTU2_SECURITY_ELEMENTS = {"id", "extension", "modifierExtension", "cors", "service", "description", "certificate"}
DSTU2_RESOURCE_ELEMENTS = {"id", "extension", "modifierExtension", "type", "profile", "interaction", "versioning",
                           "readHistory", "updateCreate", "conditionalCreate", "conditionalUpdate",
                           "conditionalDelete", "searchInclude", "searchRevInclude", "searchParam"}
DSTU2_SEARCH_PARAM_ELEMENTS = {"id", "extension", "modifierExtension", "name", "definition", "type",
                               "documentation", "target", "modifier", "chain"}
DSTU2_CODES = {
    "status": {"draft", "active", "retired"},
    "kind": {"instance", "capability", "requirements"},
    "acceptUnknown": {"no", "extensions", "elements", "both"},
    "rest.mode": {"client", "server"},
    "rest.transactionMode": {"not-supported", "batch", "transaction", "both"},
    "rest.interaction": {"transaction", "search-system", "history-system"},
    "resource.interaction": {"read", "vread", "update", "delete", "history-instance", "validate", "history-type",
                             "create", "search-type"},
    "resource.versioning": {"no-version", "versioned", "versioned-update"},
    "searchParam.type": {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"},
    "security.service": {"OAuth", "SMART-on-FHIR", "NTLM", "Basic", "Kerberos", "Certificates"},
}


def metadata(facts: dict[str, Any], version: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{facts['fhir_base_urls'][version]}/metadata", timeout=TIMEOUT, **kwargs)


@pytest.fixture(scope="module")
def statements(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v: metadata(facts, v).json() for v in VERSIONS}


def token_url_of(statement: dict[str, Any]) -> str:
    security = statement["rest"][0]["security"]
    oauth = [e for e in security["extension"] if e["url"] == OAUTH_URIS]
    assert len(oauth) == 1, security
    token = [e["valueUri"] for e in oauth[0]["extension"] if e["url"] == "token"]
    assert len(token) == 1, oauth
    return token[0]


def tenant_for(facts: dict[str, Any], version: str) -> str:
    return next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == version)


# --- AUTH-4, FHIR-1: the statement itself -------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_is_served_without_a_token_AUTH_4(facts: dict[str, Any], version: str) -> None:
    response = metadata(facts, version)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == CONTENT_TYPE[version]
    statement = response.json()
    assert statement["resourceType"] == RESOURCE_TYPE[version]
    assert statement["fhirVersion"] == FHIR_VERSION[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_ignores_a_bad_bearer_token_because_it_needs_none_AUTH_4(facts: dict[str, Any],
                                                                         version: str) -> None:
    response = metadata(facts, version, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == RESOURCE_TYPE[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_statement_describes_a_server_instance_FHIR_1(statements: dict[str, dict[str, Any]], version: str) -> None:
    statement = statements[version]
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert len(statement["rest"]) == 1
    assert statement["rest"][0]["mode"] == "server"
    assert statement["implementation"]["url"].endswith(f"/api/fhir/{version}")
    assert CONTENT_TYPE[version] in statement["format"] and "json" in statement["format"]


def test_stu3_statement_is_a_valid_stu3_capability_statement_FHIR_1(statements: dict[str, dict[str, Any]]) -> None:
    model = CapabilityStatement.model_validate(statements["stu3"])
    assert model.fhirVersion == "3.0.2"
    assert model.kind == "instance"
    assert model.implementation is not None  # cpb-14: an instance statement has implementation
    system_interactions = {i.code for i in model.rest[0].interaction or []}
    assert "batch" in system_interactions  # FHIR-2: the app posts batch Bundles to the base


def test_dstu2_statement_is_a_valid_dstu2_conformance_FHIR_1(statements: dict[str, dict[str, Any]]) -> None:
    statement = statements["dstu2"]
    assert set(statement) <= DSTU2_CONFORMANCE_ELEMENTS, set(statement) - DSTU2_CONFORMANCE_ELEMENTS
    # 1..1 and 1..* elements
    for required in ("date", "kind", "fhirVersion", "acceptUnknown", "format"):
        assert statement.get(required), required
    assert statement["status"] in DSTU2_CODES["status"]
    assert statement["kind"] in DSTU2_CODES["kind"]
    assert statement["acceptUnknown"] in DSTU2_CODES["acceptUnknown"]
    assert all(isinstance(f, str) and f for f in statement["format"])
    assert statement["software"]["name"] and statement["implementation"]["description"]  # conf-2
    assert statement.get("rest")  # conf-1

    rest = statement["rest"][0]
    assert set(rest) <= DSTU2_REST_ELEMENTS, set(rest) - DSTU2_REST_ELEMENTS
    assert rest["mode"] in DSTU2_CODES["rest.mode"]
    # DSTU2 has no `batch` system interaction (STU3 added it): batch support is transactionMode.
    for interaction in rest.get("interaction", []):
        assert interaction["code"] in DSTU2_CODES["rest.interaction"], interaction
    assert rest.get("transactionMode") in DSTU2_CODES["rest.transactionMode"]
    assert rest["transactionMode"] in ("batch", "both"), "FHIR-2: the app posts batch Bundles"

    security = rest["security"]
    assert set(security) <= DSTU2_SECURITY_ELEMENTS
    codes = {c["code"] for s in security["service"] for c in s["coding"]}
    assert codes <= DSTU2_CODES["security.service"]

    types = [r["type"] for r in rest["resource"]]
    assert len(types) == len(set(types)), "conf-9: one entry per resource type"
    for resource in rest["resource"]:
        assert set(resource) <= DSTU2_RESOURCE_ELEMENTS, resource
        assert resource["type"] and resource["interaction"]
        assert {i["code"] for i in resource["interaction"]} <= DSTU2_CODES["resource.interaction"]
        if "versioning" in resource:
            assert resource["versioning"] in DSTU2_CODES["resource.versioning"]
        for param in resource.get("searchParam", []):
            assert set(param) <= DSTU2_SEARCH_PARAM_ELEMENTS, param
            assert param["name"] and param["type"] in DSTU2_CODES["searchParam.type"], param


# --- FHIR-1: resources the Patients app uses ------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_statement_lists_each_resource_the_patients_app_reads_once_FHIR_1_FHIR_3_FHIR_4(
        statements: dict[str, dict[str, Any]], version: str) -> None:
    resources = statements[version]["rest"][0]["resource"]
    by_type: dict[str, dict[str, Any]] = {}
    for resource in resources:
        assert resource["type"] not in by_type, f"{resource['type']} listed twice"
        by_type[resource["type"]] = resource
    assert "Patient" in by_type  # FHIR-4: the app does not load without it
    assert WRONG_MEDICATION_TYPE[version] not in by_type, "the other FHIR version's medication resource"
    for rtype, params in APP_SEARCHES[version].items():
        assert rtype in by_type, f"{version} statement lacks {rtype}"
        interactions = {i["code"] for i in by_type[rtype]["interaction"]}
        assert "read" in interactions, f"FHIR-3: {rtype} must be readable by reference"
        if params:
            assert "search-type" in interactions, rtype
            declared = {p["name"] for p in by_type[rtype].get("searchParam", [])}
            assert params <= declared, f"{rtype} lacks search parameters {params - declared}"


# --- AUTH-3: where to get a token ------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_security_names_oauth_and_publishes_an_absolute_token_url_AUTH_3(
        statements: dict[str, dict[str, Any]], facts: dict[str, Any], version: str) -> None:
    security = statements[version]["rest"][0]["security"]
    codings = [c for s in security["service"] for c in s["coding"]]
    assert {"system": SECURITY_SERVICE, "code": "OAuth"}.items() <= codings[0].items()
    token_url = token_url_of(statements[version])
    parts = urlsplit(token_url)
    assert parts.scheme in ("http", "https") and parts.netloc, token_url
    assert token_url == facts["token_url"]


@pytest.mark.parametrize("version", VERSIONS)
def test_published_token_url_issues_a_token_for_the_tenant_AUTH_3_AUTH_1(
        statements: dict[str, dict[str, Any]], facts: dict[str, Any], version: str) -> None:
    tenant = tenant_for(facts, version)
    token = access_token(token_url_of(statements[version]), facts["demo_client_id"], facts["demo_client_secret"],
                         tenant)
    assert jwt.decode(token, options={"verify_signature": False})["tid"] == tenant


# --- formats and errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fmt", ["json", "application/json", CONTENT_TYPE["stu3"], CONTENT_TYPE["dstu2"]])
def test_format_json_is_served(facts: dict[str, Any], version: str, fmt: str) -> None:
    response = metadata(facts, version, params={"_format": fmt})
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == RESOURCE_TYPE[version]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("accept", ["application/json", CONTENT_TYPE["stu3"], CONTENT_TYPE["dstu2"], "*/*",
                                    "application/fhir+xml;q=0.9, application/fhir+json"])
def test_accept_json_is_served(facts: dict[str, Any], version: str, accept: str) -> None:
    response = metadata(facts, version, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == RESOURCE_TYPE[version]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("how", [{"params": {"_format": "xml"}}, {"params": {"_format": "application/fhir+xml"}},
                                 {"headers": {"Accept": "application/fhir+xml"}},
                                 {"headers": {"Accept": "application/xml+fhir"}}])
def test_xml_is_not_acceptable_406_operation_outcome(facts: dict[str, Any], version: str,
                                                     how: dict[str, Any]) -> None:
    response = metadata(facts, version, **how)
    assert_operation_outcome(response, 406, "not-supported")
    assert response.headers["Content-Type"].split(";")[0] == CONTENT_TYPE[version]


@pytest.mark.parametrize("path", ["r5/metadata", "dstu3/metadata", "r5/.well-known/smart-configuration"])
def test_unknown_fhir_version_is_404_operation_outcome(gateway: str, path: str) -> None:
    response = requests.get(f"{gateway}/api/fhir/{path}", timeout=TIMEOUT)
    assert_operation_outcome(response, 404, "not-found")


# --- SMART discovery and the signing keys ----------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_smart_configuration_names_the_same_token_endpoint_AUTH_3(
        facts: dict[str, Any], statements: dict[str, dict[str, Any]], version: str) -> None:
    response = requests.get(f"{facts['fhir_base_urls'][version]}/.well-known/smart-configuration", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["token_endpoint"] == token_url_of(statements[version])
    assert "client_credentials" in config["grant_types_supported"]
    assert set(config["token_endpoint_auth_methods_supported"]) >= {"client_secret_basic", "client_secret_post"}
    assert requests.get(config["jwks_uri"], timeout=TIMEOUT).status_code == 200


def assert_es256_public_keys(keys: list[dict[str, Any]]) -> None:
    assert keys
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["use"] == "sig"
        assert key["kid"] and key["x"] and key["y"]
        assert "d" not in key, "a private key component in the JWKS"
    assert len({k["kid"] for k in keys}) == len(keys)


def test_jwks_lists_es256_public_keys_with_kid(gateway: str) -> None:
    response = requests.get(f"{gateway}/api/oauth2/jwks", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] in ("application/json", "application/jwk-set+json")
    assert_es256_public_keys(response.json()["keys"])


def test_jwks_is_not_empty_on_a_fresh_deployment_before_any_token(tmp_path: Path) -> None:
    """The JWKS is cacheable (max-age), so a verifier that fetched it before the first token would
    otherwise cache an empty key set; the key that will sign the first token must be there already."""
    fresh = start_stack(tmp_path)
    try:
        base = fresh.facts["gateway_base_url"]
        keys = requests.get(f"{base}/api/oauth2/jwks", timeout=TIMEOUT).json()["keys"]
        assert_es256_public_keys(keys)
        client = create_client(fresh.manage)
        tenant = onboard(fresh.manage, "https://fhir.example.org/stu3", [client["client_id"]])
        token = access_token(fresh.facts["token_url"], client["client_id"], client["client_secret"], tenant)
        assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in keys}
    finally:
        fresh.stop()


def test_jwks_holds_the_key_that_signed_a_token(facts: dict[str, Any]) -> None:
    response = request_token(facts["token_url"], {
        "grant_type": "client_credentials", "client_id": facts["demo_client_id"],
        "client_secret": facts["demo_client_secret"], "scope": tenant_for(facts, "stu3")})
    token = response.json()["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    keys = requests.get(f"{facts['gateway_base_url']}/api/oauth2/jwks", timeout=TIMEOUT).json()["keys"]
    assert kid in {k["kid"] for k in keys}
