"""How the proxy talks HTTP to providers: keep-alive pools, safe retries, and a deadline per answer.

urllib3 directly, one pool per provider origin, not a `requests` Session: a Session's per-call
preparation and setting merges cost more CPU than the whole HTTP exchange, and were the largest
part of the proxy's hop (bench/, README "Performance"). The wire stays what it was with
requests: the same default headers, origin-form targets, gzip/deflate decoded, certifi's CAs.

Two things urllib3 does not give on its own:

* A deadline for the whole answer. A read timeout bounds each socket read, so a provider that
  drips a byte per second (headers or body) could hold a worker for ever. Every upstream
  exchange runs under `bounded_exchange(seconds)`: a single watchdog thread shuts the exchange's
  socket down when its deadline passes, which ends whatever read is blocked on it, and the
  failure is reported as a 504.
* Retries only where they are safe. A GET is retried (UPSTREAM_RETRIES times) when the connection
  could not be made, when it broke before any response byte arrived (a stale keep-alive
  connection, a reset), or on 502/503/504. A read timeout is never retried (it would multiply the
  wait), nor anything once response headers arrived (the body is read outside the retry loop),
  nor any POST (`_search`, batch) after its request may have reached the provider.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import certifi
from requests.utils import default_headers
from urllib3 import BaseHTTPResponse, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from shared.errors import FhirError

_current = threading.local()
_DEFAULT_HEADERS = dict(default_headers())  # User-Agent, Accept-Encoding, Accept, Connection


class Exchange:
    """One upstream request/answer; its socket is shut down if the answer is not in by the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._sock: socket.socket | None = None
        self._done = False
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            late = self.expired
        if late:
            _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sock = self._sock
        _shutdown(sock)

    def finish(self) -> None:
        """Called before the connection goes back to the pool: the watchdog must not touch it then."""
        with self._lock:
            self._done = True
            self._sock = None

    @property
    def finished(self) -> bool:
        return self._done


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to interrupt
            sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for every deadline in the process (a heap, not a timer thread per request)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, exchange: Exchange) -> None:
        with self._cond:
            heapq.heappush(self._heap, (exchange.deadline, next(self._order), exchange))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="upstream-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is exchange:  # else the thread already wakes earlier than this deadline
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, exchange = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0 and not exchange.finished:  # finished ones go at once: one wake-up, not one each
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            exchange.expire()


_WATCHDOG = _Watchdog()


def _attach_current(sock: socket.socket | None) -> None:
    exchange: Exchange | None = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:  # the request is out; from here until the body is read, the deadline rules
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _SafeRetry(Retry):
    """Read errors are retried only when no response arrived (ProtocolError: the connection was
    aborted, reset or closed before the status line); a read timeout counts as an "other" error,
    which is never retried. Nothing is retried once the exchange's deadline has passed."""

    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)

    def increment(self, *args: Any, **kwargs: Any) -> Any:
        exchange: Exchange | None = getattr(_current, "exchange", None)
        if exchange is not None and exchange.expired:  # Retry's own increment on an exhausted copy: it gives up
            return Retry.increment(self.new(total=0, connect=0, read=0, status=0, other=0), *args, **kwargs)
        return super().increment(*args, **kwargs)


def new_pool(origin: str, retries: int) -> HTTPConnectionPool:
    """A keep-alive pool for one provider origin (scheme://host:port), with the safe retry policy.
    No proxy or netrc from the environment: the route names the host."""
    retry = _SafeRetry(total=retries, connect=retries, read=retries, status=retries, other=0, redirect=0,
                       status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}), backoff_factor=0.2,
                       raise_on_status=False, respect_retry_after_header=False)
    url = parse_url(origin)
    if url.scheme == "https":
        return _WatchedHTTPSPool(url.host, url.port, maxsize=64, retries=retry, cert_reqs="CERT_REQUIRED",
                                 ca_certs=certifi.where())
    return _WatchedPool(url.host, url.port, maxsize=64, retries=retry)


@contextmanager
def request(pool: HTTPConnectionPool, method: str, url: str, headers: dict[str, str], body: bytes | None,
            timeout: tuple[float, float]) -> Iterator[BaseHTTPResponse]:
    """One request whose body the caller streams; a body left unread closes the connection, so
    no half-read answer goes back into the pool."""
    response = pool.urlopen(method, parse_url(url).request_uri, body=body, headers={**_DEFAULT_HEADERS, **headers},
                            timeout=Timeout(connect=timeout[0], read=timeout[1]), redirect=False,
                            assert_same_host=False, preload_content=False, decode_content=False)
    try:
        yield response
    except BaseException:
        response.close()
        raise
    finally:
        response.release_conn()


@contextmanager
def bounded_exchange(seconds: float) -> Iterator[Exchange]:
    """Run one upstream exchange (all its attempts and its body) within `seconds`; transport
    failures come out as FhirError 504 (too slow) or 502 (broken), never as urllib3's exceptions."""
    exchange = Exchange(time.monotonic() + seconds)
    _current.exchange = exchange
    _WATCHDOG.watch(exchange)
    try:
        yield exchange
        if exchange.expired:  # cut off mid-answer: what arrived may even parse (a bare status line)
            raise FhirError(504, "timeout", "the provider did not answer in time")
    except (HTTPError, OSError) as exc:
        if exchange.expired or _timed_out(exc):
            raise FhirError(504, "timeout", "the provider did not answer in time") from exc
        raise FhirError(502, "transient", "the provider could not be reached or broke the connection") from exc
    finally:
        exchange.finish()
        _current.exchange = None


def _timed_out(exc: BaseException) -> bool:
    """A timeout anywhere in the chain urllib3 wraps it in (MaxRetryError.reason, args, causes)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ReadTimeoutError | socket.timeout):
            return True
        if isinstance(item, ConnectTimeoutError) and not isinstance(item, NewConnectionError):
            return True
        todo += [getattr(item, "reason", None), item.__cause__, item.__context__, *item.args]
    return False
