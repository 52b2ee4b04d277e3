"""The R4 facade's CapabilityStatement and the Backend Services SMART discovery, as pure functions."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from shared.capability import (
    OAUTH_URIS,
    backend_services_configuration,
    facade_version,
    r4_capability_statement,
    smart_configuration,
)
from shared.errors import FhirError
from shared.urls import Urls

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

URLS = Urls("https://gateway.example")


def test_r4_statement_is_a_valid_r4_capability_statement_4_0_1_FHIR_1():
    model = CapabilityStatement.model_validate(r4_capability_statement(URLS))
    assert model.fhirVersion == "4.0.1" and model.kind == "instance" and model.status == "active"
    assert model.implementation.url == "https://gateway.example/api/fhir/r4"
    assert "application/fhir+json" in model.format
    assert {i.code for i in model.rest[0].interaction} == {"batch"}


def test_r4_statement_advertises_the_token_url_in_oauth_uris_AUTH_3():
    security = r4_capability_statement(URLS)["rest"][0]["security"]
    oauth = next(e for e in security["extension"] if e["url"] == OAUTH_URIS)
    assert oauth["extension"] == [{"url": "token", "valueUri": URLS.token_url}]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_r4_statement_lists_the_patients_app_resources_with_r4_names():
    resources = {r["type"]: r for r in r4_capability_statement(URLS)["rest"][0]["resource"]}
    assert "MedicationRequest" in resources and "MedicationOrder" not in resources
    assert {p["name"] for p in resources["Patient"]["searchParam"]} >= {"family", "given", "birthdate", "identifier"}
    assert all({i["code"] for i in r["interaction"]} == {"read", "search-type"} for r in resources.values())


def test_r4_is_a_routable_facade_version():
    assert facade_version("R4") == "r4"
    with pytest.raises(FhirError) as info:
        facade_version("r5")
    assert info.value.status == 404


def test_backend_services_discovery_advertises_private_key_jwt_and_system_scopes():
    config = backend_services_configuration(URLS)
    assert config["token_endpoint"] == URLS.token_url and config["jwks_uri"] == URLS.jwks_url
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "client_secret_basic",
                                                               "client_secret_post"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"ES384", "RS384", "ES256", "RS256"}
    assert config["grant_types_supported"] == ["client_credentials"]
    assert "system/*.read" in config["scopes_supported"] and "system/*.rs" in config["scopes_supported"]
    assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(config["capabilities"])
    assert "authorization_endpoint" not in config


def test_todays_discovery_is_unchanged_until_the_token_endpoint_accepts_assertions():
    assert "private_key_jwt" not in smart_configuration(URLS)["token_endpoint_auth_methods_supported"]
