"""How one facade search parameter becomes an R4 one; resource modules list theirs in tables."""

from __future__ import annotations

from dataclasses import dataclass

from shared.bridge.base import CodeMap

STRING, TOKEN, REFERENCE, DATE = "string", "token", "reference", "date"
MODIFIERS = {
    STRING: frozenset({"", "exact", "contains", "missing"}),
    TOKEN: frozenset({"", "text", "not", "missing"}),
    REFERENCE: frozenset({"", "missing"}),
    DATE: frozenset({"", "missing"}),
}


@dataclass(frozen=True)
class Param:
    """A search parameter: its R4 name and type, and how its values change on the way.

    `target`: the resource type a bare id of a reference parameter names (`patient=123` →
    `Patient/123`; Medplum needs the typed form and every R4 server accepts it). `codes`: a status
    value set that differs between versions (each facade code becomes the R4 codes that convert
    back to it). `system`: the terminology.hl7.org code system a bare token code belongs to, so
    e.g. DSTU2 `category=diagnosis` becomes R4 `encounter-diagnosis`. `modifier`: the modifier
    sent when the client gives none (the Patients app expects "contains" name matching).
    """

    r4: str
    kind: str
    target: str | None = None
    codes: CodeMap | None = None
    system: str | None = None
    modifier: str = ""


def reference(r4: str, target: str | None = "Patient") -> Param:
    return Param(r4, REFERENCE, target=target)


def string(r4: str, modifier: str = "") -> Param:
    return Param(r4, STRING, modifier=modifier)


def token(r4: str, codes: CodeMap | None = None, system: str | None = None) -> Param:
    return Param(r4, TOKEN, codes=codes, system=system)


def date(r4: str) -> Param:
    return Param(r4, DATE)


PATIENT = {"patient": reference("patient"), "subject": reference("subject", None)}
