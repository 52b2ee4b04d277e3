"""Argument parsing and the commands: one small function per command, each over the management API.

Exit status: 0 done, 1 the gateway refused or could not be reached (one line on stderr, never a
traceback), 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from gatewayctl.api import KEY_ENV, URL_ENV, CtlError, ManageApi, Stale, resolve_target
from gatewayctl.doctor import ID_ENV as PROBE_ID_ENV
from gatewayctl.doctor import SECRET_ENV as PROBE_SECRET_ENV
from gatewayctl.doctor import doctor
from gatewayctl.output import as_json, fields, table

STALE = "changed by someone else since you read it; run show and retry"
FHIR_VERSIONS = ("stu3", "dstu2", "r4")
Command = Callable[[ManageApi, argparse.Namespace, TextIO], None]


def _emit(args: argparse.Namespace, payload: Any, out: TextIO, human: Callable[[], None]) -> None:
    if args.json:
        as_json(payload, out)
    else:
        human()


# --- tenants ----------------------------------------------------------------------------------------

_TENANT_COLUMNS = (("tenant_id", "TENANT ID"), ("display_name", "NAME"), ("fhir_version", "VERSION"),
                   ("enabled", "ENABLED"), ("clients", "CLIENTS"), ("provider_base_url", "PROVIDER"))


_UPDATE_OPTIONS = ("display_name", "provider_base_url", "fhir_version", "upstream_auth", "allow_client",
                   "disallow_client", "resource_types", "all_resource_types", "batch_passthrough", "enabled")


def _json_option(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CtlError(f"{option} is not valid JSON: {exc.msg}") from exc


def _tenant_body(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any]:
    """The route as it will be PUT: the current one (for update) with every option given applied."""
    body = {k: v for k, v in current.items() if k not in ("tenant_id", "created", "updated")}
    for option, key in (("display_name", "display_name"), ("provider_base_url", "provider_base_url"),
                        ("fhir_version", "fhir_version"), ("enabled", "enabled"),
                        ("batch_passthrough", "batch_passthrough")):
        if getattr(args, option) is not None:
            body[key] = getattr(args, option)
    if args.upstream_auth is not None:
        body["upstream_auth"] = _json_option(args.upstream_auth, "--upstream-auth")
    if args.resource_types is not None:
        body["resource_types"] = [t.strip() for t in args.resource_types.split(",") if t.strip()]
    if getattr(args, "all_resource_types", None):
        body["resource_types"] = None
    removed = set(getattr(args, "disallow_client", None) or ())
    clients = [c for c in body.get("allowed_clients", []) if c not in removed]
    body["allowed_clients"] = list(dict.fromkeys([*clients, *(args.allow_client or [])]))
    return body


def _print_tenant(route: dict[str, Any], etag: str | None, args: argparse.Namespace, out: TextIO,
                  headline: str = "") -> None:
    def human() -> None:
        if headline:
            print(headline, file=out)
        fields({**route, "etag": etag}, out)
    _emit(args, {**route, "etag": etag}, out, human)


def tenants_add(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    body = _tenant_body(args, {})
    try:
        reply = api.call("PUT", f"/tenants/{args.tenant_id}", body=body, headers={"If-None-Match": "*"})
    except Stale as exc:
        raise CtlError(f"tenant {args.tenant_id} already exists; use 'tenants update'") from exc
    _print_tenant(reply.body, reply.etag, args, out, f"added tenant {reply.body['tenant_id']}")


def tenants_update(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    """Read, change, write back with If-Match: a concurrent change makes this fail instead of being lost."""
    what = f"tenant {args.tenant_id}"
    current = api.call("GET", f"/tenants/{args.tenant_id}", what=what)
    if all(getattr(args, option) is None for option in _UPDATE_OPTIONS):
        raise CtlError("nothing to change: give at least one option (see 'tenants update --help')")
    body = _tenant_body(args, current.body)
    etag = args.if_match or current.etag
    try:
        reply = api.call("PUT", f"/tenants/{args.tenant_id}", body=body, headers={"If-Match": etag} if etag else {},
                         what=what)
    except Stale as exc:
        raise CtlError(f"{what}: {STALE}") from exc
    _print_tenant(reply.body, reply.etag, args, out, f"updated {what}")


def tenants_list(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    tenants = api.call("GET", "/tenants").body["tenants"]
    rows = [{**t, "clients": len(t.get("allowed_clients") or [])} for t in tenants]
    _emit(args, {"tenants": tenants}, out, lambda: table(rows, _TENANT_COLUMNS, out))


def tenants_show(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    reply = api.call("GET", f"/tenants/{args.tenant_id}", what=f"tenant {args.tenant_id}")
    _print_tenant(reply.body, reply.etag, args, out)


def _if_match(args: argparse.Namespace) -> dict[str, str]:
    return {"If-Match": args.if_match} if args.if_match else {}


def tenants_disable(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"tenant {args.tenant_id}"
    try:
        reply = api.call("POST", f"/tenants/{args.tenant_id}/disable", headers=_if_match(args), what=what)
    except Stale as exc:
        raise CtlError(f"{what}: {STALE}") from exc
    _print_tenant(reply.body, reply.etag, args, out, f"disabled {what}")


def tenants_remove(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"tenant {args.tenant_id}"
    if not args.yes:
        raise CtlError(f"removing {what} stops its traffic at once; add --yes to confirm")
    try:
        api.call("DELETE", f"/tenants/{args.tenant_id}", headers=_if_match(args), what=what)
    except Stale as exc:
        raise CtlError(f"{what}: {STALE}") from exc
    _emit(args, {"tenant_id": args.tenant_id, "removed": True}, out, lambda: print(f"removed {what}", file=out))


# --- clients ----------------------------------------------------------------------------------------

_CLIENT_COLUMNS = (("client_id", "CLIENT ID"), ("name", "NAME"), ("status", "STATUS"), ("created", "CREATED"))
_SECRET_COLUMNS = (("secret_id", "SECRET ID"), ("starts_with", "STARTS WITH"), ("created", "CREATED"),
                   ("expires_on", "EXPIRES"), ("enabled", "ENABLED"))


def clients_list(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    clients = api.call("GET", "/clients").body["clients"]
    _emit(args, {"clients": clients}, out, lambda: table(clients, _CLIENT_COLUMNS, out))


def _jwks_file(path: str) -> Any:
    """A JWK Set file (public keys); the gateway validates it and names any bad field."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CtlError(f"cannot read the JWK Set file {path}: {exc.strerror}") from exc
    return _json_option(text, path)


def _kids(client: dict[str, Any]) -> dict[str, Any]:
    """For people: the registered keys by kid, not the whole JWK Set."""
    if "jwks" not in client:
        return client
    rest = {k: v for k, v in client.items() if k != "jwks"}
    return {**rest, "keys": [f"{k.get('kid')} ({k.get('kty')})" for k in client["jwks"].get("keys", [])]}


def clients_create(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    """With --jwks or --jwks-uri the client authenticates with private_key_jwt and gets no secret;
    without, its secret is printed this once."""
    body: dict[str, Any] = {"name": args.name}
    if args.jwks:
        body["jwks"] = _jwks_file(args.jwks)
    if args.jwks_uri:
        body["jwks_uri"] = args.jwks_uri
    client = api.call("POST", "/clients", body=body).body

    def human() -> None:
        print(f"created client {client['client_id']}", file=out)
        if "client_secret" in client:
            print("its secret, shown once (store it now):", file=out)
        fields(_kids({k: v for k, v in client.items() if k != "secret"}), out)
    _emit(args, client, out, human)


def clients_set_jwks(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"client {args.client_id}"
    client = api.call("PUT", f"/clients/{args.client_id}/jwks", body=_jwks_file(args.file), what=what).body

    def human() -> None:
        print(f"replaced the JWK Set of {what}", file=out)
        fields(_kids(client), out)
    _emit(args, client, out, human)


def clients_show(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"client {args.client_id}"
    client = api.call("GET", f"/clients/{args.client_id}", what=what).body
    secrets = api.call("GET", f"/clients/{args.client_id}/secrets", what=what).body["secrets"]

    def human() -> None:
        fields(_kids(client), out)
        print("\nsecrets (values are never shown):", file=out)
        rows = [{**s, "starts_with": f"{s['secret_id']}~{s['hint']}..."} for s in secrets]
        table(rows, _SECRET_COLUMNS, out)
    _emit(args, {**client, "secrets": secrets}, out, human)


def clients_disable(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"client {args.client_id}"
    client = api.call("POST", f"/clients/{args.client_id}/disable", what=what).body

    def human() -> None:
        print(f"disabled {what}: it gets no new tokens within the secret cache TTL", file=out)
        fields(client, out)
    _emit(args, client, out, human)


# --- invitations and signing keys -------------------------------------------------------------------

_INVITATION_COLUMNS = (("invitation_id", "INVITATION ID"), ("status", "STATUS"), ("expires", "EXPIRES"),
                       ("note", "NOTE"), ("client_id", "CLIENT ID"))


def invitations_create(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    body: dict[str, Any] = {"expires_in_hours": args.expires_in_hours}
    if args.note is not None:
        body["note"] = args.note
    invitation = api.call("POST", "/invitations", body=body).body

    def human() -> None:
        print(f"invitation code (shown once; give it to the consumer): {invitation['code']}", file=out)
        fields(invitation, out, ["invitation_id", "expires", "note"])
    _emit(args, invitation, out, human)


def invitations_list(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    invitations = api.call("GET", "/invitations").body["invitations"]
    _emit(args, {"invitations": invitations}, out, lambda: table(invitations, _INVITATION_COLUMNS, out))


def invitations_revoke(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    what = f"invitation {args.invitation_id}"
    api.call("DELETE", f"/invitations/{args.invitation_id}", what=what)
    _emit(args, {"invitation_id": args.invitation_id, "revoked": True}, out,
          lambda: print(f"revoked {what}", file=out))


def signing_key_rotate(api: ManageApi, args: argparse.Namespace, out: TextIO) -> None:
    key = api.call("POST", "/signing-keys/rotate").body
    _emit(args, key, out, lambda: print(f"new signing key {key['kid']} (created {key['created']}); "
                                        "older keys keep verifying until their tokens expire", file=out))


# --- the parser -------------------------------------------------------------------------------------

def _common(defaults: bool) -> argparse.ArgumentParser:
    """--url/--key/--json, accepted before or after the command (leaf parsers must not reset them)."""
    common = argparse.ArgumentParser(add_help=False)
    default: Any = None if defaults else argparse.SUPPRESS
    common.add_argument("--url", default=default, help=f"management API base, e.g. https://<app>/api/manage "
                                                       f"(default: ${URL_ENV}, else .local/stack.json)")
    common.add_argument("--key", default=default, help=f"function key (default: ${KEY_ENV}, else .local/stack.json;"
                                                       " prefer the variable: flags show in process lists)")
    common.add_argument("--json", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="print JSON for scripts instead of tables")
    return common


def _tenant_fields(parser: argparse.ArgumentParser, adding: bool) -> None:
    parser.add_argument("tenant_id", help="the customer's Azure AD tenant id (a GUID)")
    parser.add_argument("--display-name", help="name shown to operators and consumers")
    parser.add_argument("--provider-base-url", required=adding, help="the provider's FHIR base URL (https)")
    parser.add_argument("--fhir-version", required=adding, choices=FHIR_VERSIONS, help="the provider's FHIR version")
    parser.add_argument("--upstream-auth", metavar="JSON",
                        help='how the gateway authenticates to the provider, e.g. \'{"kind": "none"}\'')
    parser.add_argument("--allow-client", action="append", metavar="CLIENT_ID",
                        help="let this client request tokens for the tenant (repeatable)")
    parser.add_argument("--resource-types", metavar="TYPE,TYPE", help="allow only these resource types")
    parser.add_argument("--batch-passthrough", action=argparse.BooleanOptionalAction, default=None,
                        help="send batches to the provider whole")
    parser.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None,
                        help="whether the tenant takes traffic (default for a new tenant: yes)")


def _leaf(group: Any, name: str, help_text: str, command: Command, common: argparse.ArgumentParser
          ) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text, parents=[common])
    parser.set_defaults(command=command)
    return parser


def _add_tenants(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("tenants", help="tenant routes (tenant id -> provider FHIR endpoint)",
                                description="Onboard and manage tenant routes (ROUTE-2).").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    _tenant_fields(_leaf(group, "add", "onboard a new tenant (fails if it exists)", tenants_add, common), True)
    update = _leaf(group, "update", "change a tenant: reads its ETag, writes back with If-Match", tenants_update,
                   common)
    _tenant_fields(update, False)
    update.add_argument("--disallow-client", action="append", metavar="CLIENT_ID",
                        help="stop this client getting tokens for the tenant (repeatable)")
    update.add_argument("--all-resource-types", action="store_true", default=None,
                        help="drop the resource type allow-list")
    update.add_argument("--if-match", metavar="ETAG", help="write only if the tenant still has this ETag "
                                                           "(from 'show'); default: the ETag just read")
    _leaf(group, "list", "list every tenant", tenants_list, common)
    _leaf(group, "show", "show one tenant and its ETag", tenants_show, common).add_argument("tenant_id")
    for name, help_text, command in (("disable", "stop a tenant's traffic, keep its route", tenants_disable),
                                     ("remove", "delete a tenant's route", tenants_remove)):
        parser = _leaf(group, name, help_text, command, common)
        parser.add_argument("tenant_id")
        parser.add_argument("--if-match", metavar="ETAG", help="only if the tenant still has this ETag")
        if name == "remove":
            parser.add_argument("--yes", action="store_true", help="confirm the removal")


def _add_clients(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("clients", help="registered consumer clients",
                                description="Register, inspect and disable consumer clients.").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    _leaf(group, "list", "list every client", clients_list, common)
    create = _leaf(group, "create", "register a client: a secret (shown once), or with --jwks a JWK Set for "
                                    "private_key_jwt (SMART Backend Services)", clients_create, common)
    create.add_argument("name", help="the consumer's name, shown to operators")
    keys = create.add_mutually_exclusive_group()
    keys.add_argument("--jwks", metavar="FILE", help="a JSON file holding the client's public JWK Set")
    keys.add_argument("--jwks-uri", metavar="URL", help="the https URL where the client publishes its JWK Set")
    set_jwks = _leaf(group, "set-jwks", "replace a client's JWK Set (register the new key beside the old one "
                                        "first to rotate)", clients_set_jwks, common)
    set_jwks.add_argument("client_id")
    set_jwks.add_argument("file", metavar="FILE", help="a JSON file holding the public JWK Set")
    _leaf(group, "show", "show a client and its secrets (never their values)", clients_show,
          common).add_argument("client_id")
    _leaf(group, "disable", "disable a client: it gets no more tokens", clients_disable,
          common).add_argument("client_id")


def _add_invitations(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("invitations", help="invitation codes for the consumer portal",
                                description="Issue, list and revoke portal invitation codes.").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = _leaf(group, "create", "issue a single-use invitation code (printed once)", invitations_create, common)
    create.add_argument("--expires-in-hours", type=float, default=72.0, help="validity (default 72, at most 720)")
    create.add_argument("--note", help="who the code is for (shown in the list)")
    _leaf(group, "list", "list invitations (never their codes)", invitations_list, common)
    _leaf(group, "revoke", "make an unused invitation unusable", invitations_revoke,
          common).add_argument("invitation_id")


def _add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _leaf(commands, "doctor", "check a deployment end to end: discovery, health, and per tenant a token "
                                       "and one Patient search (exit 1 on any failure)", doctor, common)
    parser.add_argument("--tenant", action="append", metavar="TENANT_ID",
                        help="check only this tenant (repeatable; default: every enabled tenant)")
    parser.add_argument("--client-id", help=f"probe client id (default: ${PROBE_ID_ENV}, else the demo client in "
                                            ".local/stack.json); every tenant must allow it")
    parser.add_argument("--client-secret", help=f"probe client secret (default: ${PROBE_SECRET_ENV}; prefer the "
                                                "variable: flags show in process lists)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatewayctl", parents=[_common(defaults=True)],
        description="Operate the FHIR gateway through its management API.",
        epilog=f"The URL and key come from --url/--key, else ${URL_ENV}/${KEY_ENV}, else .local/stack.json "
               "(written by scripts/dev).")
    common = _common(defaults=False)
    commands = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_tenants(commands, common)
    _add_clients(commands, common)
    _add_invitations(commands, common)
    keys = commands.add_parser("signing-key", help="token signing keys",
                               description="Rotate the token signing key.").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    _leaf(keys, "rotate", "create a new signing key; old ones keep verifying", signing_key_rotate, common)
    _add_doctor(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api = ManageApi(resolve_target(args.url, args.key))
        args.command(api, args, sys.stdout)
    except CtlError as exc:
        print(f"gatewayctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
