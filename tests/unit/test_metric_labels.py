"""The datastore metrics' labels stay bounded (docs/metrics.md, "Datastores")."""

from __future__ import annotations

import pytest

from runtime.datastore_metrics import PIPELINE, command_label, name_script, pipeline_label, statement_kind


class _Script:
    sha = "f" * 40


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("SELECT 1", "select"),
        ("  select balance FROM accounts", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("UPDATE t SET a = 1", "update"),
        ("DELETE FROM t", "delete"),
        ("BEGIN IMMEDIATE", "other"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "other"),
        ("PRAGMA foreign_keys = ON", "other"),
        ("", "other"),
    ],
)
def test_a_statement_is_its_first_keyword(statement: str, kind: str) -> None:
    assert statement_kind(statement) == kind


def test_a_command_is_its_name_and_a_script_its_registered_name() -> None:
    assert command_label(("get", "key")) == "GET"
    assert command_label((b"SET", b"key", b"1")) == "SET"
    assert command_label(("SCRIPT LOAD", "return 1")) == "SCRIPT"
    assert command_label(("EVALSHA", "0" * 40, 0)) == "EVALSHA"  # never registered: the command, not the sha
    name_script(_Script(), "probe")
    assert command_label(("EVALSHA", "f" * 40, 1, "k")) == "probe"
    assert command_label(()) == "other"


def test_a_pipeline_is_the_label_its_commands_share() -> None:
    assert pipeline_label([(("EVALSHA", "f" * 40, 1, "k"), {}), (("EVALSHA", "f" * 40, 1, "j"), {})]) == "probe"
    assert pipeline_label([(("GET", "a"), {}), (("EXISTS", "a"), {})]) == PIPELINE
    assert pipeline_label([]) == PIPELINE
