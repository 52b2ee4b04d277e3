"""How the proxy talks HTTP to providers: async keep-alive pools, safe retries, a deadline per answer,
and bodies read as a stream with a size bound.

aiohttp, chosen by measurement against httpx on the same loopback provider (docs/streaming.md): its
C parser costs a fraction of httpx's CPU per exchange. One connector serves every provider, with a
keep-alive pool per provider origin (`limit_per_host`), so one slow hospital cannot take another's
connections. No proxy or netrc from the environment (`trust_env=False`): the route names the host.

* **A deadline for the answer.** Connecting, every retry and the first bytes of the body
  (`HEAD_BYTES`, or the whole body where the caller needs it whole) must arrive within connect +
  read timeout, or the answer is a 504. After that, each further chunk must come within the read
  timeout; a streamed answer that stalls is cut off (see `Upstream.rest`).
* **Retries only where they are safe.** A GET is retried (UPSTREAM_RETRIES times) when the
  connection could not be made, when it broke before any response byte arrived, or on
  502/503/504. A read timeout is never retried (it would multiply the wait), nor anything once a
  status line arrived, nor a POST (`_search`, batch) after its request may have reached the
  provider; a POST whose connection could not even be opened is retried like a GET.
* **Size.** A declared Content-Length over the limit is refused before any body is read; a body
  that grows past it is refused while it is read (502 before the status is committed, a cut-off
  connection after).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import certifi

from shared import telemetry
from shared.audit import Audit
from shared.errors import FhirError

HEAD_BYTES = 64 * 1024  # read before the status is committed: small answers are whole by then
_RETRY_STATUS = (502, 503, 504)
_BACKOFF_SECONDS = 0.2


class UpstreamCutOff(Exception):
    """A streamed answer failed after its status went out: the only honest signal left is to abort
    the client's connection, so this propagates to the host instead of becoming a response."""


def _too_large() -> FhirError:
    return FhirError(502, "too-costly", "the provider's response exceeds the gateway's size limit")


def _too_slow() -> FhirError:
    return FhirError(504, "timeout", "the provider did not answer in time")


def _broken() -> FhirError:
    return FhirError(502, "transient", "the provider could not be reached or broke the connection")


@dataclass
class Upstream:
    """A provider's answer: status, headers (lower-case names), the first bytes of the body, and the
    rest still on the wire unless `complete`."""

    status: int
    headers: dict[str, str]
    head: bytes
    complete: bool = True
    _response: aiohttp.ClientResponse | None = field(default=None, repr=False)
    _limit: int = 0
    _read_timeout: float = 0.0

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    async def rest(self) -> AsyncIterator[bytes]:
        """The body after `head`, chunk by chunk as it arrives; the connection goes back to the pool
        only if the body was read to its end."""
        response, size = self._response, len(self.head)
        if response is None:
            return
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout):
                        chunk = await response.content.readany()
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise UpstreamCutOff("the provider stalled or broke the connection mid-answer") from exc
                if not chunk:
                    return
                size += len(chunk)
                if size > self._limit:
                    raise UpstreamCutOff("the provider's answer grew past the gateway's size limit")
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Give the connection back (body fully read) or drop it (body left on the wire)."""
        response, self._response = self._response, None
        if response is None:
            return
        if response.content.at_eof():
            response.release()
        else:
            response.close()


class ProviderClient:
    """One per process, shared by every tenant: the pools live as long as the event loop."""

    def __init__(self, connect_timeout: float, read_timeout: float, retries: int, size_limit: int) -> None:
        self._connect, self._read, self._retries = connect_timeout, read_timeout, retries
        self.size_limit = size_limit
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl = ssl.create_default_context(cafile=certifi.where())

    def _client(self) -> aiohttp.ClientSession:
        """Sessions belong to one event loop; the host runs one, but a test may run several in turn."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=64, ssl=self._ssl, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect, sock_read=self._read))
            # aiohttp silently re-sends an idempotent request once when the connection breaks; the
            # retry policy must be this module's alone (attempts are counted in the fault tests).
            # No public switch exists in the pinned 3.14; tests/test_provider_faults.py fails if it moves.
            self._session._retry_connection = False
            self._loop = loop
        return self._session

    async def exchange(self, method: str, url: str, headers: dict[str, str], data: bytes | None, audit: Audit,
                       *, whole: bool, limit: int | None = None) -> Upstream:
        """Send one request and read its answer's head (or whole body) within the deadline; transport
        failures come out as FhirError 504 (too slow) or 502 (broken), never as aiohttp's exceptions.
        One span per exchange (retries inside it); the provider gets that span as its `traceparent`."""
        limit = self.size_limit if limit is None else limit
        started = time.monotonic()
        headers = dict(headers)  # gets this exchange's own traceparent
        with telemetry.upstream_exchange(method, url, audit.tenant_id, headers) as traced:
            try:
                async with asyncio.timeout(self._connect + self._read):
                    response = await self._send(method, url, headers, data)
                    traced.answered(response.status)
                    try:
                        head, complete = await _read_head(response, limit, whole)
                    except BaseException:
                        response.close()  # a half-read answer never goes back into the pool
                        raise
            except TimeoutError as exc:
                traced.timed_out()
                raise _too_slow() from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise _broken() from exc
            finally:
                audit.add_upstream_time(time.monotonic() - started)
        if complete:
            response.release()
        return Upstream(response.status, {k.lower(): v for k, v in response.headers.items()}, head, complete,
                        None if complete else response, limit, self._read)

    async def _send(self, method: str, url: str, headers: dict[str, str], data: bytes | None
                    ) -> aiohttp.ClientResponse:
        session = self._client()
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = await session.request(method, url, headers=headers, data=data, allow_redirects=False)
            except aiohttp.ClientConnectorError:  # never connected: nothing was sent, any method may retry
                if last:
                    raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):  # broke before a status line
                if last or method != "GET":
                    raise
            else:
                if method != "GET" or last or response.status not in _RETRY_STATUS:
                    return response
                response.close()
            await asyncio.sleep(_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _read_head(response: aiohttp.ClientResponse, limit: int, whole: bool) -> tuple[bytes, bool]:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while whole or size < HEAD_BYTES:
        chunk = await response.content.readany()
        if not chunk:
            return b"".join(chunks), True
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks), False
