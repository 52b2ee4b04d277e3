"""The pieces both stores and both HMAC-key users share: azure-core errors in the stores' vocabulary,
and the gateway's own HMAC keys in Key Vault."""

from __future__ import annotations

import base64
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared.errors import AlreadyExists, NotFound, PreconditionFailed, StoreUnavailable
from shared.page_links import PagingKey
from shared.portal.sessions import SessionSigner
from shared.stores.keyvault import _translated as vault_translated
from shared.stores.tables import _translated as table_translated
from shared.vault_key import KEY_TTL_SECONDS, VaultHmacKey
from tests.fakes import FakeSecretStore

pytestmark = pytest.mark.unit


def _http(status: int, message: str = "failed", cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    exc = cls(message=message)
    exc.status_code = status
    return exc


Translated = Callable[[], AbstractContextManager[None]]


def _raised(context: Translated, exc: Exception) -> Exception:
    with pytest.raises(Exception) as caught, context():
        raise exc
    return caught.value


@pytest.mark.parametrize("context", [table_translated, vault_translated])
def test_both_stores_map_absent_existing_throttled_and_transport_errors_alike(context: Translated) -> None:
    assert isinstance(_raised(context, ResourceNotFoundError(message="x")), NotFound)
    assert isinstance(_raised(context, ResourceExistsError(message="x")), AlreadyExists)
    throttled = _raised(context, _http(429))
    assert isinstance(throttled, StoreUnavailable) and throttled.throttled
    plain = _raised(context, _http(500))
    assert isinstance(plain, StoreUnavailable) and not plain.throttled
    assert isinstance(_raised(context, ServiceRequestError("refused")), StoreUnavailable)
    assert isinstance(_raised(context, ClientAuthenticationError(message="no")), StoreUnavailable)


def test_only_table_storage_reads_412_as_a_lost_race() -> None:
    assert isinstance(_raised(table_translated, _http(412)), PreconditionFailed)
    assert isinstance(_raised(table_translated, _http(412, cls=ResourceModifiedError)), PreconditionFailed)
    assert isinstance(_raised(vault_translated, _http(412)), StoreUnavailable)


def test_only_key_vault_reads_a_disabled_secret_as_absent() -> None:
    assert isinstance(_raised(vault_translated, _http(403, "Operation get is not allowed on a disabled secret.")),
                      NotFound)
    assert isinstance(_raised(vault_translated, _http(403, "Forbidden")), StoreUnavailable)
    assert isinstance(_raised(table_translated, _http(403, "disabled")), StoreUnavailable)


def test_a_key_is_created_once_shared_and_reread_after_its_ttl() -> None:
    clock = [1000.0]
    vault = FakeSecretStore(lambda: clock[0])
    first = VaultHmacKey(vault, "some-key", "tests", lambda: clock[0])
    key = first.current()
    assert len(key) == 32 and first.current() == key
    assert VaultHmacKey(vault, "some-key", "tests").current() == key, "another instance reads the same key"
    vault.set_secret("some-key", base64.urlsafe_b64encode(b"r" * 32).decode())
    assert first.current() == key, "cached until the TTL passes"
    clock[0] += KEY_TTL_SECONDS
    assert first.current() == b"r" * 32


def test_a_key_written_without_padding_still_reads_and_an_empty_one_is_refused() -> None:
    vault = FakeSecretStore()
    vault.set_secret("unpadded", base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode())
    assert VaultHmacKey(vault, "unpadded", "tests").current() == b"k" * 32
    vault.set_secret("empty", "")
    with pytest.raises(RuntimeError, match="empty"):
        VaultHmacKey(vault, "empty", "tests").current()


def test_page_links_and_portal_sessions_keep_their_own_keys() -> None:
    vault = FakeSecretStore()
    paging = PagingKey(vault).current()
    signer = SessionSigner(vault)
    assert signer.form_token_valid(signer.form_token())
    stored = vault.get_secret("paging-link-key").value
    assert stored and base64.urlsafe_b64decode(stored) == paging
    session_key = vault.get_secret("portal-session-key").value
    assert session_key and session_key != stored
