"""The field rules every kind shares: what a config may hold at all, and the checks of the fields
more than one kind has (token URL, secret name, scope). A kind adds its own checks on top."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

from shared.outbound import BadUrl, OutboundPolicy, normalise_url
from shared.upstream_auth.errors import InvalidUpstreamAuth

# Upstream credentials live in their own Key Vault name space. The gateway's own secrets
# (signing-key-*, client-*, portal-session-key, paging-link-key) never start with it, so no route
# can name them.
SECRET_PREFIX = "upstream-"  # noqa: S105 (a name space, not a password)
_SECRET_NAME = re.compile(re.escape(SECRET_PREFIX) + r"[0-9A-Za-z-]{1,118}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
# Keys that would put a credential into the route table; each gets a pointer to Key Vault.
_INLINE_CREDENTIALS = frozenset({
    "secret", "token", "client_secret", "private_key", "password", "access_token",
    "bearer_token", "client_assertion", "key", "pem", "jwk",
})

Check = Callable[[str, OutboundPolicy], str]
"""Checks one stripped, non-empty field value; returns its normal form or raises InvalidUpstreamAuth."""


def check_keys(config: Mapping[str, object], kind: str, required: tuple[str, ...],
               optional: tuple[str, ...]) -> None:
    """Inline credentials first (the most useful message), then unknown keys, then missing ones."""
    for key in sorted(k for k in config if k in _INLINE_CREDENTIALS):
        raise InvalidUpstreamAuth(
            f"upstream_auth.{key}",
            "credentials are never stored in the route: put the value in Key Vault and "
            "reference it with 'secret_name'",
        )
    allowed = {"kind", *required, *optional}
    for key in sorted(k for k in config if k not in allowed):
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", f"is not a field of kind '{kind}'")
    for key in required:
        if key not in config:
            raise InvalidUpstreamAuth(f"upstream_auth.{key}", f"is required for kind '{kind}'")


def string_field(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must be a string")
    value = value.strip()
    if not value:
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must not be empty")
    if not value.isprintable():
        raise InvalidUpstreamAuth(f"upstream_auth.{key}", "must not contain control characters")
    return value


def check_token_url(value: str, policy: OutboundPolicy) -> str:
    """https only, so a client secret or assertion never crosses the network in clear; plain
    http only for loopback hosts under the local-development allowance. Returns the canonical form."""
    try:
        return normalise_url(value, policy, base=False)
    except BadUrl as exc:
        raise InvalidUpstreamAuth("upstream_auth.token_url", str(exc)) from None


def check_secret_name(value: str, policy: OutboundPolicy) -> str:
    """Only the upstream name space: a route must never make the gateway send its own secrets."""
    if not _SECRET_NAME.fullmatch(value):
        raise InvalidUpstreamAuth(
            "upstream_auth.secret_name",
            f"must be a Key Vault secret name starting with '{SECRET_PREFIX}' (at most 127 letters, digits or '-')",
        )
    return value


def check_scope(value: str, policy: OutboundPolicy) -> str:
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in value.split(" ")):
        raise InvalidUpstreamAuth("upstream_auth.scope", "must be space-separated OAuth scope tokens")
    return value


def one_of(key: str, allowed: Collection[str]) -> Check:
    """The check of a field that names one of a fixed set of values (an algorithm, a method)."""
    def check(value: str, policy: OutboundPolicy) -> str:
        if value not in allowed:
            raise InvalidUpstreamAuth(f"upstream_auth.{key}", f"must be one of: {', '.join(allowed)}")
        return value
    return check


COMMON_CHECKS: Mapping[str, Check] = {
    "token_url": check_token_url,
    "secret_name": check_secret_name,
    "scope": check_scope,
}
"""Checks of the fields several kinds share; a field without a check (client_id, kid) is opaque:
printable and non-empty is all that is asked of it."""
