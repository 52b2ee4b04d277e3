"""What a provider answers never carries the client somewhere else, or to data it may not see (issue #13).

Each case is one mode of `devtools/faulty_provider.py` on 127.0.0.1, routed through the session's
gateway: redirects, Location headers naming another host, OperationOutcomes that name the
provider's URLs, searchsets with entries of types the tenant does not allow, and a batch passed
through to the provider, which must get only what the gateway validated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import assert_operation_outcome, new_tenant_id, put_tenant, route_body
from tests.reliability import Consumer, bearer, clear_provider_log, provider_log, start_faulty_provider


class Provider:
    def __init__(self, stack: Stack, root: str) -> None:
        self.stack, self.root = stack, root
        self.consumer = Consumer(stack, "Provider answers test client")
        self.fhir = stack.facts["fhir_base_urls"]["stu3"]

    def base(self, mode: str) -> str:
        return f"{self.root}/{mode}/fhir"

    def tenant(self, mode: str, **route: Any) -> dict[str, str]:
        tenant_id = new_tenant_id()
        body = route_body(self.base(mode), [self.consumer.client_id], **route)
        assert put_tenant(self.stack.manage, tenant_id, body).status_code == 201
        return bearer(self.consumer.token(tenant_id))


@pytest.fixture(scope="module")
def provider(stack: Stack) -> Iterator[Provider]:
    yield Provider(stack, start_faulty_provider(stack))


def test_a_provider_redirect_becomes_502_and_is_not_followed(provider: Provider) -> None:
    clear_provider_log(provider.base("redirect"))
    response = requests.get(f"{provider.fhir}/Patient", headers=provider.tenant("redirect"), timeout=30)
    assert_operation_outcome(response, 502)
    assert "Location" not in response.headers
    assert len([r for r in provider_log(provider.base("redirect")) if r["mode"] == "redirect"]) == 1


def test_a_location_naming_another_host_is_dropped_and_one_under_the_provider_is_rewritten(
        provider: Provider) -> None:
    response = requests.get(f"{provider.fhir}/Patient", headers=provider.tenant("foreign-location"), timeout=30)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.headers["Content-Location"] == f"{provider.fhir}/Patient?page=2"


def test_provider_urls_inside_an_operation_outcome_are_rewritten(provider: Provider) -> None:
    response = requests.get(f"{provider.fhir}/Patient/x", headers=provider.tenant("outcome-404"), timeout=30)
    issue = assert_operation_outcome(response, 404, "not-found")["issue"][0]
    assert issue["diagnostics"] == f"{provider.fhir}/Patient/x"
    assert provider.root not in response.text


def test_entries_of_types_the_tenant_does_not_allow_leave_the_searchset(provider: Provider) -> None:
    headers = provider.tenant("extra-types", resource_types=["Patient", "Condition"])
    response = requests.get(f"{provider.fhir}/Patient", headers=headers, timeout=30)
    assert response.status_code == 200
    types = [e["resource"]["resourceType"] for e in response.json()["entry"]]
    assert types == ["Patient", "Condition"]


def test_a_passed_through_batch_carries_only_what_the_gateway_validated(provider: Provider) -> None:
    headers = provider.tenant("ok", batch_passthrough=True)
    clear_provider_log(provider.base("ok"))
    batch = {"resourceType": "Bundle", "type": "batch", "meta": {"tag": [{"code": "smuggled-meta"}]},
             "entry": [{"request": {"method": "GET", "url": "Patient?_count=1", "ifNoneExist": "smuggled-request"},
                        "resource": {"resourceType": "Patient", "id": "smuggled-resource"}}]}
    response = requests.post(provider.fhir, json=batch, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    posted = [r for r in provider_log(provider.base("ok")) if r["method"] == "POST"]
    assert len(posted) == 1 and "smuggled" not in posted[0]["body"]
    assert '"url":"Patient?_count=1"' in posted[0]["body"]


def test_a_batch_with_duplicate_keys_is_refused_before_anything_is_sent(provider: Provider) -> None:
    headers = provider.tenant("ok", batch_passthrough=True)
    clear_provider_log(provider.base("ok"))
    body = b'{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[]}'
    response = requests.post(provider.fhir, data=body, headers={**headers, "Content-Type": "application/fhir+json"},
                             timeout=30)
    assert_operation_outcome(response, 400, "structure")
    assert provider_log(provider.base("ok")) == []
