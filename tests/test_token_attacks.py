"""Forged, altered and replayed access tokens (RFC 8725, RFC 9068) against the FHIR proxy (issue #7).

Every attack must end in 401 with `WWW-Authenticate: Bearer error="invalid_token"` and an
OperationOutcome, and must never reach a provider: the sample EHR's request log stays empty.
Tokens are forged two ways: with attacker keys (what anyone can do), and with the gateway's own
signing key read from the Key Vault emulator's state file, so that each claim check (exp, nbf,
iat, iss, aud, tid, typ, crit ...) is proven on its own, with every other check passing. A token
forged with the real key and correct claims is accepted (test_the_forging_harness_is_sound):
without that control, the negative cases would prove nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm

from devtools.stack import Stack
from tests.conftest import get_token
from tests.gateway_calls import assert_operation_outcome, create_client, onboard
from tests.reliability import (
    b64url,
    bearer,
    clear_provider_log,
    provider_log,
    remember_all,
    signing_keys_from_vault,
    split_token,
)

TIMEOUT = 30


class Listener:
    """Anything on 127.0.0.1 a token could point the gateway at (jku, x5u, kid-as-URL); records every hit."""

    def __init__(self, jwks: dict) -> None:
        hits = self.hits = []
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Forge:
    """The demo tenant's view: a genuine token, the real signing key, an attacker key, the provider."""

    def __init__(self, stack: Stack, facts: dict[str, Any]) -> None:
        self.stack = stack
        self.base = facts["fhir_base_urls"]["stu3"]
        self.gateway = facts["gateway_base_url"]
        self.provider = facts["provider_base_urls"]["stu3"]
        self.tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == "stu3")
        self.other_tenant = next(t["tenant_id"] for t in facts["demo_tenants"] if t["fhir_version"] == "dstu2")
        self.genuine = get_token(facts, self.tenant)
        self.header, self.claims, _ = split_token(self.genuine)
        self.kid = self.header["kid"]
        self.real_key = signing_keys_from_vault(stack)[self.kid]
        self.attacker_key = ec.generate_private_key(ec.SECP256R1())
        self.attacker_jwk = {**ECAlgorithm.to_jwk(self.attacker_key.public_key(), as_dict=True),
                             "kid": "attacker", "alg": "ES256", "use": "sig"}
        remember_all(self.genuine)

    def fresh_claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {**self.claims, "iat": now, "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4()), **changes}
        return {k: v for k, v in claims.items() if v is not ...}

    def signed(self, claims: dict[str, Any], key: Any = None, **header: Any) -> str:
        headers = {"kid": self.kid, "typ": "at+jwt", **header}
        headers = {k: v for k, v in headers.items() if v is not ...}
        token = jwt.encode(claims, key or self.real_key, algorithm="ES256", headers=headers)
        remember_all(token)
        return token

    def call(self, token: str) -> requests.Response:
        return requests.get(f"{self.base}/Patient", params={"_count": "1"}, headers=bearer(token), timeout=TIMEOUT)

    def assert_refused(self, token: str) -> dict[str, Any]:
        clear_provider_log(self.provider)
        response = self.call(token)
        body = assert_operation_outcome(response, 401, "login")
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert token not in response.text
        assert provider_log(self.provider) == [], "a refused token reached the provider"
        return body


@pytest.fixture(scope="module")
def forge(stack: Stack, facts: dict[str, Any]) -> Forge:
    return Forge(stack, facts)


@pytest.fixture(scope="module")
def listener(forge: Forge) -> Iterator[Listener]:
    running = Listener({"keys": [forge.attacker_jwk]})
    try:
        yield running
    finally:
        running.close()


def unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64url(header)}.{b64url(claims)}.{signature}"


def es256_raw(header: dict, claims: dict, key: ec.EllipticCurvePrivateKey) -> str:
    """ES256 without PyJWT's header checks, for headers it refuses to produce (a non-string kid ...)."""
    signing_input = f"{b64url(header)}.{b64url(claims)}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    token = f"{signing_input.decode()}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    remember_all(token)
    return token


def hmac_token(header: dict, claims: dict, secret: bytes, digest: Any = hashlib.sha256) -> str:
    signing_input = f"{b64url(header)}.{b64url(claims)}".encode()
    return f"{signing_input.decode()}.{b64url(hmac.new(secret, signing_input, digest).digest())}"


# --- the control -------------------------------------------------------------------------------------

def test_the_forging_harness_is_sound(forge: Forge) -> None:
    """A token built here with the real key and correct claims works: the refusals below are each
    caused by the one thing the test changed."""
    clear_provider_log(forge.provider)
    assert forge.call(forge.signed(forge.fresh_claims())).status_code == 200
    assert len(provider_log(forge.provider)) == 1


# --- algorithm attacks ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
@pytest.mark.parametrize("signature", ["", "AAAA"])
def test_alg_none_is_refused(forge: Forge, alg: str, signature: str) -> None:
    forge.assert_refused(unsigned({"alg": alg, "typ": "at+jwt", "kid": forge.kid}, forge.fresh_claims(), signature))


@pytest.mark.parametrize("secret_form", ["pem", "pem-pkcs1", "der", "jwk-json", "x-coordinate"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(forge: Forge, secret_form: str, alg: str) -> None:
    """Algorithm confusion: the public key (in every shape a library might take it) as an HMAC secret."""
    public = forge.real_key.public_key()
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    secret = {
        "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "pem-pkcs1": public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).strip(),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk-json": json.dumps({**jwk, "kid": forge.kid}).encode(),
        "x-coordinate": jwk["x"].encode(),
    }[secret_form]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    token = hmac_token({"alg": alg, "typ": "at+jwt", "kid": forge.kid}, forge.fresh_claims(), secret, digest)
    forge.assert_refused(token)


@pytest.mark.parametrize("alg", ["ES384", "RS256", "PS256"])
def test_other_asymmetric_algorithms_are_refused_even_with_the_real_kid(forge: Forge, alg: str) -> None:
    key: Any = ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else rsa.generate_private_key(65537, 2048)
    token = jwt.encode(forge.fresh_claims(), key, algorithm=alg, headers={"kid": forge.kid, "typ": "at+jwt"})
    forge.assert_refused(token)


# --- key selection attacks -------------------------------------------------------------------------

def test_an_unknown_kid_is_refused(forge: Forge) -> None:
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, kid=uuid.uuid4().hex))


def test_another_deployments_key_is_refused_with_its_own_kid_or_ours(forge: Forge) -> None:
    """Same issuer, audience, tenant and claim shapes; signed by a key this deployment never had."""
    other_kid = hashlib.sha256(b"another deployment").hexdigest()[:32]
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, kid=other_kid))
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key))  # our kid, their signature


@pytest.mark.parametrize("kid", [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "signing-key-{kid}",
    "{kid}/../{kid}",
    "{kid}\u0000",
    "{kid} ",
    "' OR '1'='1' --",
    "{listener}/jwks.json",
    "file:///etc/passwd",
    "a" * 4096,
    "",
])
def test_kid_injection_is_refused_and_fetches_nothing(forge: Forge, listener: Listener, kid: str) -> None:
    value = kid.format(kid=forge.kid, listener=listener.url)
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, kid=value))
    assert listener.hits == []


@pytest.mark.parametrize("kid", [12345, None, ["k"], {"k": 1}, ...])
def test_a_kid_that_is_not_a_string_or_missing_is_refused(forge: Forge, kid: Any) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    if kid is ...:
        del header["kid"]
    forge.assert_refused(es256_raw(header, forge.fresh_claims(), forge.real_key))


@pytest.mark.parametrize("field", ["jku", "x5u"])
@pytest.mark.parametrize("with_our_kid", [True, False])
def test_jku_and_x5u_are_never_fetched(forge: Forge, listener: Listener, field: str, with_our_kid: bool) -> None:
    """RFC 8725 §3.10: keys come from the gateway's own key ring only."""
    extra = {field: f"{listener.url}/keys", "kid": forge.kid if with_our_kid else "attacker"}
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, **extra))
    assert listener.hits == []


def test_embedded_jwk_and_x5c_keys_are_ignored(forge: Forge) -> None:
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, jwk=forge.attacker_jwk))
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, jwk=forge.attacker_jwk,
                                      kid="attacker"))
    forge.assert_refused(forge.signed(forge.fresh_claims(), forge.attacker_key, x5c=["MIIBIjANBgkq"]))


# --- claims, each on its own (signed with the real key) -----------------------------------------

def claim_cases(forge: Forge) -> dict[str, dict[str, Any]]:
    now = int(time.time())
    return {
        "expired": forge.fresh_claims(iat=now - 4000, nbf=now - 4000, exp=now - 120),
        "not yet valid": forge.fresh_claims(nbf=now + 600, exp=now + 1200),
        "issued in the future": forge.fresh_claims(iat=now + 600, exp=now + 1200),
        "wrong issuer": forge.fresh_claims(iss="https://evil.example/api/oauth2"),
        "issuer with trailing slash": forge.fresh_claims(iss=forge.claims["iss"] + "/"),
        "wrong audience": forge.fresh_claims(aud="https://evil.example/api/fhir"),
        "audience of a sibling path": forge.fresh_claims(aud=forge.claims["aud"] + "2"),
        "no expiry": forge.fresh_claims(exp=...),
        "no tenant": forge.fresh_claims(tid=...),
        "no jti": forge.fresh_claims(jti=...),
        "tenant differs from scope": forge.fresh_claims(tid=forge.other_tenant),
        "client differs from sub": forge.fresh_claims(client_id=str(uuid.uuid4())),
        "expiry as a string": forge.fresh_claims(exp=str(now + 600)),
    }


CLAIM_CASES = ["expired", "not yet valid", "issued in the future", "wrong issuer", "issuer with trailing slash",
               "wrong audience", "audience of a sibling path", "no expiry", "no tenant", "no jti",
               "tenant differs from scope", "client differs from sub", "expiry as a string"]


@pytest.mark.parametrize("case", CLAIM_CASES)
def test_each_claim_check_holds_on_its_own(forge: Forge, case: str) -> None:
    forge.assert_refused(forge.signed(claim_cases(forge)[case]))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "secevent+jwt", "dpop+jwt", ...])
def test_only_access_token_typed_jwts_are_accepted(forge: Forge, typ: Any) -> None:
    """RFC 9068 §4 / RFC 8725 §3.11: a JWT of another type, even signed with our key, is not an access token."""
    forge.assert_refused(forge.signed(forge.fresh_claims(), typ=typ))


def test_application_at_jwt_is_accepted_as_the_same_type(forge: Forge) -> None:
    assert forge.call(forge.signed(forge.fresh_claims(), typ="application/at+jwt")).status_code == 200


@pytest.mark.parametrize("crit", [["exp"], ["x-gateway-unknown"], "b64"])
def test_critical_header_extensions_are_refused(forge: Forge, crit: Any) -> None:
    """RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension must reject the JWS."""
    header = {"alg": "ES256", "typ": "at+jwt", "kid": forge.kid, "crit": crit, "x-gateway-unknown": True,
              "b64": False}
    forge.assert_refused(es256_raw(header, forge.fresh_claims(), forge.real_key))


# --- tampering with a genuine token ------------------------------------------------------------------

def test_a_genuine_token_with_its_tenant_edited_is_refused(forge: Forge) -> None:
    header, _, signature = forge.genuine.split(".")
    edited = {**forge.claims, "tid": forge.other_tenant, "scope": forge.other_tenant}
    forge.assert_refused(f"{header}.{b64url(edited)}.{signature}")
    # ...and routed to the other tenant's facade too, it is still refused (not "wrong version").
    response = requests.get(f"{forge.base.replace('/stu3', '/dstu2')}/Patient",
                            headers=bearer(f"{header}.{b64url(edited)}.{signature}"), timeout=TIMEOUT)
    assert response.status_code == 401


@pytest.mark.parametrize("variant", ["stripped", "empty", "spliced", "truncated", "padded", "re-encoded"])
def test_a_genuine_token_with_its_signature_tampered_is_refused(forge: Forge, variant: str) -> None:
    header, payload, signature = forge.genuine.split(".")
    other_signature = get_token_signature(forge)
    token = {
        "stripped": f"{header}.{payload}.",
        "empty": f"{header}.{payload}",
        "spliced": f"{header}.{payload}.{other_signature}",
        "truncated": f"{header}.{payload}.{signature[:-4]}",
        "padded": f"{header}.{payload}.{signature}==",
        "re-encoded": f"{header}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
    }[variant]
    if token == forge.genuine:
        pytest.skip("the signature has no character this variant changes")
    forge.assert_refused(token)


def get_token_signature(forge: Forge) -> str:
    other = forge.signed(forge.fresh_claims(tid=forge.other_tenant, scope=forge.other_tenant))
    return other.split(".")[2]


@pytest.mark.parametrize("token", [
    "a.b.c.d.e",                      # JWE compact form
    "eyJhbGciOiJFUzI1NiJ9.e30",       # two parts
    "....",
    "e30.e30.e30",                    # header without alg
    "W10.W10.W10",                    # JSON arrays
    "%%%.%%%.%%%",
    "x" * 60_000,
])
def test_malformed_tokens_are_refused(forge: Forge, token: str) -> None:
    forge.assert_refused(token)


# --- a real token whose client was disabled ----------------------------------------------------------

def test_a_token_of_a_disabled_client_is_refused_and_not_forwarded(stack: Stack, forge: Forge) -> None:
    owner = create_client(stack.manage, "Soon disabled client")
    tenant = onboard(stack.manage, forge.provider, [owner["client_id"]])
    response = requests.post(stack.facts["token_url"], data={
        "grant_type": "client_credentials", "client_id": owner["client_id"],
        "client_secret": owner["client_secret"], "scope": tenant}, timeout=TIMEOUT)
    token = response.json()["access_token"]
    remember_all(token)
    assert forge.call(token).status_code == 200
    stack.manage("POST", f"/clients/{owner['client_id']}/disable").raise_for_status()
    body = forge.assert_refused(token)
    assert "disabled" in body["issue"][0]["diagnostics"]


# --- issue #13: verification bounds the lifetime ----------------------------------------------------

LIFETIME = 3600  # the stack's TOKEN_LIFETIME_SECONDS (the default)
LEEWAY = 30  # shared.token_service.LEEWAY_SECONDS


@pytest.mark.parametrize("span", [LIFETIME + LEEWAY + 1, 365 * 24 * 3600])
def test_a_token_living_longer_than_the_gateway_issues_is_refused(forge: Forge, span: int) -> None:
    """Signed with the real key, every other claim right: only exp - iat is too long."""
    now = int(time.time())
    forge.assert_refused(forge.signed(forge.fresh_claims(iat=now - 60, nbf=now - 60, exp=now - 60 + span)))


def test_a_token_of_exactly_the_configured_lifetime_plus_skew_is_accepted(forge: Forge) -> None:
    now = int(time.time())
    token = forge.signed(forge.fresh_claims(iat=now - 60, nbf=now - 60, exp=now - 60 + LIFETIME + LEEWAY))
    assert forge.call(token).status_code == 200
