"""The sample EHR's one error type: anything that fails becomes an OperationOutcome with a status."""

from __future__ import annotations

from collections.abc import Mapping

from devtools.sample_ehr.store import dumps


class FhirError(Exception):
    """Raised anywhere in request handling; the app answers with its OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return dumps({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": self.code, "diagnostics": self.diagnostics}],
        })
