"""`gatewayctl doctor`: is this deployment healthy end to end, as the Patients app and an operator see it?

It walks the Patients app's own path over plain HTTP: each facade's capability statement (R4 too,
if the gateway offers one), SMART discovery and the signing keys it points at, the health probe,
then for every enabled tenant a token for a probe client and one `Patient?_count=1` search through
the gateway to that tenant's provider, timed. Only HTTP, like any client: it neither imports the
gateway's code nor reads its storage, so it checks what is deployed, not what is in this checkout.

The probe client is an ordinary registered client (its id and secret come from --client-id /
--client-secret, else GATEWAY_PROBE_CLIENT_ID / GATEWAY_PROBE_CLIENT_SECRET, else the demo client in
.local/stack.json) that every tenant allows; a tenant that does not allow it fails its token check.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import requests

from gatewayctl.api import CtlError, ManageApi, stack_facts
from gatewayctl.output import as_json, table

ID_ENV, SECRET_ENV = "GATEWAY_PROBE_CLIENT_ID", "GATEWAY_PROBE_CLIENT_SECRET"
# Facades the Patients app may be configured with; R4 is checked when the gateway answers for it.
REQUIRED_FACADES, OPTIONAL_FACADES = ("stu3", "dstu2"), ("r4",)
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
COLUMNS = (("check", "CHECK"), ("target", "TARGET"), ("result", "RESULT"), ("ms", "MS"), ("detail", "DETAIL"))


@dataclass(frozen=True)
class ProbeClient:
    client_id: str
    client_secret: str


def resolve_probe_client(client_id: str | None, client_secret: str | None,
                         environ: Mapping[str, str] = os.environ) -> ProbeClient:
    """Flags win over the environment, then the local stack's demo client; the id and the secret
    always come from the same place, so a secret is never sent with another client's id."""
    if not client_id and not client_secret:
        client_id, client_secret = environ.get(ID_ENV), environ.get(SECRET_ENV)
    if not client_id and not client_secret:
        facts = stack_facts()
        client_id, client_secret = facts.get("demo_client_id"), facts.get("demo_client_secret")
    if not client_id or not client_secret:
        raise CtlError(f"no probe client: pass --client-id and --client-secret, or set {ID_ENV} and {SECRET_ENV}")
    return ProbeClient(client_id, client_secret)


@dataclass
class Check:
    """One line of the report. `result` is ok, FAIL or skip; `ms` is the request's wall time."""

    check: str
    target: str
    result: str
    ms: float | None
    detail: str


class Failed(Exception):
    """A check's failure, with what the operator needs to know in one line, and the request's time
    when there was an answer (a slow failure is part of the diagnosis)."""

    def __init__(self, message: str, ms: float | None = None) -> None:
        super().__init__(message)
        self.ms = ms


def _problem(response: requests.Response) -> str:
    """The gateway's own words for an error: OperationOutcome diagnostics, OAuth error, problem detail."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        issues = body.get("issue") or []
        oauth = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
        text = (issues[0].get("diagnostics") if issues and isinstance(issues[0], dict) else None) \
            or oauth or body.get("detail") or body.get("title")
        if text:
            return f"HTTP {response.status_code}: {text}"
    return f"HTTP {response.status_code}"


def _json_object(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Failed(f"{what} is not JSON (HTTP {response.status_code})") from exc
    if not isinstance(body, dict):
        raise Failed(f"{what} is not a JSON object")
    return body


def _token_url(statement: dict[str, Any]) -> str:
    """SMART `oauth-uris` in the capability statement: how the Patients app finds the token endpoint."""
    for rest in statement.get("rest") or []:
        for extension in (rest.get("security") or {}).get("extension") or []:
            if extension.get("url") == OAUTH_URIS:
                for uri in extension.get("extension") or []:
                    if uri.get("url") == "token" and uri.get("valueUri"):
                        return str(uri["valueUri"])
    raise Failed("no token URL in the SMART oauth-uris extension")


class Doctor:
    """Runs the checks in the order the Patients app depends on them, and keeps going after a failure:
    an operator wants every broken thing in one report, not the first one."""

    def __init__(self, api_base: str, manage: ManageApi, probe: ProbeClient, timeout: float,
                 session: requests.Session | None = None) -> None:
        self._api, self._manage, self._probe, self._timeout = api_base, manage, probe, timeout
        self._session = session or requests.Session()
        self.checks: list[Check] = []

    # --- plumbing ---------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> tuple[requests.Response, float]:
        started = time.perf_counter()
        try:
            response = self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise Failed(f"cannot reach {url} ({type(exc).__name__})") from exc
        return response, round((time.perf_counter() - started) * 1000, 1)

    def _record(self, check: str, target: str, probe: Callable[[], tuple[str, float, Any]]) -> Any:
        """Run one probe, which returns (detail, ms, value); report it and hand back the value, or None
        when it failed (later checks that need it are then not attempted)."""
        try:
            detail, ms, value = probe()
        except Failed as exc:
            self.checks.append(Check(check, target, "FAIL", exc.ms, str(exc)))
            return None
        self.checks.append(Check(check, target, "ok", ms, detail))
        return value

    # --- the checks -------------------------------------------------------------------------------------

    def run(self, only_tenants: list[str] | None) -> list[Check]:
        """Health, then discovery (the app's first calls, without a token) and the signing keys, then
        each tenant's token, from the token URL the capability statement advertises, and search."""
        self._record("health", self._api, self._health)
        facades: dict[str, str] = {}
        for version in (*REQUIRED_FACADES, *OPTIONAL_FACADES):
            token_url = self._metadata(version)
            if token_url:
                facades[version] = token_url
        jwks_urls: set[str] = set()
        for version, facade_token_url in facades.items():
            jwks_url = self._record("smart-configuration", version,
                                    functools.partial(self._smart, version, facade_token_url))
            if jwks_url:
                jwks_urls.add(jwks_url)
        for url in sorted(jwks_urls) or [f"{self._api}/oauth2/jwks"]:
            self._record("jwks", url, functools.partial(self._jwks, url))
        token_url = next(iter(facades.values()), None)
        for tenant in self._tenants(only_tenants):
            self._tenant(tenant, token_url, facades)
        return self.checks

    def _health(self) -> tuple[str, float, None]:
        response, ms = self._request("GET", f"{self._api}/health")
        body = _json_object(response, "health")
        parts = ", ".join(f"{name} {state}" for name, state in (body.get("components") or {}).items())
        if response.status_code != 200 or body.get("status") != "ok":
            raise Failed(f"{body.get('status', 'HTTP ' + str(response.status_code))}: {parts}", ms)
        return parts, ms, None

    def _metadata(self, version: str) -> str | None:
        """The facade's token URL if it answered. An optional facade that is not offered is skipped."""
        try:
            response, ms = self._request("GET", f"{self._api}/fhir/{version}/metadata",
                                         headers={"Accept": "application/fhir+json"})
        except Failed as exc:
            self.checks.append(Check("metadata", version, "FAIL", None, str(exc)))
            return None
        if version in OPTIONAL_FACADES and response.status_code in (400, 404):
            self.checks.append(Check("metadata", version, "skip", ms, f"not offered ({_problem(response)})"))
            return None
        return self._record("metadata", version, lambda: self._statement(response, ms))

    @staticmethod
    def _statement(response: requests.Response, ms: float) -> tuple[str, float, str]:
        if response.status_code != 200:
            raise Failed(_problem(response), ms)
        statement = _json_object(response, "the capability statement")
        kind = statement.get("resourceType")
        if kind not in ("CapabilityStatement", "Conformance"):
            raise Failed(f"resourceType {kind!r}, not a capability statement", ms)
        token_url = _token_url(statement)
        return f"{kind} fhirVersion {statement.get('fhirVersion')}, token URL {token_url}", ms, token_url

    def _smart(self, version: str, token_url: str) -> tuple[str, float, str]:
        response, ms = self._request("GET", f"{self._api}/fhir/{version}/.well-known/smart-configuration")
        if response.status_code != 200:
            raise Failed(_problem(response), ms)
        config = _json_object(response, "SMART configuration")
        if config.get("token_endpoint") != token_url:
            raise Failed(f"token_endpoint {config.get('token_endpoint')} differs from the capability "
                             f"statement's {token_url}", ms)
        if not config.get("jwks_uri"):
            raise Failed("no jwks_uri", ms)
        return f"token_endpoint matches; jwks_uri {config['jwks_uri']}", ms, str(config["jwks_uri"])

    def _jwks(self, url: str) -> tuple[str, float, None]:
        response, ms = self._request("GET", url)
        if response.status_code != 200:
            raise Failed(_problem(response), ms)
        keys = _json_object(response, "JWKS").get("keys") or []
        if not keys:
            raise Failed("no signing keys published", ms)
        if any("d" in key for key in keys):  # a private EC/RSA component: the signing key itself
            raise Failed("JWKS publishes private key material", ms)
        return f"{len(keys)} public key(s): {', '.join(str(k.get('kid')) for k in keys)}", ms, None

    def _tenants(self, only: list[str] | None) -> list[dict[str, Any]]:
        """Enabled tenants from the management API; with --tenant, just those (each must exist)."""
        try:
            tenants = self._manage.call("GET", "/tenants").body["tenants"]
        except CtlError as exc:
            self.checks.append(Check("tenants", "management API", "FAIL", None, str(exc)))
            return []
        if only:
            known = {t["tenant_id"]: t for t in tenants}
            for missing in [t for t in only if t not in known]:
                self.checks.append(Check("tenants", missing, "FAIL", None, "no such tenant"))
            chosen = [known[t] for t in only if t in known]
        else:
            chosen = tenants
        enabled = [t for t in chosen if t.get("enabled")]
        for tenant in chosen:
            if not tenant.get("enabled"):
                self.checks.append(Check("tenants", tenant["tenant_id"], "skip", None, "disabled"))
        if not chosen:
            self.checks.append(Check("tenants", "management API", "skip", None, "no tenants onboarded"))
        return enabled

    def _tenant(self, tenant: dict[str, Any], token_url: str | None, facades: dict[str, str]) -> None:
        tenant_id = tenant["tenant_id"]
        if token_url is None:
            self.checks.append(Check("token", tenant_id, "FAIL", None, "no facade answered with a token URL"))
            return
        token = self._record("token", tenant_id, lambda: self._token(token_url, tenant_id))
        if token is None:
            return
        # The tenant's own version where the gateway has that facade; an R4 provider behind STU3 otherwise.
        version = tenant.get("fhir_version")
        facade = version if isinstance(version, str) and version in facades else next(iter(facades))
        self._record("patient-search", tenant_id, lambda: self._search(facade, token, tenant))

    def _token(self, token_url: str, tenant_id: str) -> tuple[str, float, str]:
        response, ms = self._request("POST", token_url, data={
            "grant_type": "client_credentials", "client_id": self._probe.client_id,
            "client_secret": self._probe.client_secret, "scope": tenant_id})
        if response.status_code != 200:
            raise Failed(f"probe client {self._probe.client_id}: {_problem(response)}", ms)
        body = _json_object(response, "token response")
        if not body.get("access_token"):
            raise Failed("no access_token in the answer", ms)
        return f"issued to {self._probe.client_id}, expires in {body.get('expires_in')} s", ms, body["access_token"]

    def _search(self, facade: str, token: str, tenant: dict[str, Any]) -> tuple[str, float, None]:
        response, ms = self._request("GET", f"{self._api}/fhir/{facade}/Patient", params={"_count": "1"},
                                     headers={"Authorization": f"Bearer {token}",
                                              "Accept": "application/fhir+json"})
        where = f"via {facade} to the {tenant.get('fhir_version')} provider"
        if response.status_code != 200:
            raise Failed(f"{where}: {_problem(response)}", ms)
        bundle = _json_object(response, "search result")
        if bundle.get("resourceType") != "Bundle":
            raise Failed(f"{where}: resourceType {bundle.get('resourceType')!r}, not a Bundle", ms)
        total = bundle.get("total")
        found = f"total {total}" if total is not None else f"{len(bundle.get('entry') or [])} entry"
        return f"{where}: Bundle, {found}", ms, None


def doctor(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    """Print the report; any failed check makes the command fail (exit 1) after the report."""
    manage_url = api.target.url
    if not manage_url.endswith("/manage"):
        raise CtlError(f"{manage_url} is not a management URL (<gateway>/api/manage)")
    probe = resolve_probe_client(args.client_id, args.client_secret)
    checks = Doctor(manage_url.removesuffix("/manage"), api, probe, args.timeout).run(args.tenant)
    failed = [c for c in checks if c.result == "FAIL"]
    if args.json:
        as_json({"gateway": manage_url.removesuffix("/api/manage"), "ok": not failed,
                 "checks": [asdict(c) for c in checks]}, out)
    else:
        table([asdict(c) for c in checks], COLUMNS, out)
        skipped = sum(c.result == "skip" for c in checks)
        print(f"\n{len(checks)} checks: {len(checks) - len(failed) - skipped} ok, {len(failed)} failed, "
              f"{skipped} skipped", file=out)
    if failed:
        raise CtlError(f"{len(failed)} of {len(checks)} checks failed: "
                       + "; ".join(f"{c.check} {c.target}" for c in failed))
