"""The OAuth token request the client_credentials and smart_backend kinds share
(shared/upstream_auth/token_endpoint.py): how an answer is read, and what of a refusal is passed on."""

from __future__ import annotations

import pytest
import requests

from shared.upstream_auth import UpstreamAuthError
from shared.upstream_auth.token_endpoint import DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_RESPONSE_BYTES, TokenEndpoint
from tests.unit.upstream_fakes import TokenSession, json_body

pytestmark = pytest.mark.unit

URL = "https://idp.example.org/token"


def answered(status: int, body: bytes) -> tuple[str, float]:
    session = TokenSession(answer=lambda form, headers: (status, body))
    return TokenEndpoint(session, (1.0, 2.5)).request(URL, {"grant_type": "client_credentials"}, {})  # type: ignore[arg-type]  # a fake session


def refusal(status: int, body: bytes) -> UpstreamAuthError:
    with pytest.raises(UpstreamAuthError) as caught:
        answered(status, body)
    return caught.value


def test_the_request_asks_for_json_and_follows_no_redirect() -> None:
    session = TokenSession()
    TokenEndpoint(session, (1.0, 2.5)).request(URL, {"grant_type": "client_credentials"}, {"X-A": "1"})  # type: ignore[arg-type]  # a fake session
    assert session.sent == [{"url": URL, "form": {"grant_type": "client_credentials"},
                             "headers": {"Accept": "application/json", "X-A": "1"}, "timeout": (1.0, 2.5),
                             "allow_redirects": False}]


@pytest.mark.parametrize(("expires_in", "lifetime"), [
    (120, 120.0), ("90", 90.0), (1.5, 1.5), (None, DEFAULT_TOKEN_LIFETIME), (True, DEFAULT_TOKEN_LIFETIME),
    ("soon", DEFAULT_TOKEN_LIFETIME), (0, DEFAULT_TOKEN_LIFETIME), (-5, DEFAULT_TOKEN_LIFETIME),
    ("inf", DEFAULT_TOKEN_LIFETIME), ("nan", DEFAULT_TOKEN_LIFETIME), ([60], DEFAULT_TOKEN_LIFETIME),
])
def test_a_lifetime_it_cannot_use_falls_back_to_the_default(expires_in: object, lifetime: float) -> None:
    assert answered(200, json_body(access_token="abc", expires_in=expires_in)) == ("Bearer abc", lifetime)


def test_a_token_type_is_bearer_in_any_case_or_refused() -> None:
    assert answered(200, json_body(access_token="abc", token_type="bEaReR"))[0] == "Bearer abc"
    assert "other than Bearer" in refusal(200, json_body(access_token="abc", token_type="DPoP")).message


@pytest.mark.parametrize("body", [b"not json", json_body(token="abc"), json_body(access_token=7), b"[]"])
def test_a_success_without_an_access_token_is_refused(body: bytes) -> None:
    assert refusal(200, body).message == "upstream token endpoint answered without an access_token"


def test_an_issued_token_that_would_break_the_header_is_refused() -> None:
    assert "not a valid bearer token" in refusal(200, json_body(access_token="a b")).message


@pytest.mark.parametrize(("code", "message"), [
    ("invalid_client", "upstream token endpoint refused the gateway's credentials (invalid_client)"),
    ("invalid_scope", "upstream token endpoint refused the requested scope (invalid_scope)"),
    ("unauthorized_client", "upstream token endpoint does not allow the gateway's client this grant "
                            "(unauthorized_client)"),
    ("vendor_specific", "upstream token endpoint refused the token request (vendor_specific)"),
])
def test_a_refusal_passes_on_the_oauth_error_code_only(code: str, message: str) -> None:
    error = refusal(400, json_body(error=code, error_description="client secret 'hunter2' is wrong"))
    assert (error.message, error.oauth_error, error.status) == (message, code, 502)
    assert "hunter2" not in error.to_response().body.decode()


@pytest.mark.parametrize("body", [b"<html>502</html>", json_body(error="has spaces in it"), json_body(error=3)])
def test_a_refusal_without_a_usable_code_names_the_status(body: bytes) -> None:
    error = refusal(503, body)
    assert (error.message, error.oauth_error) == ("upstream token endpoint answered HTTP 503", None)


def test_a_redirect_is_refused_not_followed() -> None:
    assert refusal(302, b"").message == "upstream token endpoint answered with a redirect (HTTP 302)"


def test_an_oversized_answer_is_refused() -> None:
    body = json_body(access_token="a" * MAX_TOKEN_RESPONSE_BYTES)
    assert refusal(200, body).message == "upstream token endpoint sent an oversized response"


@pytest.mark.parametrize(("error", "message"), [
    (requests.ConnectTimeout(), "upstream token endpoint could not be reached within 1 s"),
    (requests.ReadTimeout(), "upstream token endpoint did not answer within 2.5 s"),
    (requests.ConnectionError(), "upstream token endpoint could not be reached"),
])
def test_transport_failures_name_the_timeout_that_ran_out(error: Exception, message: str) -> None:
    def fail(form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        raise error

    with pytest.raises(UpstreamAuthError) as caught:
        TokenEndpoint(TokenSession(answer=fail), (1.0, 2.5)).request(URL, {}, {})  # type: ignore[arg-type]  # a fake session
    assert caught.value.message == message
