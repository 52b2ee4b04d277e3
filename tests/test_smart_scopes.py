"""SMART system scopes: parsing v1/v2, narrowing to the tenant's allow-list, rendering, enforcement."""

from __future__ import annotations

import pytest

from shared.errors import FhirError, OAuthError
from shared.policy import DEFAULT_RESOURCE_TYPES, Interaction, batch_entry_interaction
from shared.smart_scopes import allows, check, grant, grant_from_claim, parse_scope, token_scope

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

TENANT = "2f1c4b9e-8a3d-4e5f-9b6a-0c1d2e3f4a5b"


def granted(scope: str, allowed: tuple[str, ...] | None = None):
    return grant(parse_scope(f"{TENANT} {scope}".strip()), allowed)


def test_tenant_alone_is_unrestricted_as_for_the_patients_app():
    request = parse_scope(TENANT)
    assert request.tenant_id == TENANT and request.smart == ()
    assert grant(request, ("Patient",)) is None
    assert token_scope(TENANT, None) == TENANT
    assert allows(None, "Coverage", "search") and allows(None, None, "page")


@pytest.mark.parametrize("scope", ["", "not-a-guid", f"{TENANT} {TENANT}", "openid system/Patient.read"])
def test_scope_needs_exactly_one_tenant_guid(scope):
    with pytest.raises(OAuthError) as info:
        parse_scope(scope)
    assert info.value.error == "invalid_scope"


@pytest.mark.parametrize("scope", ["patient/Patient.read", "user/*.read", "system/patient.read",
                                   "system/Patient.sr", "system/Patient.view", "system/Patient", "launch/patient"])
def test_non_system_or_malformed_scopes_are_invalid(scope):
    with pytest.raises(OAuthError) as info:
        parse_scope(f"{TENANT} {scope}")
    assert info.value.error == "invalid_scope"


def test_v1_read_grants_read_and_search_and_renders_v1():
    result = granted("system/Patient.read system/Observation.*")
    assert result.render() == "system/Observation.read system/Patient.read"
    assert result.allows("Patient", "read") and result.allows("Observation", "search-post")
    assert not result.allows("Condition", "read")


def test_v2_letters_grant_only_read_and_search_and_render_v2():
    result = granted("system/Patient.r system/Observation.cruds system/Condition.s")
    assert result.render() == "system/Condition.s system/Observation.rs system/Patient.r"
    assert result.allows("Patient", "read") and not result.allows("Patient", "search")
    assert result.allows("Condition", "search") and not result.allows("Condition", "read")


def test_write_only_scopes_grant_nothing_and_fail_with_invalid_scope():
    with pytest.raises(OAuthError) as info:
        granted("system/Patient.write system/Observation.cud")
    assert info.value.error == "invalid_scope"


def test_granular_v2_scope_is_not_granted_since_the_gateway_cannot_enforce_it():
    result = granted("system/Observation.rs?category=vital-signs system/Patient.rs")
    assert result.render() == "system/Patient.rs"
    assert not result.allows("Observation", "search")


def test_grant_is_the_intersection_with_the_tenant_allow_list():
    result = granted("system/Patient.read system/Coverage.read", ("Patient", "Observation"))
    assert result.render() == "system/Patient.read"
    with pytest.raises(OAuthError):
        granted("system/Coverage.read", ("Patient",))


def test_wildcard_expands_to_the_allow_list_or_every_served_type_when_empty():
    assert granted("system/*.rs", ("Patient", "Observation")).render() == "system/Observation.rs system/Patient.rs"
    every = granted("system/*.read", ())
    assert set(every.types) == DEFAULT_RESOURCE_TYPES - {"MedicationOrder"}
    assert every.allows("MedicationOrder", "search")  # the DSTU2 name of MedicationRequest


def test_medication_order_and_request_are_one_resource_for_the_check():
    result = granted("system/MedicationOrder.read")
    assert result.allows("MedicationRequest", "read") and result.allows("MedicationOrder", "search")


def test_token_scope_round_trips_through_the_claim():
    result = granted("system/Patient.rs system/Observation.s")
    claim = token_scope(TENANT, result)
    assert claim == f"{TENANT} system/Observation.s system/Patient.rs"
    assert grant_from_claim(claim) == result
    assert grant_from_claim(TENANT) is None


def test_paging_needs_some_search_grant():
    assert granted("system/Patient.s").allows(None, "page")
    assert not granted("system/Patient.r").allows(None, "page")


def test_check_refuses_with_a_403_operation_outcome():
    result = granted("system/Patient.read")
    check(result, Interaction("read", "Patient", "1"))
    with pytest.raises(FhirError) as info:
        check(result, Interaction("search", "Observation", None, (("patient", "1"),)))
    assert info.value.status == 403 and info.value.code == "forbidden"


def test_each_batch_entry_is_checked_on_its_own():
    result = granted("system/Patient.rs")
    entries = [{"request": {"method": "GET", "url": "Patient/1"}},
               {"request": {"method": "GET", "url": "Observation?patient=1"}}]
    verdicts = [allows(result, a.resource_type, a.kind) for a in map(batch_entry_interaction, entries)]
    assert verdicts == [True, False]


def test_unknown_interaction_kinds_are_refused():
    assert not granted("system/Patient.rs").allows("Patient", "history")
