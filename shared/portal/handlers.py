"""The consumer portal's endpoints (AUTH-5, AUTH-6): `Request` in, HTML `Response` out.

Every response carries the security headers of `web.SECURITY_HEADERS`, errors included. Every
state change is a POST that passes the origin check and a CSRF token: the session's synchronizer
token once signed in, the signed double-submit token on the sign-in and registration forms. No
secret travels in a URL or a cookie: secrets arrive in POST bodies and are shown once in a page.
Failures say nothing about whether a client or invitation exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.clientaddr import AddressSource, client_address
from shared.clients import Client, InvalidClient
from shared.edge import portal_endpoint
from shared.errors import InvalidField, LastLiveSecret, NotFound
from shared.http import Request, Response
from shared.invitations import InvalidInvitation, code_id
from shared.jsonbody import InvalidJson, loads_strict
from shared.portal import pages
from shared.portal.sessions import FORM_TOKEN_SECONDS, SESSION_SECONDS, Session
from shared.portal.web import (
    SECURITY_HEADERS,
    BadForm,
    PortalError,
    SignInRequired,
    page,
    portal_links,
    portal_urls,
    read_cookie,
    read_form,
    redirect,
    same_origin,
    set_cookie,
)
from shared.ratelimit import RateLimiter
from shared.services import Services, get_services
from shared.urls import Urls

SESSION_COOKIE = "portal_session"
FORM_COOKIE = "portal_form"
SIGNIN_FAILED = "Sign-in failed. Check the client ID and secret, then try again."
INVITATION_FAILED = ("This invitation code cannot be used. Check that you copied all of it, or ask the gateway "
                     "operator for a new one.")
FORM_EXPIRED = "This form has expired or did not come from this site. Go back, reload the page and try again."
_STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {"portal.css": "text/css; charset=utf-8", "portal.js": "text/javascript; charset=utf-8"}
_SECRET_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class Context:
    """What every portal request needs: the services, the public URLs, the portal's links."""

    services: Services
    urls: Urls
    links: pages.Links

    @property
    def origin(self) -> str:
        parts = urlsplit(self.urls.base)
        return f"{parts.scheme}://{parts.netloc}"

    def cookie(self, name: str, value: str, max_age: int) -> dict[str, str]:
        """Secure whenever the portal is served over https (in Azure GATEWAY_PUBLIC_BASE_URL is https)."""
        return set_cookie(name, value, self.links.home, max_age, self.urls.base.startswith("https://"))

    def start_session(self, client_id: str, secret_id: str) -> tuple[Session, dict[str, str]]:
        generation = self.services.session_generations.current(client_id)
        token, session = self.services.sessions.issue(client_id, secret_id, generation)
        return session, self.cookie(SESSION_COOKIE, token, SESSION_SECONDS)


def _context(req: Request) -> Context:
    urls = portal_urls(req)
    return Context(get_services(), urls, portal_links(urls))


# --- guards ---------------------------------------------------------------------------------------

def _signed_in(req: Request, ctx: Context) -> tuple[Session, Client] | None:
    token = read_cookie(req.headers, SESSION_COOKIE)
    session = ctx.services.sessions.verify(token) if token else None
    if session is None:
        return None
    try:
        client = ctx.services.clients.get(session.client_id)
    except NotFound:
        return None
    return (session, client) if client.active and _session_current(ctx, session) else None


def _session_current(ctx: Context, session: Session) -> bool:
    """Server-side checks behind the signed cookie: not signed out or ended by disabling the client
    (generation), and the secret it signed in with still live (deleting it ends the session)."""
    if session.generation != ctx.services.session_generations.current(session.client_id):
        return False
    now = datetime.now(UTC)
    return any(info.secret_id == session.secret_id and info.live_at(now)
               for info in ctx.services.clients.list_secrets(session.client_id))


def _require_session(req: Request, ctx: Context) -> tuple[Session, Client]:
    who = _signed_in(req, ctx)
    if who is None:
        raise SignInRequired()
    return who


def _posted_form(req: Request, ctx: Context) -> dict[str, str]:
    if not same_origin(req.headers, ctx.origin):
        raise PortalError(403, "Request refused", FORM_EXPIRED)
    try:
        return read_form(req)
    except BadForm as exc:
        raise PortalError(400, "Request refused", "The form could not be read.") from exc


def _session_form(req: Request, ctx: Context) -> tuple[Session, Client, dict[str, str]]:
    """A signed-in POST: origin, session, then the session's synchronizer token."""
    form = _posted_form(req, ctx)
    session, client = _require_session(req, ctx)
    if not ctx.services.sessions.check_csrf(session, form.get("csrf_token", "")):
        raise PortalError(403, "Request refused", FORM_EXPIRED)
    return session, client, form


def _attempt(req: Request, ctx: Context, by_address: RateLimiter, by_target: RateLimiter,
             target: Callable[[dict[str, str]], str]) -> tuple[dict[str, str], str]:
    """A pre-session POST that tries a secret or an invitation code: origin, then the signed
    double-submit token (cookie == hidden field), then 429 with Retry-After when either the caller's
    address (as the token endpoint sees it: shared.clientaddr) or what it tries, `target(form)`,
    has had too many attempts. Returns the form and the form token."""
    form = _posted_form(req, ctx)
    cookie = read_cookie(req.headers, FORM_COOKIE)
    if not ctx.services.sessions.check_form_token(cookie, form.get("form_token", "")):
        raise PortalError(403, "Request refused", FORM_EXPIRED)
    address = client_address(req.headers, AddressSource.from_settings(ctx.services.settings))
    retry_after = by_address.hit(address) or by_target.hit(target(form))
    if retry_after:
        raise PortalError(429, "Too many attempts",
                          f"Too many attempts. Wait {retry_after} seconds, then try again.",
                          {"Retry-After": str(retry_after)})
    return form, cookie


def _client_id(form: dict[str, str]) -> str:
    return form.get("client_id", "").strip().lower()[:100]


def _invitation_code(form: dict[str, str]) -> str:
    return form.get("invitation_code", "").strip()


def _form_token(req: Request, ctx: Context) -> tuple[str, dict[str, str]]:
    """Reuse the browser's valid form token (two open tabs keep working), else mint one and set its cookie."""
    existing = read_cookie(req.headers, FORM_COOKIE)
    if existing and ctx.services.sessions.form_token_valid(existing):
        return existing, {}
    token = ctx.services.sessions.form_token()
    return token, ctx.cookie(FORM_COOKIE, token, FORM_TOKEN_SECONDS)


def _expiry(form: dict[str, str]) -> datetime | None:
    choice = form.get("expires_in_days", pages.DEFAULT_EXPIRY)
    if choice == "never":
        return None
    if choice not in dict(pages.EXPIRY_CHOICES):
        raise PortalError(400, "Request refused", "Choose one of the offered expiry periods.")
    return datetime.now(UTC) + timedelta(days=int(choice))


# --- signed out: landing, sign-in, registration -----------------------------------------------------

@portal_endpoint
def home(req: Request) -> Response:
    """The overview when signed in; otherwise a welcome page pointing to sign-in and registration."""
    ctx = _context(req)
    who = _signed_in(req, ctx)
    if who is None:
        return page(200, pages.welcome(ctx.links))
    session, client = who
    services = ctx.services
    tenants = [t for t in services.tenants.list() if client.client_id in t.allowed_clients]
    return page(200, pages.overview(ctx.links, client, tenants, ctx.urls, services.sessions.csrf_token(session)))


def _anonymous_form_page(req: Request, render: Callable[[pages.Links, str], str]) -> Response:
    """A pre-session form page, carrying the double-submit token its POST must send back."""
    ctx = _context(req)
    token, cookie = _form_token(req, ctx)
    return page(200, render(ctx.links, token), cookie)


@portal_endpoint
def signin_form(req: Request) -> Response:
    return _anonymous_form_page(req, pages.signin)


@portal_endpoint
def signin(req: Request) -> Response:
    ctx = _context(req)
    limits = ctx.services.portal_limits
    form, token = _attempt(req, ctx, limits.signin_address, limits.signin_client, _client_id)
    client_id = _client_id(form)
    try:
        client: Client | None = ctx.services.clients.authenticate(client_id, form.get("client_secret", "").strip())
    except InvalidClient:
        client = None
    if client is None or not client.active:
        return page(400, pages.signin(ctx.links, token, client_id, SIGNIN_FAILED))
    limits.signin_client.reset(client_id)
    _, cookie = ctx.start_session(client.client_id, form.get("client_secret", "").strip().partition("~")[0])
    return redirect(ctx.links.home, cookie)


@portal_endpoint
def register_form(req: Request) -> Response:
    return _anonymous_form_page(req, pages.register)


@portal_endpoint
def register(req: Request) -> Response:
    """Claim the invitation (atomically), then create the client and show its first secret once."""
    ctx = _context(req)
    limits, services = ctx.services.portal_limits, ctx.services
    form, token = _attempt(req, ctx, limits.register_address, limits.register_invitation,
                           lambda form: code_id(_invitation_code(form)) or "malformed")
    code, name = _invitation_code(form), form.get("name", "").strip()
    expiry = _expiry(form)
    if not name or len(name) > 200:
        return page(400, pages.register(ctx.links, token, name[:200], form.get("expires_in_days", ""),
                                        "Enter an application name of at most 200 characters."))
    try:
        claim = services.invitations.claim(code)
    except InvalidInvitation:
        return page(400, pages.register(ctx.links, token, name, form.get("expires_in_days", ""),
                                        INVITATION_FAILED))
    try:
        client, secret, info = services.clients.create(name, expiry)
    except Exception:
        services.invitations.release(claim)
        raise
    services.invitations.complete(claim, client.client_id)
    session, cookie = ctx.start_session(client.client_id, info.secret_id)
    csrf = services.sessions.csrf_token(session)
    return page(201, pages.registered(ctx.links, client, secret, info, csrf), cookie)


# --- signed in: secrets and sign-out ----------------------------------------------------------------

def _secrets_page(ctx: Context, session: Session, client: Client, status: int = 200, **extra: Any) -> Response:
    infos = ctx.services.clients.list_secrets(client.client_id)
    html = pages.secrets(ctx.links, infos, ctx.services.sessions.csrf_token(session), datetime.now(UTC),
                         jwks=client.jwks, **extra)
    return page(status, html)


@portal_endpoint
def secrets(req: Request) -> Response:
    ctx = _context(req)
    session, client = _require_session(req, ctx)
    deleted = req.params.get("deleted", "")
    note = ""
    if _SECRET_ID.match(deleted):
        ttl = ctx.services.settings.secret_cache_ttl_seconds
        note = f"Deleted the secret starting {deleted}~. Apps still using it stop getting tokens within {ttl} seconds."
    return _secrets_page(ctx, session, client, status_note=note)


@portal_endpoint
def add_secret(req: Request) -> Response:
    ctx = _context(req)
    session, client, form = _session_form(req, ctx)
    secret, info = ctx.services.clients.add_secret(client.client_id, _expiry(form))
    return _secrets_page(ctx, session, client, 201, new_secret=(secret, info))


@portal_endpoint
def delete_secret(req: Request, secret_id: str) -> Response:
    """Delete one secret; the registry refuses the last live one (409) and the page says why."""
    ctx = _context(req)
    session, client, _ = _session_form(req, ctx)
    try:
        ctx.services.clients.delete_secret(client.client_id, secret_id)
    except NotFound:
        return _secrets_page(ctx, session, client, 404, error="That secret does not exist (any more).")
    except LastLiveSecret:
        return _secrets_page(ctx, session, client, 409,
                             error="This is your client's last live secret, so it cannot be deleted. "
                                   "Add a new secret first, move your app to it, then delete this one.")
    if secret_id == session.secret_id:  # the session was bound to it and has ended with it
        return redirect(ctx.links.signin, ctx.cookie(SESSION_COOKIE, "", 0))
    return redirect(f"{ctx.links.secrets}?deleted={secret_id}")


@portal_endpoint
def set_jwks(req: Request) -> Response:
    """Register (replace) the client's JWK Set for private_key_jwt. Validated as the management API
    does; a refused set comes back in the form with the reason, naming the offending member."""
    ctx = _context(req)
    session, client, form = _session_form(req, ctx)
    text = form.get("jwks", "")
    from shared.client_assertion import validate_jwks  # PyJWT: loaded on first use, not at import

    try:
        jwks = validate_jwks(loads_strict(text.encode()))
        client = ctx.services.clients.set_jwks(client.client_id, jwks)
    except InvalidJson as exc:
        return _secrets_page(ctx, session, client, 400, jwks_text=text,
                             error=f"The JWK Set was not accepted: it is not valid JSON ({exc}).")
    except InvalidField as exc:
        return _secrets_page(ctx, session, client, 400, jwks_text=text,
                             error=f"The JWK Set was not accepted: {exc.field}: {exc.detail}.")
    kids = ", ".join(k["kid"] for k in jwks["keys"])
    ttl = ctx.services.settings.secret_cache_ttl_seconds
    return _secrets_page(ctx, session, client, status_note=f"Registered the public keys {kids}. Token requests "
                                                           f"signed with them are accepted within {ttl} seconds.")


@portal_endpoint
def signout(req: Request) -> Response:
    """Ends the session on the server too: a copy of the cookie is worthless afterwards. This moves
    the client's session generation on, so every browser signed in as this client is signed out."""
    ctx = _context(req)
    session, _, _ = _session_form(req, ctx)
    ctx.services.session_generations.end_all(session.client_id)
    return redirect(ctx.links.signin, ctx.cookie(SESSION_COOKIE, "", 0))


# --- static files -----------------------------------------------------------------------------------

@lru_cache(maxsize=len(_STATIC_TYPES))
def _static_bytes(name: str) -> bytes:
    return (_STATIC_DIR / name).read_bytes()


@portal_endpoint
def static(req: Request, name: str) -> Response:
    """Only the files named in `_STATIC_TYPES`: no path from the URL ever reaches the file system."""
    content_type = _STATIC_TYPES.get(name)
    if content_type is None:
        raise PortalError(404, "Not found", "There is no such page.")
    return Response(200, _static_bytes(name), {"Content-Type": content_type, **SECURITY_HEADERS})
