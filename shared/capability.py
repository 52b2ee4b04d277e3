"""Capability statements of the gateway's FHIR facades (FHIR-1, AUTH-3, AUTH-4).

STU3 serves a `CapabilityStatement` (3.0.2), DSTU2 a `Conformance` (1.0.2), R4 a
`CapabilityStatement` (4.0.1). Each lists exactly the resource types and search parameters the
Teams Patients app uses in that version, and advertises the token URL in the SMART `oauth-uris`
extension so the app can find it unauthenticated.
"""

from __future__ import annotations

from shared.errors import FhirError
from shared.urls import Urls

FHIR_RELEASE = {"stu3": "3.0.2", "dstu2": "1.0.2"}
CONTENT_TYPE = {"stu3": "application/fhir+json", "dstu2": "application/json+fhir", "r4": "application/fhir+json"}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
R4_RELEASE = "4.0.1"
SOFTWARE_VERSION = "1.0.0"
STATEMENT_DATE = "2026-11-23"

_PATIENT = [("_id", "token"), ("family", "string"), ("given", "string"), ("name", "string"),
            ("birthdate", "date"), ("gender", "token"), ("identifier", "token")]
_BY_PATIENT = [("patient", "reference")]
_COMMON = {
    "Patient": _PATIENT,
    "Observation": [("patient", "reference"), ("category", "token"), ("date", "date"), ("code", "token")],
    "Condition": _BY_PATIENT,
    "Encounter": [("patient", "reference"), ("date", "date")],
    "AllergyIntolerance": _BY_PATIENT,
    "Coverage": _BY_PATIENT,
    "Location": [("_id", "token"), ("name", "string")],
    "Practitioner": [("_id", "token")],
    "Organization": [("_id", "token")],
}
RESOURCES = {
    "stu3": {**_COMMON, "MedicationRequest": _BY_PATIENT},
    "dstu2": {**_COMMON, "MedicationOrder": _BY_PATIENT},
}
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir", "*/*",
                 "application/*"}


def facade_version(version: str) -> str:
    """Validate the `{version}` route segment; unknown ones are a 404 OperationOutcome."""
    key = version.lower()
    if key not in CONTENT_TYPE:
        raise FhirError(404, "not-found", f"unknown FHIR version {version!r}; this gateway serves stu3, dstu2 "
                                          "and r4")
    return key


def check_format(format_param: str | None, accept: str | None) -> None:
    """Honour `_format` and `Accept` for JSON; anything else cannot be served (406)."""
    if format_param:
        if format_param.split(";")[0].strip().lower() not in _JSON_FORMATS:
            raise FhirError(406, "not-supported", "only JSON is supported (_format=json)")
        return
    if accept:
        offered = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        if not any(o in _JSON_FORMATS or o.endswith("+json") for o in offered):
            raise FhirError(406, "not-supported", "only JSON is supported (Accept: application/fhir+json)")


def _resource(version: str, rtype: str, params: list[tuple[str, str]]) -> dict:
    entry: dict = {
        "type": rtype,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": n, "type": t} for n, t in params],
    }
    if version == "stu3":
        entry["versioning"] = "no-version"
    return entry


def security(urls: Urls) -> dict:
    return {
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": urls.token_url}]}],
        "service": [{"coding": [{"system": "http://hl7.org/fhir/restful-security-service", "code": "OAuth",
                                 "display": "OAuth"}],
                     "text": "OAuth 2.0 client credentials; scope = Azure AD tenant id"}],
        "description": "Obtain a bearer token at the token URL with grant_type=client_credentials and "
                       "scope=<Azure AD tenant id>.",
    }


def _described(version: str, urls: Urls) -> dict:
    """What every facade's statement says about the gateway itself."""
    return {
        "status": "active",
        "date": STATEMENT_DATE,
        "publisher": "FHIR interop gateway",
        "kind": "instance",
        "software": {"name": "FHIR interop gateway", "version": SOFTWARE_VERSION},
        "implementation": {"description": f"Patients app interop gateway ({version.upper()} facade)",
                           "url": urls.fhir_base(version)},
    }


def capability_statement(version: str, urls: Urls) -> dict:
    version = facade_version(version)
    if version == "r4":
        return r4_capability_statement(urls)
    statement = {
        "resourceType": "CapabilityStatement" if version == "stu3" else "Conformance",
        **_described(version, urls),
        "fhirVersion": FHIR_RELEASE[version],
        "acceptUnknown": "no",
        "format": ["json", CONTENT_TYPE[version]],
        "rest": [{
            "mode": "server",
            "security": security(urls),
            "resource": [_resource(version, t, p) for t, p in sorted(RESOURCES[version].items())],
            **_batch_support(version),
        }],
    }
    return statement


def _batch_support(version: str) -> dict:
    """FHIR-2 batch. STU3 has a `batch` system interaction; DSTU2 has none (its codes are transaction,
    search-system, history-system) and says "batches only" with `transactionMode`."""
    if version == "stu3":
        return {"interaction": [{"code": "batch"}]}
    return {"interaction": [{"code": "transaction", "documentation": "Bundle of type batch with GET entries only; "
                                                                     "transactions are not supported"}],
            "transactionMode": "batch"}


def smart_configuration(urls: Urls) -> dict:
    return {
        "token_endpoint": urls.token_url,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["client_credentials"],
        "capabilities": ["client-confidential-symmetric"],
        "jwks_uri": urls.jwks_url,
    }


def r4_capability_statement(urls: Urls) -> dict:
    """The R4 facade's CapabilityStatement (4.0.1), served unauthenticated at `/api/fhir/r4/metadata`.

    It lists the STU3 facade's resources and parameters (the Patients
    app's set, R4 names) and advertises SMART Backend Services beside the tenant-id token.
    """
    return {
        "resourceType": "CapabilityStatement",
        **_described("r4", urls),
        "fhirVersion": R4_RELEASE,
        "format": ["json", CONTENT_TYPE["stu3"]],
        "rest": [{
            "mode": "server",
            "security": _r4_security(urls),
            "resource": [_resource("stu3", t, p) for t, p in sorted(RESOURCES["stu3"].items())],
            "interaction": [{"code": "batch"}],
        }],
    }


def _r4_security(urls: Urls) -> dict:
    """R4 moved the security service codes to terminology.hl7.org and has a SMART-on-FHIR code."""
    return {
        **security(urls),
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                     "text": "OAuth 2.0 client credentials (client secret or SMART Backend Services "
                             "private_key_jwt); scope = Azure AD tenant id [SMART system scopes]"}],
        "description": "Obtain a bearer token at the token URL with grant_type=client_credentials and "
                       "scope=<Azure AD tenant id>, optionally followed by SMART system scopes "
                       "(system/Patient.read, system/Observation.rs); see .well-known/smart-configuration.",
    }


SCOPES_SUPPORTED = ("system/*.read", "system/*.rs", "system/*.r", "system/*.s")


def backend_services_configuration(urls: Urls) -> dict:
    """`.well-known/smart-configuration` of every facade: `private_key_jwt` beside client secrets,
    and SMART system scopes. No authorization or
    PKCE metadata: the only grant is client_credentials, so SMART's launch-related fields
    (authorization_endpoint, code_challenge_methods_supported) do not apply.
    """
    return {
        **smart_configuration(urls),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": list(_assertion_algorithms()),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": ["client-confidential-asymmetric", "client-confidential-symmetric",
                         "permission-v1", "permission-v2"],
    }


def _assertion_algorithms() -> tuple[str, ...]:
    """Imported on use: shared.client_assertion brings PyJWT, which discovery never otherwise needs."""
    from shared.client_assertion import ALGORITHMS
    return tuple(ALGORITHMS)
