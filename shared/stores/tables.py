"""`EntityTable` on Azure Table Storage (azure-data-tables): Azurite locally, a storage account in Azure.

Each table holds one kind of record per partition (by default the single partition `p`; the client
table also keeps secret verifiers in their own partition); row keys are the record ids (tenant
GUIDs, client ids). Values are stored as Table properties; the callers
JSON-encode lists and objects, which keeps every write a single-entity, atomic replace.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceModifiedError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared import telemetry
from shared.errors import PreconditionFailed, StoreUnavailable
from shared.offloop import may_block
from shared.stores import Entity
from shared.stores.backoff import Backoff
from shared.stores.sdk_errors import translated

PARTITION = "p"
_SDK_OPTIONS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 2,
                                "retry_backoff_factor": 0.4}
T = TypeVar("T")


def _precondition(exc: HttpResponseError) -> Exception | None:
    """An ETag that no longer matches (412): another writer got there first."""
    return PreconditionFailed() if isinstance(exc, ResourceModifiedError) or exc.status_code == 412 else None


def _translated() -> AbstractContextManager[None]:
    """SDK exceptions in the store's vocabulary (shared.stores.sdk_errors)."""
    return translated("table-storage", _precondition)


class AzureTable:
    """One table; created on first use so a fresh Azurite or storage account needs no setup step."""

    def __init__(self, service: TableServiceClient, name: str, partition: str = PARTITION) -> None:
        self._service = service
        self._name = name
        self._partition = partition
        self._client: TableClient | None = None
        self._lock = threading.Lock()
        self._backoff = Backoff("table-storage")
        self._root = self  # siblings share one SDK client, one creation and one backoff gate

    @classmethod
    def connect(cls, name: str, *, connection_string: str | None = None, endpoint: str | None = None,
                credential: Any = None, partition: str = PARTITION) -> AzureTable:
        if connection_string:
            service = TableServiceClient.from_connection_string(connection_string, **_SDK_OPTIONS)
        elif endpoint:
            service = TableServiceClient(endpoint=endpoint, credential=credential, **_SDK_OPTIONS)
        else:
            raise ValueError("set GATEWAY_TABLES_ENDPOINT (Azure) or GATEWAY_TABLES_CONNECTION_STRING (local)")
        return cls(service, name, partition)

    def sibling(self, partition: str) -> AzureTable:
        """The same table and SDK client, another partition (e.g. client secrets beside client rows)."""
        twin = AzureTable(self._service, self._name, partition)
        twin._root = self._root
        return twin

    def _table(self) -> TableClient:
        root = self._root
        if root._client is None:
            with root._lock, _translated():
                if root._client is None:
                    root._client = self._service.create_table_if_not_exists(self._name)
        return root._client

    def _call(self, operation: str, fn: Callable[[TableClient], T]) -> T:
        """One table call, as one span (shared/telemetry.py): the table and operation, never the keys."""
        with telemetry.store_call("table-storage", operation, self._name):
            may_block()  # network I/O: never on the event loop (shared/offloop.py)
            backoff = self._root._backoff
            backoff.check()  # while the service is down or throttling us: fail fast, do not call it
            try:
                table = self._table()
                with _translated():
                    return fn(table)
            except StoreUnavailable as exc:
                backoff.failed(exc)
                raise

    def get(self, key: str) -> Entity:
        return _entity(self._call("get_entity", lambda t: t.get_entity(self._partition, key)))

    def list(self) -> list[Entity]:
        return self._call("query_entities", lambda t: [_entity(e) for e in t.query_entities(
            "PartitionKey eq @p", parameters={"p": self._partition})])

    def list_prefix(self, prefix: str) -> builtins.list[Entity]:
        """Entities whose row key starts with `prefix`: a key-range query, not a scan."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return self._call("query_entities", lambda t: [_entity(e) for e in t.query_entities(
            "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
            parameters={"p": self._partition, "lo": prefix, "hi": upper})])

    def list_from(self, lowest: str) -> builtins.list[Entity]:
        return self._call("query_entities", lambda t: [_entity(e) for e in t.query_entities(
            "PartitionKey eq @p and RowKey ge @lo", parameters={"p": self._partition, "lo": lowest})])

    def insert(self, key: str, data: dict[str, Any]) -> Entity:
        meta = self._call("create_entity", lambda t: t.create_entity(self._row(key, data)))
        return Entity(key, dict(data), meta.get("etag"))

    def replace(self, key: str, data: dict[str, Any], etag: str | None = None) -> Entity:
        row = self._row(key, data)
        if etag is None:
            meta = self._call("upsert_entity", lambda t: t.upsert_entity(row, mode=UpdateMode.REPLACE))
        else:
            meta = self._call("update_entity", lambda t: t.update_entity(
                row, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified))
        return Entity(key, dict(data), meta.get("etag"))

    def delete(self, key: str, etag: str | None = None) -> None:
        # The SDK treats deleting a missing entity as success; the API must say 404, so read first.
        current = self.get(key)
        self._call("delete_entity", lambda t: t.delete_entity(self._partition, key, etag=etag or current.etag,
                                                              match_condition=MatchConditions.IfNotModified))

    def ping(self) -> None:
        self._call("ping", lambda t: next(iter(t.query_entities(f"PartitionKey eq '{PARTITION}'", results_per_page=1)),
                                          None))

    def _row(self, key: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": self._partition, "RowKey": key, **data}


def _entity(raw: Any) -> Entity:
    data = {k: v for k, v in raw.items() if k not in ("PartitionKey", "RowKey")}
    return Entity(raw["RowKey"], data, raw.metadata.get("etag"))
