"""Each upstream auth kind on its own (shared/upstream_auth/*): its schema and checks through
`validate_upstream_auth`, and its credential fetch against fake `Sources`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.http import parse_basic_credentials
from shared.outbound import OutboundPolicy
from shared.upstream_auth import (
    ASSERTION_TYPE,
    KINDS,
    CredentialKind,
    InvalidUpstreamAuth,
    Sources,
    UpstreamAuthError,
    validate_upstream_auth,
)
from shared.upstream_auth.token_endpoint import TokenEndpoint
from tests.fakes import Clock
from tests.unit.upstream_fakes import FakeCredential, TokenSession

pytestmark = pytest.mark.unit

BASE = "https://ehr.example.org/fhir/r4"
PRODUCTION = OutboundPolicy(allow_loopback_http=False)
MI = "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b"
CC = {"kind": "client_credentials", "token_url": "https://idp.example.org/token", "client_id": "gw",
      "secret_name": "upstream-gw"}
SMART = {"kind": "smart_backend", "token_url": "https://idp.example.org/token", "client_id": "gw",
         "secret_name": "upstream-key", "alg": "ES384", "kid": "k1", "scope": "system/*.read"}


def refused(config: object, policy: OutboundPolicy = PRODUCTION) -> InvalidUpstreamAuth:
    with pytest.raises(InvalidUpstreamAuth) as caught:
        validate_upstream_auth(config, BASE, policy)
    return caught.value


# --- the registry ---------------------------------------------------------------------------------


def test_the_registry_names_every_kind_once_in_the_documented_order() -> None:
    assert list(KINDS) == ["none", "bearer", "client_credentials", "smart_backend", "azure_ad"]
    assert all(kind.name == name for name, kind in KINDS.items())
    assert refused({"kind": "kerberos"}).message == (
        "must be one of: none, bearer, client_credentials, smart_backend, azure_ad")


def test_only_kind_none_sends_no_credential() -> None:
    assert [name for name, kind in KINDS.items() if not isinstance(kind, CredentialKind)] == ["none"]


def test_a_config_that_is_not_an_object_or_names_no_kind_is_refused() -> None:
    assert refused("bearer").field == "upstream_auth"
    assert refused({"secret_name": "upstream-x"}).field == "upstream_auth.kind"


# --- the field rules every kind shares ------------------------------------------------------------


def test_an_inline_credential_is_named_before_unknown_or_missing_fields() -> None:
    error = refused({"kind": "bearer", "password": "hunter2", "zzz": "1"})
    assert error.field == "upstream_auth.password" and "Key Vault" in error.message
    assert refused({"kind": "bearer", "zzz": "1"}).field == "upstream_auth.zzz"
    assert refused({"kind": "bearer"}).message == "is required for kind 'bearer'"


def test_every_field_is_type_checked_before_any_is_checked_for_content() -> None:
    error = refused({**CC, "auth_method": "private_key_jwt", "scope": 5})
    assert (error.field, error.message) == ("upstream_auth.scope", "must be a string")


@pytest.mark.parametrize(("value", "message"), [
    ("   ", "must not be empty"),
    ("a\tb", "must not contain control characters"),
])
def test_a_field_is_printable_and_not_empty(value: str, message: str) -> None:
    assert refused({**CC, "client_id": value}).message == message


@pytest.mark.parametrize("config", [{"kind": "bearer"}, CC, SMART], ids=lambda config: config["kind"])
def test_a_secret_name_outside_the_upstream_name_space_is_refused(config: dict) -> None:
    assert refused({**config, "secret_name": "portal-session-key"}).field == "upstream_auth.secret_name"


# --- per kind -------------------------------------------------------------------------------------


def test_kind_none_has_no_fields() -> None:
    assert validate_upstream_auth({"kind": "none"}, BASE, PRODUCTION) == {"kind": "none"}
    assert refused({"kind": "none", "scope": "x"}).message == "is not a field of kind 'none'"


def test_bearer_is_a_secret_name_only() -> None:
    config = {"kind": "bearer", "secret_name": " upstream-ehr "}
    assert validate_upstream_auth(config, BASE, PRODUCTION) == {"kind": "bearer", "secret_name": "upstream-ehr"}
    assert refused({"kind": "bearer", "secret_name": "upstream-ehr", "scope": "x"}).field == "upstream_auth.scope"


def test_client_credentials_stores_its_default_method_and_a_canonical_token_url() -> None:
    config = {**CC, "token_url": "HTTPS://IDP.example.org:443/token"}
    assert validate_upstream_auth(config, BASE, PRODUCTION) == {
        **CC, "auth_method": "client_secret_basic"}
    post = validate_upstream_auth({**CC, "auth_method": "client_secret_post"}, BASE, PRODUCTION)
    assert post["auth_method"] == "client_secret_post"
    assert refused({**CC, "auth_method": "tls_client_auth"}).message == (
        "must be one of: client_secret_basic, client_secret_post")


def test_client_credentials_token_url_is_https_except_loopback_in_development() -> None:
    assert refused({**CC, "token_url": "http://127.0.0.1:9/token"}).field == "upstream_auth.token_url"
    loopback = validate_upstream_auth({**CC, "token_url": "http://127.0.0.1:9/token"}, BASE,
                                      OutboundPolicy(allow_loopback_http=True))
    assert loopback["token_url"] == "http://127.0.0.1:9/token"


def test_smart_backend_needs_every_field_and_an_alg_we_sign_with() -> None:
    assert validate_upstream_auth(SMART, BASE, PRODUCTION) == SMART
    assert refused({**SMART, "alg": "RS256"}).message == "must be one of: RS384, ES384"
    assert refused({k: v for k, v in SMART.items() if k != "kid"}).field == "upstream_auth.kid"


def test_azure_ad_client_id_is_a_managed_identity_guid_and_its_scope_a_single_one() -> None:
    assert validate_upstream_auth({"kind": "azure_ad", "client_id": MI}, BASE, PRODUCTION) == {
        "kind": "azure_ad", "client_id": MI}
    assert refused({"kind": "azure_ad", "client_id": "gw"}).field == "upstream_auth.client_id"
    two = refused({"kind": "azure_ad", "scope": "https://ehr.example.org/.default openid"})
    assert "single scope" in two.message
    assert "scope tokens" in refused({"kind": "azure_ad", "scope": 'a"b'}).message


def test_azure_ad_scope_is_the_provider_audience_or_allowed_by_the_operator() -> None:
    own = {"kind": "azure_ad", "scope": "https://ehr.example.org/.default"}
    assert validate_upstream_auth(own, BASE, PRODUCTION) == own
    storage = {"kind": "azure_ad", "scope": "https://storage.azure.com/.default"}
    assert refused(storage).field == "upstream_auth.scope"
    allowed = OutboundPolicy(azure_ad_scopes_allowed=frozenset({storage["scope"]}))
    assert validate_upstream_auth(storage, BASE, allowed) == storage


def test_azure_ad_default_scope_is_derived_at_request_time_not_stored() -> None:
    kind = KINDS["azure_ad"]
    assert kind.for_request({"kind": "azure_ad"}, "https://ws.fhir.azurehealthcareapis.com/r4") == {
        "kind": "azure_ad", "scope": "https://ws.fhir.azurehealthcareapis.com/.default"}
    explicit = {"kind": "azure_ad", "scope": "api://proxy/.default"}
    assert kind.for_request(explicit, BASE) == explicit
    assert KINDS["bearer"].for_request({"kind": "bearer", "secret_name": "upstream-x"}, BASE) == {
        "kind": "bearer", "secret_name": "upstream-x"}


# --- fetching a credential ------------------------------------------------------------------------


def sources(secrets: dict[str, str], session: TokenSession | None = None,
            credential: Callable[[str | None], Any] | None = None, clock: Clock | None = None) -> Sources:
    def secret(name: str) -> str:
        if name not in secrets:
            raise UpstreamAuthError("the gateway has no credential stored for this provider")
        return secrets[name]

    clock = clock or Clock(1_700_000_000)
    return Sources(secret=secret, token_endpoint=TokenEndpoint(session or TokenSession(), (1.0, 2.0)),  # type: ignore[arg-type]  # a fake session
                   credential=credential or (lambda client_id: FakeCredential(clock)), clock=clock, secret_ttl=42)


def fetch(config: dict, source: Sources) -> tuple[str, float]:
    kind = KINDS[config["kind"]]
    assert isinstance(kind, CredentialKind)
    return kind.fetch(kind.for_request(config, BASE), source)


def test_bearer_sends_the_stored_token_for_the_secret_ttl() -> None:
    assert fetch({"kind": "bearer", "secret_name": "upstream-x"}, sources({"upstream-x": " tok.en~1\n"})) == (
        "Bearer tok.en~1", 42)


def test_bearer_refuses_a_stored_value_that_would_smuggle_a_header() -> None:
    with pytest.raises(UpstreamAuthError) as caught:
        fetch({"kind": "bearer", "secret_name": "upstream-x"}, sources({"upstream-x": "a\r\nX-Evil: 1"}))
    assert "X-Evil" not in caught.value.message


def test_client_credentials_basic_puts_the_secret_in_the_header_only() -> None:
    session = TokenSession(lifetime=120)
    config = {**CC, "auth_method": "client_secret_basic", "scope": "system/*.read"}
    assert fetch(config, sources({"upstream-gw": "s3cr:t"}, session)) == ("Bearer token-1", 120)
    assert session.form == {"grant_type": "client_credentials", "scope": "system/*.read"}
    assert parse_basic_credentials(session.headers["Authorization"]) == ("gw", "s3cr:t")
    assert session.sent[0]["allow_redirects"] is False and session.sent[0]["timeout"] == (1.0, 2.0)


def test_client_credentials_post_puts_the_secret_in_the_form_and_omits_an_absent_scope() -> None:
    session = TokenSession()
    fetch({**CC, "auth_method": "client_secret_post"}, sources({"upstream-gw": "pw"}, session))
    assert session.form == {"grant_type": "client_credentials", "client_id": "gw", "client_secret": "pw"}
    assert "Authorization" not in session.headers


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_signs_a_short_lived_assertion_for_the_token_url(alg: str) -> None:
    key = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    session, clock = TokenSession(), Clock(1_700_000_000)
    fetch({**SMART, "alg": alg}, sources({"upstream-key": pem(key)}, session, clock=clock))
    form = session.form
    assert form["client_assertion_type"] == ASSERTION_TYPE and form["scope"] == SMART["scope"]
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": alg, "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(assertion, key.public_key(), algorithms=[alg], audience=SMART["token_url"],
                        options={"verify_exp": False})
    assert claims["iss"] == claims["sub"] == "gw"
    assert (claims["iat"], claims["exp"]) == (1_700_000_000, 1_700_000_240)


def test_smart_backend_refuses_a_key_that_does_not_fit_alg_before_sending_anything() -> None:
    session = TokenSession()
    with pytest.raises(UpstreamAuthError, match="does not fit alg ES384"):
        fetch(SMART, sources({"upstream-key": pem(ec.generate_private_key(ec.SECP256R1()))}, session))
    with pytest.raises(UpstreamAuthError, match="not an unencrypted PEM private key"):
        fetch(SMART, sources({"upstream-key": "not a key"}, session))
    assert session.sent == []


def test_azure_ad_asks_the_identity_for_the_provider_audience() -> None:
    clock, built = Clock(1_700_000_000), []
    credential = FakeCredential(clock, lifetime=1800)

    def factory(client_id: str | None) -> FakeCredential:
        built.append(client_id)
        return credential

    header, lifetime = fetch({"kind": "azure_ad", "client_id": MI}, sources({}, credential=factory, clock=clock))
    assert (header, lifetime) == ("Bearer entra-1", 1800)
    assert built == [MI] and credential.scopes == ["https://ehr.example.org/.default"]


def test_azure_ad_refusal_names_entra_and_nothing_else() -> None:
    clock = Clock()
    refusing = FakeCredential(clock, refuse=True)
    with pytest.raises(UpstreamAuthError) as caught:
        fetch({"kind": "azure_ad"}, sources({}, credential=lambda client_id: refusing, clock=clock))
    assert caught.value.message == "Microsoft Entra ID did not issue the gateway a token for this provider"
