"""The portal's HTTP layer shared by every page: hardening (headers, cookies, forms, request
origin), where the portal lives, and its failures as pages."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from shared.http import FormError, Request, Response, parse_form
from shared.portal import pages
from shared.settings import get_settings
from shared.urls import Urls, urls_for

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}
HTML = "text/html; charset=utf-8"
MAX_FORM_BYTES = 16 * 1024


class BadForm(Exception):
    """The body is not a small url-encoded form."""


class PortalError(Exception):
    """A page-shaped failure: status, heading, message, extra headers (e.g. Retry-After)."""

    def __init__(self, status: int, heading: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.heading, self.message, self.headers = status, heading, message, headers or {}


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


def page(status: int, html: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, html.encode(), {"Content-Type": HTML, **SECURITY_HEADERS, **(headers or {})})


def redirect(location: str, headers: Mapping[str, str] | None = None) -> Response:
    """303 See Other: after a POST the browser GETs the next page, so a reload never re-submits."""
    return Response(303, b"", {**SECURITY_HEADERS, "Location": location, **(headers or {})})


def set_cookie(name: str, value: str, path: str, max_age: int, secure: bool) -> dict[str, str]:
    """HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it), Secure over https."""
    attributes = f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return {"Set-Cookie": attributes + ("; Secure" if secure else "")}


def read_cookie(headers: Mapping[str, str], name: str) -> str:
    for part in (headers.get("cookie") or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return ""


def read_form(req: Request) -> dict[str, str]:
    """Each field of an url-encoded body; anything else, a repeated field included, is a BadForm
    (two `client_id`s could be checked as one and acted on as the other)."""
    if len(req.body) > MAX_FORM_BYTES:
        raise BadForm()
    try:
        return parse_form(req.body, req.headers.get("content-type"))
    except FormError as exc:
        raise BadForm() from exc


def same_origin(headers: Mapping[str, str], expected_origin: str) -> bool:
    """Defence in depth beside the CSRF tokens: refuse what the browser says came from elsewhere.

    Fetch Metadata (`Sec-Fetch-Site`), when sent, must say same-origin (or none: the user's own
    navigation). `Origin`, when sent, must be ours; "null" is let through because our own pages send
    `Referrer-Policy: no-referrer`, under which browsers post forms with exactly `Origin: null`.
    Clients that send neither (scripts) still need a valid token.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    return origin is None or origin == "null" or origin == expected_origin


def portal_urls(req: Request) -> Urls:
    return urls_for(get_settings().public_base_url, req.origin)


def portal_links(urls: Urls) -> pages.Links:
    return pages.Links(f"{urlsplit(urls.api).path}/portal")


def error_page(req: Request, exc: PortalError) -> Response:
    """Built from settings alone: it must work when the services themselves could not be built."""
    return page(exc.status, pages.message(portal_links(portal_urls(req)), exc.heading, exc.message), exc.headers)
