"""The caller's address for per-source rate limits, from a source the operator trusts.

Anything a client sends can be chosen by the client, X-Forwarded-For included: keyed on its
first hop, every guess can come "from" a fresh address and no per-source limit ever trips. Only
what a trusted hop wrote counts. A proxy APPENDS the peer it accepted the connection from, so the
entry that the outermost trusted proxy wrote is `trusted_hops` from the right; everything left of
it is the client's to invent. In Azure the App Service front end is that proxy (one hop); put
Front Door or Application Gateway in front and it is two, or name the header such a proxy sets
for exactly this (`X-Azure-ClientIP`) with one hop.

The key is the address alone (ports, as the front end writes them, dropped); an IPv6 client is
keyed by its /64, which one subscriber usually holds whole. A request without the trusted entry
shares the key "unknown", junk shares "unparsable": neither can mint fresh keys.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True)
class AddressSource:
    """Which request header carries the caller's address, and how many trusted proxies append to it."""

    header: str = "x-forwarded-for"
    trusted_hops: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressSource:
        return cls(settings.client_address_header.lower(), max(1, settings.client_address_trusted_hops))


def client_address(headers: Mapping[str, str], source: AddressSource) -> str:
    """The one rate-limit key for a request's source (token endpoint and portal alike)."""
    hops = [hop.strip() for hop in (headers.get(source.header) or "").split(",")]
    if len(hops) < source.trusted_hops or not hops[-source.trusted_hops]:
        return "unknown"
    return _address_key(hops[-source.trusted_hops])


def _address_key(hop: str) -> str:
    host = hop[1:].partition("]")[0] if hop.startswith("[") else hop
    if host.count(":") == 1:  # v4:port
        host = host.partition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "unparsable"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
