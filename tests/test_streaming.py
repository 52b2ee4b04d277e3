"""The streaming, asynchronous data path (issue #12): answers flow through, memory stays flat, batches
are bounded per batch, per tenant, in time and in size.

The provider is `devtools/faulty_provider.py` on 127.0.0.1: `stream` sends a real searchset Bundle
in chunks with a pause after the first ~256 KiB, `stream-reset` resets the connection at that
point, `slow` answers after a short delay and logs when each request started and ended.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools.stack import Stack
from tests.gateway_calls import assert_operation_outcome, start_stack
from tests.reliability import Consumer, bearer, clear_provider_log, gateway_pid, provider_log, start_faulty_provider

PAUSE = 1.5                    # the provider's pause inside a streamed Bundle (--stream-pause)
SLOW = 0.3                     # the slow mode's delay per request (--slow-delay)
TENANT_CONCURRENCY = 8
BATCH_DEADLINE = 3
BATCH_MAX_BYTES = 512 * 1024
ENTRY_BYTES = 530              # about one stream-mode entry


class Rig:
    def __init__(self, stack: Stack, root: str) -> None:
        self.stack, self.root = stack, root
        self.consumer = Consumer(stack, "Streaming test client")
        self.fhir = stack.facts["fhir_base_urls"]["stu3"]
        self._tokens: dict[str, str] = {}

    def provider(self, mode: str) -> str:
        return f"{self.root}/{mode}/fhir"

    def headers(self, mode: str, tenant: str = "a") -> dict[str, str]:
        key = f"{mode}/{tenant}"
        if key not in self._tokens:
            self._tokens[key] = self.consumer.token(self.consumer.onboard(self.provider(mode)))
        return bearer(self._tokens[key])

    def batch(self, mode: str, urls: list[str], tenant: str = "a", timeout: float = 60) -> requests.Response:
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"request": {"method": "GET", "url": url}} for url in urls]}
        return requests.post(self.fhir, json=bundle, headers=self.headers(mode, tenant), timeout=timeout)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    stack = start_stack(Path(tmp_path_factory.mktemp("streaming")), TENANT_CONCURRENCY=str(TENANT_CONCURRENCY),
                        BATCH_DEADLINE_SECONDS=str(BATCH_DEADLINE), BATCH_MAX_RESPONSE_BYTES=str(BATCH_MAX_BYTES),
                        MAX_UPSTREAM_RESPONSE_BYTES=str(400 * 1024 * 1024))
    try:
        root = start_faulty_provider(stack, "--stream-pause", str(PAUSE), "--slow-delay", str(SLOW))
        yield Rig(stack, root)
    finally:
        stack.stop()


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark (VmHWM): it only grows, so a delta bounds the extra memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def stream_through(rig: Rig, entries: int) -> tuple[float, float, bytes]:
    """(seconds to the first body byte, seconds to the end, body) for a streamed search."""
    started = time.monotonic()
    with requests.get(f"{rig.fhir}/Patient", params={"_count": str(entries)}, headers=rig.headers("stream"),
                      stream=True, timeout=60) as response:
        assert response.status_code == 200, response.text
        chunks = response.iter_content(64 * 1024)
        first = next(chunks)
        first_at = time.monotonic() - started
        body = first + b"".join(chunks)
    return first_at, time.monotonic() - started, body


def test_the_first_bytes_of_a_large_bundle_arrive_before_the_provider_has_sent_it_all(rig: Rig) -> None:
    clear_provider_log(rig.provider("stream"))
    first_at, total, body = stream_through(rig, 4000)
    assert first_at < PAUSE * 0.8, f"first byte after {first_at:.2f} s: the answer was buffered"
    assert total >= PAUSE
    bundle = json.loads(body)
    assert len(bundle["entry"]) == 4000
    gateway_base = rig.fhir
    assert all(e["fullUrl"].startswith(f"{gateway_base}/Patient/") for e in bundle["entry"])
    assert all(e["resource"]["link"][0]["other"]["reference"].startswith(gateway_base) for e in bundle["entry"])
    assert rig.root.encode() not in body
    assert [r["mode"] for r in provider_log(rig.provider("stream"))].count("stream-end") == 1


def test_the_gateways_memory_stays_flat_as_the_bundle_grows(rig: Rig) -> None:
    pid = gateway_pid(rig.stack)
    stream_through(rig, 1000)  # warm: pools, buffers, the allocator
    extra = {}
    for megabytes in (6, 60):
        before = peak_rss_mb(pid)
        _, _, body = stream_through(rig, megabytes * 1024 * 1024 // ENTRY_BYTES)
        assert len(body) >= megabytes * 1024 * 1024 * 0.9
        extra[megabytes] = peak_rss_mb(pid) - before
    assert extra[60] <= 20, f"peak RSS grew {extra[60]:.1f} MB for a 60 MB Bundle"
    assert extra[60] <= extra[6] + 10, extra


def test_a_provider_failing_mid_body_aborts_the_clients_connection(rig: Rig) -> None:
    """Status and headers are out by then; finishing the chunked body would pass a truncated Bundle
    off as complete, so the gateway cuts the connection instead (docs/streaming.md)."""
    with requests.get(f"{rig.fhir}/Patient", params={"_count": "4000"}, headers=rig.headers("stream-reset"),
                      stream=True, timeout=30) as response:
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(response.iter_content(64 * 1024))


def test_a_small_answer_is_still_checked_whole_before_its_status_is_sent(rig: Rig) -> None:
    response = requests.get(f"{rig.fhir}/Patient", params={"_count": "3"}, headers=rig.headers("ok"), timeout=30)
    assert response.status_code == 200 and "Content-Length" in response.headers
    assert len(response.json()["entry"]) == 3


def test_one_tenants_slow_batches_hold_at_most_its_share_and_never_delay_another_tenant(rig: Rig) -> None:
    clear_provider_log(rig.provider("slow"))
    rig.headers("slow", "a"), rig.headers("ok", "b")  # tokens first, outside the timed part
    answers: list[requests.Response] = []
    batches = [threading.Thread(target=lambda: answers.append(rig.batch("slow", ["Patient"] * 10)))
               for _ in range(4)]
    for thread in batches:
        thread.start()
    time.sleep(0.3)
    other = []
    for _ in range(10):
        started = time.monotonic()
        response = requests.get(f"{rig.fhir}/Patient", headers=rig.headers("ok", "b"), timeout=30)
        other.append(time.monotonic() - started)
        assert response.status_code == 200
    for thread in batches:
        thread.join()
    assert max(other) < SLOW, f"tenant b waited {max(other):.2f} s behind tenant a's batches"
    spans = [(r["start"], r["end"]) for r in provider_log(rig.provider("slow")) if r["mode"] == "slow-span"]
    assert len(spans) == 40
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most <= TENANT_CONCURRENCY, f"{most} of one tenant's entries ran at once"
    assert all(a.status_code == 200 for a in answers)


def test_a_batch_past_its_deadline_answers_late_entries_504_in_order(rig: Rig) -> None:
    started = time.monotonic()
    response = rig.batch("slow", [f"Patient/p{i}" for i in range(100)])
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert len(entries) == 100 and elapsed < BATCH_DEADLINE + 2
    statuses = [e["response"]["status"][:3] for e in entries]
    assert statuses[0] == "200" and statuses[-1] == "504" and set(statuses) == {"200", "504"}
    answered = [(i, e["resource"]) for i, e in enumerate(entries) if e["response"]["status"].startswith("200")]
    assert all(resource["id"] == f"p{i}" for i, resource in answered), "in request order"
    late = entries[-1]["resource"]
    assert late["resourceType"] == "OperationOutcome" and late["issue"][0]["code"] == "timeout"


def test_a_batch_response_never_exceeds_its_size_cap(rig: Rig) -> None:
    response = rig.batch("ok", ["Patient?_count=2000"] * 10)
    assert response.status_code == 200
    assert len(response.content) <= BATCH_MAX_BYTES
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert "200" in statuses and statuses[-1] == "502"
    capped = response.json()["entry"][-1]["resource"]["issue"][0]
    assert capped["code"] == "too-costly"


def test_a_batch_is_refused_before_any_entry_runs_when_it_is_malformed(rig: Rig) -> None:
    response = requests.post(rig.fhir, data=b'{"resourceType":"Bundle","type":"batch","entry":{"request":{}}}',
                             headers={**rig.headers("ok"), "Content-Type": "application/fhir+json"}, timeout=30)
    assert_operation_outcome(response, 400, "invalid")
