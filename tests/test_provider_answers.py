"""What a provider answers never carries the client somewhere else, or to data it may not see (issue #13).

Each case is one mode of `devtools/faulty_provider.py` on 127.0.0.1, routed through the session's
gateway: redirects, Location headers naming another host, OperationOutcomes that name the
provider's URLs, searchsets with entries of types the tenant does not allow, a batch passed
through to the provider, which must get only what the gateway validated, and system-level page
links (HAPI's `?_getpages=`), which pass only as the gateway signed them for the tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from shared.policy import PAGE_SIGNATURE
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


# --- system-level page links: only as the gateway handed them out, to that tenant (issue #13) --------

def page_requests(provider: Provider) -> list[dict[str, Any]]:
    """What reached the `pages` provider at its base (system-level), not a type-level search."""
    return [r for r in provider_log(provider.base("pages")) if r["mode"] == "pages" and r["path"] == "/"]


def next_link(bundle: dict[str, Any]) -> str:
    return next(link["url"] for link in bundle["link"] if link["relation"] == "next")


def test_a_system_level_next_link_is_signed_and_reaches_the_provider_without_its_signature(
        provider: Provider) -> None:
    headers = provider.tenant("pages")
    clear_provider_log(provider.base("pages"))
    first = requests.get(f"{provider.fhir}/Patient", headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    link = next_link(first.json())
    assert link.startswith(f"{provider.fhir}?_getpages=abc&_getpagesoffset=2&{PAGE_SIGNATURE}=")
    followed = requests.get(link, headers=headers, timeout=30)
    assert followed.status_code == 200, followed.text
    assert [e["resource"]["id"] for e in followed.json()["entry"]] == ["last"]
    assert [r["query"] for r in page_requests(provider)] == ["_getpages=abc&_getpagesoffset=2"]


def test_a_hand_made_or_altered_paging_request_is_400_and_never_reaches_the_provider(provider: Provider) -> None:
    headers = provider.tenant("pages")
    link = next_link(requests.get(f"{provider.fhir}/Patient", headers=headers, timeout=30).json())
    query = link.partition("?")[2]
    clear_provider_log(provider.base("pages"))
    attempts = ["_getpages=abc", "_getpages=abc&_getpagesoffset=2",
                query.replace("_getpagesoffset=2", "_getpagesoffset=3"),     # another page, same MAC
                query.replace("_getpages=abc", "_getpages=abd"),             # another search's page id
                f"{query}&_count=500",                                       # the MAC is not last
                f"{PAGE_SIGNATURE}={query.rpartition('=')[2]}&_getpages=abc&_getpagesoffset=2"]
    for attempt in attempts:
        response = requests.get(f"{provider.fhir}?{attempt}", headers=headers, timeout=30)
        assert_operation_outcome(response, 400, "not-supported")
    assert page_requests(provider) == []


def test_a_next_link_replayed_with_another_tenants_token_is_400(provider: Provider) -> None:
    link = next_link(requests.get(f"{provider.fhir}/Patient", headers=provider.tenant("pages"), timeout=30).json())
    clear_provider_log(provider.base("pages"))
    response = requests.get(link, headers=provider.tenant("pages"), timeout=30)  # same provider, other tenant
    assert_operation_outcome(response, 400, "not-supported")
    assert page_requests(provider) == []


def test_a_streamed_searchsets_next_link_is_signed_too(provider: Provider) -> None:
    headers = provider.tenant("pages")
    clear_provider_log(provider.base("pages"))
    first = requests.get(f"{provider.fhir}/Patient", params={"_count": "300"}, headers=headers, timeout=30)
    assert first.status_code == 200 and len(first.content) > 64 * 1024 and "Content-Length" not in first.headers
    link = next_link(first.json())
    assert f"&{PAGE_SIGNATURE}=" in link
    assert requests.get(link, headers=headers, timeout=30).status_code == 200
    assert [r["query"] for r in page_requests(provider)] == ["_getpages=abc&_getpagesoffset=300"]


@pytest.mark.parametrize("passthrough", [False, True])
def test_a_paging_batch_entry_must_be_a_link_the_tenant_was_handed(provider: Provider, passthrough: bool) -> None:
    headers = provider.tenant("pages", batch_passthrough=passthrough)
    link = next_link(requests.get(f"{provider.fhir}/Patient", headers=headers, timeout=30).json())
    clear_provider_log(provider.base("pages"))
    forged = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": "?_getpages=abc&_getpagesoffset=2"}}]}
    refused = requests.post(provider.fhir, json=forged, headers=headers, timeout=30)
    if passthrough:  # the whole Bundle is validated before it is sent
        assert_operation_outcome(refused, 400, "not-supported")
    else:
        assert refused.status_code == 200 and refused.json()["entry"][0]["response"]["status"] == "400 Bad Request"
    assert page_requests(provider) == []
    if not passthrough:  # the faulty provider answers no batch POST; the signed entry runs on its own
        signed = {**forged, "entry": [{"request": {"method": "GET", "url": "?" + link.partition("?")[2]}}]}
        answered = requests.post(provider.fhir, json=signed, headers=headers, timeout=30)
        assert answered.json()["entry"][0]["response"]["status"] == "200 OK", answered.text
        assert [r["query"] for r in page_requests(provider)] == ["_getpages=abc&_getpagesoffset=2"]
