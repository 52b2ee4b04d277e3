"""Portal sessions and CSRF tokens, signed with the HMAC key the signer keeps in the stack's Key Vault emulator.

A hand-moved clock steps across session and form-token expiry; a second signer on the same vault
stands for a second instance of the Function App.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential

from devtools.stack import Stack
from shared.portal.sessions import FORM_TOKEN_SECONDS, KEY_NAME, SESSION_SECONDS, SessionSigner
from shared.stores.keyvault import KeyVaultSecretStore
from tests.fakes import Clock

CLIENT = "0b6f0d4e-8f63-4c55-9d0c-3f4f7f1c2a11"


@pytest.fixture(scope="module")
def vault(stack: Stack) -> Iterator[KeyVaultSecretStore]:
    ready = stack.processes["keyvault"].ready
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IDENTITY_ENDPOINT", ready["identity_endpoint"])
        env.setenv("IDENTITY_HEADER", ready["identity_header"])
        for name in ("AZURE_CLIENT_ID", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT"):
            env.delenv(name, raising=False)
        yield KeyVaultSecretStore.connect(ready["vault_url"], ManagedIdentityCredential(), ready["ca_bundle"])


@pytest.fixture()
def clock() -> Clock:
    return Clock(1_800_000_000.0)


def test_the_key_lives_in_key_vault_and_instances_share_it(vault: KeyVaultSecretStore, clock: Clock) -> None:
    first = SessionSigner(vault, clock)
    token, session = first.issue(CLIENT, "0123456789abcdef", 0)
    record = vault.get_secret(KEY_NAME)
    assert record.value and len(base64.urlsafe_b64decode(record.value + "=")) == 32
    second = SessionSigner(vault, clock)
    assert second.verify(token) == session
    assert second.check_csrf(session, first.csrf_token(session))


def test_a_session_expires_and_carries_only_ids(vault: KeyVaultSecretStore, clock: Clock) -> None:
    signer = SessionSigner(vault, clock)
    token, session = signer.issue(CLIENT, "0123456789abcdef", 0)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert set(claims) == {"cid", "sid", "iat", "exp", "sec", "gen"} and claims["cid"] == CLIENT
    clock.now += SESSION_SECONDS - 1
    assert signer.verify(token) == session
    clock.now += 1
    assert signer.verify(token) is None


def test_forged_and_malformed_sessions_are_refused(vault: KeyVaultSecretStore, clock: Clock) -> None:
    signer = SessionSigner(vault, clock)
    token, _ = signer.issue(CLIENT, "0123456789abcdef", 0)
    payload, mac = token.split(".")
    for bad in ("", ".", payload, f"{payload}.", f"{payload}.{mac[:-1]}", f"{mac}.{payload}", "é.é",
                f"{payload}x.{mac}"):
        assert signer.verify(bad) is None, bad


def test_csrf_tokens_belong_to_one_session(vault: KeyVaultSecretStore, clock: Clock) -> None:
    signer = SessionSigner(vault, clock)
    _, one = signer.issue(CLIENT, "0123456789abcdef", 0)
    _, other = signer.issue(CLIENT, "0123456789abcdef", 0)
    assert signer.csrf_token(one) != signer.csrf_token(other)
    assert not signer.check_csrf(one, signer.csrf_token(other))
    assert not signer.check_csrf(one, "")
    assert not signer.check_csrf(one, "é")


def test_form_tokens_are_signed_matched_and_expire(vault: KeyVaultSecretStore, clock: Clock) -> None:
    signer = SessionSigner(vault, clock)
    token = signer.form_token()
    assert signer.check_form_token(token, token)
    assert not signer.check_form_token(token, signer.form_token()), "field must repeat this browser's cookie"
    assert not signer.check_form_token("", "")
    nonce, expires, mac = token.split(".")
    assert not signer.check_form_token(f"{nonce}.{int(expires) + 999}.{mac}", f"{nonce}.{int(expires) + 999}.{mac}")
    assert not signer.form_token_valid(f"{nonce}.²³.{mac}")
    clock.now += FORM_TOKEN_SECONDS
    assert not signer.check_form_token(token, token)
