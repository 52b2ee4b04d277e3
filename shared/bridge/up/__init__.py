"""An R4 facade over STU3 and DSTU2 providers: the mirror of `shared.bridge` (R4 → STU3/DSTU2).

Two pure functions (no I/O), for the proxy to call around its forwarding when the R4 facade
(`/api/fhir/r4`) routes to a tenant whose provider is `stu3` or `dstu2`:

* `translate_request_up(provider, action)` turns the R4 read or search into the provider's:
  resource type (MedicationRequest → DSTU2 MedicationOrder), parameter names (the down bridge's
  tables read backwards), `_sort=-date` → DSTU2 `_sort:desc=date`, status codes through the same
  tables, terminology.hl7.org systems → their older URIs. Whatever the provider's version cannot
  express is a `FhirError(400, "not-supported")`.
* `convert_response_up(provider, body, provider_base)` turns the provider's answer (a resource,
  a searchset keeping `total` and links, a batch-response, an OperationOutcome) into R4 and
  returns the counters of what R4 cannot hold, by `<provider path>:<reason>`. Nothing is
  invented: DSTU2 MedicationOrder's `intent: order` is what the resource type itself states, and
  elements R4 requires that the older resource lacks carry FHIR's data-absent-reason extension.

One module per group of resources holds the element tables; `datatypes` what all share.
"""

from __future__ import annotations

from typing import Any

from shared.bridge.base import Ctx
from shared.bridge.up.convert import convert_resource
from shared.bridge.up.search import translate_up
from shared.errors import FhirError
from shared.policy import Interaction

PROVIDERS = ("stu3", "dstu2")

__all__ = ["PROVIDERS", "convert_response_up", "translate_request_up"]


def translate_request_up(provider: str, action: Interaction) -> Interaction:
    """The interaction to send to an STU3 or DSTU2 provider for an R4-facade read, search or page."""
    _check_provider(provider)
    return translate_up(provider, action)


def convert_response_up(provider: str, body: dict[str, Any],
                        provider_base: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The R4 form of a provider's response body, and what was dropped from it (counts by path:reason).

    Paging links on `provider_base` get R4's type name and query, so the proxy's usual URL
    rewriting makes them followable through the R4 facade.
    """
    _check_provider(provider)
    ctx = Ctx(provider)
    converted = convert_resource(body, ctx, provider_base)
    if converted is None:
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise FhirError(502, "not-supported", f"the provider answered with a {kind} the R4 facade lacks")
    return converted, dict(ctx.drops)


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"no R4 facade over {provider!r} providers; expected one of {PROVIDERS}")
