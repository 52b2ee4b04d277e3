"""The gateway's public URL layout, in one place (route prefix `api` comes from host.json)."""

from __future__ import annotations

from dataclasses import dataclass

ROUTE_PREFIX = "api"
FACADE_VERSIONS = ("stu3", "dstu2", "r4")


@dataclass(frozen=True)
class Urls:
    """Absolute URLs under one public base (GATEWAY_PUBLIC_BASE_URL, or the request's origin)."""

    base: str

    @property
    def api(self) -> str:
        return f"{self.base}/{ROUTE_PREFIX}"

    def fhir_base(self, version: str) -> str:
        return f"{self.api}/fhir/{version}"

    @property
    def token_url(self) -> str:
        return f"{self.api}/oauth2/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.api}/oauth2/jwks"

    @property
    def issuer(self) -> str:
        return f"{self.api}/oauth2"

    @property
    def audience(self) -> str:
        return f"{self.api}/fhir"

    @property
    def manage_url(self) -> str:
        return f"{self.api}/manage"


def urls_for(public_base_url: str | None, request_origin: str) -> Urls:
    return Urls((public_base_url or request_origin).rstrip("/"))
