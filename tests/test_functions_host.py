"""devtools.functions_host as its users meet it: a subprocess on an ephemeral port, spoken to over HTTP.

Most tests share one host serving tests/host_fixture_app.py (HTTP streams functions: FastAPI
``Request`` in, Starlette ``Response`` out); settings, route prefixes, fail-closed keys, body limits
and shutdown need hosts of their own. Route validation and the plain-ASGI path use the Python API
directly.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
import requests
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

REPO = Path(__file__).resolve().parents[1]
FIXTURE_APP = "tests.host_fixture_app:app"
KEYS = "key-one, key-two"
GUID = "6f1c1c1e-1b1a-4c1b-9b1a-1a1b1c1d1e1f"
SMALL_BODY_LIMIT = 1000


@dataclass
class Host:
    base_url: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    stdout: Path
    stderr: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def host_env(**values: str) -> dict[str, str]:
    """The test's environment without any key or test variable of its own, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_FUNCTION_KEY" and not k.startswith("HOST_TEST_")}
    return env | values


def start_host(workdir: Path, *args: str, env: dict[str, str]) -> Host:
    """``python -m devtools.functions_host`` from the repo root; returns once its ready file exists."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready.json"
    stdout, stderr = workdir / "stdout.log", workdir / "stderr.log"
    command = [sys.executable, "-m", "devtools.functions_host", "--port", "0", "--ready-file", str(ready)]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=out, stderr=err)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"the host did not start:\n{stderr.read_text()}")
        time.sleep(0.05)
    return Host(json.loads(ready.read_text())["base_url"], process, ready, stdout, stderr)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = start_host(
        tmp_path_factory.mktemp("host"), "--app", FIXTURE_APP, env=host_env(LOCAL_FUNCTION_KEY=KEYS)
    )
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def keyless_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = start_host(tmp_path_factory.mktemp("keyless"), "--app", FIXTURE_APP, env=host_env())
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def small_body_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = start_host(
        tmp_path_factory.mktemp("small-body"), "--app", FIXTURE_APP,
        "--max-body-bytes", str(SMALL_BODY_LIMIT), env=host_env(),
    )
    yield running
    assert running.stop() == 0


def described(response: requests.Response) -> tuple[str, dict[str, str]]:
    """(function, route_params) from a fixture function's answer."""
    assert response.status_code == 200, response.text
    data = response.json()
    return data["function"], data["route_params"]


# --- startup ---------------------------------------------------------------------------------------


def test_ready_file_and_stdout_announce_the_bound_port(host: Host) -> None:
    line = host.ready_file.read_text().strip()
    info = json.loads(line)
    assert set(info) == {"base_url", "pid"}
    assert info["pid"] == host.process.pid
    port = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", info["base_url"])
    assert port and int(port[1]) > 0
    assert host.stdout.read_text().splitlines()[0] == line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path: Path, signum: int) -> None:
    running = start_host(tmp_path, "--app", FIXTURE_APP, env=host_env())
    assert requests.get(running.url("/api/echo"), timeout=5).status_code == 200
    assert running.stop(signum) == 0
    assert not running.ready_file.exists()
    assert "Traceback" not in running.log()


def test_sigterm_lets_a_request_in_progress_finish(tmp_path: Path) -> None:
    running = start_host(tmp_path, "--app", FIXTURE_APP, env=host_env())
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(requests.get, running.url("/api/slow"), timeout=5)
        time.sleep(0.2)  # the function is now sleeping its 0.5 s
        assert running.stop() == 0
        assert (pending.result().status_code, pending.result().content) == (200, b"done")


def test_functions_run_on_uvloop(host: Host) -> None:
    """uvicorn runs the configured uvloop rather than silently falling back to asyncio's loop."""
    assert requests.get(host.url("/api/echo"), timeout=5).json()["loop"].startswith("uvloop")


# --- routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "function", "route_params"),
    [
        ("/api/items/42", "by_int", {"id": "42"}),
        ("/api/items/-7", "by_int", {"id": "-7"}),
        ("/api/items/abc", "by_alpha", {"name": "abc"}),
        ("/api/items/%61bc", "by_alpha", {"name": "abc"}),
        ("/api/ITEMS/7", "by_int", {"id": "7"}),
        ("/api/items/7/", "by_int", {"id": "7"}),
        (f"/api/things/{GUID}", "by_guid", {"id": GUID}),
        (f"/api/things/{GUID.upper().replace('-', '')}", "by_guid", {"id": GUID.upper().replace("-", "")}),
        ("/api/codes/AB-12", "by_regex", {"code": "AB-12"}),
        ("/api/pages/10", "by_range", {"n": "10"}),
        ("/api/names/J%C3%BCrgen%20M%2FK", "by_name", {"name": "Jürgen M/K"}),
    ],
)
def test_route_parameters_and_constraints(host: Host, path: str, function: str, route_params: dict) -> None:
    assert described(requests.get(host.url(path), timeout=5)) == (function, route_params)


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/ab1",
        "/api/items/99999999999",  # beyond int (and not alpha)
        "/api/things/not-a-guid",
        f"/api/things/{GUID[:-1]}",
        "/api/codes/ABC-12",
        "/api/pages/0",
        "/api/pages/11",
        "/api/names/a/b",
        "/api/opt/x/y",
        "/api/items",
        "/api/nothing-here",
        "/items/42",
    ],
)
def test_paths_that_match_no_route_answer_404(host: Host, path: str) -> None:
    response = requests.get(host.url(path), timeout=5)
    assert (response.status_code, response.content) == (404, b"")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/opt", {}),
        ("/api/opt/", {}),
        ("/api/opt/x", {"name": "x"}),
    ],
)
def test_optional_parameter(host: Host, path: str, expected: dict) -> None:
    assert described(requests.get(host.url(path), timeout=5)) == ("optional", expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/files/a/b%20c/d%2Fe.json", {"path": "a/b c/d/e.json"}),
        ("/api/files/%F0%9F%98%80/z", {"path": "\N{GRINNING FACE}/z"}),
        ("/api/files/x", {"path": "x"}),
        ("/api/files", {}),
        ("/api/files/", {}),
    ],
)
def test_catch_all_takes_the_rest_of_the_path(host: Host, path: str, expected: dict) -> None:
    assert described(requests.get(host.url(path), timeout=5)) == ("files", expected)


@pytest.mark.parametrize(
    ("path", "function", "route_params"),
    [
        ("/api/p/lit/exact", "e_all_literal", {}),
        ("/api/P/Lit/EXACT", "e_all_literal", {}),
        ("/api/p/lit/other", "d_literal", {"y": "other"}),
        ("/api/p/5/z", "c_constrained", {"x": "5", "y": "z"}),
        ("/api/p/q/z", "b_param", {"x": "q", "y": "z"}),
        ("/api/p/q", "a_catch_all", {"rest": "q"}),
        ("/api/p/1/2/3", "a_catch_all", {"rest": "1/2/3"}),
    ],
)
def test_precedence_literal_beats_parameter_beats_catch_all(
    host: Host, path: str, function: str, route_params: dict
) -> None:
    assert described(requests.get(host.url(path), timeout=5)) == (function, route_params)


def test_overlapping_routes_are_reported_because_azure_does_not_rank_them(host: Host) -> None:
    requests.get(host.url("/api/p/lit/exact"), timeout=5)
    assert "routes of e_all_literal, d_literal, b_param, a_catch_all all match one request" in host.log()


def test_methods_filter_dispatches_or_answers_404(host: Host) -> None:
    assert described(requests.get(host.url("/api/methods"), timeout=5))[0] == "read_thing"
    assert described(requests.post(host.url("/api/methods"), timeout=5))[0] == "write_thing"
    assert described(requests.put(host.url("/api/methods"), timeout=5))[0] == "write_thing"
    for method in ("DELETE", "PATCH", "HEAD"):
        response = requests.request(method, host.url("/api/methods"), timeout=5)
        assert (response.status_code, response.content) == (404, b"")
    assert requests.delete(host.url("/api/echo"), timeout=5).status_code == 404


@pytest.mark.parametrize(
    ("path", "function"),
    [
        ("/api/default_route", "default_route"),
        ("/api/bp/hello", "from_blueprint"),
    ],
)
def test_default_route_and_blueprints(host: Host, path: str, function: str) -> None:
    assert described(requests.get(host.url(path), timeout=5))[0] == function


def test_non_http_functions_are_not_served(host: Host) -> None:
    assert requests.get(host.url("/api/hourly"), timeout=5).status_code == 404


@pytest.mark.parametrize(("prefix", "served_at"), [("v1", "/v1/hello"), ("", "/hello")])
def test_route_prefix_comes_from_host_json(tmp_path: Path, prefix: str, served_at: str) -> None:
    running = start_temp_app(tmp_path, host_json={"version": "2.0", "extensions": {"http": {"routePrefix": prefix}}})
    try:
        response = requests.get(running.url(served_at), timeout=5)
        assert response.status_code == 200
        assert response.json()["url"] == running.url(served_at)
        assert requests.get(running.url("/api/hello"), timeout=5).status_code == 404
    finally:
        assert running.stop() == 0


# --- requests and responses ------------------------------------------------------------------------


def test_raw_query_string_reaches_the_function_unchanged(host: Host) -> None:
    """Under HTTP streams the function parses the query itself: repeats, case and empty values survive."""
    query = "a=1&a=2&A=3&blank=&flag&sp=hello+world&enc=%26%3D%20"
    data = requests.get(host.url(f"/api/echo?{query}"), timeout=5).json()
    assert data["query"] == query
    assert data["query_items"] == [
        ["a", "1"], ["a", "2"], ["A", "3"], ["blank", ""], ["flag", ""], ["sp", "hello world"], ["enc", "&= "],
    ]
    assert data["url"] == host.url(f"/api/echo?{query}")


def test_body_and_headers_in_and_out(host: Host) -> None:
    body = b'{"resourceType": "Patient"}'
    headers = {"Content-Type": "application/fhir+json", "X-Custom": "v1"}
    response = requests.post(host.url("/api/echo"), data=body, headers=headers, timeout=5)
    assert response.status_code == 201
    assert response.headers["X-Echo"] == "yes"
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert (data["method"], data["body"]) == ("POST", body.decode())
    assert data["headers"]["x-custom"] == "v1"
    assert data["headers"]["content-type"] == "application/fhir+json"
    assert data["headers"]["host"] == host.base_url.removeprefix("http://")


def test_chunked_request_body_arrives_whole(host: Host) -> None:
    response = requests.put(host.url("/api/echo"), data=iter([b"ab", b"cd"]), timeout=5)
    assert response.json()["body"] == "abcd"


def test_starlette_responses_are_sent_as_built(host: Host) -> None:
    html = requests.get(host.url("/api/out/html"), timeout=5)
    assert html.status_code == 202
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert html.content == "<p>hällo</p>".encode()
    assert html.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    binary = requests.get(host.url("/api/out/binary"), timeout=5)
    assert (binary.headers["Content-Type"], binary.content) == ("application/octet-stream", bytes(range(256)))
    explicit = requests.get(host.url("/api/out/explicit"), timeout=5)
    assert explicit.headers["Content-Type"] == "application/fhir+json; charset=utf-8"


def test_exception_answers_500_with_an_empty_body_and_is_logged(host: Host) -> None:
    response = requests.get(host.url("/api/boom"), timeout=5)
    assert (response.status_code, response.content) == (500, b"")
    assert response.headers["Content-Length"] == "0"
    log = host.log()
    assert "function boom raised" in log
    assert "RuntimeError: exploded" in log


def test_result_that_is_not_a_starlette_response_answers_500(host: Host) -> None:
    response = requests.get(host.url("/api/not-a-response"), timeout=5)
    assert (response.status_code, response.content) == (500, b"")
    assert "function not_a_response returned str" in host.log()


# --- streams ---------------------------------------------------------------------------------------


def test_streaming_response_reaches_the_client_while_the_function_still_produces_it(host: Host) -> None:
    with requests.get(host.url("/api/stream/3"), stream=True, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        lines = response.iter_lines()
        # The function's generator is now blocked until released: these chunks left before it finished.
        assert [next(lines) for _ in range(3)] == [b"chunk 0", b"chunk 1", b"chunk 2"]
        assert requests.post(host.url("/api/stream-release"), timeout=5).status_code == 204
        assert list(lines) == [b"last"]


def test_exception_after_the_response_started_aborts_the_connection(host: Host) -> None:
    """A cleanly ended chunked body would let the client take a truncated answer for a complete one."""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(host.url("/api/stream-fails"), timeout=5)
    assert "function stream_fails raised after its response started; aborting the connection" in host.log()
    assert re.search(r"access: GET stream_fails 200 \d+\.\dms incomplete$", host.log(), re.MULTILINE)
    assert requests.get(host.url("/api/echo"), timeout=5).status_code == 200  # the host serves on


def test_request_client_is_the_socket_peer_even_with_a_forged_x_forwarded_for(host: Host) -> None:
    connection = http.client.HTTPConnection(host.base_url.removeprefix("http://"), timeout=5)
    try:
        connection.connect()
        peer = list(connection.sock.getsockname()[:2])
        forged = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil"}
        connection.request("GET", "/api/echo", headers=forged)
        data = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert data["client"] == peer
    assert data["url"] == host.url("/api/echo")  # neither scheme nor host taken from the forged headers
    # passed on with the socket peer appended, as Azure's front end does (the trusted, right-most hop)
    assert data["headers"]["x-forwarded-for"] == f"203.0.113.7, {peer[0]}:{peer[1]}"


# --- body size -------------------------------------------------------------------------------------


def test_declared_body_over_the_limit_answers_413_before_the_function_runs(small_body_host: Host) -> None:
    """write_thing answers 200 without reading the body, so a 413 can only come from the host."""
    url = small_body_host.url("/api/methods")
    assert requests.post(url, data=b"x" * SMALL_BODY_LIMIT, timeout=5).status_code == 200
    response = requests.post(url, data=b"x" * (SMALL_BODY_LIMIT + 1), timeout=5)
    assert (response.status_code, response.content) == (413, b"")


def test_chunked_body_over_the_limit_answers_413_while_it_is_received(small_body_host: Host) -> None:
    url = small_body_host.url("/api/body-size")
    with requests.Session() as session:
        within = session.post(url, data=iter([b"x" * 600, b"x" * 400]), timeout=5)
        assert within.json() == {"size": SMALL_BODY_LIMIT}
        over = session.post(url, data=iter([b"x" * 600, b"x" * 600, b"x" * 600]), timeout=5)
        assert (over.status_code, over.content) == (413, b"")
        assert session.post(url, data=b"after", timeout=5).json() == {"size": 5}
    assert "function body_size: request body over 1000 bytes" in small_body_host.log()


# --- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "query", "status"),
    [
        ("/api/secure/function", {}, "", 401),
        ("/api/secure/function", {"x-functions-key": "wrong"}, "", 401),
        ("/api/secure/function", {}, "?code=wrong", 401),
        ("/api/secure/function", {"x-functions-key": "key-one"}, "", 200),
        ("/api/secure/function", {}, "?code=key-two", 200),
        ("/api/secure/function", {}, "?CODE=key-two", 200),
        ("/api/secure/function", {"x-functions-key": "wrong"}, "?code=key-one", 401),  # the header wins
        ("/api/secure/admin", {}, "", 401),
        ("/api/secure/admin", {"x-functions-key": "key-two"}, "", 200),
        ("/api/echo", {}, "", 200),
    ],
)
def test_auth_levels(host: Host, path: str, headers: dict, query: str, status: int) -> None:
    response = requests.get(host.url(path + query), headers=headers, timeout=5)
    assert response.status_code == status
    if status == 401:
        assert response.content == b""


def test_code_parameter_is_passed_on_to_the_function(host: Host) -> None:
    response = requests.get(host.url("/api/secure/function?code=key-one&x=1"), timeout=5)
    assert response.json()["query"] == "code=key-one&x=1"


@pytest.mark.parametrize(
    ("headers", "query"), [({}, ""), ({"x-functions-key": "key-one"}, ""), ({}, "?code=anything")]
)
@pytest.mark.parametrize("path", ["/api/secure/function", "/api/secure/admin"])
def test_without_a_configured_key_function_and_admin_fail_closed(
    keyless_host: Host, path: str, headers: dict, query: str
) -> None:
    response = requests.get(keyless_host.url(path + query), headers=headers, timeout=5)
    assert (response.status_code, response.content) == (401, b"")


def test_without_a_configured_key_anonymous_functions_still_answer(keyless_host: Host) -> None:
    assert requests.get(keyless_host.url("/api/echo"), timeout=5).status_code == 200
    assert "LOCAL_FUNCTION_KEY is not set" in keyless_host.log()


# --- settings --------------------------------------------------------------------------------------

TEMP_APP = """
import os

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

AT_IMPORT = os.environ.get("HOST_TEST_FROM_SETTINGS")
NAMES = ("HOST_TEST_FROM_SETTINGS", "HOST_TEST_PRESET", "HOST_TEST_EMPTY", "HOST_TEST_EMPTY_IN_ENV")
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
async def hello(req: Request) -> Response:
    env = {name: os.environ.get(name) for name in NAMES}
    return JSONResponse({"url": str(req.url), "at_import": AT_IMPORT, "env": env})
"""


def start_temp_app(
    tmp_path: Path, *, host_json: dict | None = None, settings: dict | None = None, **env: str
) -> Host:
    """An app in a directory of its own (with its own host.json and local.settings.json)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "temp_app.py").write_text(TEMP_APP)
    for name, content in (("host.json", host_json), ("local.settings.json", settings)):
        if content is not None:
            (app_dir / name).write_text(json.dumps(content))
    environment = host_env(PYTHONPATH=str(app_dir), **env)
    return start_host(tmp_path / "run", "--app", "temp_app:app", env=environment)


def test_local_settings_values_load_before_import_without_overriding_the_environment(tmp_path: Path) -> None:
    values = {
        "HOST_TEST_FROM_SETTINGS": "from-file",
        "HOST_TEST_PRESET": "from-file",
        "HOST_TEST_EMPTY": "",
        "HOST_TEST_EMPTY_IN_ENV": "from-file",
    }
    running = start_temp_app(
        tmp_path,
        settings={"IsEncrypted": False, "Values": values},
        HOST_TEST_PRESET="from-env",
        HOST_TEST_EMPTY="",
        HOST_TEST_EMPTY_IN_ENV="",
    )
    try:
        data = requests.get(running.url("/api/hello"), timeout=5).json()
    finally:
        assert running.stop() == 0
    assert data["at_import"] == "from-file"
    assert data["env"] == {
        "HOST_TEST_FROM_SETTINGS": "from-file",
        "HOST_TEST_PRESET": "from-env",  # a non-empty environment variable wins
        "HOST_TEST_EMPTY": None,  # func start leaves a variable with an empty value unset
        "HOST_TEST_EMPTY_IN_ENV": "from-file",  # an empty environment variable does not win
    }


def test_settings_option_can_supply_the_function_key(tmp_path: Path) -> None:
    settings = tmp_path / "elsewhere.settings.json"
    settings.write_text(json.dumps({"Values": {"LOCAL_FUNCTION_KEY": "from-settings"}}))
    running = start_host(tmp_path / "run", "--app", FIXTURE_APP, "--settings", str(settings), env=host_env())
    try:
        url = running.url("/api/secure/function")
        assert requests.get(url, headers={"x-functions-key": "from-settings"}, timeout=5).status_code == 200
        assert requests.get(url, headers={"x-functions-key": "key-one"}, timeout=5).status_code == 401
    finally:
        assert running.stop() == 0


# --- serving ---------------------------------------------------------------------------------------


def test_requests_are_served_concurrently(host: Host) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: requests.get(host.url("/api/slow"), timeout=10).status_code, range(8)))
    assert statuses == [200] * 8
    assert time.monotonic() - started < 2.5  # one at a time would take 4 s


def test_keep_alive_reuses_one_connection(host: Host) -> None:
    with requests.Session() as session:
        for _ in range(5):
            response = session.get(host.url("/api/echo"), timeout=5)
            assert response.status_code == 200
            assert response.raw.version == 11
        pools = session.get_adapter(host.base_url).poolmanager.pools
        (key,) = pools.keys()  # one pool; the container refuses plain iteration
        assert pools[key].num_connections == 1


def test_access_log_has_one_line_per_request_and_no_secrets(host: Host) -> None:
    requests.post(
        host.url("/api/echo?code=SECRET-QUERY"),
        headers={"X-Patient": "SECRET-HEADER"},
        data=b"SECRET-BODY",
        timeout=5,
    )
    requests.get(host.url("/api/nothing/SECRET-PATH-404"), timeout=5)
    lines = [line for line in host.log().splitlines() if "devtools.functions_host.access" in line]
    assert any(re.search(r"access: POST echo 201 \d+\.\dms$", line) for line in lines)
    assert any(re.search(r"access: GET - 404 \d+\.\dms$", line) for line in lines)
    for secret in ("SECRET-QUERY", "SECRET-HEADER", "SECRET-BODY", "SECRET-PATH"):
        assert secret not in host.log()


# --- Python API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def functions_host() -> Iterator[ModuleType]:
    """The module under test; pytest does not put the repo root on sys.path by itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO))
        yield importlib.import_module("devtools.functions_host")


def app_with_route(route: str) -> func.FunctionApp:
    """A fresh app each time: a FunctionApp's get_functions() runs only once."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route=route)
    async def only(req: Request) -> Response:
        return JSONResponse({"route_params": dict(req.path_params), "url": str(req.url)})

    return app


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("admin/things", "reserved"),
        ("administration", "reserved"),
        ("x/{id:float}", "unsupported route constraint"),
        ("x/{id:range(1)}", "unsupported route constraint"),
        ("x/{*rest}/y", "catch-all"),
        ("x/{a?}/{b}", "optional"),
        ("x/{a}/{a}", "more than once"),
        ("x/file.{ext}", "unsupported segment"),
        ("x//y", "empty path segment"),
    ],
)
def test_routes_azure_would_refuse_are_refused(functions_host: ModuleType, route: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        functions_host.build_asgi_app(app_with_route(route), "api", function_keys=[])


def test_functions_that_are_not_async_are_refused(functions_host: ModuleType) -> None:
    """They would block the host's one event loop, and every other request with it."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="sync")
    def blocking(req: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="function blocking: must be 'async def'"):
        functions_host.build_asgi_app(app, "api", function_keys=[])


def test_python_api_is_a_plain_asgi_app(functions_host: ModuleType) -> None:
    """Without a server's raw_path the decoded path is used; keys can be given directly."""
    asgi_app = functions_host.build_asgi_app(app_with_route("x/{name}"), "", function_keys=["k"])
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("testhost", 80),
        "path": "/x/ä b",
        "query_string": b"code=k",
        "headers": [],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asgi_app(scope, receive, send))
    assert sent[0]["status"] == 200
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert json.loads(body)["route_params"] == {"name": "ä b"}
