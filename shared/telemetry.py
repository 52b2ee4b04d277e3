"""Traces and metrics with OpenTelemetry: one trace per request, from the caller through the gateway to the EHR.

What is traced: a server span per request (continuing the caller's W3C `traceparent`; its trace id
is the request id of shared/requestid.py), and child spans for token verification, the route
lookup, each batch entry, each upstream exchange (whose context is the `traceparent` the provider
receives, so the provider's own span is a child of ours) and each Key Vault or Table Storage call.
What is counted: requests by tenant, facade version and outcome; upstream latency and status
classes by tenant; token issuance outcomes; store errors, Key Vault throttling flagged.

What never goes in (docs/operations.md): query values, resource ids, URLs with paths or queries,
names, secret names, secrets or tokens. Attributes are ids the audit line already carries (tenant,
client), route templates, resource types, interaction kinds and status codes; an error is recorded
by its exception type only, because messages can quote input.

Where it goes is decided once per process by `configure()`: Application Insights when
APPLICATIONINSIGHTS_CONNECTION_STRING is set (the Azure Monitor distro, imported only then: it is
heavy and a cold start must not pay for it otherwise), the console or OTLP locally (GATEWAY_TRACES),
else nowhere. Without an SDK the OpenTelemetry API is a no-op: spans cost a few attribute writes,
and the request id still comes from shared/requestid.py.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

# Each submodule by its full name: `opentelemetry` itself is a namespace package of several distributions.
import opentelemetry.context as otel_context
import opentelemetry.metrics as metrics
import opentelemetry.trace as trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags

from shared import requestid
from shared.errors import AlreadyExists, NotFound, OAuthError, PreconditionFailed, StoreUnavailable
from shared.offloop import WouldBlock, if_completed
from shared.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("gateway")

NAME = "fhir-gateway"
_TRACER = trace.get_tracer(NAME)  # proxies: they follow the provider configure() (or a test) sets later
_METER = metrics.get_meter(NAME)
_REQUESTS = _METER.create_counter("gateway.requests", "{request}",
                                  "Requests by endpoint, tenant, facade version and outcome (status class)")
_UPSTREAM_DURATION = _METER.create_histogram("gateway.upstream.duration", "s",
                                             "Time to the provider's answer head, per exchange, by tenant")
_UPSTREAM_ANSWERS = _METER.create_counter("gateway.upstream.answers", "{answer}",
                                          "Provider answers by tenant and status class (timeout, unreachable)")
_TOKENS = _METER.create_counter("gateway.tokens", "{request}",
                                "Token requests by outcome: issued, or the RFC 6749 error")
_STORE_ERRORS = _METER.create_counter("gateway.store.errors", "{call}",
                                      "Key Vault and Table Storage calls that failed, throttled or not")

# The attributes a request's span and the request metric carry (the audit line's fields, renamed).
TENANT, CLIENT, VERSION = "gateway.tenant_id", "gateway.client_id", "gateway.fhir_version"
INTERACTION, RESOURCE_TYPE = "gateway.interaction", "gateway.resource_type"
_METRIC_KEYS = ("gateway.endpoint", TENANT, VERSION)
_FACADE_VERSIONS = frozenset({"stu3", "dstu2", "r4"})
# A proxied request's route template by interaction (shared/policy.py): the span's name in Application
# Insights' requests table, so requests group by shape and no id or search value is ever part of it.
_FHIR_ROUTES = {"read": "fhir/{version}/{type}/{id}", "search": "fhir/{version}/{type}",
                "search-post": "fhir/{version}/{type}/_search", "page": "fhir/{version}", "batch": "fhir/{version}"}
# Auto-instrumentation the distro would add: our own spans cover these calls, and theirs record
# full URLs (Key Vault secret names, query strings).
_DISTRO_INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "httpx", "psycopg2", "requests", "urllib",
                            "urllib3")


# --- where telemetry goes -------------------------------------------------------------------------------

def configure(settings: Settings) -> str:
    """Install the exporters once per process, at startup (function_app.py); returns where telemetry
    goes ("none" when nowhere). No module configures logging when imported: this is the one place."""
    # At INFO the Azure SDKs log every request's URL and headers: noise, and Key Vault secret names. Warnings stay.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        # Entra auth: the exporter builds ManagedIdentityCredential(client_id=...) from the
        # APPLICATIONINSIGHTS_AUTHENTICATION_STRING the Bicep sets (docs/operations.md). Logs stay with
        # the Functions host, which already sends them to `traces`: a second copy would double every
        # count the alerts and the workbook take over the audit lines.
        configure_azure_monitor(connection_string=settings.applicationinsights_connection_string,
                                disable_logging=True,
                                instrumentation_options={n: {"enabled": False} for n in _DISTRO_INSTRUMENTATIONS})
        return "azure-monitor"
    if settings.traces_exporter in ("console", "otlp"):
        return _configure_local(settings.traces_exporter)
    return "none"


def _configure_local(kind: str) -> str:
    """Console: spans and metrics as JSON on stdout. OTLP: only if opentelemetry-exporter-otlp-proto-http
    is installed (a local choice, not a pinned dependency: it never runs in Azure)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any = ConsoleSpanExporter()
    metric_exporter: Any = ConsoleMetricExporter()
    if kind == "otlp":
        try:
            traces = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
            metric = importlib.import_module("opentelemetry.exporter.otlp.proto.http.metric_exporter")
        except ImportError:
            log.warning("GATEWAY_TRACES=otlp needs opentelemetry-exporter-otlp-proto-http; exporting to the console")
            kind = "console"
        else:
            span_exporter, metric_exporter = traces.OTLPSpanExporter(), metric.OTLPMetricExporter()
    resource = Resource.create({"service.name": NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(resource=resource,
                                             metric_readers=[PeriodicExportingMetricReader(metric_exporter)]))
    return kind


# --- the request's span ---------------------------------------------------------------------------------

_SERVER: ContextVar[ServerSpan | None] = ContextVar("server_span", default=None)


class ServerSpan:
    """The span of one HTTP request, from the first byte in to the last byte out.

    Started from the incoming `traceparent` when there is a valid one (so its trace id is the request
    id); otherwise the span starts a trace and the request id takes the span's trace id. A streamed
    answer keeps the span open until its last chunk, so the batch entries that run while it streams
    are children of this span and inside its time.
    """

    def __init__(self, method: str, endpoint: str, headers: Mapping[str, str], route_params: Mapping[str, str]) -> None:
        incoming = requestid.from_headers(headers)
        parent = None
        if incoming.parent_span_id:
            remote = SpanContext(int(incoming.trace_id, 16), int(incoming.parent_span_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED if incoming.sampled else 0))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        self._method, self._endpoint = method, endpoint
        self.attributes: dict[str, Any] = {"gateway.endpoint": endpoint}
        version = route_params.get("version", "").lower()
        if version:
            self.attributes[VERSION] = version if version in _FACADE_VERSIONS else "other"
        self.span = _TRACER.start_span(f"{method} {endpoint}", context=parent, kind=SpanKind.SERVER,
                                       attributes={"http.request.method": method, **self.attributes})
        made = self.span.get_span_context()
        if made.is_valid and not incoming.parent_span_id:
            trace_id = format(made.trace_id, "032x")
            adopted = incoming.request_id if incoming.request_id != incoming.trace_id else trace_id
            incoming = requestid.RequestContext(adopted, trace_id, None, made.trace_flags.sampled)
        self.context = requestid.use(incoming)
        self._otel = trace.set_span_in_context(self.span)
        self._token: Token[otel_context.Context] | None = otel_context.attach(self._otel)
        _SERVER.set(self)
        self._ended = False

    @property
    def request_id(self) -> str:
        return self.context.request_id

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        values = {k: v for k, v in attributes.items() if v is not None}
        self.attributes.update(values)
        route = _FHIR_ROUTES.get(values.get(INTERACTION, "")) if self._endpoint == "fhir" else None
        if route:  # the template, never the path: after the type comes a resource id
            values["http.route"] = route
            self.span.update_name(f"{self._method} {route}")
        self.span.set_attributes(values)

    def answer(self, status: int, stream: AsyncIterator[bytes] | None) -> AsyncIterator[bytes] | None:
        """Record the status; the span ends now, or when the streamed answer ends (then the stream to
        send is returned, wrapped)."""
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(StatusCode.ERROR)
        self._detach()
        if stream is None:
            self._end(status)
            return None
        return self._streamed(stream, status)

    def failed(self, exc: BaseException) -> None:
        """The handler raised past its own error handling: the host answers 500."""
        _record_error(self.span, exc)
        self._detach()
        self._end(500)

    async def _streamed(self, stream: AsyncIterator[bytes], status: int) -> AsyncIterator[bytes]:
        """Each chunk is produced with this span current (the batch entries start from inside it); the
        context is attached and detached within one step, never across a `yield`."""
        iterator = aiter(stream)
        try:
            while True:
                token = otel_context.attach(self._otel)
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                yield chunk
        except BaseException as exc:
            _record_error(self.span, exc)  # cut off mid-answer (the client sees an aborted connection)
            raise
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()
            self._end(status)

    def _detach(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    def _end(self, status: int) -> None:
        if self._ended:
            return
        self._ended = True
        self.span.end()
        outcome = f"{status // 100}xx"
        _REQUESTS.add(1, {**{k: self.attributes[k] for k in _METRIC_KEYS if k in self.attributes},
                          "gateway.outcome": outcome})


def server_span(method: str, endpoint: str, headers: Mapping[str, str],
                route_params: Mapping[str, str]) -> ServerSpan:
    """Start the request's span and set its request id (shared/requestid.py); call `answer` or `failed`."""
    return ServerSpan(method.upper(), endpoint, headers, route_params)


def annotate_request(**attributes: Any) -> None:
    """Attributes of the whole request (tenant, client, interaction...), on its server span and metric.
    Names are given without the `gateway.` prefix."""
    server = _SERVER.get()
    if server is not None:
        server.annotate({f"gateway.{name}": value for name, value in attributes.items()})


def annotate(**attributes: Any) -> None:
    """Attributes of the current span (a batch entry's interaction and resource type, say)."""
    trace.get_current_span().set_attributes({f"gateway.{k}": v for k, v in attributes.items() if v is not None})


# --- child spans ----------------------------------------------------------------------------------------

@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL,
         expected: tuple[type[BaseException], ...] = ()) -> Iterator[Span]:
    """A child span of whatever is current. An `expected` exception is an answer, not a failure
    (a store's not-found): it is named in `gateway.outcome`. A step tried inline that gives way to a
    thread (shared/offloop.py) leaves no spans: they end (and are exported) only if the attempt
    completes, and the run on the thread makes its own."""
    current = _TRACER.start_span(name, kind=kind, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(current))
    ended = True
    try:
        yield current
    except WouldBlock:
        ended = False
        raise
    except expected as exc:
        current.set_attribute("gateway.outcome", type(exc).__name__)
        raise
    except BaseException as exc:
        _record_error(current, exc)
        raise
    finally:
        otel_context.detach(token)
        if ended:
            if_completed(functools.partial(current.end, time.time_ns()))


def traced(name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A function call as a span (for one-line use on a method another change also edits)."""
    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            with span(name):
                return fn(*args, **kwargs)
        return run
    return decorate


def _record_error(current: Span, exc: BaseException) -> None:
    """By type only: exception messages can quote what the client sent."""
    current.set_attribute("error.type", type(exc).__name__)
    current.set_status(StatusCode.ERROR)


# --- upstream exchanges -------------------------------------------------------------------------------

@contextmanager
def upstream_exchange(method: str, url: str, tenant_id: str | None, headers: dict[str, str]) -> Iterator[Exchange]:
    """The span of one exchange with a provider; sets the `traceparent` the provider receives to this
    span's context. The URL's host is recorded, never its path or query (resource ids, search values)."""
    attributes = {"http.request.method": method, "server.address": urlsplit(url).hostname or "",
                  TENANT: tenant_id}
    with span(f"upstream {method}", {k: v for k, v in attributes.items() if v is not None},
              SpanKind.CLIENT) as current:
        headers["traceparent"] = _traceparent(current)
        exchange = Exchange(current, tenant_id)
        try:
            yield exchange
        finally:
            exchange.record()


class Exchange:
    """What one exchange ended with, for the span and the upstream metrics."""

    def __init__(self, current: Span, tenant_id: str | None) -> None:
        self._span, self._tenant = current, tenant_id
        self._started = time.monotonic()
        self.status_class = "unreachable"

    def answered(self, status: int) -> None:
        self.status_class = f"{status // 100}xx"
        self._span.set_attributes({"http.response.status_code": status,
                                   "gateway.upstream.status_class": self.status_class})
        if status >= 500:
            self._span.set_status(StatusCode.ERROR)

    def timed_out(self) -> None:
        self.status_class = "timeout"

    def record(self) -> None:
        self._span.set_attribute("gateway.upstream.status_class", self.status_class)
        labels = {"gateway.upstream.status_class": self.status_class}
        if self._tenant:
            labels[TENANT] = self._tenant
        _UPSTREAM_DURATION.record(time.monotonic() - self._started, labels)
        _UPSTREAM_ANSWERS.add(1, labels)


def _traceparent(current: Span) -> str:
    """W3C Trace Context for the provider: our exchange span as its parent. Without a tracing SDK the
    span is not ours (the API hands back the caller's context, marked remote), and the provider gets
    this trace with a fresh span id (shared/requestid.py)."""
    made = current.get_span_context()
    if made.is_valid and not made.is_remote:
        return f"00-{made.trace_id:032x}-{made.span_id:016x}-{int(made.trace_flags):02x}"
    context = requestid.current() or requestid.from_headers({})
    return context.upstream_traceparent()


# --- stores and tokens ------------------------------------------------------------------------------------

@contextmanager
def store_call(component: str, operation: str, table: str | None = None) -> Iterator[None]:
    """The span of one Key Vault or Table Storage call (the SDK's retries inside it). A StoreUnavailable
    is counted, flagged when the service throttled us; not-found and precondition answers are normal."""
    attributes = {"gateway.store": component, "gateway.store.operation": operation}
    if table:
        attributes["gateway.store.table"] = table
    title = "Key Vault" if component == "key-vault" else "Table Storage"
    with span(f"{title} {operation}", attributes, SpanKind.CLIENT, (NotFound, AlreadyExists, PreconditionFailed)
              ) as current:
        try:
            yield
        except StoreUnavailable as exc:
            current.set_attribute("gateway.store.throttled", exc.throttled)
            _STORE_ERRORS.add(1, {"gateway.store": component, "gateway.store.throttled": exc.throttled})
            raise


def token_issuance(fn: Callable[P, T]) -> Callable[P, T]:
    """Counts each token request by outcome: `issued`, the RFC 6749 error code, or `unavailable`."""
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        outcome = "error"
        try:
            result = fn(*args, **kwargs)
            outcome = "issued"
            return result
        except OAuthError as exc:
            outcome = exc.error
            raise
        except StoreUnavailable:
            outcome = "unavailable"
            raise
        finally:
            _TOKENS.add(1, {"gateway.token.outcome": outcome})
    return run
