"""One Key Vault request in, one Response out: authenticate, inject faults, validate, run, answer.

No sockets here (the server hands in method, path, query, Authorization and body), so it is easy
to reason about. The store's domain errors become Key Vault's error bodies here, and only here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from devtools.identity_endpoint import IdentityEndpoint
from devtools.keyvault_emulator.control import FaultInjector, RequestStats
from devtools.keyvault_emulator.protocol import (
    MAX_PAGE_SIZE,
    Call,
    KeyVaultError,
    Response,
    attribute_fields,
    bearer_token,
    challenge_resource,
    content_fields,
    deleted_conflict,
    deleted_secret_not_found,
    internal_error,
    json_object,
    parse_call,
    route,
    secret_disabled,
    secret_not_found,
    secret_value,
    unauthorized,
)
from devtools.keyvault_emulator.responses import Bodies
from devtools.keyvault_emulator.storage import (
    DeletedSecretNotFound,
    NameDeletedButRecoverable,
    SecretNotFound,
    StoreError,
    VaultStore,
)

_LOG = logging.getLogger("devtools.keyvault_emulator")

_STORE_ERRORS: dict[type[StoreError], Callable[[str], KeyVaultError]] = {
    SecretNotFound: secret_not_found,
    DeletedSecretNotFound: deleted_secret_not_found,
    NameDeletedButRecoverable: deleted_conflict,
}


class VaultService:
    """Turns one HTTP request into one Response."""

    def __init__(
        self,
        store: VaultStore,
        identity: IdentityEndpoint,
        vault_url: str,
        faults: FaultInjector,
        stats: RequestStats,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        self.store = store
        self.identity = identity
        self.vault_url = vault_url
        self.resource = challenge_resource(vault_url)
        self.faults = faults
        self.stats = stats
        self.bodies = Bodies(vault_url, page_size)

    def handle(self, method: str, path: str, raw_query: str, authorization: str | None, body: bytes) -> Response:
        operation, groups = route(method, path)
        try:
            response = self._dispatch(operation, groups, raw_query, authorization, body)
        except KeyVaultError as err:
            response = err.response()
        except StoreError as err:
            response = _STORE_ERRORS[type(err)](err.name).response()
        except Exception:
            # A bug here must look like a server error to the client, not a dropped connection
            # (which the SDK would retry as a network failure).
            _LOG.exception("emulator failure in %s", operation)
            response = internal_error().response()
        response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        self.stats.record(operation, response.status)
        return response

    def _dispatch(
        self, operation: str, groups: dict[str, str], raw_query: str, authorization: str | None, body: bytes
    ) -> Response:
        self._authenticate(authorization)
        fault = self.faults.take()
        if fault is not None:
            raise fault
        call = parse_call(operation, groups, raw_query, body)
        handler: Callable[[Call], Response] = getattr(self, f"_op_{operation}")
        return handler(call)

    def _authenticate(self, authorization: str | None) -> None:
        if not self.identity.validate(bearer_token(authorization, self.resource), self.resource):
            raise unauthorized("The access token is invalid, expired, or was not issued for this vault.", self.resource)

    # -- operations on live secrets

    def _op_set(self, call: Call) -> Response:
        params = json_object(call.body)
        value = secret_value(params)
        now = int(time.time())
        record = {"version": uuid.uuid4().hex, "value": value, "created": now, "updated": now, "enabled": True}
        record.update(content_fields(params))
        record.update(attribute_fields(params.get("attributes")))
        name, stored = self.store.add_version(call.name, record)
        return Response(200, self.bodies.bundle(name, stored, with_value=True))

    def _op_get(self, call: Call) -> Response:
        name, record = self.store.find(call.name, call.version)
        if not record["enabled"]:
            raise secret_disabled()
        return Response(200, self.bodies.bundle(name, record, with_value=True))

    def _op_update(self, call: Call) -> Response:
        params = json_object(call.body)
        changes = {**content_fields(params), **attribute_fields(params.get("attributes"))}
        name, record = self.store.update(call.name, call.version, changes)
        return Response(200, self.bodies.bundle(name, record, with_value=False))

    def _op_delete(self, call: Call) -> Response:
        return Response(200, self.bodies.deleted_bundle(self.store.delete(call.name)))

    def _op_list(self, call: Call) -> Response:
        items = [
            (key, self.bodies.item(name, record, versioned=False)) for key, name, record in self.store.latest_versions()
        ]
        return Response(200, self.bodies.page(items, call.query, "/secrets"))

    def _op_list_versions(self, call: Call) -> Response:
        name, records = self.store.versions(call.name)
        items = [
            (f"{index:06d}", self.bodies.item(name, record, versioned=True)) for index, record in enumerate(records)
        ]
        return Response(200, self.bodies.page(items, call.query, f"/secrets/{name}/versions"))

    # -- operations on soft-deleted secrets

    def _op_get_deleted(self, call: Call) -> Response:
        return Response(200, self.bodies.deleted_bundle(self.store.deleted(call.name)))

    def _op_list_deleted(self, call: Call) -> Response:
        items = [(key, self.bodies.deleted_item(entry)) for key, entry in self.store.all_deleted()]
        return Response(200, self.bodies.page(items, call.query, "/deletedsecrets"))

    def _op_purge(self, call: Call) -> Response:
        self.store.purge(call.name)
        return Response(204)

    def _op_recover(self, call: Call) -> Response:
        name, record = self.store.recover(call.name)
        return Response(200, self.bodies.bundle(name, record, with_value=False))
