"""`SecretStore` on Azure Key Vault (azure-keyvault-secrets): a vault in Azure, the emulator locally.

The gateway authenticates with azure-identity's DefaultAzureCredential: the user-assigned
managed identity in Azure (AZURE_CLIENT_ID), and locally the same managed-identity wire
protocol served by the emulator (IDENTITY_ENDPOINT / IDENTITY_HEADER). No code path here
knows it is local: the emulator presents a self-signed certificate (KEY_VAULT_CA_BUNDLE), and
its bearer challenge names a resource the SDK's domain check accepts, so that check stays on.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
)
from azure.core.pipeline.policies import RetryPolicy
from azure.keyvault.secrets import KeyVaultSecret, SecretClient, SecretProperties

from shared import telemetry
from shared.errors import NotFound, StoreUnavailable
from shared.offloop import may_block
from shared.stores import SecretRecord
from shared.stores.backoff import Backoff
from shared.stores.sdk_errors import translated

_SDK_OPTIONS = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 2, "retry_backoff_factor": 0.4}
_MAX_IN_CALL_WAIT = 1.0  # a longer Retry-After is waited out by Backoff, not by a sleeping request thread
T = TypeVar("T")


class _ShortWaitRetryPolicy(RetryPolicy):
    """The SDK's retry policy, except that it does not sleep on a Retry-After longer than a second
    (azure-core would, once per retry, inside the request's thread): the call fails at once and the
    store's Backoff makes every caller honour the wait without calling the vault."""

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        wait = self.get_retry_after(response)
        if wait is not None and wait > _MAX_IN_CALL_WAIT:
            return False
        return bool(super().is_retry(settings, response))


def _disabled(exc: HttpResponseError) -> Exception | None:
    """A disabled secret is unreadable (403): to us, absent."""
    return NotFound() if exc.status_code == 403 and "disabled" in str(exc).lower() else None


def _translated() -> AbstractContextManager[None]:
    """SDK exceptions in the store's vocabulary (shared.stores.sdk_errors)."""
    return translated("key-vault", _disabled)


class KeyVaultSecretStore:
    def __init__(self, client: SecretClient) -> None:
        self._client = client
        self._backoff = Backoff("key-vault")

    @classmethod
    def connect(cls, vault_url: str, credential: Any, ca_bundle: str | None = None) -> KeyVaultSecretStore:
        options: dict[str, Any] = dict(_SDK_OPTIONS)
        options["retry_policy"] = _ShortWaitRetryPolicy(retry_total=options["retry_total"],
                                                        retry_backoff_factor=options["retry_backoff_factor"])
        if ca_bundle:
            options["connection_verify"] = ca_bundle
        return cls(SecretClient(vault_url=vault_url, credential=credential, **options))

    def _call(self, operation: str, fn: Callable[[SecretClient], T]) -> T:
        """One vault call, as one span (shared/telemetry.py) named by `operation`, never by the secret."""
        with telemetry.store_call("key-vault", operation):
            may_block()  # network I/O: never on the event loop (shared/offloop.py)
            self._backoff.check()  # while the vault is down or throttling us: fail fast, do not call it
            try:
                with _translated():
                    return fn(self._client)
            except StoreUnavailable as exc:
                self._backoff.failed(exc)
                raise

    def set_secret(self, name: str, value: str, *, expires_on: datetime | None = None,
                   tags: dict[str, str] | None = None, content_type: str | None = None) -> SecretRecord:
        secret = self._call("set_secret", lambda c: c.set_secret(name, value, expires_on=expires_on, tags=tags,
                                                                 content_type=content_type))
        return _record(secret.properties, None)

    def get_secret(self, name: str) -> SecretRecord:
        secret: KeyVaultSecret = self._call("get_secret", lambda c: c.get_secret(name))
        return _record(secret.properties, secret.value)

    def list_secrets(self, prefix: str) -> list[SecretRecord]:
        def run(c: SecretClient) -> list[SecretRecord]:
            return [_record(p, None) for p in c.list_properties_of_secrets() if (p.name or "").startswith(prefix)]
        return self._call("list_properties_of_secrets", run)

    def update_properties(self, name: str, *, enabled: bool | None = None,
                          expires_on: datetime | None = None,
                          tags: dict[str, str] | None = None) -> SecretRecord:
        changes: dict[str, Any] = {k: v for k, v in (("enabled", enabled), ("expires_on", expires_on), ("tags", tags))
                   if v is not None}
        props = self._call("update_secret_properties", lambda c: c.update_secret_properties(name, **changes))
        return _record(props, None)

    def delete_secret(self, name: str) -> None:
        # Soft delete: in Azure, purge protection keeps the verifier recoverable for the retention period.
        self._call("begin_delete_secret", lambda c: c.begin_delete_secret(name).wait())

    def ping(self) -> None:
        self._call("ping", lambda c: next(iter(c.list_properties_of_secrets(max_page_size=1)), None))


def _record(props: SecretProperties, value: str | None) -> SecretRecord:
    return SecretRecord(
        name=props.name or "",
        value=value,
        enabled=props.enabled is not False,
        expires_on=props.expires_on,
        not_before=props.not_before,
        created_on=props.created_on,
        tags=dict(props.tags or {}),
    )
