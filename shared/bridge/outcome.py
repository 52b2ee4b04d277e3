"""OperationOutcome: R4 → STU3 / DSTU2, so provider errors reach the app in its own version.

R4 added two issue types, each a child of an older one in R4's own hierarchy
(`multiple-matches` under `processing`, `deleted` under `not-found`); DSTU2 has no `expression`.
"""

from __future__ import annotations

from shared.bridge.base import CodeMap, To, codes, identity, many
from shared.bridge.datatypes import codeable_concept, element
from shared.bridge.resource import ResourceMap

ISSUE_TYPE = CodeMap({
    **identity("invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
               "forbidden", "suppressed", "processing", "not-supported", "duplicate", "not-found", "too-long",
               "code-invalid", "extension", "too-costly", "business-rule", "conflict", "incomplete", "transient",
               "lock-error", "no-store", "exception", "timeout", "throttled", "informational"),
    "multiple-matches": "processing",
    "deleted": "not-found",
})
_ISSUE = {
    "severity": To("severity", codes(CodeMap(identity("fatal", "error", "warning", "information")))),
    "code": To("code", codes(ISSUE_TYPE)),
    "details": To("details", codeable_concept),
    "diagnostics": To("diagnostics"),
    "location": To("location"),
}

MAP = ResourceMap(
    "OperationOutcome",
    stu3={"issue": To("issue", many(element({**_ISSUE, "expression": To("expression")})))},
    dstu2={"issue": To("issue", many(element(_ISSUE)))},
)
