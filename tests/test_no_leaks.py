"""Nothing secret and no patient data in any log or error body (issue #7).

This module runs its own stack with every kind of secret in play: consumer client secrets and
access tokens, the gateway's signing keys, and upstream credentials of three kinds (a static
bearer token, an OAuth client secret, a SMART Backend Services private key) for providers that
demand them (sample EHRs behind `--auth bearer:` and `--auth introspect:` with the local upstream
IdP). It drives traffic through every path, the failing ones above all (wrong secrets, secrets in
URLs and JSON, brute force until 429, tampered tokens, PHI in queries, form bodies and batch
entries, provider faults with retries, upstream credentials rejected, management errors about
credential fields, portal sign-ins, key rotation). Then it scans every file under the stack's
`logs/` (gateway, Functions host, Key Vault emulator, Azurite, sample EHRs, IdP, faulty provider)
and every error body it received for those secrets and for the sample patients' names, birth
dates and identifiers (MRNs, SSNs ...): zero hits. Finally, every response that carries a token
or patient data says `Cache-Control: no-store`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from devtools.stack import PYTHON, Stack
from tests.gateway_calls import TIMEOUT, basic, start_stack
from tests.portal_client import PortalUser
from tests.reliability import (
    Consumer,
    bearer,
    log_files,
    put_vault_secret,
    signing_keys_from_vault,
    start_faulty_provider,
)

SCOPE = "system/*.read"


@dataclass(frozen=True)
class Seen:
    """What was asked and answered (a kept requests.Response would keep its connection open)."""

    status_code: int
    headers: dict[str, str]
    text: str
    asked: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Recorded:
    """Every response this module received, kept to check error bodies and caching headers."""

    responses: list[tuple[str, Seen]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def add(self, label: str, response: requests.Response) -> Seen:
        body = response.request.body or b""
        asked = (response.request.url or "") + (body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
        seen = Seen(response.status_code, {k.title(): v for k, v in response.headers.items()}, response.text, asked)
        response.close()
        self.responses.append((label, seen))
        if seen.status_code == 200 and "json" in seen.headers.get("Content-Type", ""):
            payload = seen.json()
            if isinstance(payload, dict):
                for key in ("access_token", "client_secret"):
                    if isinstance(payload.get(key), str):
                        self.secrets.add(payload[key])
        return seen


@dataclass
class Leaky:
    stack: Stack
    record: Recorded
    consumer: Consumer
    fhir: str
    tenants: dict[str, str]
    upstream: dict[str, str]
    patients: list[dict]


def learn_patients(base: str, headers: dict[str, str] | None = None) -> list[dict]:
    bundle = requests.get(f"{base}/Patient", params={"_count": "500"}, headers=headers or {}, timeout=TIMEOUT).json()
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaky]:
    root = Path(tmp_path_factory.mktemp("leaks"))
    stack = start_stack(root / "stack")
    try:
        upstream = {"bearer": "upstream-bearer-" + secrets.token_urlsafe(24),
                    "client_secret": "upstream-cs-" + secrets.token_urlsafe(24)}
        key = rsa.generate_private_key(65537, 2048)
        upstream["private_key"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        config = root / "idp.json"
        config.write_text(json.dumps({"token_lifetime": 600, "clients": [
            {"client_id": "gateway", "secret": upstream["client_secret"], "scopes": [SCOPE]}], "backend_clients": [
            {"client_id": "gateway-backend", "kid": "k1", "public_key": public, "scopes": [SCOPE]}]}))
        idp = stack.spawn("idp", [PYTHON, "-m", "devtools.upstream_idp", "--port", "0", "--config", str(config)]).ready
        bearer_ehr = stack.start_ehr("stu3", ["--auth", f"bearer:{upstream['bearer']}"], name="ehr-bearer")
        oauth_ehr = stack.start_ehr("stu3", ["--auth", f"introspect:{idp['introspection_url']}"], name="ehr-oauth")
        dstu2_ehr = stack.start_ehr("dstu2", name="ehr-dstu2")
        faulty = start_faulty_provider(stack, "--delay", "1")
        for name, value in (("upstream-bearer", upstream["bearer"]),
                            ("upstream-client-secret", upstream["client_secret"]),
                            ("upstream-private-key", upstream["private_key"])):
            put_vault_secret(stack, name, value)
        consumer = Consumer(stack, "Leak test client")
        routes = {
            "bearer": (bearer_ehr["base_url"], "stu3", {"kind": "bearer", "secret_name": "upstream-bearer"}),
            "client_credentials": (oauth_ehr["base_url"], "stu3", {
                "kind": "client_credentials", "token_url": idp["token_url"], "client_id": "gateway",
                "secret_name": "upstream-client-secret", "scope": SCOPE}),
            "smart_backend": (oauth_ehr["base_url"], "stu3", {
                "kind": "smart_backend", "token_url": idp["token_url"], "client_id": "gateway-backend",
                "secret_name": "upstream-private-key", "alg": "RS384", "kid": "k1", "scope": SCOPE}),
            "dstu2": (dstu2_ehr["base_url"], "dstu2", {"kind": "none"}),
            "wrong-upstream-secret": (oauth_ehr["base_url"], "stu3", {
                "kind": "client_credentials", "token_url": idp["token_url"], "client_id": "gateway",
                "secret_name": "upstream-bearer", "scope": SCOPE}),
            "faulty-503": (f"{faulty}/status-503-json/fhir", "stu3", {"kind": "none"}),
            "faulty-reset": (f"{faulty}/reset-mid-body/fhir", "stu3", {"kind": "none"}),
            "faulty-slow": (f"{faulty}/delay/fhir", "stu3", {"kind": "none"}),
        }
        tenants = {}
        for label, (base, version, auth) in routes.items():
            tenant = str(uuid.uuid4())
            body = {"provider_base_url": base, "fhir_version": version, "upstream_auth": auth,
                    "allowed_clients": [consumer.client_id]}
            stack.manage("PUT", f"/tenants/{tenant}", json=body).raise_for_status()
            tenants[label] = tenant
        patients = learn_patients(bearer_ehr["base_url"], bearer(upstream["bearer"]))
        patients += learn_patients(dstu2_ehr["base_url"])
        yield Leaky(stack, Recorded(), consumer, stack.facts["gateway_base_url"], tenants, upstream, patients)
    finally:
        stack.stop()


# --- the traffic ------------------------------------------------------------------------------------

def phi_of(patient: dict) -> dict[str, list[str]]:
    names = []
    for name in patient.get("name", []):
        family = name.get("family")
        names += family if isinstance(family, list) else [family] if family else []
        names += name.get("given", [])
    return {"names": [n for n in names if isinstance(n, str)],
            "dates": [patient["birthDate"]] if patient.get("birthDate") else [],
            "identifiers": [i["value"] for i in patient.get("identifier", []) if isinstance(i.get("value"), str)]}


def mrn(patient: dict) -> str:
    for ident in patient.get("identifier", []):
        if any(c.get("code") == "MR" for c in ident.get("type", {}).get("coding", [])):
            return ident["value"]
    return patient["id"]


def drive_everything(leaky: Leaky) -> None:
    stack, rec, consumer = leaky.stack, leaky.record, leaky.consumer
    token_url = stack.facts["token_url"]
    form = {"grant_type": "client_credentials", "client_id": consumer.client_id, "client_secret": consumer.secret}

    def token_for(label: str) -> str:
        response = rec.add("token", requests.post(token_url, data={**form, "scope": leaky.tenants[label]},
                                                   timeout=TIMEOUT))
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    # Token endpoint: the right ways and the wrong ones.
    tokens = {label: token_for(label) for label in leaky.tenants}
    second = rec.add("add secret", stack.manage("POST", f"/clients/{consumer.client_id}/secrets", json={}))
    rec.secrets.add(second.json()["client_secret"])
    rec.add("basic", requests.post(token_url, data={"grant_type": "client_credentials",
                                                     "scope": leaky.tenants["bearer"]},
                                   headers={"Authorization": basic(consumer.client_id, consumer.secret)},
                                   timeout=TIMEOUT))
    wrong = {**form, "client_secret": consumer.secret[:-3] + "AAA", "scope": leaky.tenants["bearer"]}
    for attempt in range(25):  # on to 429 slow_down
        rec.add("wrong secret", requests.post(token_url, data=wrong, headers={"X-Forwarded-For": "203.0.113.9"},
                                              timeout=TIMEOUT))
        assert attempt < 24 or rec.responses[-1][1].status_code == 429
    rec.add("secret in url", requests.post(token_url, params={"client_secret": consumer.secret},
                                           data={"grant_type": "client_credentials"}, timeout=TIMEOUT))
    rec.add("json body", requests.post(token_url, json=form, timeout=TIMEOUT))
    rec.add("basic in body", requests.post(token_url, data={**form, "scope": "x"},
                                           headers={"Authorization": basic(consumer.client_id, consumer.secret)},
                                           timeout=TIMEOUT))
    rec.add("malformed basic", requests.post(token_url, data={"grant_type": "client_credentials"},
                                             headers={"Authorization": f"Basic {consumer.secret}"}, timeout=TIMEOUT))

    # SMART Backend Services: a client assertion is a credential for its five minutes; its private key always
    key, stranger = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "leak-test"}
    backend = rec.add("jwks client", stack.manage("POST", "/clients", json={"name": "Backend",
                                                                           "jwks": {"keys": [jwk]}})).json()

    def signed(signer: Any = key, **claims: Any) -> str:
        now = int(time.time())
        return jwt.encode({"iss": backend["client_id"], "sub": backend["client_id"], "aud": token_url,
                           "exp": now + 120, "jti": str(uuid.uuid4()), **claims}, signer, algorithm="ES384",
                          headers={"kid": "leak-test"})

    good = signed()
    assertions = {"assertion": good, "replayed assertion": good, "assertion wrong key": signed(stranger),
                  "assertion wrong aud": signed(aud=f"{leaky.fhir}/api/manage"),
                  "assertion far exp": signed(exp=int(time.time()) + 3600)}
    for label, assertion in assertions.items():
        rec.add(label, requests.post(token_url, data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "scope": f"{leaky.tenants['bearer']} system/Patient.read"}, timeout=TIMEOUT))
    rec.secrets.update(assertions.values())
    for private in (key, stranger):
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        rec.secrets.add(pem.splitlines()[1][:40])

    # FHIR with PHI in every place a consumer puts it, through every upstream auth kind.
    stu3, dstu2 = f"{leaky.fhir}/api/fhir/stu3", f"{leaky.fhir}/api/fhir/dstu2"
    for index, patient in enumerate(leaky.patients[:6]):
        phi = phi_of(patient)
        family, given = phi["names"][0], phi["names"][-1]
        faulty = ["faulty-503", "faulty-reset"] if index < 2 else []
        labels = ["bearer", "client_credentials", "smart_backend", *faulty]
        for label in labels:
            headers = bearer(tokens[label])
            rec.add(label, requests.get(f"{stu3}/Patient", params={"family": family, "birthdate": patient.get(
                "birthDate", ""), "identifier": mrn(patient)}, headers=headers, timeout=TIMEOUT))
            rec.add(label, requests.post(f"{stu3}/Patient/_search", data={"given": given, "name": family},
                                         headers=headers, timeout=TIMEOUT))
            rec.add(label, requests.get(f"{stu3}/Patient/{patient['id']}", headers=headers, timeout=TIMEOUT))
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient?family={family}&birthdate={patient.get('birthDate')}"}},
            {"request": {"method": "GET", "url": f"Patient?identifier={mrn(patient)}"}},
            {"request": {"method": "DELETE", "url": f"Patient/{patient['id']}"}},
            {"request": {"method": "GET", "url": f"Patient?name={family}&bad param={given}"}}]}
        for label in ("bearer", "faulty-503")[:2 if index < 2 else 1]:
            rec.add("batch " + label, requests.post(stu3, json=batch, headers=bearer(tokens[label]), timeout=TIMEOUT))
        rec.add("dstu2", requests.get(f"{dstu2}/Patient", params={"family:contains": family[:4]},
                                      headers=bearer(tokens["dstu2"]), timeout=TIMEOUT))
        rec.add("bad query", requests.get(f"{stu3}/Patient?family={family}&bad%20name={given}",
                                          headers=bearer(tokens["bearer"]), timeout=TIMEOUT))
        rec.add("wrong upstream secret", requests.get(f"{stu3}/Patient", params={"family": family},
                                                      headers=bearer(tokens["wrong-upstream-secret"]),
                                                      timeout=TIMEOUT))
    rec.add("slow", requests.get(f"{stu3}/Patient", params={"family": phi_of(leaky.patients[0])["names"][0]},
                                 headers=bearer(tokens["faulty-slow"]), timeout=TIMEOUT))
    genuine = tokens["bearer"]
    for presented in (genuine[:-6] + "AAAAAA", genuine + "x", genuine.split(".")[0] + ".e30."):
        rec.add("tampered token", requests.get(f"{stu3}/Patient", headers=bearer(presented), timeout=TIMEOUT))
    rec.add("token in query", requests.get(f"{stu3}/Patient", params={"access_token": genuine}, timeout=TIMEOUT))

    # Management: errors about credential fields must not echo them; rotation creates a new private key.
    for field_name, value in (("token", leaky.upstream["bearer"]), ("client_secret", leaky.upstream["client_secret"]),
                              ("private_key", leaky.upstream["private_key"])):
        body = {"provider_base_url": "https://fhir.example.org/r4", "fhir_version": "stu3",
                "upstream_auth": {"kind": "bearer", "secret_name": "x", field_name: value}}
        rec.add("manage credential field", stack.manage("PUT", f"/tenants/{uuid.uuid4()}", json=body))
    rec.add("rotate", stack.manage("POST", "/signing-keys/rotate"))

    # The consumer portal signs in with a client secret too.
    portal = f"{leaky.fhir}/api/portal"
    rec.add("portal wrong", PortalUser(portal).sign_in(consumer.client_id, consumer.secret[:-2] + "xx"))
    rec.add("portal right", PortalUser(portal).sign_in(consumer.client_id, consumer.secret))
    rec.secrets.update([consumer.secret, *tokens.values()])


@pytest.fixture(scope="module")
def driven(leaky: Leaky) -> Leaky:
    drive_everything(leaky)
    return leaky


# --- the scans -----------------------------------------------------------------------------------

def forbidden_secrets(leaky: Leaky) -> dict[str, str]:
    found = {f"consumer secret or token #{i}": value for i, value in enumerate(sorted(leaky.record.secrets))}
    for label, value in leaky.upstream.items():
        found[f"upstream {label}"] = value
        if label == "private_key":  # any 40-character line of the PEM body is as bad as the whole key
            for n, line in enumerate(value.splitlines()[1:-1][:5]):
                found[f"upstream private key line {n}"] = line[:40]
    for kid, key in signing_keys_from_vault(leaky.stack).items():
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        found[f"signing key {kid}"] = pem.splitlines()[1][:40]
    for label, value in list(found.items()):
        if label.startswith("consumer") and value.count(".") == 2:  # a JWT: its signature alone counts too
            found[label + " signature"] = value.rsplit(".", 1)[1]
    return found


def forbidden_phi(leaky: Leaky) -> dict[str, re.Pattern[str]]:
    found: dict[str, re.Pattern[str]] = {}
    for patient in leaky.patients:
        phi = phi_of(patient)
        for kind, values in phi.items():
            for value in values:
                if len(value) >= 3:
                    found[f"{kind}: {value}"] = re.compile(rf"(?<![\w-]){re.escape(value)}(?![\w-])")
    return found


def test_the_scanners_find_what_they_look_for(driven: Leaky, tmp_path: Path) -> None:
    """The scans below would see a leak: planted in a file of their own, each kind is found."""
    secrets_, phi = forbidden_secrets(driven), forbidden_phi(driven)
    assert len(phi) > 50 and len(secrets_) > 10
    patient = phi_of(driven.patients[0])
    planted = tmp_path / "planted.log"
    planted.write_text(f"x {driven.consumer.secret} {driven.upstream['bearer']} {patient['names'][0]} "
                       f"{patient['dates'][0]} {patient['identifiers'][0]} y")
    text = planted.read_text()
    assert sum(value in text for value in secrets_.values()) >= 2
    assert sum(bool(pattern.search(text)) for pattern in phi.values()) >= 3


def test_no_secret_or_key_in_any_log_file(driven: Leaky) -> None:
    files = log_files(driven.stack)
    assert {p.name for p in files} >= {"gateway.log", "keyvault.log", "azurite.log", "idp.log", "ehr-bearer.log"}
    hits = [(path.name, label) for path in files for label, value in forbidden_secrets(driven).items()
            if value in path.read_text(errors="replace")]
    assert hits == []
    assert not any("PRIVATE KEY" in p.read_text(errors="replace") for p in files)


def test_no_patient_data_in_any_log_file(driven: Leaky) -> None:
    hits = []
    for path in log_files(driven.stack):
        text = path.read_text(errors="replace")
        hits += [(path.name, label) for label, pattern in forbidden_phi(driven).items() if pattern.search(text)]
    assert hits == []


def test_no_secret_or_patient_data_in_any_error_body(driven: Leaky) -> None:
    """Error bodies carry no secret at all, and no patient data the request itself did not carry."""
    secrets_ = forbidden_secrets(driven)
    phi = forbidden_phi(driven)
    errors = [(label, r) for label, r in driven.record.responses if r.status_code >= 400]
    assert len(errors) > 50, "the traffic above should have produced plenty of errors"
    hits = []
    for label, response in errors:
        body = response.text
        hits += [(label, response.status_code, name) for name, value in secrets_.items() if value in body]
        hits += [(label, response.status_code, name) for name, pattern in phi.items()
                 if pattern.search(body) and not pattern.search(unquote_plus(response.asked))]
    assert hits == []


def test_responses_with_tokens_or_patient_data_are_not_cacheable(driven: Leaky) -> None:
    checked = 0
    for label, response in driven.record.responses:
        body = response.text
        holds_token = '"access_token"' in body or '"client_secret"' in body
        holds_phi = response.status_code in (200, 304) and '"resourceType"' in body
        if holds_token or holds_phi:
            checked += 1
            assert "no-store" in response.headers.get("Cache-Control", ""), (label, response.status_code,
                                                                            response.headers)
    assert checked > 20
