"""Reads the synthetic sample bundles into a :class:`Dataset`, ready to serve.

STU3 (`stu3-smart/`) bundles are transactions of ``PUT Type/id``: the URL's id is kept. DSTU2
(`dstu2-synthea/`) bundles are collections whose references point at ``urn:uuid:`` fullUrls:
every reference is rewritten to the relative ``Type/id`` a real server would return, and entries
without an id get a UUIDv5 of ``<file name>#<entry index>`` so ids survive restarts. Empty
references (``{"reference": ""}`` in some DSTU2 CarePlans) are dropped, since FHIR forbids empty
strings. Resources without ``meta.versionId``/``lastUpdated`` get ``1`` and a fixed instant, the
source of the ETag and Last-Modified headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

from devtools.sample_ehr.derive import enrich
from devtools.sample_ehr.store import LAST_UPDATED, VERSIONS, Dataset

ID_NAMESPACE = uuid.UUID("6f1c7d0e-5b7a-4c1e-9a43-2d0f3c8e9b11")


def default_data_dir() -> Path:
    """``<repo>/../shared/data``: the shared data sits beside the repository, locally and in CI."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_dataset(version: str, data_dir: str | Path | None = None) -> Dataset:
    """Load, normalise, enrich and index one version's sample data."""
    info = VERSIONS.get(version)
    if info is None:
        raise ValueError(f"unknown FHIR version {version!r}; expected one of {sorted(VERSIONS)}")
    folder = Path(data_dir or default_data_dir()) / info.folder
    resources, aliases = [], {}
    for source, entry in _entries(folder):
        resource = entry["resource"]
        _assign_id(resource, entry, source)
        if entry.get("fullUrl"):
            aliases[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
        resources.append(resource)
    if not resources:
        raise FileNotFoundError(f"no sample bundles found in {folder}")
    for resource in resources:
        _resolve_references(resource, aliases)
    resources = enrich(info, resources)
    for resource in resources:
        meta = resource.setdefault("meta", {})
        meta.setdefault("versionId", "1")
        meta.setdefault("lastUpdated", LAST_UPDATED)
    return Dataset.build(info, resources)


def _entries(folder: Path) -> Iterator[tuple[str, dict]]:
    """Every bundle entry with a resource, tagged with a stable ``file#index`` source name."""
    for path in sorted(folder.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for index, entry in enumerate(bundle.get("entry", [])):
            if "resource" in entry:
                yield f"{path.name}#{index}", entry


def _assign_id(resource: dict, entry: dict, source: str) -> None:
    """Keep the id a PUT names (FHIR update semantics), else the resource's own, else a stable one."""
    request = entry.get("request", {})
    kind, _, put_id = request.get("url", "").partition("/")
    if request.get("method") == "PUT" and kind == resource["resourceType"] and put_id:
        resource["id"] = put_id
    elif not resource.get("id"):
        resource["id"] = str(uuid.uuid5(ID_NAMESPACE, source))


def _resolve_references(node: object, aliases: dict[str, str]) -> bool:
    """Rewrite references in place; returns False for a node that ended up empty and must go."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            _resolve_one(node, aliases)
        for key in list(node):
            if not _resolve_references(node[key], aliases):
                del node[key]
        return bool(node)
    if isinstance(node, list):
        node[:] = [item for item in node if _resolve_references(item, aliases)]
        return bool(node)
    return True


def _resolve_one(reference: dict, aliases: dict[str, str]) -> None:
    target = reference["reference"]
    if not target:
        del reference["reference"]
    elif target in aliases:
        reference["reference"] = aliases[target]
    elif target.startswith("urn:"):
        raise ValueError(f"reference {target} names no entry of the sample data")
