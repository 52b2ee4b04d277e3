"""The proxy orchestrator (shared/proxy.py `FhirProxy.handle`) over the store fakes and a real provider.

The provider is a tiny aiohttp server on 127.0.0.1, started inside each test's event loop, so the
proxy's own HTTP client, streaming and rewriting run for real; only Key Vault and Table Storage are
fakes. What is proven: the pipeline (authorise -> check -> exchange -> shape) for a
read, a search, a streamed large answer and a batch, and each refusal answered before the provider
is asked (no token, another tenant, a cross-type parameter, a disabled client, a store outage).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from shared.errors import StoreUnavailable
from shared.http import Headers, Request, Response
from shared.provider_client import HEAD_BYTES
from tests.unit.world import URLS, World, build_world

pytestmark = pytest.mark.unit

GATEWAY_BASE = URLS.fhir_base("stu3")


@dataclass
class Provider:
    """What the provider was asked, and its base URL once listening."""

    base: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    required_authorization: str | None = None  # when set, anything else is answered 401

    def note(self, request: web.Request) -> web.Response | None:
        """Record the request; the 401 it gets when it lacks the required credential, else None."""
        self.seen.append({"path": request.path, "query": request.query_string, "params": dict(request.query),
                          "authorization": request.headers.get("Authorization")})
        if self.required_authorization and request.headers.get("Authorization") != self.required_authorization:
            return web.json_response({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "login"}]}, status=401, content_type="application/fhir+json")
        return None


def _patient(base: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "Smith"}],
            "managingOrganization": {"reference": f"{base}/Organization/o1"}}


def _app(provider: Provider) -> web.Application:
    async def read(request: web.Request) -> web.Response:
        refused = provider.note(request)
        if refused is not None:
            return refused
        rtype, rid = request.match_info["type"], request.match_info["id"]
        if rtype == "Patient" and rid.startswith("p"):
            body = _patient(provider.base, rid)
            return web.json_response(body, content_type="application/fhir+json", headers={"ETag": 'W/"3"'})
        if rid == "boom":
            return web.Response(status=500, text="<html>oops</html>", content_type="text/html")
        outcome = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-found", "diagnostics": f"{provider.base}/{rtype}/{rid} is unknown"}]}
        return web.json_response(outcome, status=404, content_type="application/fhir+json")

    async def search(request: web.Request) -> web.StreamResponse:
        refused = provider.note(request)
        if refused is not None:
            return refused
        count = int(request.query.get("_count", "2"))
        entries = [{"fullUrl": f"{provider.base}/Patient/p{i}", "resource": _patient(provider.base, f"p{i}")}
                   for i in range(count)]
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": count, "entry": entries,
                  "link": [{"relation": "self", "url": f"{provider.base}/Patient?_count={count}"}]}
        raw = json.dumps(bundle).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/fhir+json"})
        await response.prepare(request)
        for start in range(0, len(raw), 16 * 1024):  # chunked: the proxy cannot wait for a length
            await response.write(raw[start:start + 16 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/fhir/{type}", search)
    app.router.add_get("/fhir/{type}/{id}", read)
    return app


async def _collect(response: Response) -> bytes:
    if response.stream is None:
        return response.body
    return b"".join([chunk async for chunk in response.stream])


Scenario = Callable[[World, Provider], Awaitable[None]]


def run(scenario: Scenario, world: World | None = None) -> None:
    """Start the provider, run the scenario against the proxy, stop everything, in one event loop."""
    world = world or build_world()

    async def main() -> None:
        provider = Provider()
        runner = web.AppRunner(_app(provider))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        provider.base = f"http://127.0.0.1:{port}/fhir"
        try:
            await scenario(world, provider)
        finally:
            # FhirProxy has no close(); its provider client's session would otherwise outlive the loop.
            session = world.proxy._provider._session
            if session is not None:
                await session.close()
            await runner.cleanup()

    asyncio.run(main())


def _granted(world: World, provider: Provider, **route: Any) -> tuple[str, str]:
    """(tenant_id, bearer token) for a new client allowed on a new tenant routed to `provider`."""
    client_id, secret = world.client()
    tenant_id = world.tenant(provider.base, allowed=(client_id,), **route)
    return tenant_id, world.token(client_id, secret, tenant_id)


def _request(token: str | None, path: str, query: str = "", method: str = "GET", body: bytes = b"",
             **headers: str) -> Request:
    all_headers = Headers({**headers, **({"Authorization": f"Bearer {token}"} if token else {})})
    url = f"{GATEWAY_BASE}/{path}" + (f"?{query}" if query else "")
    return Request(method, url, all_headers, body=body)


async def _handle(world: World, request: Request, path: str, version: str = "stu3") -> tuple[Response, bytes]:
    response = await world.proxy.handle(request, version, path, URLS)
    return response, await _collect(response)


# --- the pipeline -------------------------------------------------------------------------------------------

def test_a_read_reaches_the_tenants_provider_and_comes_back_rewritten() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        response, body = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert response.status == 200, body
        patient = json.loads(body)
        assert (patient["resourceType"], patient["id"]) == ("Patient", "p1")
        assert patient["managingOrganization"]["reference"] == f"{GATEWAY_BASE}/Organization/o1"
        assert provider.base.encode() not in body
        assert response.headers["Content-Type"] == "application/fhir+json"
        assert response.headers["Etag"] == 'W/"3"' and response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Request-Id"]
        assert [s["path"] for s in provider.seen] == ["/fhir/Patient/p1"]
    run(scenario)


def test_a_small_search_is_answered_whole_with_its_links_on_the_gateway() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        response, body = await _handle(world, _request(token, "Patient", "_count=3&name=smith"), "Patient")
        assert response.status == 200 and response.stream is None
        bundle = json.loads(body)
        assert [e["fullUrl"] for e in bundle["entry"]] == [f"{GATEWAY_BASE}/Patient/p{i}" for i in range(3)]
        assert provider.seen[0]["query"] == "_count=3&name=smith"
    run(scenario)


def test_a_large_search_streams_and_every_chunk_is_rewritten() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        response, body = await _handle(world, _request(token, "Patient", "_count=1500"), "Patient")
        assert response.status == 200
        assert response.stream is not None and response.body == b"", "the answer was streamed, not buffered"
        assert len(body) > HEAD_BYTES
        bundle = json.loads(body)
        assert len(bundle["entry"]) == 1500
        assert all(e["fullUrl"].startswith(GATEWAY_BASE + "/") for e in bundle["entry"])
        assert provider.base.encode() not in body
    run(scenario)


def test_a_streamed_answer_is_audited_once_when_its_last_byte_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(world: World, provider: Provider) -> None:
        tenant_id, token = _granted(world, provider)
        with caplog.at_level(logging.INFO, logger="gateway.audit"):
            response = await world.proxy.handle(_request(token, "Patient", "_count=1500"), "stu3", "Patient", URLS)
            assert not [r for r in caplog.records if "fhir-request" in r.getMessage()]
            body = await _collect(response)
        lines = [json.loads(r.getMessage()) for r in caplog.records if "fhir-request" in r.getMessage()]
        assert len(lines) == 1
        assert (lines[0]["status"], lines[0]["bytes"], lines[0]["tenant_id"]) == (200, len(body), tenant_id)
        assert lines[0]["interaction"] == "search" and "aborted" not in lines[0]
    run(scenario)


def test_a_batch_answers_each_entry_in_order_with_its_own_status() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Observation/missing"}},
            {"request": {"method": "DELETE", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Group/g1"}},
            {"request": {"method": "GET", "url": "Patient?_count=2"}},
        ]}
        response, body = await _handle(world, _request(token, "", method="POST", body=json.dumps(batch).encode(),
                                                       **{"Content-Type": "application/fhir+json"}), "")
        assert response.status == 200
        answer = json.loads(body)
        assert (answer["resourceType"], answer["type"]) == ("Bundle", "batch-response")
        statuses = [e["response"]["status"] for e in answer["entry"]]
        assert statuses == ["200 OK", "404 Not Found", "405 Method Not Allowed", "403 Forbidden", "200 OK"]
        assert answer["entry"][0]["resource"]["id"] == "p1" and answer["entry"][0]["response"]["etag"] == 'W/"3"'
        assert answer["entry"][1]["resource"]["resourceType"] == "OperationOutcome"
        assert len(answer["entry"][4]["resource"]["entry"]) == 2
        assert sorted(s["path"] for s in provider.seen) == ["/fhir/Observation/missing", "/fhir/Patient",
                                                            "/fhir/Patient/p1"], "refused entries never left"
    run(scenario)


@pytest.mark.parametrize(("bundle", "status"), [
    ({"resourceType": "Bundle", "type": "transaction", "entry": []}, 405),
    ({"resourceType": "Bundle", "type": "collection"}, 400),
    ({"resourceType": "Patient"}, 400),
    ({"resourceType": "Bundle", "type": "batch",
      "entry": [{"request": {"method": "GET", "url": "Patient/p1"}}] * 101}, 400),
])
def test_a_post_to_the_base_must_be_a_batch_of_at_most_a_hundred_entries(bundle: dict, status: int) -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        response, _ = await _handle(world, _request(token, "", method="POST", body=json.dumps(bundle).encode()), "")
        assert response.status == status
        assert provider.seen == []
    run(scenario)


def test_a_provider_outcome_passes_through_rewritten_and_a_provider_5xx_is_a_502() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        missing, body = await _handle(world, _request(token, "Patient/x1"), "Patient/x1")
        assert missing.status == 404
        assert f"{GATEWAY_BASE}/Patient/x1" in json.loads(body)["issue"][0]["diagnostics"]
        broken, body = await _handle(world, _request(token, "Patient/boom"), "Patient/boom")
        assert broken.status == 502 and json.loads(body)["resourceType"] == "OperationOutcome"
    run(scenario)


def test_a_bearer_credential_from_the_vault_is_sent_to_the_provider_only() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        world.vault.set_secret("upstream-ehr-token", "ehr-access-token-1")
        _, token = _granted(world, provider, upstream_auth={"kind": "bearer", "secret_name": "upstream-ehr-token"})
        response, body = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert response.status == 200
        assert provider.seen[0]["authorization"] == "Bearer ehr-access-token-1"
        assert b"ehr-access-token-1" not in body
    run(scenario)


def test_a_credential_the_provider_refuses_is_re_read_once_so_a_rotated_secret_recovers() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        world.vault.set_secret("upstream-ehr-token", "old-token")
        provider.required_authorization = "Bearer new-token"
        _, token = _granted(world, provider, upstream_auth={"kind": "bearer", "secret_name": "upstream-ehr-token"})
        refused, body = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert refused.status == 502 and json.loads(body)["issue"][0]["code"] == "security"
        assert [s["authorization"] for s in provider.seen] == ["Bearer old-token"] * 2, "one retry, no more"
        world.vault.set_secret("upstream-ehr-token", "new-token")  # the operator rotates it in Key Vault
        provider.seen.clear()
        recovered, _ = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert recovered.status == 200
        assert [s["authorization"] for s in provider.seen] == ["Bearer old-token", "Bearer new-token"]
    run(scenario)


def test_an_r4_tenant_gets_the_stu3_search_translated_and_the_answer_converted() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider, fhir_version="r4")
        response, body = await _handle(world, _request(token, "Patient", "family=And&_count=2"), "Patient")
        assert response.status == 200 and response.stream is None, "bridged answers are converted whole"
        assert provider.seen[0]["params"] == {"family:contains": "And", "_count": "2"}
        bundle = json.loads(body)
        assert [e["fullUrl"] for e in bundle["entry"]] == [f"{GATEWAY_BASE}/Patient/p0", f"{GATEWAY_BASE}/Patient/p1"]
        assert all(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"])
    run(scenario)


def test_a_dstu2_medication_order_read_reaches_an_r4_provider_as_medication_request() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider, fhir_version="r4")
        request = Request("GET", f"{URLS.fhir_base('dstu2')}/MedicationOrder/m1",
                          Headers({"Authorization": f"Bearer {token}"}))
        response, body = await _handle(world, request, "MedicationOrder/m1", "dstu2")
        assert provider.seen[0]["path"] == "/fhir/MedicationRequest/m1"
        assert response.status == 404 and response.headers["Content-Type"] == "application/json+fhir"
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-found"
    run(scenario)


# --- refusals, each before the provider is asked --------------------------------------------------------------

def test_no_token_is_a_401_with_a_bearer_challenge() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _granted(world, provider)
        response, body = await _handle(world, _request(None, "Patient/p1"), "Patient/p1")
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert json.loads(body)["issue"][0]["code"] == "login"
        assert provider.seen == []
    run(scenario)


@pytest.mark.parametrize("authorization", ["Basic abc", "Bearer ", "Bearer not.a.token"])
def test_anything_but_a_valid_bearer_token_is_a_401(authorization: str) -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _granted(world, provider)
        request = Request("GET", f"{GATEWAY_BASE}/Patient/p1", Headers({"Authorization": authorization}))
        response, _ = await _handle(world, request, "Patient/p1")
        assert response.status == 401 and provider.seen == []
    run(scenario)


def test_a_token_for_a_tenant_that_no_longer_allows_the_client_is_a_403() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        tenant_id, token = _granted(world, provider)
        route, etag = world.tenants.get(tenant_id)
        world.tenants.put(tenant_id, {**route.to_json(), "allowed_clients": []}, if_match=etag)
        response, body = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert response.status == 403 and json.loads(body)["issue"][0]["code"] == "forbidden"
        assert provider.seen == []
    run(scenario)


def test_a_disabled_tenant_is_a_403_and_a_disabled_client_a_401() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        tenant_id, token = _granted(world, provider)
        world.tenants.disable(tenant_id)
        assert (await _handle(world, _request(token, "Patient/p1"), "Patient/p1"))[0].status == 403
        client_id, secret = world.client("other")
        other_tenant = world.tenant(provider.base, allowed=(client_id,))
        other_token = world.token(client_id, secret, other_tenant)
        world.clients.disable(client_id)
        response, body = await _handle(world, _request(other_token, "Patient/p1"), "Patient/p1")
        assert response.status == 401 and "disabled" in json.loads(body)["issue"][0]["diagnostics"]
        assert provider.seen == []
    run(scenario)


@pytest.mark.parametrize("query", ["_include=Patient:organization", "_revinclude=Observation:subject",
                                   "_has:Observation:patient:code=1", "_count=ten"])
def test_cross_type_and_malformed_parameters_are_a_400(query: str) -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        response, _ = await _handle(world, _request(token, "Patient", query), "Patient")
        assert response.status == 400 and provider.seen == []
    run(scenario)


def test_a_type_outside_the_tenants_list_is_a_403() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider, resource_types=["Observation"])
        response, _ = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert response.status == 403 and provider.seen == []
    run(scenario)


def test_a_write_is_a_405_and_an_oversized_body_a_413() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        put, _ = await _handle(world, _request(token, "Patient/p1", method="PUT", body=b"{}"), "Patient/p1")
        assert put.status == 405
        big = _request(token, "Patient/_search", method="POST", body=b"x" * (1024 * 1024 + 1))
        assert (await _handle(world, big, "Patient/_search"))[0].status == 413
        assert provider.seen == []
    run(scenario)


def test_the_facade_must_match_the_tenants_version() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider, fhir_version="dstu2")
        response, body = await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        assert response.status == 400 and "dstu2" in json.loads(body)["issue"][0]["diagnostics"]
    run(scenario)


def test_a_cold_instance_answers_503_with_retry_after_while_tables_are_down() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        cold = build_world(vault=world.vault, tenant_table=world.tenant_table, client_table=world.client_table)
        world.tenant_table.outage = StoreUnavailable("table-storage", "HTTP 503", retry_after=12, throttled=True)
        try:
            response, body = await _handle(cold, _request(token, "Patient/p1"), "Patient/p1")
        finally:
            world.tenant_table.outage = None
            if cold._proxy is not None and cold._proxy._provider._session is not None:
                await cold._proxy._provider._session.close()
        assert response.status == 503 and response.headers["Retry-After"] == "12"
        assert json.loads(body)["issue"][0]["code"] == "transient"
        assert provider.seen == []
    run(scenario)


def test_a_warm_proxy_answers_without_a_store_call() -> None:
    async def scenario(world: World, provider: Provider) -> None:
        _, token = _granted(world, provider)
        await _handle(world, _request(token, "Patient/p1"), "Patient/p1")
        before = (world.vault.calls.copy(), world.client_table.calls.copy(), world.tenant_table.calls.copy())
        response, _ = await _handle(world, _request(token, "Patient/p2"), "Patient/p2")
        assert response.status == 200
        assert (world.vault.calls, world.client_table.calls, world.tenant_table.calls) == before
    run(scenario)



def test_an_empty_allow_list_lets_no_entry_of_a_whole_answer_through() -> None:
    """The scan that decides whether the Bundle needs parsing reads the tenant's allow-list exactly
    as the filter does (`policy.permitted_types`): an empty list is empty, not the default set."""
    from dataclasses import replace

    from shared.audit import Audit
    from shared.response_shaping import _only_allowed_entries

    world = build_world()
    client_id, _ = world.client()
    route = world.tenants.resolve(world.tenant("https://ehr.example/fhir", allowed=(client_id,)))
    assert route is not None
    body = json.dumps({"resourceType": "Bundle", "type": "searchset",
                       "entry": [{"resource": _patient("https://ehr.example/fhir", "p1")}]}).encode()
    audit = Audit("unit")
    kept = json.loads(_only_allowed_entries(body, replace(route, resource_types=()), audit))
    assert kept["entry"] == [] and audit.dropped == {"entry:Patient": 1}
    assert _only_allowed_entries(body, route, Audit("unit")) is body  # default list: no parse, same bytes
