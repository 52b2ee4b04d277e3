"""Property-based fuzzing of every input the gateway parses (issue #7): zero 500s, clear errors,
and never an open proxy.

Hypothesis generates token forms, FHIR paths and query strings (traversal, encoded slashes, dot
segments, CRLF, absolute URLs and other hosts), POST _search bodies, batch Bundles, and the
management API's JSON. Requests go out over raw sockets, so paths reach the gateway exactly as
generated (no client-side normalisation). Every answer must be a success or an error in its
route's own style: OperationOutcome (FHIR), RFC 6749 JSON (token), RFC 9457 problem (management);
the only other answer allowed is the Functions host's own empty 404 for a path that matches no
route. And no request may make the gateway talk to anything but the tenant's configured provider:
the sample EHR sees only paths under /fhir/, and a canary listener on 127.0.0.1, named in the
fuzzed inputs, never hears from anyone.

Examples are bounded (120 per property; FUZZ_EXAMPLES=2000 for a deeper run by hand) and
deadline-free; the database is off so a run leaves no files behind.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from http.client import HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.stack import Stack
from tests.gateway_calls import start_stack
from tests.reliability import Consumer, provider_log

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FHIR_TYPES = ("application/fhir+json", "application/json+fhir")


class Canary:
    """A listener no request of the gateway's may ever reach."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_PUT = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


class Target:
    def __init__(self, stack: Stack, canary: Canary) -> None:
        self.stack, self.canary = stack, canary
        parts = urlsplit(stack.facts["gateway_base_url"])
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.provider = stack.facts["provider_base_urls"]["stu3"]
        self.consumer = Consumer(stack, "Fuzz client")
        self.tenant = self.consumer.onboard(self.provider)
        self.token = self.consumer.token(self.tenant)

    def raw(self, method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """One request over a raw socket: the request target goes out byte for byte."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            sock.sendall(payload)
            response = HTTPResponse(sock)
            response.begin()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def fhir(self, method: str, path_and_query: str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        return self.raw(method, "/api/fhir/stu3/" + path_and_query,
                        {"Authorization": f"Bearer {self.token}", **(headers or {})}, body)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    stack = start_stack(Path(tmp_path_factory.mktemp("fuzz")), ehr_versions=("stu3",),
                        TOKEN_FAILURES_PER_SOURCE="100000", TOKEN_FAILURES_PER_CLIENT_AND_SOURCE="100000")
    canary = Canary()
    try:
        yield Target(stack, canary)
    finally:
        canary.server.shutdown()
        canary.server.server_close()
        stack.stop()


# --- what every answer must look like ------------------------------------------------------------------

def assert_fhir_answer(status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    assert status != 500 and status < 600, f"{what}: HTTP {status} {body[:300]!r}"
    if status == 404 and not body:
        return  # the Functions host: no route matches this path (as in Azure)
    if status in (200, 304):
        return
    assert headers.get("content-type", "").split(";")[0] in FHIR_TYPES, f"{what}: {status} {headers}"
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["diagnostics"], what
    assert 400 <= status < 600, what
    assert b"Traceback" not in body and b".py" not in body, what


def assert_only_the_provider_was_asked(target: Target) -> None:
    """No SSRF, no open proxy: the provider saw only FHIR paths of its own base; the canary nothing."""
    for entry in provider_log(target.provider):
        path = entry["path"]
        assert path == "/fhir" or path.startswith("/fhir/"), entry
        if path in ("/fhir", "/fhir/"):
            continue  # the base itself: a batch passed through, or a paging link
        segments = [unquote(s) for s in path.split("/")[2:]]
        assert all(s not in ("", ".", "..") and "/" not in s and "\\" not in s for s in segments), entry
        assert len(segments) <= 2 or segments[-1] == "_search", entry
    assert target.canary.hits == []


# --- strategies --------------------------------------------------------------------------------------

def pieces(canary: str) -> st.SearchStrategy[str]:
    nasty = ["..", ".", "%2e%2e", "%2E%2E", "%2f", "%2F", "%5c", "\\", "%00", "%0d%0a", "%0a", "//", "@", ":",
             f"http://{canary}/x", f"//{canary}", f"http:%2F%2F{canary}", "https://169.254.169.254/latest",
             "file:///etc/passwd", "%252e%252e%252f", "Patient", "Observation", "_search", "_history",
             "$everything", "metadata", "%u002e", "%E2%88%95", "%EF%BC%8E%EF%BC%8E", "smart-1081332", "?", "#", ";"]
    return st.one_of(st.sampled_from(nasty), st.text(st.characters(codec="utf-8", exclude_characters="\r\n "),
                                                       max_size=12).map(lambda t: quote(t, safe="/%?=&")))


@st.composite
def fhir_paths(draw: st.DrawFn, canary: str) -> str:
    segments = draw(st.lists(pieces(canary), min_size=1, max_size=6))
    path = "/".join(segments).lstrip("/")
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["_count", "patient", "_getpages", "url", "_format", "a%0d%0ab",
                                               "family", "_sort", "x:y", "", "__proto__", "redirect"]), max_size=4))
        values = [draw(pieces(canary)) for _ in names]
        path += "?" + "&".join(f"{n}={v}" for n, v in zip(names, values, strict=True))
    return path


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                        st.text(max_size=30))
    return st.recursive(scalars, lambda children: st.one_of(st.lists(children, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), children,
                                                                            max_size=4)), max_leaves=max_leaves)


# --- FHIR paths and query strings ----------------------------------------------------------------------

def test_fuzzed_fhir_paths_and_queries(target: Target) -> None:
    @FUZZ
    @given(path=fhir_paths(target.canary.host), method=st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE"]))
    def run(path: str, method: str) -> None:
        status, headers, body = target.fhir(method, path)
        assert_fhir_answer(status, headers, body, f"{method} {path}")

    run()
    assert_only_the_provider_was_asked(target)


@pytest.mark.parametrize("target_line", [
    "/api/fhir/stu3/Patient%0d%0aX-Injected:%20yes",
    "/api/fhir/stu3/Patient?family=a%0d%0aX-Injected:%20yes",
    "/api/fhir/stu3/Patient/..%2f..%2f..%2fmetadata",
    "/api/fhir/stu3/http:%2F%2F{canary}%2FPatient",
    "/api/fhir/stu3/%2F%2F{canary}/Patient",
    "/api/fhir/stu3/Patient/@{canary}",
    "http://{canary}/api/fhir/stu3/Patient",
    "/api/fhir/stu3/Patient?_getpages=http://{canary}/",
    "/api/fhir/stu3?_getpages=x&_getpagesoffset=http://{canary}/",
    "/api/fhir/stu3/Patient/%2e%2e/%2e%2e/%2e%2e/_admin/requests",
])
def test_crafted_traversal_and_injection_targets(target: Target, target_line: str) -> None:
    line = target_line.format(canary=target.canary.host)
    status, headers, body = target.raw("GET", line, {"Authorization": f"Bearer {target.token}"})
    assert_fhir_answer(status, headers, body, line)
    assert "x-injected" not in headers
    assert_only_the_provider_was_asked(target)


# --- numeric parameters: ASCII digits only (issue #13) ---------------------------------------------------

# Written as escapes: superscript two, Arabic-Indic three, fullwidth "10", double-struck zero,
# superscript five, circled one, Arabic-Indic "01", and an ASCII digit followed by superscript two.
UNICODE_DIGITS = ["\u00b2", "\u0663", "\uff11\uff10", "\U0001d7d8", "\u2075", "\u2460", "\u0660\u0661", "1\u00b2"]
NUMERIC = ("_count", "_offset", "_getpagesoffset")


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", UNICODE_DIGITS)
def test_numeric_parameters_with_unicode_digits_are_400_and_never_forwarded(target: Target, name: str,
                                                                             value: str) -> None:
    seen = len(provider_log(target.provider))
    for path in (f"Patient?{name}={quote(value)}", f"?_getpages=x&{name}={quote(value)}"):
        status, headers, body = target.fhir("GET", path)
        assert status == 400, f"{path}: {status} {body[:200]!r}"
        assert_fhir_answer(status, headers, body, path)
    status, headers, body = target.fhir("POST", "Patient/_search",
                                        {"Content-Type": "application/x-www-form-urlencoded"},
                                        f"{name}={quote(value)}".encode())
    assert status == 400, body
    assert len(provider_log(target.provider)) == seen


def test_fuzzed_numeric_parameters(target: Target) -> None:
    """Any value that is not ASCII digits is the gateway's 400; ASCII digits reach the provider."""
    @FUZZ
    @given(name=st.sampled_from(NUMERIC),
           value=st.text(st.characters(categories=["Nd", "No", "Nl"], exclude_characters="\r\n"), max_size=4)
           | st.from_regex(r"[0-9]{1,3}", fullmatch=True))
    def run(name: str, value: str) -> None:
        status, headers, body = target.fhir("GET", f"Patient?{name}={quote(value)}")
        assert_fhir_answer(status, headers, body, f"{name}={value!r}")
        if not (value.isascii() and value.isdigit()):  # ASCII digits go on; the EHR may refuse some itself
            assert status == 400, f"{name}={value!r}: {status}"

    run()
    assert_only_the_provider_was_asked(target)


# --- POST _search bodies and batch Bundles --------------------------------------------------------------

def test_fuzzed_search_bodies(target: Target) -> None:
    @FUZZ
    @given(body=st.one_of(st.binary(max_size=300), fhir_paths(target.canary.host).map(lambda p: p.encode())),
           content_type=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain",
                                         "application/x-www-form-urlencoded; charset=latin-1", "multipart/x"]))
    def run(body: bytes, content_type: str) -> None:
        status, headers, answer = target.fhir("POST", "Patient/_search", {"Content-Type": content_type}, body)
        assert_fhir_answer(status, headers, answer, f"_search {body[:80]!r}")

    run()
    assert_only_the_provider_was_asked(target)


@st.composite
def bundles(draw: st.DrawFn, canary: str) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values())
    entry = st.fixed_dictionaries({"request": st.fixed_dictionaries({
        "method": st.sampled_from(["GET", "get", "POST", "DELETE", "", None, 7]),
        "url": st.one_of(fhir_paths(canary), st.sampled_from([f"http://{canary}/Patient", f"//{canary}/x",
                                                             "Patient?_count=1", "/Patient/x", None, 5]))})})
    entries = draw(st.lists(st.one_of(entry, json_values(4)), max_size=6))
    kind = draw(st.sampled_from(["batch", "batch", "transaction", "searchset", None, 3]))
    return {"resourceType": draw(st.sampled_from(["Bundle", "Bundle", "Patient", ""])), "type": kind,
            "entry": entries if draw(st.booleans()) else draw(json_values(3))}


def test_fuzzed_batch_bundles(target: Target) -> None:
    @FUZZ
    @given(bundle=bundles(target.canary.host))
    def run(bundle: Any) -> None:
        body = json.dumps(bundle).encode()
        status, headers, answer = target.raw("POST", "/api/fhir/stu3", {
            "Authorization": f"Bearer {target.token}", "Content-Type": "application/fhir+json"}, body)
        assert_fhir_answer(status, headers, answer, f"batch {body[:120]!r}")
        if status == 200:
            result = json.loads(answer)
            assert result["type"] == "batch-response"
            assert len(result["entry"]) == len(bundle.get("entry") or [])
            for item in result["entry"]:
                code = item["response"]["status"][:3]
                assert code.isdigit() and (code[0] != "5" or code in ("502", "504")), item

    run()
    assert_only_the_provider_was_asked(target)


# --- the token form ------------------------------------------------------------------------------------

def test_fuzzed_token_requests(target: Target) -> None:
    consumer = target.consumer
    fields = st.sampled_from(["grant_type", "grant-type", "client_id", "client_secret", "scope", "x", "",
                              "client%5Fsecret"])
    values = st.one_of(st.sampled_from(["client_credentials", consumer.client_id, consumer.secret, target.tenant,
                                        f"{target.tenant} {target.tenant}", consumer.client_id.upper(), "\x00"]),
                       st.text(max_size=40))

    @FUZZ
    @given(pairs=st.lists(st.tuples(fields, values), max_size=7), raw=st.one_of(st.none(), st.binary(max_size=200)),
           content_type=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "", "text/html"]),
           authorization=st.one_of(st.none(), st.text(max_size=60), st.just("Basic Og==")))
    def run(pairs: list[tuple[str, str]], raw: bytes | None, content_type: str, authorization: str | None) -> None:
        body = raw if raw is not None else "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs).encode()
        headers = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250 + 1}"}
        if content_type:
            headers["Content-Type"] = content_type
        if authorization is not None and authorization.isprintable() and authorization.isascii():
            headers["Authorization"] = authorization.strip() or "x"
        status, answer_headers, answer = target.raw("POST", "/api/oauth2/token", headers, body)
        assert status != 500, answer
        if status != 200:
            error = json.loads(answer)
            assert set(error) <= {"error", "error_description", "error_uri"}, error
            assert error["error"] in ("invalid_request", "invalid_client", "invalid_scope", "unsupported_grant_type",
                                      "unauthorized_client", "slow_down"), error
            assert "no-store" in answer_headers.get("cache-control", "")
            assert consumer.secret.encode() not in answer

    run()


# --- the management API --------------------------------------------------------------------------------

def test_fuzzed_management_json(target: Target) -> None:
    stack = target.stack
    route = st.fixed_dictionaries({}, optional={
        "display_name": st.one_of(st.text(max_size=250), json_values(2)),
        "provider_base_url": st.one_of(st.sampled_from(["http://169.254.169.254/latest", "file:///etc/passwd",
                                                        "https://user:pw@fhir.example/x", "https://fhir.example?q=1",
                                                        "gopher://x", "https://fhir.example.org/r4", "", "http:"]),
                                       st.text(max_size=40), json_values(2)),
        "fhir_version": st.one_of(st.sampled_from(["stu3", "dstu2", "r4", "R4", "r5"]), json_values(2)),
        "upstream_auth": json_values(6),
        "allowed_clients": st.one_of(st.lists(st.one_of(st.text(max_size=40), st.just(str(uuid.uuid4()))),
                                              max_size=3), json_values(3)),
        "enabled": json_values(1), "resource_types": json_values(3), "batch_passthrough": json_values(1),
        "unknown": json_values(2)})

    @FUZZ
    @given(body=st.one_of(route, json_values(), st.binary(max_size=100)),
           where=st.sampled_from(["tenant", "tenant", "client", "secret", "bad-id"]))
    def run(body: Any, where: str) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        path = {"tenant": f"/tenants/{uuid.uuid4()}", "client": "/clients",
                "secret": f"/clients/{target.consumer.client_id}/secrets", "bad-id": "/tenants/not-a-guid"}[where]
        method = "PUT" if where in ("tenant", "bad-id") else "POST"
        response = stack.manage(method, path, data=raw, headers={"Content-Type": "application/json"})
        assert response.status_code != 500, response.text
        if response.status_code >= 400:
            assert response.headers["Content-Type"].split(";")[0] == "application/problem+json", response.text
            problem = response.json()
            assert problem["status"] == response.status_code and problem["detail"], problem
        else:
            assert response.status_code in (200, 201), response.text

    run()
