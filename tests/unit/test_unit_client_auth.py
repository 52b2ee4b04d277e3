"""The token endpoint's client-authentication step alone (shared/client_auth.py `ClientAuthenticator`).

tests/unit/test_unit_token_service.py proves it through `TokenService.issue`, throttle included;
here, that the step answers "which client" from each way in, and nothing else.
"""

from __future__ import annotations

import pytest

from shared.client_auth import ClientAuthenticator
from shared.errors import OAuthError
from shared.http import basic_authorization_header
from tests.unit.world import URLS, build_world

pytestmark = pytest.mark.unit

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_a_form_secret_and_a_basic_header_name_the_same_client() -> None:
    world = build_world()
    client_id, secret = world.client()
    step = ClientAuthenticator(world.clients)
    by_form = step.authenticate({"client_id": client_id, "client_secret": secret}, {}, URLS)
    by_basic = step.authenticate({}, {"authorization": basic_authorization_header(client_id, secret)}, URLS)
    assert by_form.client_id == by_basic.client_id == client_id


def test_an_assertion_from_a_client_without_registered_keys_is_invalid_client_like_a_wrong_secret() -> None:
    """The client is looked up first (its keys are what the assertion is checked against); a caller
    who has proved nothing learns nothing about the client."""
    world = build_world()
    client_id, _ = world.client()
    with pytest.raises(OAuthError) as caught:
        ClientAuthenticator(world.clients).authenticate(
            {"client_id": client_id, "client_assertion_type": ASSERTION_TYPE, "client_assertion": "a.b.c"}, {}, URLS)
    assert (caught.value.error, caught.value.status) == ("invalid_client", 401)
