"""What the proxy asks the provider: the client's request checked against policy, then put in the provider's dialect.

Checks first, so a refused request sends nothing: the interaction the method, path and query (or a
`POST _search` form) name (shared/policy.py), a batch Bundle's shape, the tenant's resource-type
allow-list and the token's SMART scopes. Then the provider's own FHIR version: bridged requests
translated (down to an R4 provider, up from the R4 facade), STU3's spelling of sort order, the
media type to ask for, and the few request headers that pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared import smart_scopes
from shared.bridge import translate_request
from shared.bridge.up import translate_request_up
from shared.capability import CONTENT_TYPE
from shared.errors import FhirError
from shared.http import FORM_TYPE, Headers, Request
from shared.jsonbody import InvalidJson, loads_strict
from shared.policy import MAX_BATCH_ENTRIES, Interaction, check_resource_type, interaction_for, stu3_sort
from shared.routes import TenantRoute
from shared.upstream_answers import passthrough_bundle

FHIR_JSON = ("application/fhir+json", "application/json+fhir", "application/json")
# The client's Accept is not among them: the gateway always sends its own (`_accept`), and passing both
# sent the provider two Accept headers (the client's R4 type beside the STU3 one, when bridging).
_PASS_REQUEST = ("prefer", "if-none-match", "if-modified-since")


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None = None


# --- checks -------------------------------------------------------------------------------------------

def requested_action(req: Request, path: str) -> Interaction:
    """The interaction one (non-batch) request names; a POST is a search with its parameters in a form."""
    form = req.body if req.method.upper() == "POST" else b""
    if form and not req.headers.get("content-type", "").lower().startswith(FORM_TYPE):
        raise FhirError(415, "not-supported", "POST _search needs an application/x-www-form-urlencoded body")
    try:
        return interaction_for(req.method, path, urlsplit(req.url).query, form)
    except UnicodeDecodeError as exc:
        raise FhirError(400, "invalid", "the search body is not UTF-8") from exc


def permit(action: Interaction, route: TenantRoute, granted: smart_scopes.Grant | None) -> None:
    """The tenant's resource-type allow-list, then the token's SMART scopes (403 from either)."""
    check_resource_type(action.resource_type, route.resource_types)
    smart_scopes.check(granted, action)


def batch_entries(body: bytes) -> list:
    """The entries of a posted batch Bundle (FHIR-2); anything else is refused before any is read."""
    try:
        bundle = loads_strict(body)
    except InvalidJson as exc:
        raise FhirError(400, "structure", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "structure", "POST to the base URL needs a Bundle of type batch")
    if bundle.get("type") == "transaction":
        raise FhirError(405, "not-supported", "transactions are not supported: this gateway is read-only")
    if bundle.get("type") != "batch":
        raise FhirError(400, "invalid", "only Bundles of type batch can be posted to the base URL")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or len(entries) > MAX_BATCH_ENTRIES:
        raise FhirError(400, "invalid", f"a batch holds a list of at most {MAX_BATCH_ENTRIES} entries")
    return entries


# --- the provider's dialect -----------------------------------------------------------------------------

def bridged(route: TenantRoute, version: str) -> bool:
    """Exactly one side speaks R4 (shared/access.py admits no other mismatch): down from an R4
    provider to the STU3/DSTU2 facade, or up from an STU3/DSTU2 provider to the R4 facade."""
    return route.fhir_version != version


def provider_action(route: TenantRoute, version: str, action: Interaction) -> Interaction:
    """Bridged requests are translated (down to an R4 provider, up from the R4 facade); STU3 providers
    get their own spelling of sort order."""
    if route.fhir_version == "r4" and version != "r4":
        return translate_request(version, action)
    if version == "r4" and route.fhir_version != "r4":
        return translate_request_up(route.fhir_version, action)
    if route.fhir_version == "stu3":
        return stu3_sort(action)
    return action


def upstream_request(route: TenantRoute, version: str, asked: Interaction, headers: Headers,
                     request_id: str) -> UpstreamRequest:
    """`asked` (already in the provider's dialect) as the provider's method, URL, headers and body."""
    url = f"{route.provider_base_url}/{asked.upstream_path}"
    out = {name: value for name in _PASS_REQUEST if (value := headers.get(name))}
    bridging = bridged(route, version)
    out["Accept"] = CONTENT_TYPE[route.fhir_version] if bridging else _accept(headers.get("accept"), version)
    out["X-Request-Id"] = request_id
    if asked.kind == "search-post":
        return UpstreamRequest("POST", url, {**out, "Content-Type": FORM_TYPE}, asked.query_string().encode())
    query = asked.query_string()
    return UpstreamRequest("GET", url + (f"?{query}" if query else ""), out)


def passthrough_request(route: TenantRoute, version: str, asked: list[Interaction],
                        request_id: str) -> UpstreamRequest:
    """A batch for a provider that runs batches itself: the Bundle the gateway validated, never the
    client's raw bytes."""
    headers = {"Content-Type": CONTENT_TYPE[version], "Accept": CONTENT_TYPE[version], "X-Request-Id": request_id}
    return UpstreamRequest("POST", route.provider_base_url, headers, passthrough_bundle(asked))


def _accept(accept: str | None, version: str) -> str:
    if version == "r4":
        return "application/fhir+json"  # the facade's media type means nothing to an R4 server
    if accept and any(t in accept.lower() for t in FHIR_JSON):
        return accept
    return CONTENT_TYPE.get(version, "application/fhir+json")
