"""Proxy policy (shared/policy.py): which FHIR interactions pass, as plain functions.

Why these matter: the policy is the gateway's read-only promise and the tenant's type allow-list.
Every refusal here happens before anything is sent to a provider, so each one is proven on the
function itself; the end-to-end suites only show that the proxy calls it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from shared.errors import FhirError
from shared.policy import (
    DEFAULT_RESOURCE_TYPES,
    Interaction,
    batch_entry_interaction,
    check_resource_type,
    drop_disallowed_entries,
    interaction_for,
    parse_query,
    stu3_sort,
)

pytestmark = pytest.mark.unit


def _refused(call: object, *args: object) -> FhirError:
    with pytest.raises(FhirError) as caught:
        call(*args)  # type: ignore[operator]  # call is one of the policy functions
    return caught.value


# --- interaction_for --------------------------------------------------------------------------------------

def test_a_read_is_type_and_id_with_its_upstream_path() -> None:
    action = interaction_for("GET", "Patient/abc-1.2", "")
    assert action == Interaction("read", "Patient", "abc-1.2")
    assert action.upstream_path == "Patient/abc-1.2"


def test_a_search_keeps_its_parameters_in_order_including_repeats() -> None:
    action = interaction_for("get", "/Observation/", "date=ge2020&date=lt2021&patient=1")
    assert (action.kind, action.resource_type) == ("search", "Observation")
    assert action.query == (("date", "ge2020"), ("date", "lt2021"), ("patient", "1"))
    assert action.query_string() == "date=ge2020&date=lt2021&patient=1"


def test_post_search_merges_url_and_form_parameters_and_targets_search() -> None:
    action = interaction_for("POST", "Patient/_search", "_count=5", b"name=smith")
    assert (action.kind, action.query) == ("search-post", (("_count", "5"), ("name", "smith")))
    assert action.upstream_path == "Patient/_search"


def test_a_system_level_get_is_only_a_paging_request() -> None:
    assert interaction_for("GET", "", "_getpages=abc&_getpagesoffset=10").kind == "page"
    assert _refused(interaction_for, "GET", "", "name=smith").status == 400
    assert _refused(interaction_for, "GET", "", "").status == 400


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "Patient/1"), ("DELETE", "Patient/1"), ("PATCH", "Patient/1"), ("POST", "Patient"),
])
def test_writes_are_refused_as_not_allowed_on_a_read_only_gateway(method: str, path: str) -> None:
    exc = _refused(interaction_for, method, path, "")
    assert (exc.status, exc.code) == (405, "not-supported")


@pytest.mark.parametrize(("path", "status"), [
    ("patient", 404),                 # not a resource type
    ("Patient/1/_history", 400),      # history
    ("Patient/1/Observation", 400),   # compartment
    ("Patient/$everything", 400),     # operation (an id may not hold '$')
    ("Patient/../Group", 400),        # traversal
    ("Patient/a%2Fb", 400),           # an encoded slash inside an id
    ("Patient//1", 400),              # empty segment
    ("Patient/" + "x" * 65, 400),     # an id longer than FHIR allows
])
def test_paths_other_than_type_and_id_are_refused(path: str, status: int) -> None:
    assert _refused(interaction_for, "GET", path, "").status == status


# --- parse_query ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["_include=Patient:organization", "_revinclude=Observation:subject",
                                   "_has:Observation:patient:code=1234", "_Include:iterate=Patient:link",
                                   "_REVINCLUDE=x"])
def test_cross_type_parameters_are_refused_whatever_their_case_or_modifier(query: str) -> None:
    exc = _refused(parse_query, query)
    assert (exc.status, exc.code) == (400, "not-supported")


@pytest.mark.parametrize("value", ["-1", "1e3", "²", "٣", "0x10", "1234567890", ""])
def test_numeric_result_parameters_take_only_ascii_digits(value: str) -> None:
    for name in ("_count", "_offset", "_getpagesoffset"):
        assert _refused(parse_query, f"{name}={value}").status == 400


def test_numeric_result_parameters_in_range_pass() -> None:
    assert parse_query("_count=50&_offset=0&_getpagesoffset=123456789") == (
        ("_count", "50"), ("_offset", "0"), ("_getpagesoffset", "123456789"))


@pytest.mark.parametrize("query", ["na%20me=x", "1name=x", "name%00=x", "name=a%0Db", "name=a%00"])
def test_malformed_names_and_control_characters_are_refused(query: str) -> None:
    assert _refused(parse_query, query).status == 400


def test_more_than_a_hundred_parameters_are_refused() -> None:
    assert parse_query("&".join(f"p{i}=1" for i in range(100)))
    assert _refused(parse_query, "&".join(f"p{i}=1" for i in range(101))).status == 400


def test_modifiers_and_chains_are_kept_as_the_client_wrote_them() -> None:
    assert parse_query("name:exact=Smith&subject.name=x&code:text=") == (
        ("name:exact", "Smith"), ("subject.name", "x"), ("code:text", ""))


# --- resource types ----------------------------------------------------------------------------------------

def test_the_default_allow_list_is_the_patients_apps_types() -> None:
    for rtype in DEFAULT_RESOURCE_TYPES:
        check_resource_type(rtype, None)
    exc = _refused(check_resource_type, "Group", None)
    assert (exc.status, exc.code) == (403, "forbidden")


def test_a_tenants_own_list_replaces_the_default() -> None:
    check_resource_type("Group", ("Group",))
    assert _refused(check_resource_type, "Patient", ("Group",)).status == 403
    check_resource_type(None, ())  # paging requests carry no type: judged by their signature instead


# --- batch entries -----------------------------------------------------------------------------------------

def test_a_batch_entry_is_a_relative_get_read_or_search() -> None:
    assert batch_entry_interaction({"request": {"method": "GET", "url": "/Patient/1"}}) == Interaction(
        "read", "Patient", "1")
    search = batch_entry_interaction({"request": {"method": "get", "url": "Observation?patient=1"}})
    assert (search.kind, search.query) == ("search", (("patient", "1"),))


@pytest.mark.parametrize(("entry", "status"), [
    ({"request": {"method": "POST", "url": "Patient"}}, 405),
    ({"request": {"method": "DELETE", "url": "Patient/1"}}, 405),
    ({"request": {"method": "GET", "url": "https://evil.example/Patient/1"}}, 400),
    ({"request": {"method": "GET"}}, 400),
    ({"resource": {"resourceType": "Patient"}}, 400),
    ("not an entry", 400),
    ({"request": {"method": "GET", "url": "Patient?_include=Patient:link"}}, 400),
])
def test_other_batch_entries_are_refused_one_by_one(entry: object, status: int) -> None:
    assert _refused(batch_entry_interaction, entry).status == status


# --- the answer's entries -----------------------------------------------------------------------------------

def test_disallowed_entries_leave_the_bundle_and_are_counted_by_type() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 3, "entry": [
        {"resource": {"resourceType": "Patient", "id": "1"}},
        {"resource": {"resourceType": "Group", "id": "g"}},
        {"resource": {"resourceType": "Group", "id": "h"}},
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
        {"fullUrl": "urn:uuid:no-resource"},
    ]}
    dropped = drop_disallowed_entries(bundle, None)
    assert dropped == Counter({"Group": 2})
    assert [e.get("resource", {}).get("resourceType") for e in bundle["entry"]] == ["Patient", "OperationOutcome",
                                                                                   None]
    assert bundle["total"] == 3, "total counts matches of the searched type, not entries"


def test_a_bundle_without_an_entry_list_is_left_alone() -> None:
    bundle = {"resourceType": "Bundle", "entry": "nonsense"}
    assert drop_disallowed_entries(bundle, ("Patient",)) == Counter()
    assert bundle["entry"] == "nonsense"


def test_stu3_sort_spells_dstu2_sort_modifiers_the_stu3_way() -> None:
    action = Interaction("search", "Observation", None, (("_sort:desc", "date"), ("_sort:asc", "code"), ("a", "b")))
    assert stu3_sort(action).query == (("_sort", "-date"), ("_sort", "code"), ("a", "b"))
