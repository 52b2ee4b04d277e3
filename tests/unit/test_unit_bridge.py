"""Bridge conversions the pure bridge suites (test_bridge_convert.py, test_bridge_up.py) leave out.

Those suites cover the resource tables and request translation broadly; these pin down edges
that matter to a client paging or reading errors: which paging links are synthesized and when
not, OperationOutcome issue types R4 added, dateTime-to-date truncation and annotation flattening
counted as drops, and the R4 facade's own refusals.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.bridge import convert_response
from shared.bridge.paging import add_paging_links
from shared.bridge.up import convert_response_up, translate_request_up
from shared.errors import FhirError
from shared.policy import Interaction

pytestmark = pytest.mark.unit

PROVIDER = "https://r4.example.org/fhir"


def _searchset(total: Any, *modes: str, links: list | None = None) -> dict[str, Any]:
    entries = [{"resource": {"resourceType": "Patient", "id": f"p{i}"}, "search": {"mode": mode}}
               for i, mode in enumerate(modes)]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if total is not None:
        bundle["total"] = total
    if links is not None:
        bundle["link"] = links
    return bundle


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def _search(*query: tuple[str, str]) -> Interaction:
    return Interaction("search", "Patient", None, tuple(query))


# --- synthesized paging links -------------------------------------------------------------------------------

def test_a_provider_that_sent_its_own_paging_link_keeps_exactly_its_links() -> None:
    own = [{"relation": "next", "url": f"{PROVIDER}?_getpages=x"}]
    bundle = _searchset(10, "match", links=list(own))
    add_paging_links(bundle, _search(("_count", "1")), PROVIDER)
    assert bundle["link"] == own


def test_only_match_entries_count_towards_the_next_offset() -> None:
    bundle = _searchset(5, "match", "match", "include", "outcome")
    add_paging_links(bundle, _search(("name", "x"), ("_count", "2")), PROVIDER)
    assert _links(bundle)["next"] == f"{PROVIDER}/Patient?name=x&_count=2&_offset=2"


def test_previous_never_goes_below_offset_zero() -> None:
    bundle = _searchset(10, "match", "match")
    add_paging_links(bundle, _search(("_count", "5"), ("_offset", "2")), PROVIDER)
    links = _links(bundle)
    assert links["previous"].endswith("_count=5&_offset=0")
    assert links["next"].endswith("_count=5&_offset=4")


def test_a_non_ascii_digit_offset_is_read_as_no_offset() -> None:
    bundle = _searchset(10, "match")
    add_paging_links(bundle, _search(("_count", "1"), ("_offset", "٣")), PROVIDER)
    assert "previous" not in _links(bundle) and _links(bundle)["next"].endswith("_count=1&_offset=1")


@pytest.mark.parametrize(("bundle", "action"), [
    (_searchset(None, "match"), _search(("_count", "1"))),                       # no total: nothing is known
    (_searchset("7", "match"), _search(("_count", "1"))),                         # a total that is not a number
    (_searchset(9, "match"), Interaction("read", "Patient", "p0")),              # not a search
    ({"resourceType": "Bundle", "type": "history", "total": 9, "entry": []}, _search()),
])
def test_no_links_are_invented_without_a_searchs_numeric_total(bundle: dict, action: Interaction) -> None:
    add_paging_links(bundle, action, PROVIDER)
    assert "link" not in bundle


def test_a_self_link_the_provider_sent_is_not_doubled() -> None:
    bundle = _searchset(4, "match", links=[{"relation": "self", "url": f"{PROVIDER}/Patient?own=1"}])
    add_paging_links(bundle, _search(("_count", "1")), PROVIDER)
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    assert bundle["link"][0]["url"].endswith("own=1")


def test_reference_values_keep_their_slash_and_colon_in_synthesized_links() -> None:
    bundle = _searchset(3, "match")
    add_paging_links(bundle, Interaction("search", "Observation", None, (("subject", "Patient/p1"),
                                                                         ("code", "http://loinc.org|1-8"))), PROVIDER)
    assert _links(bundle)["self"] == f"{PROVIDER}/Observation?subject=Patient/p1&code=http://loinc.org%7C1-8"


# --- OperationOutcome and element edges (R4 -> STU3/DSTU2) ---------------------------------------------------

def _outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


@pytest.mark.parametrize(("r4_code", "older"), [("multiple-matches", "processing"), ("deleted", "not-found"),
                                                ("throttled", "throttled")])
def test_issue_types_r4_added_become_their_parent_type(r4_code: str, older: str) -> None:
    for facade in ("stu3", "dstu2"):
        body, drops = convert_response(facade, Interaction("read", "Patient", "x"),
                                       _outcome({"severity": "error", "code": r4_code, "diagnostics": "d"}), PROVIDER)
        assert body["issue"] == [{"severity": "error", "code": older, "diagnostics": "d"}] and drops == {}


def test_dstu2_outcomes_lose_expression_and_say_so() -> None:
    issue = {"severity": "warning", "code": "invalid", "expression": ["Patient.name"], "location": ["/f:name"]}
    stu3, stu3_drops = convert_response("stu3", Interaction("read", "Patient", "x"), _outcome(issue), PROVIDER)
    dstu2, dstu2_drops = convert_response("dstu2", Interaction("read", "Patient", "x"), _outcome(issue), PROVIDER)
    assert stu3["issue"][0]["expression"] == ["Patient.name"] and stu3_drops == {}
    assert "expression" not in dstu2["issue"][0] and dstu2["issue"][0]["location"] == ["/f:name"]
    assert dstu2_drops == {"OperationOutcome.issue.expression:not-representable": 1}


def test_an_unknown_issue_severity_is_dropped_and_counted_not_guessed() -> None:
    body, drops = convert_response("stu3", Interaction("read", "Patient", "x"),
                                   _outcome({"severity": "catastrophic", "code": "exception"}), PROVIDER)
    assert "severity" not in body["issue"][0]
    assert sum(drops.values()) == 1 and next(iter(drops)).startswith("OperationOutcome.issue.severity:")


# --- the R4 facade (STU3/DSTU2 -> R4) ----------------------------------------------------------------------

def test_an_r4_facade_over_an_r4_provider_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="r4"):
        convert_response_up("r4", _outcome(), PROVIDER)
    with pytest.raises(ValueError, match="r4"):
        translate_request_up("r4", Interaction("read", "Patient", "p1"))


def test_a_provider_answer_r4_cannot_hold_is_a_502() -> None:
    with pytest.raises(FhirError) as caught:
        convert_response_up("stu3", {"resourceType": "Claim", "id": "c"}, PROVIDER)
    assert (caught.value.status, caught.value.code) == (502, "not-supported")
