"""The `EntityTable` contract both implementations must keep, written once.

tests/test_azure_stores.py runs it against `AzureTable` on Azurite (the proof of the real side),
tests/unit/test_unit_fake_stores.py against `FakeTable` (so the unit tier's fake cannot drift). Each
subclasses `TableContract` as a `Test…` class; the `table` fixture is that module's own.
"""

from __future__ import annotations

import pytest

from shared.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.stores import EntityTable


class TableContract:
    def test_table_insert_is_create_only_AlreadyExists(self, table: EntityTable) -> None:
        table.insert("row-1", {"v": "first"})
        with pytest.raises(AlreadyExists):
            table.insert("row-1", {"v": "second"})
        assert table.get("row-1").data == {"v": "first"}

    def test_table_get_of_a_missing_row_is_NotFound(self, table: EntityTable) -> None:
        with pytest.raises(NotFound):
            table.get("nobody")

    def test_table_replace_with_a_stale_etag_is_PreconditionFailed_and_changes_nothing(
            self, table: EntityTable) -> None:
        stale = table.insert("row-1", {"v": 1}).etag
        current = table.replace("row-1", {"v": 2}).etag
        with pytest.raises(PreconditionFailed):
            table.replace("row-1", {"v": 3}, etag=stale)
        row = table.get("row-1")
        assert row.data == {"v": 2} and row.etag == current
