"""OperationOutcome: R4 → STU3 / DSTU2, so provider errors reach the app in its own version.

R4 added two issue types, each a child of an older one in R4's own hierarchy
(`multiple-matches` under `processing`, `deleted` under `not-found`); DSTU2 has no `expression`.
"""

from __future__ import annotations

from shared.bridge import datatypes
from shared.bridge.base import CodeMap, Datatypes, To, codes, identity, many
from shared.bridge.resource import FacadeTables, ResourceMap

ISSUE_TYPE = CodeMap({
    **identity("invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
               "forbidden", "suppressed", "processing", "not-supported", "duplicate", "not-found", "too-long",
               "code-invalid", "extension", "too-costly", "business-rule", "conflict", "incomplete", "transient",
               "lock-error", "no-store", "exception", "timeout", "throttled", "informational"),
    "multiple-matches": "processing",
    "deleted": "not-found",
})


def tables(dt: Datatypes) -> FacadeTables:
    """OperationOutcome's tables per older version (DSTU2 has no `expression`)."""
    issue = {
        "severity": To("severity", codes(CodeMap(identity("fatal", "error", "warning", "information")))),
        "code": To("code", dt.coded(ISSUE_TYPE)),
        "details": To("details", dt.codeable_concept),
        "diagnostics": To("diagnostics"),
        "location": To("location"),
    }
    return {"stu3": {"issue": To("issue", many(dt.element({**issue, "expression": To("expression")})))},
            "dstu2": {"issue": To("issue", many(dt.element(issue)))}}


MAP = ResourceMap("OperationOutcome", **tables(datatypes))
