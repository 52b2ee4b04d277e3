"""The registries and validators refuse with domain errors, never HTTP-shaped ones.

Why: each refusal is answered by several endpoint families (the management API, the portal, the
token endpoint), so the rule only says what it refused and which input is to blame; the status and
the body are the edge's (tests/unit/test_unit_edge.py). Over the in-memory store fakes.
"""

from __future__ import annotations

import json

import pytest

from shared.client_assertion import validate_jwks
from shared.client_secrets import PEPPER_PREFIX
from shared.clients import MAX_JWKS_CHARS, ClientRegistry
from shared.errors import (
    GatewayError,
    InvalidField,
    InvitationUsed,
    LastLiveSecret,
    VerifierKeyUnavailable,
)
from shared.invitations import MAX_HOURS, InvitationRegistry
from shared.routes import parse_route
from tests.fakes import FakeSecretStore, FakeTable

pytestmark = pytest.mark.unit

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture()
def vault() -> FakeSecretStore:
    return FakeSecretStore()


@pytest.fixture()
def clients(vault: FakeSecretStore) -> ClientRegistry:
    return ClientRegistry(FakeTable().sibling, vault, 0)


def test_the_last_live_secret_is_refused_as_LastLiveSecret_naming_secret_id(clients: ClientRegistry) -> None:
    client, secret, _ = clients.create("app")
    with pytest.raises(LastLiveSecret) as refused:
        clients.delete_secret(client.client_id, secret[:16])
    assert refused.value.field == "secret_id" and "last live secret" in refused.value.detail


def test_a_jwk_set_too_large_for_the_row_is_an_invalid_jwks_field(clients: ClientRegistry) -> None:
    client, _, _ = clients.create("app")
    huge = {"keys": [{"kid": "k" * MAX_JWKS_CHARS}]}
    with pytest.raises(InvalidField) as refused:
        clients.set_jwks(client.client_id, huge)
    assert (refused.value.field, refused.value.subject) == ("jwks", "JWK Set")


def test_a_disabled_pepper_refuses_new_secrets_as_VerifierKeyUnavailable(clients: ClientRegistry,
                                                                         vault: FakeSecretStore) -> None:
    client, _, _ = clients.create("app")
    [pepper] = vault.list_secrets(PEPPER_PREFIX)
    vault.update_properties(pepper.name, enabled=False)
    with pytest.raises(VerifierKeyUnavailable) as refused:
        clients.add_secret(client.client_id)
    assert refused.value.name == pepper.name


def test_a_used_invitation_cannot_be_revoked_InvitationUsed() -> None:
    invitations = InvitationRegistry(FakeTable())
    invitation, code = invitations.create()
    invitations.claim(code)
    with pytest.raises(InvitationUsed):
        invitations.revoke(invitation.invitation_id)


@pytest.mark.parametrize(("hours", "note", "field"), [
    (0, "", "expires_in_hours"), (MAX_HOURS + 1, "", "expires_in_hours"), (True, "", "expires_in_hours"),
    (24, "n" * 201, "note"), (24, 7, "note"),
])
def test_an_invalid_invitation_request_names_its_field(hours: object, note: object, field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        InvitationRegistry(FakeTable()).create(hours, note)
    assert (refused.value.field, refused.value.subject) == (field, "invitation")


def test_a_route_refusal_names_its_field_even_inside_upstream_auth() -> None:
    body = {"provider_base_url": "https://ehr.example.org/fhir", "fhir_version": "r4",
            "upstream_auth": {"kind": "bearer"}}
    with pytest.raises(InvalidField) as refused:
        parse_route(TENANT, body, "2024-01-01T00:00:00+00:00")
    assert (refused.value.field, refused.value.subject) == ("upstream_auth.secret_name", "tenant route")
    assert "required" in refused.value.detail


@pytest.mark.parametrize(("value", "field"), [
    ([], "jwks"), ({"keys": []}, "jwks.keys"), ({"keys": [{"kty": "RSA"}]}, "jwks.keys[0].kid"),
])
def test_a_jwk_set_refusal_is_an_InvalidField_not_an_http_error(value: object, field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        validate_jwks(json.loads(json.dumps(value)))
    assert refused.value.field == field and not isinstance(refused.value, GatewayError)
