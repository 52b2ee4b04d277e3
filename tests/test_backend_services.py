"""SMART Backend Services end to end (issue #16): `private_key_jwt` at the token endpoint with every
assertion check and its failing variants, JWK Set registration, SMART system scopes narrowing a
token, and the proxy enforcing them on requests and batch entries.

A client registered here holds a P-384 EC key and a 2048-bit RSA key; its tenants route to the
stack's STU3 sample EHR. Everything goes through the real gateway (Azurite, Key Vault emulator).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.assertion_replay import TableReplayStore
from shared.client_assertion import CLOCK_SKEW_SECONDS
from shared.client_jwks import REFRESH_SECONDS, RemoteJwks
from shared.stores.tables import AzureTable
from tests.gateway_calls import TIMEOUT

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Keys:
    """The client's private keys, by kid, and the public JWK Set it registers."""

    def __init__(self) -> None:
        self.private = {"es384": ec.generate_private_key(ec.SECP384R1()),
                        "rs384": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.jwks = {"keys": [
            {**ECAlgorithm.to_jwk(self.private["es384"].public_key(), as_dict=True), "kid": "es384", "use": "sig"},
            {**RSAAlgorithm.to_jwk(self.private["rs384"].public_key(), as_dict=True), "kid": "rs384",
             "alg": "RS384"}]}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def client_id(stack: Any, keys: Keys) -> str:
    created = stack.manage("POST", "/clients", json={"name": "Backend service", "jwks": keys.jwks})
    assert created.status_code == 201, created.text
    body = created.json()
    assert "client_secret" not in body and "secret" not in body, "a jwks client must get no secret"
    assert [k["kid"] for k in body["jwks"]["keys"]] == ["es384", "rs384"]
    return body["client_id"]


def new_tenant(stack: Any, facts: dict[str, Any], client_id: str, version: str = "stu3", **extra: Any) -> str:
    """A tenant of a sample EHR (STU3 unless said) that only this module's client may use."""
    tenant_id = str(uuid.uuid4())
    body = {"display_name": "Backend services hospital", "provider_base_url": facts["provider_base_urls"][version],
            "fhir_version": version, "upstream_auth": {"kind": "none"}, "allowed_clients": [client_id],
            "enabled": True, **extra}
    assert stack.manage("PUT", f"/tenants/{tenant_id}", json=body).status_code == 201
    return tenant_id


@pytest.fixture(scope="module")
def tenant(stack: Any, facts: dict[str, Any], client_id: str) -> str:
    return new_tenant(stack, facts, client_id)


def assertion(facts: dict[str, Any], client_id: str, key: Any, kid: str, alg: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": client_id, "sub": client_id, "aud": facts["token_url"], "exp": now + 120, "iat": now,
               "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def token_request(facts: dict[str, Any], signed: str, scope: str) -> requests.Response:
    return requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed,
        "scope": scope}, timeout=TIMEOUT)


def signed_token(facts: dict[str, Any], keys: Keys, client_id: str, scope: str) -> dict[str, Any]:
    response = token_request(facts, assertion(facts, client_id, keys.private["es384"], "es384", "ES384"), scope)
    assert response.status_code == 200, response.text
    return response.json()


def assert_invalid_client(response: requests.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client" and reason.lower() in body["error_description"].lower(), body


def fhir(facts: dict[str, Any], token: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{facts['fhir_base_urls']['stu3']}/{path}", timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {token}"}, **kwargs)


# --- private_key_jwt ------------------------------------------------------------------------------

@pytest.mark.parametrize(("kid", "alg"), [("es384", "ES384"), ("rs384", "RS384")])
def test_signed_assertion_gets_a_token_that_reads_the_tenant(facts: dict[str, Any], keys: Keys, client_id: str,
                                                             tenant: str, kid: str, alg: str) -> None:
    response = token_request(facts, assertion(facts, client_id, keys.private[kid], kid, alg), tenant)
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["scope"] == tenant and issued["token_type"] == "Bearer"
    search = fhir(facts, issued["access_token"], "GET", "Patient", params={"_count": "1"})
    assert search.status_code == 200 and search.json()["resourceType"] == "Bundle"


def test_an_assertion_is_accepted_once(facts: dict[str, Any], keys: Keys, client_id: str, tenant: str) -> None:
    signed = assertion(facts, client_id, keys.private["es384"], "es384", "ES384")
    assert token_request(facts, signed, tenant).status_code == 200
    assert_invalid_client(token_request(facts, signed, tenant), "jti was already used")


def _none_signed(facts: dict[str, Any], client_id: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": client_id, "sub": client_id, "aud": facts["token_url"], "exp": now + 60,
                       "jti": str(uuid.uuid4())}, None, algorithm="none", headers={"kid": "es384"})


@pytest.mark.parametrize("variant", ["wrong aud", "far exp", "expired", "wrong key", "alg none", "unknown kid",
                                     "HS256", "sub differs"])
def test_every_assertion_check_refuses(facts: dict[str, Any], keys: Keys, client_id: str, tenant: str,
                                       variant: str) -> None:
    es384, now = keys.private["es384"], int(time.time())
    signed, reason = {
        "wrong aud": (lambda: assertion(facts, client_id, es384, "es384", "ES384",
                                        aud=facts["fhir_base_urls"]["stu3"]), "audience"),
        "far exp": (lambda: assertion(facts, client_id, es384, "es384", "ES384", exp=now + 3600),
                    "more than 300 seconds ahead"),
        "expired": (lambda: assertion(facts, client_id, es384, "es384", "ES384", exp=now - 120), "expired"),
        "wrong key": (lambda: assertion(facts, client_id, ec.generate_private_key(ec.SECP384R1()), "es384",
                                        "ES384"), "signature does not verify"),
        "alg none": (lambda: _none_signed(facts, client_id), "alg must be one of"),
        "unknown kid": (lambda: assertion(facts, client_id, es384, "nobody", "ES384"), "kid names no key"),
        "HS256": (lambda: assertion(facts, client_id, "a-shared-secret-of-32-bytes-long!", "es384", "HS256"),
                  "alg must be one of"),
        "sub differs": (lambda: assertion(facts, client_id, es384, "es384", "ES384", sub=str(uuid.uuid4())),
                        "sub must equal"),
    }[variant]
    assert_invalid_client(token_request(facts, signed(), tenant), reason)


def test_assertion_beside_a_secret_or_for_a_client_without_keys_is_refused(facts: dict[str, Any], keys: Keys,
                                                                      client_id: str, tenant: str) -> None:
    signed = assertion(facts, client_id, keys.private["es384"], "es384", "ES384")
    both = requests.post(facts["token_url"], data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed,
        "client_secret": "x", "scope": tenant}, timeout=TIMEOUT)
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    stranger = assertion(facts, str(uuid.uuid4()), keys.private["es384"], "es384", "ES384")
    assert_invalid_client(token_request(facts, stranger, tenant), "client authentication failed")
    secret_client = assertion(facts, facts["demo_client_id"], keys.private["es384"], "es384", "ES384")
    assert_invalid_client(token_request(facts, secret_client, tenant), "client authentication failed")


def test_a_disabled_client_gets_no_token(stack: Any, facts: dict[str, Any], keys: Keys) -> None:
    created = stack.manage("POST", "/clients", json={"name": "Soon disabled", "jwks": keys.jwks}).json()
    other = new_tenant(stack, facts, created["client_id"])
    signed = assertion(facts, created["client_id"], keys.private["es384"], "es384", "ES384")
    assert token_request(facts, signed, other).status_code == 200
    assert stack.manage("POST", f"/clients/{created['client_id']}/disable").status_code == 200
    signed = assertion(facts, created["client_id"], keys.private["es384"], "es384", "ES384")
    assert_invalid_client(token_request(facts, signed, other), "client authentication failed")


def test_replay_store_on_table_storage(stack: Any) -> None:
    """Of many instances racing with one jti exactly one wins; a row past exp plus the verifier's
    leeway can be taken over (its assertion is refused as expired anyway), one still inside cannot."""
    table = AzureTable.connect(f"spec{uuid.uuid4().hex[:12]}",
                               connection_string=stack.gateway_env()["GATEWAY_TABLES_CONNECTION_STRING"])
    now = [time.time()]
    store = TableReplayStore(table.sibling, clock=lambda: now[0])
    client, exp = str(uuid.uuid4()), int(now[0]) + 60
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda _: store.claim(client, "jti-1", exp), range(8)))
    assert wins.count(True) == 1
    assert store.claim(str(uuid.uuid4()), "jti-1", exp), "another client's jti is its own"
    now[0] = exp + CLOCK_SKEW_SECONDS - 1
    assert not store.claim(client, "jti-1", exp + 300)
    now[0] = exp + CLOCK_SKEW_SECONDS + 1
    assert store.claim(client, "jti-1", exp + 300)
    assert not store.claim(client, "jti-1", exp + 300)


# --- registration ---------------------------------------------------------------------------------

def test_registration_refuses_private_keys_naming_the_field(stack: Any, keys: Keys) -> None:
    private = {**ECAlgorithm.to_jwk(keys.private["es384"], as_dict=True), "kid": "k"}
    response = stack.manage("POST", "/clients", json={"name": "Leaky", "jwks": {"keys": [private]}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "jwks.keys[0].d"


def test_put_jwks_replaces_the_set(stack: Any, facts: dict[str, Any], keys: Keys) -> None:
    created = stack.manage("POST", "/clients", json={"name": "Rotating", "jwks": keys.jwks}).json()
    other = new_tenant(stack, facts, created["client_id"])
    only_rsa = {"keys": [keys.jwks["keys"][1]]}
    replaced = stack.manage("PUT", f"/clients/{created['client_id']}/jwks", json=only_rsa)
    assert replaced.status_code == 200 and [k["kid"] for k in replaced.json()["jwks"]["keys"]] == ["rs384"]
    deadline = time.time() + 70  # every instance follows the client change log within the cache TTL
    while True:
        signed = assertion(facts, created["client_id"], keys.private["es384"], "es384", "ES384")
        response = token_request(facts, signed, other)
        if response.status_code == 401 or time.time() > deadline:
            break
        time.sleep(2)
    assert_invalid_client(response, "kid names no key")
    rsa_signed = assertion(facts, created["client_id"], keys.private["rs384"], "rs384", "RS384")
    assert token_request(facts, rsa_signed, other).status_code == 200
    assert stack.manage("PUT", f"/clients/{uuid.uuid4()}/jwks", json=only_rsa).status_code == 404
    bad = stack.manage("PUT", f"/clients/{created['client_id']}/jwks", json={"keys": []})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "jwks.keys"


class JwksHost:
    """A client's own web server publishing its JWK Set (plain http on loopback: the local stack
    allows it, as it does for the sample EHRs; production requires https)."""

    def __init__(self) -> None:
        self.body: Any = {"keys": []}
        self.status, self.requests = 200, 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests += 1
                data = json.dumps(host.body).encode()
                self.send_response(host.status)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def jwks_host() -> Iterator[JwksHost]:
    host = JwksHost()
    yield host
    host.server.shutdown()
    host.server.server_close()


def test_jwks_uri_client_keys_are_fetched_from_its_server(stack: Any, facts: dict[str, Any], keys: Keys,
                                                          jwks_host: JwksHost) -> None:
    jwks_host.body = {"keys": [keys.jwks["keys"][0]]}
    created = stack.manage("POST", "/clients", json={"name": "Publishes its keys", "jwks_uri": jwks_host.url})
    assert created.status_code == 201, created.text
    client = created.json()
    assert client["jwks_uri"] == jwks_host.url and "client_secret" not in client and "jwks" not in client
    tenant_id = new_tenant(stack, facts, client["client_id"])
    for _ in range(2):  # the second request uses the cached set
        signed = assertion(facts, client["client_id"], keys.private["es384"], "es384", "ES384")
        assert token_request(facts, signed, tenant_id).status_code == 200
    assert jwks_host.requests == 1
    # switched to a server that publishes a private key: unusable, refused without a usable set
    switched = stack.manage("PUT", f"/clients/{client['client_id']}/jwks",
                            json={"jwks_uri": jwks_host.url + "?v=2"})
    assert switched.status_code == 200 and switched.json()["jwks_uri"].endswith("?v=2")
    jwks_host.body = {"keys": [{**ECAlgorithm.to_jwk(keys.private["es384"], as_dict=True), "kid": "es384"}]}
    signed = assertion(facts, client["client_id"], keys.private["es384"], "es384", "ES384")
    assert_invalid_client(token_request(facts, signed, tenant_id), "jwks_uri did not serve a usable JWK Set")


@pytest.mark.parametrize("uri", ["http://keys.example.org/jwks", "https://user:pw@keys.example.org/jwks",
                                 "ftp://keys.example.org/jwks", 42])
def test_a_jwks_uri_must_be_https(stack: Any, uri: Any) -> None:
    response = stack.manage("POST", "/clients", json={"name": "Bad URI", "jwks_uri": uri})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "jwks_uri"


def test_remote_jwks_refreshes_for_a_new_kid_at_most_every_refresh_period(jwks_host: JwksHost, keys: Keys) -> None:
    now = [1000.0]
    remote = RemoteJwks((5, 5), clock=lambda: now[0])
    jwks_host.body = {"keys": [keys.jwks["keys"][0]]}
    assert remote.get(jwks_host.url, "es384") == jwks_host.body
    jwks_host.body = {"keys": [keys.jwks["keys"][1]]}  # the client rotated
    now[0] += REFRESH_SECONDS - 1
    assert remote.get(jwks_host.url, "rs384")["keys"][0]["kid"] == "es384", "no refetch within the period"
    now[0] += 2
    assert remote.get(jwks_host.url, "rs384")["keys"][0]["kid"] == "rs384"
    jwks_host.status = 404
    now[0] += REFRESH_SECONDS
    assert remote.get(jwks_host.url, "another") is None
    assert remote.get(jwks_host.url, "another") is None, "a failure is remembered too"
    assert jwks_host.requests == 3


# --- SMART system scopes --------------------------------------------------------------------------

def batch(*urls: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in urls]}


def test_v1_scope_narrows_the_token_to_patient(facts: dict[str, Any], keys: Keys, client_id: str,
                                               tenant: str) -> None:
    issued = signed_token(facts, keys, client_id, f"{tenant} system/Patient.read system/Basic.read")
    assert issued["scope"] == f"{tenant} system/Patient.read", "the response lists what was granted"
    token = issued["access_token"]
    found = fhir(facts, token, "GET", "Patient", params={"_count": "1"})
    assert found.status_code == 200
    patient_id = found.json()["entry"][0]["resource"]["id"]
    assert fhir(facts, token, "GET", f"Patient/{patient_id}").status_code == 200
    refused = fhir(facts, token, "GET", "Observation", params={"patient": patient_id})
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert "SMART scopes" in refused.json()["issue"][0]["diagnostics"]
    assert fhir(facts, token, "POST", "Observation/_search", data={"patient": patient_id}).status_code == 403
    answered = fhir(facts, token, "POST", "", json=batch(f"Patient/{patient_id}", f"Observation?patient={patient_id}"))
    assert answered.status_code == 200, answered.text
    statuses = [e["response"]["status"] for e in answered.json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("403")
    assert answered.json()["entry"][1]["resource"]["resourceType"] == "OperationOutcome"


def test_v2_scopes_grant_read_and_search_apart(facts: dict[str, Any], keys: Keys, client_id: str,
                                               tenant: str) -> None:
    issued = signed_token(facts, keys, client_id, f"{tenant} system/Patient.rs system/Observation.r")
    assert issued["scope"] == f"{tenant} system/Observation.r system/Patient.rs"
    token = issued["access_token"]
    assert fhir(facts, token, "GET", "Patient", params={"_count": "1"}).status_code == 200
    assert fhir(facts, token, "GET", "Observation", params={"_count": "1"}).status_code == 403


def test_scopes_nothing_can_grant_are_invalid_scope(facts: dict[str, Any], keys: Keys, client_id: str,
                                                    tenant: str) -> None:
    signed = assertion(facts, client_id, keys.private["es384"], "es384", "ES384")
    response = token_request(facts, signed, f"{tenant} system/Patient.write")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    signed = assertion(facts, client_id, keys.private["es384"], "es384", "ES384")
    response = token_request(facts, signed, f"{tenant} patient/Patient.read")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_passthrough_batch_with_a_refused_entry_is_refused_whole(stack: Any, facts: dict[str, Any], keys: Keys,
                                                                 client_id: str) -> None:
    passthrough = new_tenant(stack, facts, client_id, batch_passthrough=True)
    token = signed_token(facts, keys, client_id, f"{passthrough} system/Patient.read")["access_token"]
    answered = fhir(facts, token, "POST", "", json=batch("Patient?_count=1", "Observation?_count=1"))
    assert answered.status_code == 403 and answered.json()["resourceType"] == "OperationOutcome"
    assert fhir(facts, token, "POST", "", json=batch("Patient?_count=1")).status_code == 200


def test_r4_facade_over_dstu2_with_an_allow_list_and_narrowed_scopes(stack: Any, facts: dict[str, Any],
                                                                    keys: Keys, client_id: str) -> None:
    """A DSTU2 tenant that allows Patient and MedicationOrder serves R4 MedicationRequest (one resource
    under two names, for the allow-list and the scopes alike), and nothing else."""
    dstu2 = new_tenant(stack, facts, client_id, "dstu2", resource_types=["Patient", "MedicationOrder"])
    issued = signed_token(facts, keys, client_id, f"{dstu2} system/Patient.rs system/MedicationRequest.s")
    assert issued["scope"] == f"{dstu2} system/MedicationRequest.s system/Patient.rs"
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    r4 = facts["fhir_base_urls"]["r4"]
    patients = requests.get(f"{r4}/Patient", params={"_count": "1"}, headers=headers, timeout=TIMEOUT)
    assert patients.status_code == 200, patients.text
    patient_id = patients.json()["entry"][0]["resource"]["id"]
    orders = requests.get(f"{r4}/MedicationRequest", params={"patient": patient_id}, headers=headers,
                          timeout=TIMEOUT)
    assert orders.status_code == 200, orders.text
    assert {e["resource"]["resourceType"] for e in orders.json().get("entry", [])} <= {"MedicationRequest"}
    observations = requests.get(f"{r4}/Observation", params={"patient": patient_id}, headers=headers,
                                timeout=TIMEOUT)
    assert observations.status_code == 403 and "not available for this tenant" in observations.text


def test_discovery_advertises_private_key_jwt(facts: dict[str, Any]) -> None:
    for version in ("stu3", "dstu2", "r4"):
        config = requests.get(f"{facts['fhir_base_urls'][version]}/.well-known/smart-configuration",
                              timeout=TIMEOUT).json()
        assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
        assert {"ES384", "RS384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
        assert "client-confidential-asymmetric" in config["capabilities"]
