"""The management API over HTTP, and where its URL and key come from."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

URL_ENV, KEY_ENV = "GATEWAY_MANAGE_URL", "GATEWAY_MANAGE_KEY"
STACK_FILE = Path(".local") / "stack.json"
TIMEOUT_SECONDS = 30


class CtlError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


class Stale(CtlError):
    """HTTP 412: the resource changed since it was read (or, for a create, already exists)."""


@dataclass(frozen=True)
class Target:
    url: str
    key: str


def stack_facts() -> dict[str, Any]:
    """The facts scripts/dev writes for the local stack, when run from the repo (as scripts/dev is)."""
    path = Path.cwd() / STACK_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CtlError(f"cannot read {path}: {exc}") from exc


def resolve_target(url: str | None, key: str | None, environ: Mapping[str, str] = os.environ) -> Target:
    """Flags win over the environment. Only when neither names a URL or a key does the local stack's
    file count: mixing a key from one source with a URL from another could send a key to the wrong gateway."""
    url, key = url or environ.get(URL_ENV), key or environ.get(KEY_ENV)
    if not url and not key:
        facts = stack_facts()
        url, key = facts.get("manage_url"), facts.get("manage_key")
    if not url:
        raise CtlError(f"no management URL: pass --url, set {URL_ENV}, or run from the repo while scripts/dev runs")
    if not key:
        raise CtlError(f"no management key: pass --key or set {KEY_ENV}")
    return Target(url.rstrip("/"), key)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    etag: str | None


def _problem_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        text = str(body.get("detail") or body.get("title"))
        errors = body.get("errors")
        field = errors[0].get("field") if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None
        return f"{field}: {text}" if isinstance(field, str) and not text.startswith(field) else text
    return response.reason or "request failed"


class ManageApi:
    def __init__(self, target: Target, session: requests.Session | None = None) -> None:
        self._target = target
        self._session = session or requests.Session()

    @property
    def target(self) -> Target:
        """Where this API lives; `doctor` derives the gateway's other URLs from it."""
        return self._target

    def call(self, method: str, path: str, *, body: Any = None, headers: Mapping[str, str] | None = None,
             what: str = "") -> Reply:
        """One request; any non-2xx answer becomes a CtlError with the server's own explanation.

        `what` names the resource ("tenant <id>") so a 404 can say which one is missing."""
        url = f"{self._target.url}{path}"
        all_headers = {"x-functions-key": self._target.key, "Accept": "application/json", **(headers or {})}
        try:
            response = self._session.request(method, url, json=body, headers=all_headers, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise CtlError(f"cannot reach the management API at {self._target.url} ({type(exc).__name__})") from exc
        if response.status_code in (401, 403):
            raise CtlError(f"the management API refused the key (HTTP {response.status_code}); "
                           f"check {KEY_ENV} or --key")
        if response.status_code == 412:
            raise Stale(_problem_text(response))
        if response.status_code == 404 and what:
            raise CtlError(f"{what} not found (HTTP 404)")
        if response.status_code >= 400:
            raise CtlError(f"{_problem_text(response)} (HTTP {response.status_code})")
        try:
            payload = response.json() if response.content else None
        except ValueError as exc:
            raise CtlError(f"{url} did not answer with JSON; is the management URL right?") from exc
        return Reply(response.status_code, payload, response.headers.get("ETag"))
