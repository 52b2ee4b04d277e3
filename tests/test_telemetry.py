"""Traces and metrics (issue #15): the span tree of a request, the trace the provider continues, the
metrics, and that no span, metric or log record carries patient data, a secret or a token.

The gateway runs in this test process (function_app's own functions, called with Starlette requests
as the Functions host calls them) against the session stack's Azurite, Key Vault emulator and STU3
sample EHR, with the OpenTelemetry SDK's in-memory span exporter and metric reader installed as
the global providers. The sample EHR's request log shows the `traceparent` each upstream request
carried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import pytest
import requests
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

import function_app
from devtools.stack import DEMO_TENANTS, Stack
from shared.errors import StoreUnavailable
from shared.services import get_services
from shared.settings import get_settings
from tests.reliability import admin_url, clear_provider_log, provider_log

ORIGIN = ("127.0.0.1", 7071)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Telemetry:
    """The SDK providers of this process, reading into memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.metrics]))
        assert trace.get_tracer_provider() is tracer_provider, "another test set a tracer provider first"

    def trace(self, request_id: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.context.trace_id == int(request_id, 16)]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        return [point for resource in data.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name for point in metric.data.data_points]


class Gateway:
    """function_app's functions in this process, on one event loop (the host has one too)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def call(self, function: Callable[[Request], Awaitable[Response]], method: str, path: str,
             path_params: dict[str, str], headers: dict[str, str] | None = None, body: bytes = b"",
             query: str = "") -> Answer:
        if body:  # as any HTTP/1.1 client frames a request body
            headers = {**(headers or {}), "content-length": str(len(body))}
        scope = {"type": "http", "method": method, "scheme": "http", "server": ORIGIN, "root_path": "",
                 "path": path, "raw_path": path.encode(), "query_string": query.encode(), "http_version": "1.1",
                 "client": ("127.0.0.1", 50000), "path_params": path_params,
                 "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def run() -> Answer:
            response = await function(Request(scope, receive))
            if isinstance(response, StreamingResponse):
                chunks = [chunk async for chunk in response.body_iterator]
                content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
            else:
                content = bytes(response.body)
            return Answer(response.status_code, dict(response.headers), content)

        return self.loop.run_until_complete(run())

    def token(self, client_id: str, secret: str, tenant_id: str) -> Answer:
        form = urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                          "scope": tenant_id}).encode()
        return self.call(function_app.oauth_token, "POST", "/api/oauth2/token", {}, body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "203.0.113.9, 127.0.0.1"})


@pytest.fixture(scope="module")
def otel() -> Telemetry:
    return Telemetry()


@pytest.fixture(scope="module")
def gateway(stack: Stack, otel: Telemetry) -> Iterator[Gateway]:
    """The app's settings are the stack gateway's (same tables, same vault), read afresh."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "MSI_ENDPOINT", "MSI_SECRET"):
            env.delenv(name, raising=False)
        for name, value in stack.gateway_env().items():
            if value:
                env.setenv(name, value)
            else:
                env.delenv(name, raising=False)
        get_settings.cache_clear()
        get_services.cache_clear()
        running = Gateway()
        try:
            yield running
        finally:
            running.loop.close()
            get_settings.cache_clear()
            get_services.cache_clear()


@pytest.fixture(scope="module")
def patient(facts: dict[str, Any]) -> dict[str, str]:
    """One patient of the STU3 sample EHR, read from the EHR itself: what must never be in telemetry."""
    found = requests.get(f"{facts['provider_base_urls']['stu3']}/Patient", params={"_count": 1}, timeout=30).json()
    resource = found["entry"][0]["resource"]
    name = resource["name"][0]
    return {"id": resource["id"], "family": name["family"], "given": name["given"][0]}


@pytest.fixture(scope="module")
def session(gateway: Gateway, facts: dict[str, Any]) -> dict[str, str]:
    tenant = DEMO_TENANTS["stu3"]
    issued = gateway.token(facts["demo_client_id"], facts["demo_client_secret"], tenant)
    assert issued.status == 200, issued.body
    return {"tenant": tenant, "client": facts["demo_client_id"], "token": issued.json()["access_token"],
            "token_request_id": issued.headers["x-request-id"]}


def batch(patient: dict[str, str]) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient?family={patient['family']}"}},
        {"request": {"method": "GET", "url": f"Patient/{patient['id']}"}},
        {"request": {"method": "GET", "url": f"Observation?patient={patient['id']}&_count=2"}},
    ]}).encode()


@pytest.fixture(scope="module")
def batch_request(gateway: Gateway, session: dict[str, str], patient: dict[str, str],
                  facts: dict[str, Any]) -> dict[str, Any]:
    """One batch of three entries, sent with a caller's traceparent; the EHR's log of what it got."""
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    base = facts["provider_base_urls"]["stu3"]
    clear_provider_log(base)
    answer = gateway.call(function_app.fhir_batch, "POST", "/api/fhir/stu3", {"version": "stu3"}, body=batch(patient),
                          headers={"Authorization": f"Bearer {session['token']}",
                                   "Content-Type": "application/fhir+json",
                                   "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert answer.status == 200, answer.body
    assert [e["response"]["status"] for e in answer.json()["entry"]] == ["200 OK"] * 3
    received = requests.get(admin_url(base), timeout=30).json()
    return {"answer": answer, "caller_trace": caller_trace, "caller_span": caller_span, "received": received}


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_batch_is_one_trace_continuing_the_callers_with_a_span_per_entry_and_per_exchange(
        otel: Telemetry, batch_request: dict[str, Any], session: dict[str, str]) -> None:
    request_id = batch_request["answer"].headers["x-request-id"]
    assert request_id == batch_request["caller_trace"]
    spans = otel.trace(request_id)
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST fhir/{version}" and server.attributes["http.route"] == "fhir/{version}"
    assert server.parent is not None and server.parent.span_id == int(batch_request["caller_span"], 16)
    assert server.parent.is_remote
    assert {k: server.attributes[k] for k in ("gateway.tenant_id", "gateway.client_id", "gateway.fhir_version",
                                              "gateway.interaction", "gateway.batch_entries",
                                              "http.response.status_code")} == {
        "gateway.tenant_id": session["tenant"], "gateway.client_id": session["client"],
        "gateway.fhir_version": "stu3", "gateway.interaction": "batch", "gateway.batch_entries": 3,
        "http.response.status_code": 200}
    for name in ("token verification", "route lookup"):  # once, even where the step moved to a thread
        [step] = by_name(spans, name)
        assert step.parent.span_id == server.context.span_id, name
    entries = sorted(by_name(spans, "batch entry"), key=lambda s: s.attributes["gateway.batch.entry_index"])
    assert [e.attributes["gateway.batch.entry_index"] for e in entries] == [0, 1, 2]
    assert [(e.attributes["gateway.interaction"], e.attributes["gateway.resource_type"]) for e in entries] == [
        ("search", "Patient"), ("read", "Patient"), ("search", "Observation")]
    assert all(e.parent.span_id == server.context.span_id for e in entries)
    exchanges = by_name(spans, "upstream GET")
    assert sorted(x.parent.span_id for x in exchanges) == sorted(e.context.span_id for e in entries)
    for exchange in exchanges:
        assert exchange.kind == SpanKind.CLIENT
        assert exchange.attributes["gateway.tenant_id"] == session["tenant"]
        assert exchange.attributes["http.response.status_code"] == 200
        assert exchange.attributes["gateway.upstream.status_class"] == "2xx"
        assert exchange.attributes["server.address"] == "127.0.0.1"
        assert exchange.start_time >= server.start_time and exchange.end_time <= server.end_time


def test_the_provider_receives_each_exchange_span_as_its_parent(
        otel: Telemetry, batch_request: dict[str, Any]) -> None:
    request_id = batch_request["answer"].headers["x-request-id"]
    expected = {f"00-{x.context.trace_id:032x}-{x.context.span_id:016x}-01"
                for x in by_name(otel.trace(request_id), "upstream GET")}
    sent = {entry["headers"]["traceparent"] for entry in batch_request["received"]}
    assert len(expected) == 3 and sent == expected


def test_without_a_callers_trace_the_request_id_is_the_new_traces_id(
        otel: Telemetry, gateway: Gateway, session: dict[str, str]) -> None:
    answer = gateway.call(function_app.fhir_proxy, "GET", "/api/fhir/stu3/Patient",
                          {"version": "stu3", "path": "Patient"}, query="_count=1",
                          headers={"Authorization": f"Bearer {session['token']}"})
    assert answer.status == 200
    spans = otel.trace(answer.headers["x-request-id"])
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.parent is None and server.name == "GET fhir/{version}/{type}"
    assert server.attributes["gateway.interaction"] == "search"
    assert server.attributes["gateway.resource_type"] == "Patient"
    [exchange] = by_name(spans, "upstream GET")
    assert exchange.parent.span_id == server.context.span_id


def test_a_client_request_id_is_kept_and_the_trace_is_still_the_spans(otel: Telemetry, gateway: Gateway) -> None:
    answer = gateway.call(function_app.fhir_metadata, "GET", "/api/fhir/stu3/metadata", {"version": "stu3"},
                          headers={"X-Request-Id": "patients-app-4711"})
    assert answer.status == 200 and answer.headers["x-request-id"] == "patients-app-4711"
    servers = [s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.SERVER and s.name == "GET metadata"]
    assert servers and servers[-1].attributes["gateway.fhir_version"] == "stu3"


def test_key_vault_and_table_calls_are_spans_of_the_request_that_made_them(
        otel: Telemetry, session: dict[str, str]) -> None:
    """The first token of a fresh process reads the client, its secret's verifier and the signing key."""
    spans = otel.trace(session["token_request_id"])
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST token"
    stores = [s for s in spans if s.attributes.get("gateway.store")]
    assert {s.attributes["gateway.store"] for s in stores} == {"key-vault", "table-storage"}
    assert all(s.kind == SpanKind.CLIENT for s in stores)
    ids = {s.context.span_id for s in spans}
    assert all(s.parent is not None and s.parent.span_id in ids for s in stores)
    assert any(s.name == "Table Storage get_entity" and s.attributes["gateway.store.table"] for s in stores)
    not_found = [s for s in otel.spans.get_finished_spans() if s.attributes.get("gateway.outcome") == "NotFound"]
    assert all(s.status.status_code.name != "ERROR" for s in not_found), "a not-found answer is not a failure"


def test_metrics_count_requests_upstream_answers_and_tokens_by_tenant(
        otel: Telemetry, batch_request: dict[str, Any], session: dict[str, str]) -> None:
    tenant = session["tenant"]
    requests_by = {tuple(sorted(p.attributes.items())) for p in otel.points("gateway.requests")}
    assert (("gateway.endpoint", "fhir"), ("gateway.fhir_version", "stu3"), ("gateway.outcome", "2xx"),
            ("gateway.tenant_id", tenant)) in requests_by
    latency = [p for p in otel.points("gateway.upstream.duration") if p.attributes.get("gateway.tenant_id") == tenant]
    assert latency and sum(p.count for p in latency) >= 3
    answers = {p.attributes["gateway.upstream.status_class"]: p.value for p in otel.points("gateway.upstream.answers")
               if p.attributes.get("gateway.tenant_id") == tenant}
    assert answers.get("2xx", 0) >= 3
    tokens = {p.attributes["gateway.token.outcome"]: p.value for p in otel.points("gateway.tokens")}
    assert tokens.get("issued", 0) >= 1


def test_a_refused_token_is_counted_by_its_error(otel: Telemetry, gateway: Gateway, facts: dict[str, Any]) -> None:
    refused = gateway.token(facts["demo_client_id"], facts["demo_client_secret"] + "x", DEMO_TENANTS["stu3"])
    assert refused.status == 401
    tokens = {p.attributes["gateway.token.outcome"]: p.value for p in otel.points("gateway.tokens")}
    assert tokens.get("invalid_client", 0) >= 1


def test_key_vault_throttling_is_a_flagged_store_error_and_span(otel: Telemetry, stack: Stack) -> None:
    from azure.identity import ManagedIdentityCredential

    from shared.stores.keyvault import KeyVaultSecretStore

    vault = stack.processes["keyvault"].ready
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IDENTITY_ENDPOINT", vault["identity_endpoint"])
        env.setenv("IDENTITY_HEADER", vault["identity_header"])
        env.delenv("AZURE_CLIENT_ID", raising=False)
        store = KeyVaultSecretStore.connect(vault["vault_url"], ManagedIdentityCredential(), vault["ca_bundle"])
        store.ping()  # the identity token first: the fault below is for the vault call
        requests.post(f"{vault['control_url']}/faults", json={"status": 429, "retry_after": 2, "count": 1},
                      timeout=30).raise_for_status()
        try:
            with pytest.raises(StoreUnavailable) as failed:
                store.get_secret("telemetry-throttle-probe")
        finally:
            requests.post(f"{vault['control_url']}/faults", json={"status": 429, "count": 0}, timeout=30)
    assert failed.value.throttled
    throttled = [p for p in otel.points("gateway.store.errors") if p.attributes == {
        "gateway.store": "key-vault", "gateway.store.throttled": True}]
    assert throttled and throttled[0].value >= 1
    [span] = [s for s in otel.spans.get_finished_spans() if s.name == "Key Vault get_secret"
              and s.attributes.get("gateway.store.throttled")]
    assert span.status.status_code.name == "ERROR" and span.attributes["error.type"] == "StoreUnavailable"
    assert "telemetry-throttle-probe" not in json.dumps(dict(span.attributes))


# --- nothing that identifies a patient, nothing secret ------------------------------------------------

def test_no_span_metric_or_log_record_carries_patient_data_or_secrets(
        otel: Telemetry, gateway: Gateway, session: dict[str, str], patient: dict[str, str],
        facts: dict[str, Any], batch_request: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Searches by name and id, a read and a batch (done above), with every log record captured: the
    patient's id, names and the query values appear nowhere, nor the token, secret or provider paths."""
    with caplog.at_level(logging.INFO):
        for path, query in ((f"Patient/{patient['id']}", ""), ("Patient", f"family={patient['family']}"),
                            ("Observation", f"patient={patient['id']}")):
            answer = gateway.call(function_app.fhir_proxy, "GET", f"/api/fhir/stu3/{path}",
                                  {"version": "stu3", "path": path}, query=query,
                                  headers={"Authorization": f"Bearer {session['token']}"})
            assert answer.status == 200, answer.body
        gateway.call(function_app.fhir_proxy, "GET", "/api/fhir/stu3/Patient/no-such-patient-x93",
                     {"version": "stu3", "path": "Patient/no-such-patient-x93"},
                     headers={"Authorization": f"Bearer {session['token']}"})
    forbidden = {patient["id"], patient["family"], patient["given"], "no-such-patient-x93", session["token"],
                 session["token"].split(".")[2], facts["demo_client_secret"], "/Patient", "family=", "?"}
    forbidden.add(facts["provider_base_urls"]["stu3"])
    spans = otel.spans.get_finished_spans()
    assert len(spans) > 20
    texts = [json.dumps({"name": s.name, "attributes": dict(s.attributes), "status": s.status.description,
                         "events": [(e.name, dict(e.attributes)) for e in s.events],
                         "resource": dict(s.resource.attributes)}, default=str) for s in spans]
    texts += [json.dumps(dict(point.attributes), default=str) for name in (
        "gateway.requests", "gateway.upstream.duration", "gateway.upstream.answers", "gateway.tokens",
        "gateway.store.errors") for point in otel.points(name)]
    records = [r for r in caplog.records if r.name.startswith(("gateway", "shared"))]
    assert any("fhir-request" in r.getMessage() for r in records), "the audit lines were not captured"
    texts += [r.getMessage() for r in records]
    for text in texts:
        leaked = [value for value in forbidden if value in text]
        assert not leaked, f"{leaked} in {text[:300]}"
    routes = {s.attributes.get("http.route") for s in spans} - {None}
    assert routes >= {"fhir/{version}/{type}/{id}", "fhir/{version}/{type}", "fhir/{version}"}
    assert provider_log(facts["provider_base_urls"]["stu3"])  # the EHR was really asked


# --- where telemetry goes ----------------------------------------------------------------------------------

def run_gateway_python(code: str, **env: str) -> str:
    """`code` in a fresh interpreter with the app's settings cleared of telemetry, plus `env`."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_")) and k != "GATEWAY_TRACES"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_a_connection_string_neither_the_distro_nor_the_sdk_is_imported() -> None:
    """The cold start pays for the OpenTelemetry API only; the Azure Monitor distro and the SDK come in
    when they are used."""
    loaded = run_gateway_python("import sys, function_app\n"
                                "print(sorted(m for m in sys.modules if m.startswith(('azure.monitor', "
                                "'opentelemetry.sdk', 'opentelemetry.instrumentation'))))")
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("asked", ["console", "otlp"])
def test_gateway_traces_console_prints_spans_and_otlp_without_its_exporter_falls_back_to_it(asked: str) -> None:
    """opentelemetry-exporter-otlp-proto-http is not pinned (local use only) and not installed here."""
    out = run_gateway_python(
        "from opentelemetry import trace\n"
        "from shared import telemetry\n"
        "from shared.settings import get_settings\n"
        "print('exporting to', telemetry.configure(get_settings()))\n"
        "with telemetry.span('console check', {'gateway.tenant_id': 'tenant-1'}):\n"
        "    pass\n"
        "trace.get_tracer_provider().force_flush()\n", GATEWAY_TRACES=asked)
    assert "exporting to console" in out
    assert '"name": "console check"' in out and '"gateway.tenant_id": "tenant-1"' in out


def test_the_azure_monitor_exporter_authenticates_with_the_identity_the_bicep_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() passes no credential: the exporter makes ManagedIdentityCredential(client_id=...) from
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING, which infra/ sets to the gateway's user-assigned identity
    (the resource has local auth off, so this token is the only way in)."""
    from azure.monitor.opentelemetry.exporter.export import _base

    bicep = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text()
    value = re.search(r"APPLICATIONINSIGHTS_AUTHENTICATION_STRING: '([^']+)'", bicep).group(1)
    assert value == "Authorization=AAD;ClientId=${identityClientId}"
    client_id = "0f4c2d1e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
    monkeypatch.setenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", value.replace("${identityClientId}", client_id))
    with mock.patch.object(_base, "ManagedIdentityCredential") as credential:
        assert _base._get_authentication_credential() is credential.return_value
    credential.assert_called_once_with(client_id=client_id)
