"""The sample EHR's WSGI application: FHIR read, search and batch under ``/fhir``, plus ``/_admin``.

Read-only by design: writes answer 405, transactions 400. The access log (logger
``devtools.sample_ehr``) carries method, interaction, resource type, status and duration only,
never ids, query values or tokens, so it cannot leak patient data.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

from devtools.sample_ehr import bundles, search
from devtools.sample_ehr.auth import Authenticator, parse_auth
from devtools.sample_ehr.capability import capability
from devtools.sample_ehr.outcome import FhirError
from devtools.sample_ehr.requestlog import RequestLog
from devtools.sample_ehr.store import LAST_UPDATED, Dataset, Stored, dumps

LOG = logging.getLogger("devtools.sample_ehr")
MAX_BODY = 10 * 1024 * 1024
FORM = "application/x-www-form-urlencoded"
BODYLESS = (204, 304)  # RFC 9110 §8.6: no Content-Length that would describe an absent body
JSON_TYPES = ("application/fhir+json", "application/json+fhir", "application/json")
Pairs = list[tuple[str, str]]


@dataclass
class Reply:
    """A response before it is handed to WSGI; `stored` is set for reads (batch needs its validators)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    stored: Stored | None = None


@dataclass
class FhirRequest:
    """The parts of a request under ``/fhir`` that handlers use."""

    method: str
    segments: list[str]
    pairs: Pairs
    base: str
    environ: dict

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def body(self) -> bytes:
        length = int(self.environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            raise FhirError(413, "too-long", "Request body too large")
        return self.environ["wsgi.input"].read(length) if length else b""

    def content_type(self) -> str:
        return self.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()


class SampleEhr:
    """One dataset served as a FHIR server; call it as a WSGI application."""

    def __init__(self, dataset: Dataset, *, public_base: str | None = None,
                 auth: str | Authenticator = "none") -> None:
        self.dataset, self.info = dataset, dataset.version
        self.public_base = public_base.rstrip("/") if public_base else None
        self.auth = parse_auth(auth) if isinstance(auth, str) else auth
        self.requests = RequestLog()
        linked = {kind for kind, _ in dataset.by_patient}
        self.params = search.supported_params(self.info.name, dataset.by_type, linked)
        self._json_headers = [("Content-Type", self.info.content_type)]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_admin/"):
            reply = self._admin(environ, path)
        else:
            reply, label = self._fhir(environ, path)
            self.requests.record(environ, reply.status)
            LOG.info("%s %s %d %.1fms", environ.get("REQUEST_METHOD"), label, reply.status,
                     (time.perf_counter() - started) * 1000)
        headers = list(reply.headers)
        if reply.status not in BODYLESS:
            headers.append(("Content-Length", str(len(reply.body))))
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [reply.body]

    def _fhir(self, environ: dict, path: str) -> tuple[Reply, str]:
        """Handle one FHIR request; the label names its interaction and type for the access log."""
        segments = [s for s in path.split("/") if s]
        label = self._label(segments[1:]) if segments[:1] == ["fhir"] else "-"
        try:
            if segments[:1] != ["fhir"]:
                raise FhirError(404, "not-found", "FHIR endpoints live under /fhir")
            pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            request = FhirRequest(environ.get("REQUEST_METHOD", "GET"), segments[1:], pairs,
                                  self._base(environ), environ)
            return self._route(request), label
        except FhirError as error:
            return self._error(error), label
        except Exception as exc:  # a bug: answer as a FHIR server would; log where, not the data
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            LOG.error("unhandled %s at %s:%d in %s", type(exc).__name__, frame.filename, frame.lineno, label)
            return self._error(FhirError(500, "exception", "Internal server error")), label

    def _route(self, request: FhirRequest) -> Reply:
        _check_format(request.pairs)
        segments = request.segments
        if segments != ["metadata"]:
            self.auth.check(request.header("authorization"))
        if not segments:
            _require(request, "POST")
            return self._batch(request)
        if len(segments) == 2 and segments[1] == "_search":
            _require(request, "POST")
            return self._search(segments[0], request.pairs + _form(request), request.base)
        _require(request, "GET")
        return self._get(segments, request.pairs, request.base, request.header("if-none-match"))

    def _get(self, segments: list[str], pairs: Pairs, base: str, if_none_match: str | None) -> Reply:
        """A GET interaction: capabilities, search-type or read (also used for batch entries)."""
        if segments == ["metadata"]:
            return self._metadata(base)
        if len(segments) == 1:
            return self._search(segments[0], pairs, base)
        if len(segments) == 2:
            return self._read(segments[0], segments[1], if_none_match)
        raise FhirError(404, "not-found", "Unsupported path (only metadata, read, search and batch)")

    def _metadata(self, base: str) -> Reply:
        statement = capability(self.info, self.params, base, self.auth.description, LAST_UPDATED[:10])
        return Reply(200, dumps(statement), self._json_headers)

    def _read(self, kind: str, resource_id: str, if_none_match: str | None) -> Reply:
        self._check_type(kind)
        stored = self.dataset.by_id.get((kind, resource_id))
        if stored is None:
            raise FhirError(404, "not-found", f"{kind}/{resource_id} is not known")
        validators = [("ETag", stored.etag), ("Last-Modified", stored.last_modified)]
        if _etag_matches(if_none_match, stored.etag):
            return Reply(304, b"", validators, stored)
        return Reply(200, stored.raw, self._json_headers + validators, stored)

    def _search(self, kind: str, pairs: Pairs, base: str) -> Reply:
        self._check_type(kind)
        query = search.parse(self.info.name, self.params[kind], pairs)
        if query.patient_hint is not None:
            candidates = self.dataset.by_patient.get((kind, query.patient_hint), [])
        else:
            candidates = self.dataset.by_type.get(kind, [])
        matches = [s for s in candidates if all(test(s.resource) for test in query.filters)]
        body = bundles.searchset(base, kind, pairs, search.order(matches, query.sort), query)
        return Reply(200, body, self._json_headers)

    def _batch(self, request: FhirRequest) -> Reply:
        bundle = _json_body(request)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FhirError(400, "invalid", "POST to the base URL takes a Bundle")
        if bundle.get("type") == "transaction":
            raise FhirError(400, "not-supported", "Transactions are not supported: this server is read-only")
        if bundle.get("type") != "batch":
            raise FhirError(400, "invalid", "Only Bundle.type=batch is accepted")
        results = [self._batch_entry(entry, request.base) for entry in bundle.get("entry") or []]
        return Reply(200, bundles.batch_response(results), self._json_headers)

    def _batch_entry(self, entry: dict, base: str) -> tuple[dict, bytes | None]:
        """One entry's (response, resource); a failing entry fails alone, as batch semantics say."""
        request = entry.get("request") or {}
        try:
            if request.get("method") != "GET":
                raise FhirError(405, "not-supported", "Only GET entries are supported: this server is read-only")
            segments, pairs = _split_url(request.get("url", ""), base)
            _check_format(pairs)
            reply = self._get(segments, pairs, base, request.get("ifNoneMatch"))
        except FhirError as error:
            reply = self._error(error)
        response = {"status": f"{reply.status} {HTTPStatus(reply.status).phrase}"}
        if reply.stored:
            response.update(etag=reply.stored.etag, lastModified=reply.stored.resource["meta"]["lastUpdated"])
        return response, reply.body or None

    def _admin(self, environ: dict, path: str) -> Reply:
        method = environ.get("REQUEST_METHOD")
        if path == "/_admin/requests" and method == "GET":
            return Reply(200, dumps(self.requests.snapshot()), [("Content-Type", "application/json")])
        if path == "/_admin/requests/clear" and method == "POST":
            self.requests.clear()
            return Reply(204)
        return Reply(404, dumps({"error": "not found"}), [("Content-Type", "application/json")])

    def _error(self, error: FhirError) -> Reply:
        return Reply(error.status, error.body(), self._json_headers + list(error.headers.items()))

    def _check_type(self, kind: str) -> None:
        if kind not in self.params:
            raise FhirError(404, "not-supported", f"Resource type {kind!r} is not supported by this server")

    def _base(self, environ: dict) -> str:
        """The public base URL: configured, or derived from the Host the client used."""
        if self.public_base:
            return self.public_base
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}/fhir"

    def _label(self, segments: list[str]) -> str:
        """Interaction and type for the access log; unknown types are not echoed."""
        if not segments:
            return "batch"
        if segments == ["metadata"]:
            return "metadata"
        kind = segments[0] if segments[0] in self.params else "-"
        if len(segments) == 1 or segments[1:] == ["_search"]:
            return f"search {kind}"
        return f"read {kind}" if len(segments) == 2 else f"other {kind}"


def build_wsgi_app(dataset: Dataset, *, public_base: str | None = None,
                   auth: str | Authenticator = "none") -> SampleEhr:
    """The WSGI app for ``dataset``; ``auth`` is an ``--auth`` spec or an authenticator object."""
    return SampleEhr(dataset, public_base=public_base, auth=auth)


def _require(request: FhirRequest, allowed: str) -> None:
    if request.method != allowed:
        raise FhirError(405, "not-supported", f"{request.method} is not supported here: this server is read-only",
                        {"Allow": allowed})


def _check_format(pairs: Pairs) -> None:
    for key, value in pairs:
        if key == "_format" and "json" not in value.lower():
            raise FhirError(406, "not-supported", "Only JSON is supported")


def _form(request: FhirRequest) -> Pairs:
    body = request.body()
    if not body:
        return []
    if request.content_type() != FORM:
        raise FhirError(415, "not-supported", f"POST _search takes {FORM}")
    return parse_qsl(body.decode("utf-8"), keep_blank_values=True)


def _json_body(request: FhirRequest) -> object:
    if request.content_type() not in JSON_TYPES:
        raise FhirError(415, "not-supported", "Send the Bundle as FHIR JSON")
    try:
        return json.loads(request.body())
    except ValueError as exc:
        raise FhirError(400, "invalid", "The body is not valid JSON") from exc


def _split_url(url: str, base: str) -> tuple[list[str], Pairs]:
    """A batch entry URL (relative, or absolute under our base) as path segments and query pairs."""
    parts = urlsplit(url)
    path = parts.path
    base_path = urlsplit(base).path.rstrip("/") + "/"
    if path.startswith(base_path):
        path = path[len(base_path):]
    segments = [unquote(s) for s in path.split("/") if s]
    return segments, parse_qsl(parts.query, keep_blank_values=True)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2) against a list of tags or ``*``."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags
