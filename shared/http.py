"""Plain request and response values, so the core never depends on the host's HTTP types; and the
two encodings every endpoint family shares: url-encoded forms and Basic client credentials."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote_plus, urlsplit

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 20


HeaderItems = Mapping[str, str] | Iterable[tuple[str, str]]


class Headers(dict[str, str]):
    """Case-insensitive headers: keys are stored lower-case, and every way in (construction from a
    mapping or from pairs, item access, get, pop, setdefault, update, |, del, in) folds the key."""

    def __init__(self, items: HeaderItems | None = None, /, **more: str) -> None:
        super().__init__()
        self.update(items or (), **more)

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def pop(self, key: str, *default: Any) -> Any:
        return super().pop(key.lower(), *default)

    def setdefault(self, key: str, default: str) -> str:
        return super().setdefault(key.lower(), default)

    def update(self, items: HeaderItems = (), /, **more: str) -> None:  # type: ignore[override]  # dict's overloads as one signature
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in (*pairs, *more.items()):
            self[key] = value

    def copy(self) -> Headers:
        return Headers(self)

    def __or__(self, other: HeaderItems) -> Headers:  # type: ignore[override]  # folds the other's keys too
        merged = self.copy()
        merged.update(other)
        return merged

    def __ior__(self, other: HeaderItems) -> Headers:  # type: ignore[override]  # folds the other's keys too
        self.update(other)
        return self


@dataclass
class Request:
    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    params: dict[str, str] = field(default_factory=dict)
    route_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def origin(self) -> str:
        """scheme://host[:port] the client used, for absolute URLs when no public base is configured."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Response:
    """`body` is the whole answer, unless `stream` is set: then the body is that iterator's chunks, sent
    as they come (the proxy's passthrough answers and batch-responses), and `body` stays empty."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, payload: Any, content_type: str = "application/json",
             headers: Mapping[str, str] | None = None) -> Response:
        merged = {"Content-Type": content_type, **(headers or {})}
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), merged)


class FormError(ValueError):
    """The body is not an acceptable url-encoded form."""


class NotAForm(FormError):
    """The body's media type is not FORM_TYPE."""


class RepeatedField(FormError):
    """A field that must appear once appears more often (two `client_id`s could be checked as one and
    acted on as the other)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_form(body: bytes, content_type: str | None, single: Container[str] | None = None) -> dict[str, str]:
    """Each field of a url-encoded body (at most MAX_FORM_FIELDS, every pair `name=value`).
    `single` names the fields that must not repeat; None means every field; of any other repeated
    field the first value counts."""
    if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
        raise NotAForm()
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError() from exc
    repeated = sorted(k for k, v in fields.items() if len(v) > 1 and (single is None or k in single))
    if repeated:
        raise RepeatedField(repeated[0])
    return {k: v[0] for k, v in fields.items()}


def parse_basic_credentials(authorization: str) -> tuple[str, str]:
    """(client id, secret) of a Basic Authorization header; RFC 6749 §2.3.1 form-urlencodes both
    parts before the Basic encoding. ValueError when it is not Basic or not well-formed."""
    scheme, _, encoded = authorization.strip().partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("malformed Basic authorization header") from exc
    client_id, sep, secret = decoded.partition(":")
    if scheme.lower() != "basic" or not sep or not client_id:
        raise ValueError("malformed Basic authorization header")
    return unquote_plus(client_id), unquote_plus(secret)


def basic_authorization_header(client_id: str, secret: str) -> str:
    """The Authorization header value parse_basic_credentials reads back (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
