"""docs/operations.md stays true of the code: every `paygate` command it shows parses with the real command line,
and its ordered Kubernetes procedure (one `app.kubernetes.io/component` at a time) applies every object of the
manifests."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from stack.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"```sh\n(.*?)```", re.DOTALL)
SUBSTITUTION = re.compile(r"\$\([^)]*\)")
ASSIGNMENT = re.compile(r"[A-Z_]+=\S+")


def _shell_lines() -> list[str]:
    lines = []
    for block in FENCE.findall(DOC.read_text()):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _paygate_commands() -> list[list[str]]:
    commands = []
    for line in _shell_lines():
        words = shlex.split(SUBSTITUTION.sub("X", line))
        while words and ASSIGNMENT.fullmatch(words[0]):
            words = words[1:]  # PAYGATE_DATABASE_URL=... paygate ...
        if words and words[0] == "paygate":
            commands.append(words[1:])
    return commands


def test_the_doc_shows_the_commands_it_is_about() -> None:
    shown = {" ".join(words[:2]) for words in _paygate_commands()}
    for expected in ("db backup", "keys rotate", "keys rewrap", "ledger verify", "audit verify", "reconcile --channel"):
        assert expected in shown, expected


@pytest.mark.parametrize("words", _paygate_commands(), ids=" ".join)
def test_every_paygate_command_in_the_doc_parses(words: list[str]) -> None:
    try:
        build_parser().parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"`paygate {' '.join(words)}` does not parse (exit {exit_.code})")


def test_the_ordered_kubernetes_procedure_applies_every_object() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    yaml = pytest.importorskip("yaml")  # PyYAML comes with kubernetes-validate, a dev dependency
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "kubernetes")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    applied = set(re.findall(r"-l app\.kubernetes\.io/component=([a-z-]+)", DOC.read_text()))
    assert "-l '!app.kubernetes.io/component'" in DOC.read_text()  # the shared objects, first
    for document in yaml.safe_load_all(rendered):
        if not document:
            continue
        component = (document["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        name = f"{document['kind']}/{document['metadata']['name']}"
        assert component is None or component in applied, f"{name} ({component}) is never applied by the doc"
