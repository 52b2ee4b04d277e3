"""Invitation codes against real Table Storage (the stack's Azurite): hashing, claiming, the ETag guard.

The race test does not hope for threads to collide: a table wrapper lets a second registration
claim the code between the first one's read and its write, which is exactly the window the ETag
must close.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devtools.stack import Stack
from shared.edge import problem
from shared.errors import InvitationUsed
from shared.invitations import InvalidInvitation, InvitationRegistry, code_id
from shared.stores import Entity
from shared.stores.tables import AzureTable
from tests.fakes import Clock


@pytest.fixture()
def table(stack: Stack) -> AzureTable:
    name = f"invitations{uuid.uuid4().hex[:12]}"
    return AzureTable.connect(name, connection_string=stack.processes["azurite"].ready["connection_string"])


class RacingTable:
    """The real table, except that the first ETag-guarded replace lets `rival` run first."""

    def __init__(self, table: AzureTable) -> None:
        self.table, self.rival = table, None

    def replace(self, key: str, data: dict[str, Any], etag: str | None = None) -> Entity:
        if self.rival is not None and etag is not None:
            rival, self.rival = self.rival, None
            rival()
        return self.table.replace(key, data, etag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_only_a_hash_of_the_code_is_stored(table: AzureTable) -> None:
    invitation, code = InvitationRegistry(table).create(2, "note")
    row = table.get(invitation.invitation_id).data
    assert code not in str(row) and code.split(".")[1] not in str(row)
    assert len(row["code_hash"]) == 64 and row["status"] == "pending"
    assert code_id(code) == invitation.invitation_id


def test_a_claim_that_loses_the_race_is_refused(table: AzureTable) -> None:
    racing = RacingTable(table)
    registry = InvitationRegistry(racing)
    _, code = registry.create()
    winner: list[Any] = []
    racing.rival = lambda: winner.append(InvitationRegistry(table).claim(code))
    with pytest.raises(InvalidInvitation):
        registry.claim(code)
    assert winner and winner[0].invitation.status == "used"
    with pytest.raises(InvalidInvitation):
        registry.claim(code)


def test_claim_complete_and_release(table: AzureTable) -> None:
    registry = InvitationRegistry(table)
    invitation, code = registry.create(note="release me")
    claim = registry.claim(code)
    registry.release(claim)
    assert table.get(invitation.invitation_id).data["status"] == "pending"
    again = registry.claim(code)
    registry.complete(again, "11111111-2222-3333-4444-555555555555")
    listed = {i.invitation_id: i for i in registry.list()}[invitation.invitation_id]
    assert listed.status == "used" and listed.client_id == "11111111-2222-3333-4444-555555555555"


def test_expiry_is_checked_when_claiming(table: AzureTable) -> None:
    clock = Clock(1_800_000_000.0)
    registry = InvitationRegistry(table, clock)
    invitation, code = registry.create(expires_in_hours=1)
    clock.now += 3600
    with pytest.raises(InvalidInvitation):
        registry.claim(code)
    assert invitation.state_at(registry.now()) == "expired"
    assert registry.list()[0].to_json(registry.now())["status"] == "expired"


def test_wrong_codes_and_revocation(table: AzureTable) -> None:
    registry = InvitationRegistry(table)
    invitation, code = registry.create()
    for wrong in (f"{invitation.invitation_id}.{'A' * 43}", code.upper(), code + "x", "", "."):
        with pytest.raises(InvalidInvitation):
            registry.claim(wrong)
    registry.revoke(invitation.invitation_id)
    with pytest.raises(InvalidInvitation):
        registry.claim(code)
    used, used_code = registry.create()
    registry.claim(used_code)
    with pytest.raises(InvitationUsed) as refused:
        registry.revoke(used.invitation_id)
    answer = problem(refused.value)
    assert answer is not None and answer.status == 409
