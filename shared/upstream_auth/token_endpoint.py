"""An OAuth 2.0 token request (RFC 6749 §4.4 / §5) and how its answer is read, shared by the kinds
that talk to a token endpoint (client credentials, SMART Backend Services).

What leaves this module is safe to show a client: a Bearer header value and its lifetime, or an
`UpstreamAuthError` that carries at most the OAuth ``error`` code, never a description or body
(both may echo request data).
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING

from shared.upstream_auth.errors import UpstreamAuthError

if TYPE_CHECKING:  # requests loads on first use: the tenant API only validates configs
    import requests

Credential = tuple[str, float]
"""An Authorization header value and the seconds it stays valid."""

# RFC 6749 §5.1 only RECOMMENDS expires_in; without it, assume a short life and re-fetch.
DEFAULT_TOKEN_LIFETIME = 300.0
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_REFUSALS = {
    "invalid_client": "refused the gateway's credentials",
    "invalid_scope": "refused the requested scope",
    "unauthorized_client": "does not allow the gateway's client this grant",
    "unsupported_grant_type": "does not support the client_credentials grant",
    "invalid_grant": "refused the grant",
    "invalid_request": "rejected the token request as malformed",
}
_LOG = logging.getLogger("gateway.upstream")


class TokenEndpoint:
    """POSTs token requests over one HTTP session, within (connect, read) `timeout` seconds."""

    def __init__(self, session: requests.Session, timeout: tuple[float, float]) -> None:
        self._session, self._timeout = session, timeout

    def request(self, url: str, form: dict[str, str], headers: dict[str, str]) -> Credential:
        status, body = self._post(url, form, headers)
        if status != 200:
            raise refusal(status, body)
        return issued_token(body)

    def _post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        """Redirects are not followed: a 3xx must not carry the gateway's credentials elsewhere."""
        import requests

        try:
            with self._session.post(url, data=form, headers={"Accept": "application/json", **headers},
                                    timeout=self._timeout, allow_redirects=False, stream=True) as response:
                return response.status_code, _read_capped(response)
        except requests.ConnectTimeout:
            raise UpstreamAuthError(
                f"upstream token endpoint could not be reached within {self._timeout[0]:g} s"
            ) from None
        except requests.Timeout:
            raise UpstreamAuthError(
                f"upstream token endpoint did not answer within {self._timeout[1]:g} s"
            ) from None
        except requests.RequestException as exc:
            _LOG.warning("upstream token endpoint request failed: %s", type(exc).__name__)
            raise UpstreamAuthError("upstream token endpoint could not be reached") from None


def new_session() -> requests.Session:
    import requests

    return requests.Session()


def _read_capped(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(16 * 1024):
        body += chunk
        if len(body) > MAX_TOKEN_RESPONSE_BYTES:
            raise UpstreamAuthError("upstream token endpoint sent an oversized response")
    return bytes(body)


def bearer_header(token: str) -> str:
    """Refuses values that would break or smuggle headers (the b64token grammar of RFC 6750)."""
    token = token.strip()
    if not _BEARER_TOKEN.fullmatch(token):
        raise UpstreamAuthError("the credential for this provider is not a valid bearer token")
    return f"Bearer {token}"


def refusal(status: int, body: bytes) -> UpstreamAuthError:
    """Only the OAuth error code is passed on; descriptions and bodies may echo request data."""
    if 300 <= status < 400:
        return UpstreamAuthError(f"upstream token endpoint answered with a redirect (HTTP {status})")
    code = _oauth_error_code(body)
    if code is None:
        return UpstreamAuthError(f"upstream token endpoint answered HTTP {status}")
    reason = _REFUSALS.get(code, "refused the token request")
    return UpstreamAuthError(f"upstream token endpoint {reason} ({code})", oauth_error=code)


def _oauth_error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    code = payload.get("error") if isinstance(payload, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def issued_token(body: bytes) -> Credential:
    """Reads an RFC 6749 §5.1 success response; only Bearer tokens can be sent on."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str):
        raise UpstreamAuthError("upstream token endpoint answered without an access_token")
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise UpstreamAuthError("upstream token endpoint issued a token type other than Bearer")
    return bearer_header(token), _lifetime(payload.get("expires_in"))


def _lifetime(expires_in: object) -> float:
    """Some servers send expires_in as a string; anything unusable falls back to the default."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(expires_in)
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_TOKEN_LIFETIME
