"""Fakes of what shared/upstream_auth talks to besides Key Vault (tests/fakes.py has that): an OAuth
token endpoint behind `requests.Session.post`, and an azure-identity credential.

Both record what the gateway sent, so a unit test can prove the wire form (Basic or form-body
client authentication, no redirects followed, the scope asked for) without a server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

Answer = Callable[[dict[str, str], dict[str, str]], tuple[int, bytes]]


def json_body(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


@dataclass
class _Response:
    status_code: int
    body: bytes

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def iter_content(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self.body), size):
            yield self.body[start:start + size]


@dataclass
class TokenSession:
    """`requests.Session.post` as a token endpoint answers it. By default it issues "token-<n>"
    valid for `lifetime` seconds; set `answer` to answer otherwise (or raise a requests error)."""

    lifetime: float = 3600
    delay: float = 0.0
    answer: Answer | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, url: str, *, data: dict[str, str], headers: dict[str, str], timeout: tuple[float, float],
             allow_redirects: bool, stream: bool) -> _Response:
        with self._lock:
            self.sent.append({"url": url, "form": dict(data), "headers": dict(headers), "timeout": timeout,
                              "allow_redirects": allow_redirects})
            issued = len(self.sent)
        time.sleep(self.delay)
        if self.answer is not None:
            return _Response(*self.answer(data, headers))
        return _Response(200, json_body(access_token=f"token-{issued}", token_type="Bearer",
                                        expires_in=self.lifetime))

    @property
    def form(self) -> dict[str, str]:
        return self.sent[-1]["form"]

    @property
    def headers(self) -> dict[str, str]:
        return self.sent[-1]["headers"]


@dataclass
class FakeCredential:
    """An azure-identity TokenCredential: each scope asked for, and a token valid for `lifetime`."""

    clock: Callable[[], float]
    lifetime: float = 3600
    refuse: bool = False
    scopes: list[str] = field(default_factory=list)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.refuse:
            raise ClientAuthenticationError("identity endpoint refused")
        return AccessToken(f"entra-{len(self.scopes)}", int(self.clock() + self.lifetime))
