"""Any STU3/DSTU2 resource or Bundle to R4, by the provider's resource type name.

The mirror of `shared.bridge.convert`: the elements every resource has are mapped once, each
resource's table adds its own, drops are counted under the provider's type name
(`MedicationOrder.dateEnded:not-representable`). Bundle paging links carry the provider's query
(DSTU2 `_sort:desc=date`, `MedicationOrder`); they are rewritten to the R4 query the R4 facade
accepts, by the down bridge's own request translation (STU3/DSTU2 → R4), so a client following
`next` sends an R4 request that `translate_request_up` turns back into the provider's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from shared.bridge.base import NOT_REPRESENTABLE, CodeMap, Ctx, To, codes, convert_elements, identity, many
from shared.bridge.convert import domain_resource
from shared.bridge.resource import ResourceMap
from shared.bridge.search import translate
from shared.bridge.up import administrative, clinical, datatypes
from shared.bridge.up.datatypes import element, identifier, meta, reference_url
from shared.errors import FhirError
from shared.policy import Interaction

MAPS: tuple[ResourceMap, ...] = (
    administrative.PATIENT, clinical.OBSERVATION, clinical.CONDITION, clinical.ENCOUNTER, clinical.ALLERGY,
    clinical.MEDICATION, administrative.COVERAGE, administrative.LOCATION, administrative.PRACTITIONER,
    administrative.ORGANIZATION, administrative.OPERATION_OUTCOME)
_BY_PROVIDER_TYPE = {provider: {m.facade_type(provider): m for m in MAPS} for provider in ("stu3", "dstu2")}
_PAGING_SAFE = ":/,|"


def convert_resource(resource: Any, ctx: Ctx, provider_base: str, path: str = "resource") -> dict[str, Any] | None:
    """The R4 form of one provider resource; a type the bridge cannot convert is dropped and counted."""
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind == "Bundle":
        return _bundle(resource, ctx, provider_base)
    rmap = _BY_PROVIDER_TYPE[ctx.facade].get(kind) if isinstance(kind, str) else None
    if rmap is None or not isinstance(kind, str):
        ctx.drop(f"{path}.{kind}" if kind else path, NOT_REPRESENTABLE)
        return None
    body = {key: value for key, value in resource.items() if key != "resourceType"}
    out = {"resourceType": rmap.r4_type,
           **convert_elements(body, {**_DOMAIN_RESOURCE, **rmap.table(ctx.facade)}, ctx, kind)}
    if rmap.finish is not None:
        rmap.finish(resource, out, ctx, kind)
    return out


def _contained(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
    return convert_resource(value, ctx, "", path)


_DOMAIN_RESOURCE = domain_resource(datatypes, _contained)
_REQUEST = {name: To(name) for name in ("method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")}
_SEARCH = {"mode": To("mode", codes(CodeMap(identity("match", "include", "outcome")))), "score": To("score")}


def _bundle(bundle: dict[str, Any], ctx: Ctx, provider_base: str) -> dict[str, Any]:
    """Searchsets keep `total` and their (rewritten) links; batch-responses their entries' responses."""

    def resource(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
        return convert_resource(value, ctx, provider_base, path)  # a batch entry may hold a searchset

    links = many(_link(provider_base))
    entry_element = element({
        "link": To("link", links), "fullUrl": To("fullUrl", reference_url), "resource": To("resource", resource),
        "search": To("search", element(_SEARCH)), "request": To("request", element(_REQUEST)),
        "response": To("response", element({"status": To("status"), "location": To("location", reference_url),
                                            "etag": To("etag"), "lastModified": To("lastModified"),
                                            "outcome": To("outcome", resource)}))})

    def entry(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
        """An entry whose resource cannot be converted is left out as a whole (its drop is counted)."""
        out = entry_element(value, ctx, path)
        if out is None or (isinstance(value, dict) and "resource" in value and "resource" not in out):
            return None
        return out

    table = {"id": To("id"), "meta": To("meta", meta), "implicitRules": To("implicitRules"),
             "language": To("language"), "identifier": To("identifier", identifier), "type": To("type"),
             "total": To("total"), "link": To("link", links), "entry": To("entry", many(entry))}
    body = {key: value for key, value in bundle.items() if key != "resourceType"}
    return {"resourceType": "Bundle", **convert_elements(body, table, ctx, "Bundle")}


def _link(provider_base: str) -> Any:
    def convert(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            ctx.drop(path, NOT_REPRESENTABLE)
            return None
        url = r4_link(ctx.facade, value["url"], provider_base)
        if url is None:
            ctx.drop(f"{path}.{value.get('relation', 'url')}", NOT_REPRESENTABLE)
            return None
        return {"relation": value.get("relation"), "url": url}

    return convert


def r4_link(provider: str, url: str, provider_base: str) -> str | None:
    """A provider search URL with R4's type name and query; other URLs (paging tokens) unchanged.

    None when the provider's query holds something the R4 facade could not send back.
    """
    base = provider_base.rstrip("/")
    if not base or not url.startswith(base + "/"):
        return url
    parts = urlsplit(url)
    kind = url[len(base) + 1:].split("?", 1)[0]
    if "/" in kind or kind not in _BY_PROVIDER_TYPE[provider]:
        return url
    try:
        r4 = translate(provider, Interaction("search", kind, None, tuple(parse_qsl(parts.query,
                                                                                   keep_blank_values=True))))
    except FhirError:
        return None
    query = urlencode(r4.query, safe=_PAGING_SAFE)
    return f"{base}/{r4.resource_type}" + (f"?{query}" if query else "")
