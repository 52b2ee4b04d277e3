"""The portal's pages: plain data in, escaped HTML out (page templates in `templates/`, rows and choices here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from string import Template

from shared.client_secrets import SecretInfo
from shared.clients import Client
from shared.portal.html import Safe, fragment, join, render
from shared.routes import TenantRoute
from shared.urls import FACADE_VERSIONS, Urls

EXPIRY_CHOICES = (("30", "30 days"), ("90", "90 days"), ("180", "180 days (recommended)"), ("365", "1 year"),
                  ("730", "2 years"), ("never", "Never (not recommended)"))
DEFAULT_EXPIRY = "180"

_CURRENT = Safe(' aria-current="page"')
_OPTION = Template('<option value="$value"$selected>$label</option>')
_NOTICE = Template('<div class="notice $kind" role="$role"><p>$message</p></div>')
_ENDPOINT = Template('<dt>$label</dt>\n    <dd><code id="$element_id" class="value">$url</code> '
                     '<button type="button" class="copy" data-copy="$element_id" hidden>Copy</button></dd>')
_SECRET_ROW = Template(
    '<tr><td data-label="Starts with"><code>$prefix…</code></td><td data-label="Created">$created</td>'
    '<td data-label="Expires">$expires</td><td data-label="Status">$status</td>'
    '<td class="actions"><form method="post" action="$action" class="inline-form" data-confirm="$confirm">'
    '<input type="hidden" name="csrf_token" value="$csrf">'
    '<button type="submit" class="danger" aria-label="Delete secret $prefix">Delete</button></form></td></tr>')
_TENANT_TABLE = Template(
    '<div class="table-wrap" role="region" aria-labelledby="tenants-heading" tabindex="0"><table class="stacking">'
    '<thead><tr><th scope="col">Name</th><th scope="col">Tenant ID</th><th scope="col">FHIR version</th>'
    '<th scope="col">Status</th></tr></thead><tbody>$rows</tbody></table></div>')
_TENANT_ROW = Template('<tr><td data-label="Name">$name</td><td data-label="Tenant ID"><code>$tenant_id</code></td>'
                       '<td data-label="FHIR version">$version</td><td data-label="Status">$status</td></tr>')
_KEY_ITEM = Template('<li><code>$kid</code> ($kind)</li>')
_KEY_LIST = Template('<ul class="key-list" aria-label="Registered public keys">$items</ul>')
_NO_KEYS = Safe('<p>No public keys are registered.</p>')
_NO_TENANTS = Safe('<p>No tenant allows this client yet. Send your client ID to the gateway operator and ask '
                   'them to add it to your customers\' tenants.</p>')


@dataclass(frozen=True)
class Links:
    """The portal's own URL paths, under the gateway's route prefix (e.g. /api/portal)."""

    home: str

    @property
    def signin(self) -> str:
        return f"{self.home}/signin"

    @property
    def register(self) -> str:
        return f"{self.home}/register"

    @property
    def signout(self) -> str:
        return f"{self.home}/signout"

    @property
    def secrets(self) -> str:
        return f"{self.home}/secrets"

    @property
    def static(self) -> str:
        return f"{self.home}/static"

    @property
    def jwks(self) -> str:
        return f"{self.home}/jwks"

    def delete(self, secret_id: str) -> str:
        return f"{self.home}/secrets/{secret_id}/delete"


def when(iso: str | None) -> str:
    """A date-time for people, in UTC; no expiry reads 'Never'."""
    if not iso:
        return "Never"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def notice(message: str, kind: str = "error") -> Safe:
    if not message:
        return Safe("")
    return fragment(_NOTICE, kind=kind, role="alert" if kind == "error" else "status", message=message)


def _options(selected: str) -> Safe:
    return join(fragment(_OPTION, value=value, label=label, selected=Safe(" selected") if value == selected else "")
                for value, label in EXPIRY_CHOICES)


def _layout(links: Links, title: str, body: Safe, nav: Safe) -> str:
    return render("layout", title=title, body=body, nav=nav, home=links.home, static=links.static)


def _nav_out(links: Links, current: str) -> Safe:
    marks = {f"{name}_current": _CURRENT if name == current else "" for name in ("signin", "register")}
    return render("nav_signed_out", signin=links.signin, register=links.register, **marks)


def _nav_in(links: Links, csrf: str, current: str) -> Safe:
    marks = {f"{name}_current": _CURRENT if name == current else "" for name in ("overview", "secrets")}
    return render("nav_signed_in", home=links.home, secrets=links.secrets, signout=links.signout, csrf=csrf,
                  **marks)


# --- signed out -----------------------------------------------------------------------------------

def welcome(links: Links) -> str:
    body = render("welcome", signin=links.signin, register=links.register)
    return _layout(links, "Welcome", body, _nav_out(links, ""))


def signin(links: Links, form_token: str, client_id: str = "", error: str = "") -> str:
    body = render("signin", action=links.signin, register=links.register, form_token=form_token,
                  client_id=client_id, notice=notice(error))
    return _layout(links, "Sign in", body, _nav_out(links, "signin"))


def register(links: Links, form_token: str, name: str = "", expiry: str = DEFAULT_EXPIRY, error: str = "") -> str:
    body = render("register", action=links.register, signin=links.signin, form_token=form_token, name=name,
                  expiry_options=_options(expiry), notice=notice(error))
    return _layout(links, "Register", body, _nav_out(links, "register"))


def message(links: Links, heading: str, text: str) -> str:
    body = render("message", heading=heading, message=text, back=links.home, back_label="Back to the portal")
    return _layout(links, heading, body, _nav_out(links, ""))


# --- signed in ------------------------------------------------------------------------------------

def registered(links: Links, client: Client, secret: str, info: SecretInfo, csrf: str) -> str:
    body = render("registered", name=client.name, client_id=client.client_id, secret=secret,
                  expires=when(info.expires_on), home=links.home)
    return _layout(links, "Registered", body, _nav_in(links, csrf, ""))


def _tenants(tenants: Sequence[TenantRoute]) -> Safe:
    if not tenants:
        return _NO_TENANTS
    rows = join(fragment(_TENANT_ROW, name=t.display_name or "(unnamed)", tenant_id=t.tenant_id,
                         version=t.fhir_version.upper(), status="enabled" if t.enabled else "disabled")
                for t in tenants)
    return fragment(_TENANT_TABLE, rows=rows)


def _endpoints(urls: Urls) -> Safe:
    bases = [fragment(_ENDPOINT, label=f"FHIR base URL ({v.upper()})", element_id=f"fhir-base-{v}",
                      url=urls.fhir_base(v)) for v in FACADE_VERSIONS]
    return join([*bases, fragment(_ENDPOINT, label="Token URL", element_id="token-url", url=urls.token_url)])


def curl_example(urls: Urls, client_id: str, tenants: Sequence[TenantRoute]) -> str:
    """A token request and one FHIR call; the secret is a placeholder, never the real value."""
    tenant = tenants[0] if tenants else None
    version = tenant.fhir_version if tenant and tenant.fhir_version in FACADE_VERSIONS else FACADE_VERSIONS[0]
    scope = tenant.tenant_id if tenant else "<tenant id>"
    return (f"TOKEN=$(curl -s -X POST '{urls.token_url}' \\\n"
            f"  -d grant_type=client_credentials \\\n"
            f"  -d client_id={client_id} \\\n"
            f"  --data-urlencode 'client_secret=<your client secret>' \\\n"
            f"  -d scope={scope} \\\n"
            f"  | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
            f"curl -s -H \"Authorization: Bearer $TOKEN\" '{urls.fhir_base(version)}/Patient?_count=2'")


def overview(links: Links, client: Client, tenants: Sequence[TenantRoute], urls: Urls, csrf: str) -> str:
    body = render("overview", name=client.name, client_id=client.client_id, status=client.status,
                  created=when(client.created), secrets=links.secrets, tenants=_tenants(tenants),
                  endpoints=_endpoints(urls), curl=curl_example(urls, client.client_id, tenants))
    return _layout(links, "Overview", body, _nav_in(links, csrf, "overview"))


def _status(info: SecretInfo, now: datetime) -> str:
    if not info.enabled:
        return "disabled"
    return "live" if info.live_at(now) else "expired"


def _secret_rows(links: Links, infos: Sequence[SecretInfo], csrf: str, now: datetime) -> Safe:
    return join(fragment(_SECRET_ROW, prefix=f"{i.secret_id}~{i.hint}", created=when(i.created),
                         expires=when(i.expires_on), status=_status(i, now), action=links.delete(i.secret_id),
                         csrf=csrf, confirm=f"Delete the secret starting {i.secret_id}~{i.hint}? Apps using it "
                                            "stop getting tokens.")
                for i in infos)


def _key_list(jwks: dict | None) -> Safe:
    keys = (jwks or {}).get("keys") or []
    if not keys:
        return _NO_KEYS
    items = join(fragment(_KEY_ITEM, kid=k.get("kid", ""), kind=" ".join(str(k[m]) for m in ("kty", "crv", "alg")
                                                                          if m in k)) for k in keys)
    return fragment(_KEY_LIST, items=items)


def secrets(links: Links, infos: Sequence[SecretInfo], csrf: str, now: datetime, *, status_note: str = "",
            error: str = "", new_secret: tuple[str, SecretInfo] | None = None, jwks: dict | None = None,
            jwks_text: str = "") -> str:
    """`jwks_text`: what the consumer pasted, shown again when it was refused so it can be fixed."""
    shown_once = Safe("")
    if new_secret is not None:
        shown_once = render("new_secret", secret=new_secret[0], expires=when(new_secret[1].expires_on))
    body = render("secrets", notice=join([notice(error), notice(status_note, "success")]), new_secret=shown_once,
                  rows=_secret_rows(links, infos, csrf, now), add_action=links.secrets, csrf=csrf,
                  expiry_options=_options(DEFAULT_EXPIRY), key_list=_key_list(jwks), jwks_action=links.jwks,
                  jwks_text=jwks_text)
    return _layout(links, "Secrets", body, _nav_in(links, csrf, "secrets"))
