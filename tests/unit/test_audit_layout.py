"""The audit trail is append-only in code: only runtime/audit.py writes its tables and only runtime/audit_verify.py
reads them (docs/audit.md). Anything else that wants an entry calls `audit.record`, inside its own transaction."""

from __future__ import annotations

import ast

from tests.support import REPO_ROOT

AUDIT_TABLES = {"audit_log", "audit_head"}
ALLOWED = {"runtime/audit.py", "runtime/audit_verify.py", "runtime/schema.py", "runtime/schema_audit.py"}
PACKAGES = ("paygate", "runtime", "gateway", "workers", "notifications", "stack", "loadtest", "channelsim")


def _uses_audit_tables(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {"runtime.schema", "runtime.schema_audit"}:
            names |= {alias.name for alias in node.names} & AUDIT_TABLES
        if isinstance(node, ast.Attribute) and node.attr in AUDIT_TABLES:
            names.add(node.attr)
    return names


def test_only_the_audit_modules_touch_the_audit_tables() -> None:
    offenders = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            relative = path.relative_to(REPO_ROOT).as_posix()
            used = _uses_audit_tables(ast.parse(path.read_text(), relative))
            if used and relative not in ALLOWED:
                offenders[relative] = sorted(used)
    assert offenders == {}, "append with runtime.audit.record; read with runtime.audit_verify"


def test_the_check_sees_the_audit_modules() -> None:
    used = _uses_audit_tables(ast.parse((REPO_ROOT / "runtime" / "audit.py").read_text()))
    assert used == AUDIT_TABLES
