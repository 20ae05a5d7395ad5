"""The layout's rules, checked on the source (docs/architecture.md, "Where things live").

- Imports go one way: `paygate` (what callers need) ← `runtime` (server infrastructure) ← `gateway`, `workers`
  ← `notifications` ← `stack` (the only package that wires the others together). The simulator (`channelsim`)
  plays the providers and shares no code with our adapters, so a protocol mistake cannot hide on both sides.
- Providers are pure translators: no network, database, Redis or gRPC library in workers/channels/<provider>/.
- The domain is plain Python: standard library, its own modules and the error types.
- Functions of at most 70 lines, modules of at most 400. Migrations are exempt from the function bound: each is a
  frozen, declarative list of table definitions that must never change once released.
- Code comments cite the repository's own docs, never a file outside it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

FIRST_PARTY = {
    "paygate",
    "runtime",
    "gateway",
    "workers",
    "notifications",
    "channelsim",
    "stack",
    "loadtest",
    "scripts",
}
MAY_IMPORT = {
    "paygate": {"paygate"},
    "runtime": {"paygate", "runtime"},
    "gateway": {"paygate", "runtime", "gateway"},
    "workers": {"paygate", "runtime", "workers"},
    "notifications": {"paygate", "runtime", "workers", "notifications"},
    "channelsim": {"channelsim"},
    "stack": FIRST_PARTY,
    "loadtest": {"paygate", "loadtest"},
    "scripts": {"scripts"},
}
PROVIDERS = ("alipay", "wechat_pay", "unionpay", "card")
PROVIDER_MAY_NOT_IMPORT = {"httpx", "aiohttp", "requests", "sqlalchemy", "redis", "grpc", "socket", "urllib3"}
MAX_FUNCTION_LINES = 70
MAX_MODULE_LINES = 400


def _sources() -> list[Path]:
    found = []
    for package in MAY_IMPORT:
        root = REPO_ROOT / package
        if root.is_dir():
            found.extend(p for p in root.rglob("*.py") if "/v1/" not in p.relative_to(REPO_ROOT).as_posix())
    return sorted(found)


def _relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every absolute module an import statement names, at any depth (function-local imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


SOURCES = _sources()


def test_the_packages_exist_and_are_scanned() -> None:
    scanned = {_relative(p).split("/")[0] for p in SOURCES}
    assert {"paygate", "runtime", "gateway", "workers", "stack"} <= scanned


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_imports_go_one_way(path: Path) -> None:
    package = _relative(path).split("/")[0]
    imported = {name.split(".")[0] for name in _imported_modules(ast.parse(path.read_text()))}
    wrong = sorted((imported & FIRST_PARTY) - MAY_IMPORT[package])
    assert wrong == [], f"{_relative(path)} ({package}) may not import {wrong}"


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_functions_and_modules_stay_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{_relative(path)} is over {MAX_MODULE_LINES} lines"

    if "/migrations/versions/" in _relative(path):
        return
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{_relative(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_providers_are_pure_translators() -> None:
    offenders = {}
    for provider in PROVIDERS:
        for path in (REPO_ROOT / "workers" / "channels" / provider).rglob("*.py"):
            imported = _imported_modules(ast.parse(path.read_text()))
            roots = {name.split(".")[0] for name in imported}
            ours = {name for name in imported if name.split(".")[0] in FIRST_PARTY}
            bad = (roots & PROVIDER_MAY_NOT_IMPORT) | {
                name
                for name in ours
                if not name.startswith(("workers.channels.base", "workers.domain", f"workers.channels.{provider}"))
            }
            if bad:
                offenders[_relative(path)] = sorted(bad)
    assert offenders == {}


def test_the_domain_is_plain_python() -> None:
    allowed = set(sys.stdlib_module_names) | {"workers", "runtime"}
    offenders = {}
    for path in (REPO_ROOT / "workers" / "domain").rglob("*.py"):
        imported = _imported_modules(ast.parse(path.read_text()))
        bad = {
            name
            for name in imported
            if name.split(".")[0] not in allowed
            or (name.startswith("workers.") and not name.startswith("workers.domain"))
            or (name.startswith("runtime.") and name != "runtime.errors")
        }
        if bad:
            offenders[_relative(path)] = sorted(bad)
    assert offenders == {}


def test_comments_cite_only_the_repository() -> None:
    texts = [*SOURCES, REPO_ROOT / "README.md", REPO_ROOT / "pyproject.toml", REPO_ROOT / "Makefile"]
    for folder in ("docs", "deploy", "protos", "tests"):
        texts.extend(p for p in (REPO_ROOT / folder).rglob("*") if p.is_file() and p.suffix != ".pyc")
    outside = ("DESIGN" + ".md", "../" + "shared")  # split, so that this test does not find itself
    citing = sorted(
        _relative(path) for path in texts if any(word in path.read_text(errors="replace") for word in outside)
    )
    assert citing == [], "cite docs/architecture.md (or another file under docs/) instead"
