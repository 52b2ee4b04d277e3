"""An STU3/DSTU2 facade over R4 providers: the Teams Patients app speaks DSTU2 and STU3, EHRs R4.

Two pure functions (no I/O), called by the proxy around its forwarding:

* `translate_request(facade, action)` turns the app's read or search into the R4 one: resource
  type (DSTU2 MedicationOrder → MedicationRequest), search parameters, modifiers and values
  (`family:contains`, `_sort:desc=date` → `_sort=-date`, bare ids → typed references,
  status codes through explicit tables, older code system URIs → R4's). Anything it does not
  know is a `FhirError(400, "not-supported")`, never silently ignored.
* `convert_response(facade, r4_action, body, provider_base)` turns the R4 answer (a resource, a
  searchset, a batch-response, an OperationOutcome) into the facade version and adds paging
  links the provider left out (see `paging`). It returns the body and counters of what could
  not be represented faithfully, e.g. `{"Condition.verificationStatus:unknown-code": 1}`;
  nothing is ever invented to fill a gap.

One module per resource type holds its element tables (R4 element → facade element and
converter) and search parameter tables; `datatypes` and `terminology` hold what all share.
"""

from __future__ import annotations

from typing import Any

from shared.bridge.base import FACADES, Ctx
from shared.bridge.convert import convert_resource
from shared.bridge.paging import add_paging_links
from shared.bridge.search import translate
from shared.errors import FhirError
from shared.policy import Interaction

__all__ = ["FACADES", "convert_response", "translate_request"]


def translate_request(facade: str, action: Interaction) -> Interaction:
    """The R4 interaction to send for a facade ("stu3" or "dstu2") read, search or page."""
    _check_facade(facade)
    return translate(facade, action)


def convert_response(facade: str, action: Interaction, body: dict[str, Any],
                     provider_base: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The facade form of an R4 response body, and what was dropped from it (counts by path:reason).

    `action` is the R4 interaction that was sent (what `translate_request` returned); its query
    is what synthesized paging links repeat on `provider_base`.
    """
    _check_facade(facade)
    ctx = Ctx(facade)
    converted = convert_resource(body, ctx)
    if converted is None:
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise FhirError(502, "not-supported", f"the provider answered with a {kind} the {facade.upper()} facade lacks")
    add_paging_links(converted, action, provider_base)
    return converted, dict(ctx.drops)


def _check_facade(facade: str) -> None:
    if facade not in FACADES:
        raise ValueError(f"no {facade!r} facade over R4; expected one of {FACADES}")
