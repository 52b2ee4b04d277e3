"""A misbehaving provider must cost the gateway a bounded time and nothing else (issue #7).

The provider here is `devtools/faulty_provider.py`: real HTTP on 127.0.0.1, one base URL per fault,
one tenant per fault. For each fault the gateway answers the documented OperationOutcome (504 when
the provider is too slow, 502 for everything else it cannot use) within its read timeout plus a
small margin; it retries only where that is safe (a GET that got 502/503/504 or could not connect;
never a POST _search, never once part of the answer arrived), which the provider's own request
count proves; afterwards no gateway thread is left behind and the gateway answers at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import assert_operation_outcome, start_stack
from tests.reliability import (
    Consumer,
    bearer,
    clear_provider_log,
    gateway_pid,
    provider_log,
    settle_threads,
    start_faulty_provider,
    thread_count,
)

READ_TIMEOUT = 1          # UPSTREAM_READ_TIMEOUT_SECONDS of this module's gateway
CONNECT_TIMEOUT = 1       # UPSTREAM_CONNECT_TIMEOUT_SECONDS
BUDGET = CONNECT_TIMEOUT + READ_TIMEOUT  # the most one upstream answer may take (docs/operations.md)
RETRIES = 2               # UPSTREAM_RETRIES (the default)
MARGIN = 1.0              # what the gateway may take beyond its budget (retry back-off, scheduling)
SIZE_LIMIT = 8 * 1024 * 1024
# The batch pool is shared and bounded; an idle thread it adds is not a leak. Anything stuck on a
# provider would pile up far beyond this.
POOL_SLACK = 6


class Faults:
    def __init__(self, stack: Stack, root: str, consumer: Consumer) -> None:
        self.stack, self.root, self.consumer = stack, root, consumer
        self.fhir = stack.facts["fhir_base_urls"]["stu3"]
        self._tokens: dict[str, str] = {}

    def provider(self, mode: str) -> str:
        return f"{self.root}/{mode}/fhir"

    def headers(self, mode: str) -> dict[str, str]:
        if mode not in self._tokens:
            tenant = self.consumer.onboard(self.provider(mode))
            self._tokens[mode] = self.consumer.token(tenant)
        return bearer(self._tokens[mode])

    def requests_seen(self, mode: str) -> list[dict[str, Any]]:
        return [r for r in provider_log(self.provider(mode)) if r["mode"] == mode]

    def call(self, mode: str, method: str = "GET", path: str = "Patient", **kwargs: Any) -> tuple[requests.Response,
                                                                                                   float]:
        headers = {**self.headers(mode), **kwargs.pop("headers", {})}
        clear_provider_log(self.provider(mode))
        started = time.monotonic()
        response = requests.request(method, f"{self.fhir}/{path}" if path else self.fhir, headers=headers,
                                    timeout=READ_TIMEOUT * 10, **kwargs)
        return response, time.monotonic() - started


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    stack = start_stack(Path(tmp_path_factory.mktemp("faults")), UPSTREAM_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
                        UPSTREAM_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT),
                        MAX_UPSTREAM_RESPONSE_BYTES=str(SIZE_LIMIT))
    try:
        root = start_faulty_provider(stack, "--delay", str(READ_TIMEOUT * 3), "--drip-interval", "0.25",
                                     "--drip-bytes", "120")
        yield Faults(stack, root, Consumer(stack))
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def baseline_threads(faults: Faults) -> int:
    """The gateway's threads once warm: one plain request and one batch through the healthy mode."""
    response, _ = faults.call("ok")
    assert response.status_code == 200, response.text
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "Patient"}} for _ in range(3)]}
    assert faults.call("ok", "POST", "", json=batch)[0].status_code == 200
    return thread_count(gateway_pid(faults.stack))


# (mode, method, status, issue code, provider requests the gateway may make: retries included)
GET_CASES = [
    ("delay", 504, "timeout", 1),
    ("drip-body", 504, "timeout", 1),
    ("drip-headers", 504, "timeout", 1),
    ("reset-before", 502, None, 1 + RETRIES),   # no response byte arrived: a GET may be sent again
    ("reset-mid-body", 502, None, 1),
    ("truncated-body", 502, None, 1),
    ("truncated-json", 502, None, 1),
    ("non-json", 502, None, 1),
    ("huge", 502, "too-costly", 1),
    *((f"status-500-{kind}", 502, None, 1) for kind in ("json", "html", "empty")),
    *((f"status-{code}-{kind}", 502, None, 1 + RETRIES) for code in (502, 503, 504)
      for kind in ("json", "html", "empty")),
]


def test_a_chunked_answer_growing_past_the_size_limit_is_cut_off(faults: Faults, baseline_threads: int) -> None:
    """No Content-Length to refuse it by: its status went out with its first bytes (streaming,
    docs/streaming.md), so the gateway aborts the connection at the limit and the client never
    gets a complete-looking body."""
    headers = faults.headers("huge-chunked")
    started = time.monotonic()
    with requests.get(f"{faults.fhir}/Patient", headers=headers, stream=True, timeout=READ_TIMEOUT * 10) as response:
        assert response.status_code == 200
        received = 0
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(256 * 1024):
                received += len(chunk)
    assert received <= SIZE_LIMIT
    assert time.monotonic() - started <= BUDGET + MARGIN
    assert len(faults.requests_seen("huge-chunked")) == 1


@pytest.mark.parametrize(("mode", "status", "code", "attempts"), GET_CASES, ids=[c[0] for c in GET_CASES])
def test_a_faulty_get_answers_an_operation_outcome_in_time(faults: Faults, baseline_threads: int, mode: str,
                                                           status: int, code: str | None, attempts: int) -> None:
    response, elapsed = faults.call(mode, params={"_count": "2"})
    assert_operation_outcome(response, status, code)
    assert response.headers.get("Cache-Control") == "no-store"
    assert elapsed <= BUDGET + MARGIN, f"{mode}: answered after {elapsed:.1f} s"
    assert len(faults.requests_seen(mode)) == attempts, f"{mode}: retried unsafely or not at all"
    assert settle_threads(gateway_pid(faults.stack), baseline_threads) <= baseline_threads + POOL_SLACK


@pytest.mark.parametrize("mode", ["status-503-json", "status-502-empty", "reset-before", "reset-mid-body", "delay"])
def test_a_post_search_is_never_retried(faults: Faults, baseline_threads: int, mode: str) -> None:
    response, elapsed = faults.call(mode, "POST", "Patient/_search", data={"family": "x"})
    assert response.status_code in (502, 504), response.text
    assert elapsed <= BUDGET + MARGIN
    seen = faults.requests_seen(mode)
    assert [(r["method"], r["path"]) for r in seen] == [("POST", "/Patient/_search")]


def test_a_read_is_retried_on_503_then_answered_from_the_provider(faults: Faults) -> None:
    response, _ = faults.call("status-503-json", path="Patient/p1")
    assert response.status_code == 502
    assert [r["path"] for r in faults.requests_seen("status-503-json")] == ["/Patient/p1"] * (1 + RETRIES)


@pytest.mark.parametrize("mode", ["delay", "drip-body", "reset-mid-body", "status-503-empty"])
def test_a_batch_of_faulty_entries_fails_entry_by_entry_within_the_timeout(faults: Faults, baseline_threads: int,
                                                                           mode: str) -> None:
    """Entries run in parallel: three slow entries cost one timeout, not three; each says what failed."""
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": f"Patient?_count={n}"}} for n in (1, 2, 3)]}
    response, elapsed = faults.call(mode, "POST", "", json=batch)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == 3
    for entry in entries:
        assert entry["response"]["status"][:3] in ("502", "504"), entry
        assert entry["resource"]["resourceType"] == "OperationOutcome"
    assert elapsed <= BUDGET + MARGIN
    assert settle_threads(gateway_pid(faults.stack), baseline_threads) <= baseline_threads + POOL_SLACK


def test_the_gateway_is_healthy_and_quick_right_after_the_faults(faults: Faults, baseline_threads: int) -> None:
    """Runs after the fault cases above: no worker is stuck, 24 requests at once all answer promptly."""
    health = requests.get(f"{faults.stack.facts['gateway_base_url']}/api/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    headers = faults.headers("ok")

    def one(_: int) -> tuple[int, float]:
        started = time.monotonic()
        status = requests.get(f"{faults.fhir}/Patient", headers=headers, timeout=10).status_code
        return status, time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(24)))
    assert [s for s, _ in results] == [200] * 24
    assert time.monotonic() - started < BUDGET
    assert settle_threads(gateway_pid(faults.stack), baseline_threads) <= baseline_threads + POOL_SLACK
