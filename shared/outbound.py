"""Where the gateway may send requests, and with which of its identities, on a tenant's behalf.

Operators configure a provider base URL, an upstream token URL and an Entra scope per tenant. Each
one decides where the gateway's credentials go, so a function key must not be able to point them
at the gateway's own resources (Key Vault, Storage) or at a plain-http host. This module is the one
place that decides: `OutboundPolicy` holds the operator's allowances (from app settings), and
`normalise_url` both validates a URL and returns the one canonical spelling that gets stored, so
what was checked is byte for byte what is later used.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.settings import Settings, get_settings

_MAX_URL = 2048
_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: no control or look-alike characters
_DNS_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?")
_DEFAULT_PORTS = {"https": 443, "http": 80}


class BadUrl(ValueError):
    """A URL the gateway will not send anything to; the message is safe to show the operator."""


@dataclass(frozen=True)
class OutboundPolicy:
    """The operator's allowances beyond the secure defaults.

    :param allow_loopback_http: plain http to loopback hosts, for the local development stack only
        (`GATEWAY_ALLOW_LOOPBACK_HTTP=1`; infra/ never sets it).
    :param azure_ad_scopes_allowed: Entra scopes an `azure_ad` tenant may name besides its own
        provider's `<origin>/.default` (`UPSTREAM_AZURE_AD_SCOPES_ALLOWED`, comma-separated).
    """

    allow_loopback_http: bool = False
    azure_ad_scopes_allowed: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(settings.allow_loopback_http, frozenset(settings.upstream_azure_ad_scopes_allowed))


def current_policy() -> OutboundPolicy:
    """The policy of this process's app settings."""
    return OutboundPolicy.from_settings(get_settings())


def is_loopback_host(host: str) -> bool:
    """The single loopback test for every outbound URL: `localhost` or any loopback address
    (all of 127.0.0.0/8 and ::1), so no two checks can disagree about e.g. 127.0.0.2."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_url(value: object, policy: OutboundPolicy, *, base: bool) -> str:
    """The canonical form of an absolute https URL, or BadUrl.

    Refused: anything but printable ASCII (`http://local\\thost/fhir` would otherwise validate as
    `localhost`: urlsplit drops tabs), credentials, fragments, and plain http unless the policy
    allows it for a loopback host. A `base` URL (a FHIR base, to which paths are appended) must have
    no query and loses its trailing slash; a token URL keeps its path and query as given. The result
    has a lower-case scheme and host and no default port.
    """
    if not isinstance(value, str) or not value:
        raise BadUrl("must be an absolute https URL")
    if len(value) > _MAX_URL or not _URL_CHARS.fullmatch(value):
        raise BadUrl("must be printable ASCII without spaces or control characters (at most 2048)")
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port  # .port raises ValueError when malformed
    except ValueError as exc:
        raise BadUrl("is not a valid URL") from exc
    if parts.scheme.lower() not in _DEFAULT_PORTS or not host:
        raise BadUrl("must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise BadUrl("must not carry credentials")
    if parts.fragment or "#" in value:
        raise BadUrl("must not have a fragment")
    if (parts.query or "?" in value) and base:
        raise BadUrl("must not have a query")
    path = parts.path.rstrip("/") if base else parts.path
    return _canonical(parts.scheme.lower(), _host(host), port, path, parts.query, policy)


def _host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _DNS_NAME.fullmatch(host):
            raise BadUrl("has a malformed host name") from None
        return host
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def _canonical(scheme: str, host: str, port: int | None, path: str, query: str, policy: OutboundPolicy) -> str:
    if scheme == "http" and not (policy.allow_loopback_http and is_loopback_host(host)):
        raise BadUrl("must use https (plain http only for loopback hosts in local development)")
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")

