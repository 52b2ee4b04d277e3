"""Any R4 resource or Bundle to the facade version, by resource type.

The elements every resource has (id, meta, text, contained, extensions) are mapped here once;
each resource module adds its own table. Drops are counted under the resource type's name
(`Condition.verificationStatus:unknown-code`), wherever the resource sits (a Bundle entry, a
contained resource), so the counters read the same for a read and a search.
"""

from __future__ import annotations

from typing import Any

from shared.bridge import (
    allergy,
    condition,
    coverage,
    datatypes,
    encounter,
    location,
    medication,
    observation,
    organization,
    outcome,
    patient,
    practitioner,
)
from shared.bridge.base import (
    NOT_REPRESENTABLE,
    CodeMap,
    Convert,
    Ctx,
    Datatypes,
    To,
    codes,
    convert_elements,
    identity,
    many,
)
from shared.bridge.datatypes import element, identifier, meta, reference_url
from shared.bridge.resource import ResourceMap

MAPS: dict[str, ResourceMap] = {m.r4_type: m for m in (
    patient.MAP, observation.MAP, condition.MAP, encounter.MAP, allergy.MAP, medication.MAP, coverage.MAP,
    location.MAP, practitioner.MAP, organization.MAP, outcome.MAP)}


def convert_resource(resource: Any, ctx: Ctx, path: str = "resource") -> dict[str, Any] | None:
    """The facade form of one R4 resource; a type the bridge cannot convert is dropped and counted."""
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind == "Bundle":
        return _bundle(resource, ctx, "Bundle")
    rmap = MAPS.get(kind) if isinstance(kind, str) else None
    if rmap is None or not isinstance(kind, str):
        ctx.drop(f"{path}.{kind}" if kind else path, NOT_REPRESENTABLE)
        return None
    body = {key: value for key, value in resource.items() if key != "resourceType"}
    out = {"resourceType": rmap.facade_type(ctx.facade),
           **convert_elements(body, {**_DOMAIN_RESOURCE, **rmap.table(ctx.facade)}, ctx, kind)}
    if rmap.finish is not None:
        rmap.finish(resource, out, ctx, kind)
    return out


def _contained(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
    return convert_resource(value, ctx, path)


def domain_resource(dt: Datatypes, contained: Convert) -> dict[str, To]:
    """The elements every resource has, in every version."""
    return {
        "id": To("id"),
        "meta": To("meta", dt.meta),
        "implicitRules": To("implicitRules"),
        "language": To("language"),
        "text": To("text", dt.narrative),
        "contained": To("contained", many(contained)),
        "extension": To("extension", dt.extensions),
        "modifierExtension": To("modifierExtension", dt.extensions),
    }


_DOMAIN_RESOURCE = domain_resource(datatypes, _contained)
_LINK = many(element({"relation": To("relation"), "url": To("url")}))
_RESPONSE = {"status": To("status"), "location": To("location", reference_url), "etag": To("etag"),
             "lastModified": To("lastModified")}
_ENTRY = element(
    {"link": To("link", _LINK), "fullUrl": To("fullUrl", reference_url), "resource": To("resource", _contained),
     "search": To("search", element({"mode": To("mode", codes(CodeMap(identity("match", "include", "outcome")))),
                                     "score": To("score")})),
     "request": To("request", element({name: To(name) for name in (
         "method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")})),
     "response": To("response", element({**_RESPONSE, "outcome": To("outcome", _contained)}, _RESPONSE))})


def _entry(value: Any, ctx: Ctx, path: str) -> dict[str, Any] | None:
    """An entry whose resource cannot be converted is left out as a whole (its drop is counted)."""
    out = _ENTRY(value, ctx, path)
    if out is None or (isinstance(value, dict) and "resource" in value and "resource" not in out):
        return None
    return out


_BUNDLE_COMMON = {
    "id": To("id"),
    "meta": To("meta", meta),
    "implicitRules": To("implicitRules"),
    "language": To("language"),
    "type": To("type"),
    "total": To("total"),
    "link": To("link", _LINK),
    "entry": To("entry", many(_entry)),
}
_BUNDLE = {"stu3": {**_BUNDLE_COMMON, "identifier": To("identifier", identifier)}, "dstu2": _BUNDLE_COMMON}


def _bundle(bundle: dict[str, Any], ctx: Ctx, path: str) -> dict[str, Any]:
    body = {key: value for key, value in bundle.items() if key != "resourceType"}
    return {"resourceType": "Bundle", **convert_elements(body, _BUNDLE[ctx.facade], ctx, path)}
