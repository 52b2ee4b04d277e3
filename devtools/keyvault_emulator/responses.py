"""The JSON bodies Key Vault answers with: secret bundles, list items, deleted-secret fields, pages.

Built from the store's records (see :class:`~devtools.keyvault_emulator.storage.VaultStore` for
their layout); ids are absolute URLs under the vault's own address, as the SDK parses them.
"""

from __future__ import annotations

from typing import Any

from devtools.keyvault_emulator.protocol import decode_skiptoken, encode_skiptoken, page_size
from devtools.keyvault_emulator.storage import RECOVERABLE_DAYS, Record

RECOVERY_LEVEL = "Recoverable+Purgeable"


class Bodies:
    """Response shapes for one vault address and its default page size."""

    def __init__(self, vault_url: str, default_page_size: int) -> None:
        self.vault_url = vault_url
        self.default_page_size = default_page_size

    def item(self, name: str, record: Record, *, versioned: bool) -> dict[str, Any]:
        """A list entry: id (with the version only when ``versioned``), attributes, content type, tags."""
        item: dict[str, Any] = {
            "id": self._secret_id(name, record["version"] if versioned else None),
            "attributes": _attributes(record),
        }
        for field_name in ("contentType", "tags"):
            if record.get(field_name) is not None:
                item[field_name] = record[field_name]
        return item

    def bundle(self, name: str, record: Record, *, with_value: bool) -> dict[str, Any]:
        bundle = self.item(name, record, versioned=True)
        if with_value:
            bundle["value"] = record["value"]
        return bundle

    def deleted_bundle(self, entry: Record) -> dict[str, Any]:
        bundle = self.bundle(entry["name"], entry["versions"][-1], with_value=False)
        return {**bundle, **self._deleted_fields(entry)}

    def deleted_item(self, entry: Record) -> dict[str, Any]:
        item = self.item(entry["name"], entry["versions"][-1], versioned=False)
        return {**item, **self._deleted_fields(entry)}

    def page(self, items: list[tuple[str, dict[str, Any]]], query: dict[str, str], path: str) -> dict[str, Any]:
        """Cursor paging (items after the skiptoken's key), so concurrent changes never make a
        client see an item twice."""
        size = page_size(query.get("maxresults"), self.default_page_size)
        after = decode_skiptoken(query.get("$skiptoken"))
        remaining = [(key, item) for key, item in items if after is None or key > after]
        page = remaining[:size]
        next_link = None
        if len(remaining) > size:
            token = encode_skiptoken(page[-1][0])
            next_link = (
                f"{self.vault_url}{path}?api-version={query['api-version']}&$skiptoken={token}&maxresults={size}"
            )
        return {"value": [item for _, item in page], "nextLink": next_link}

    def _secret_id(self, name: str, version: str | None = None) -> str:
        return f"{self.vault_url}/secrets/{name}" + (f"/{version}" if version else "")

    def _deleted_fields(self, entry: Record) -> dict[str, Any]:
        return {
            "recoveryId": f"{self.vault_url}/deletedsecrets/{entry['name']}",
            "deletedDate": entry["deletedDate"],
            "scheduledPurgeDate": entry["scheduledPurgeDate"],
        }


def _attributes(record: Record) -> dict[str, Any]:
    attributes = {
        "enabled": record["enabled"],
        "created": record["created"],
        "updated": record["updated"],
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    }
    for key in ("nbf", "exp"):
        if record.get(key) is not None:
            attributes[key] = record[key]
    return attributes
