"""The audit trail on each database (docs/audit.md): appends never fork the chain, and `verify` names every entry
that was edited, inserted, deleted or moved with raw SQL — the tampering the trail exists to reveal."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text

from runtime import audit
from runtime.audit import AuditEntry, ChainKey
from runtime.audit_verify import Report, entries, verify
from runtime.db import Database
from runtime.schema_audit import audit_head, audit_log
from runtime.settings import Settings
from tests.support import REPO_ROOT, private_database

KEY = ChainKey(secrets.token_bytes(32))


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def own_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database of this module's own: verify reads the whole trail, so no other test's entries may be in it."""
    server = None if request.param == "sqlite" else str(request.getfixturevalue(f"{request.param}_url"))
    with private_database(server, tmp_path_factory.mktemp("audit")) as database:
        yield database


@pytest.fixture
def trail(own_database: Database) -> Iterator[Database]:
    """An empty trail under KEY; emptied again afterwards (tests tamper with it)."""
    _reset(own_database)
    audit.enable(own_database, KEY)
    yield own_database
    _reset(own_database)


def _reset(database: Database) -> None:
    with database.writer.begin() as connection:
        connection.execute(audit_log.delete())
        connection.execute(audit_head.delete())
        connection.execute(audit_head.insert().values(name="audit", last_seq=0, last_hash=audit.GENESIS_HASH))


def append(database: Database, count: int, *, actor: str = "system") -> list[AuditEntry]:
    made = []
    for n in range(count):
        with database.write() as connection:
            made.append(
                audit.record(
                    connection, actor=actor, action="test.append", subject=f"s-{n}", details={"n": n, "note": "é"}
                )
            )
    return made


def sql(database: Database, statement: str, **params: object) -> None:
    with database.writer.begin() as connection:
        connection.execute(text(statement), params)


def found(report: Report) -> set[tuple[int | None, str]]:
    return {(f.seq, f.kind) for f in report.findings}


# -- appending ---------------------------------------------------------------------------------------------------


def test_an_intact_trail_verifies_page_by_page(trail: Database) -> None:
    made = append(trail, 7, actor="cli:operator")
    report = verify(trail, [KEY], page_rows=3)
    assert report.ok, report.render()
    assert (report.entries, report.head_seq, report.head_hash) == (7, 7, made[-1].entry_hash)
    assert [e.seq for e in made] == list(range(1, 8))
    assert made[0].prev_hash == audit.GENESIS_HASH and all(
        b.prev_hash == a.entry_hash for a, b in itertools.pairwise(made)
    )
    listed = entries(trail, action="test.", limit=3)
    assert [(e.seq, e.actor, e.subject, dict(e.details)) for e in listed] == [
        (n, "cli:operator", f"s-{n - 1}", {"n": n - 1, "note": "é"}) for n in (5, 6, 7)
    ]


def test_concurrent_appenders_never_fork_the_chain(trail: Database) -> None:
    """Threads on two engines (two processes' worth of connections) append at once; a rolled-back append gives
    its number back. The chain stays one line: numbers 1..N, every entry naming the one before it."""
    second = Database(trail.url)
    audit.enable(second, KEY)
    errors: list[BaseException] = []

    def appender(database: Database, worker: int) -> None:
        try:
            for n in range(8):
                with database.write() as connection:
                    audit.record(connection, actor="system", action="test.race", subject=f"w{worker}-{n}", details={})
            with pytest.raises(RuntimeError), database.write() as connection:
                audit.record(connection, actor="system", action="test.race", subject=f"w{worker}-gone", details={})
                raise RuntimeError("rolled back")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=appender, args=(trail if w % 2 else second, w)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.dispose()
    assert errors == []
    report = verify(trail, [KEY])
    assert report.ok, report.render()
    listed = entries(trail, limit=1000)
    assert [e.seq for e in listed] == list(range(1, 49))
    assert len({e.prev_hash for e in listed}) == 48  # no two entries share a predecessor
    assert not any(e.subject.endswith("-gone") for e in listed)


def test_the_longest_text_a_caller_may_send_fits_and_verifies(trail: Database) -> None:
    """256 characters outside the BMP (the grammar's limit for a refund's reason) in every one of 16 values."""
    details = {f"reason{n}": "\U0001f600" * 256 for n in range(16)}
    with trail.write() as connection:
        made = audit.record(connection, actor="key:key_1", action="refund.create", subject="r-1", details=details)
    assert dict(made.details) == details and dict(entries(trail)[0].details) == details
    assert verify(trail, [KEY]).ok


@pytest.mark.parametrize(
    ("actor", "action", "subject", "details", "problem"),
    [
        ("root", "test.append", "s", {}, "actor"),
        ("key:has space", "test.append", "s", {}, "actor"),
        ("system", "Append", "s", {}, "action"),
        ("system", "test.append", "", {}, "subject"),
        ("system", "test.append", "a b", {}, "subject"),
        ("system", "test.append", "s", {"api_secret": "x"}, "secret"),
        ("system", "test.append", "s", {"note": "line\nbreak"}, "controls"),
        ("system", "test.append", "s", {"note": "x" * 257}, "characters"),
        ("system", "test.append", "s", {f"k{n}": n for n in range(17)}, "keys"),
        ("system", "test.append", "s", {"ratio": 0.5}, "integer"),
    ],
)
def test_a_malformed_entry_is_refused_and_nothing_is_written(
    trail: Database, actor: str, action: str, subject: str, details: dict[str, object], problem: str
) -> None:
    append(trail, 1)
    with pytest.raises(audit.InvalidAuditEntry, match=problem), trail.write() as connection:
        audit.record(connection, actor=actor, action=action, subject=subject, details=details)  # type: ignore[arg-type]
    assert [e.seq for e in entries(trail)] == [1]
    assert verify(trail, [KEY]).ok


def test_appending_needs_a_key_and_a_head(trail: Database) -> None:
    unkeyed = Database(trail.url)
    try:
        with pytest.raises(audit.AuditNotEnabled), unkeyed.write() as connection:
            audit.record(connection, actor="system", action="test.append", subject="s", details={})
    finally:
        unkeyed.dispose()
    sql(trail, "DELETE FROM audit_head")
    with pytest.raises(audit.AuditTrailUnavailable), trail.write() as connection:
        audit.record(connection, actor="system", action="test.append", subject="s", details={})
    assert entries(trail) == []


# -- tampering: each way, named ----------------------------------------------------------------------------------


def test_an_edited_field_of_a_middle_entry_is_named(trail: Database) -> None:
    append(trail, 6)
    sql(trail, "UPDATE audit_log SET details = :d WHERE seq = 3", d='{"n":2,"note":"\\u00e9!"}')
    report = verify(trail, [KEY])
    assert found(report) == {(3, "hash_mismatch")}, report.render()
    sql(trail, "UPDATE audit_log SET actor = 'cli:someone' WHERE seq = 5")
    assert found(verify(trail, [KEY])) == {(3, "hash_mismatch"), (5, "hash_mismatch")}


def test_an_edit_with_the_hash_recomputed_breaks_the_next_link(trail: Database) -> None:
    """Re-hashing without the key (plain SHA-256) fails the entry itself; even with the key, the next entry still
    names the old hash, so the rewrite shows there."""
    made = append(trail, 5)
    sql(
        trail,
        "UPDATE audit_log SET subject = 'forged', entry_hash = :h WHERE seq = 2",
        h=hashlib.sha256(b"x").hexdigest(),
    )
    assert found(verify(trail, [KEY])) == {(2, "hash_mismatch"), (3, "link_mismatch")}
    rewritten = replace(made[1], subject="forged")
    details_text = audit.canonical_details(made[1].details)
    sql(
        trail,
        "UPDATE audit_log SET entry_hash = :h WHERE seq = 2",
        h=audit.entry_hash(KEY.secret, rewritten, details_text),
    )
    report = verify(trail, [KEY])
    assert found(report) == {(3, "link_mismatch")}, report.render()


def test_a_forged_entry_inserted_in_the_middle_is_named(trail: Database) -> None:
    made = append(trail, 6)
    # Make room at 4 (two steps: no database checks a unique key only at the end of an UPDATE), then forge.
    sql(trail, "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 3")
    sql(trail, "UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")
    sql(
        trail,
        "INSERT INTO audit_log (seq, version, recorded_at, actor, action, subject, details, key_id, prev_hash, "
        "entry_hash) VALUES (4, 1, :at, 'cli:mallory', 'key.create', 'key_forged', '{}', :key_id, :prev, :hash)",
        at=made[2].recorded_at,
        key_id=KEY.key_id,
        prev=made[2].entry_hash,
        hash=hashlib.sha256(b"forged").hexdigest(),
    )
    sql(trail, "UPDATE audit_head SET last_seq = 7")
    report = verify(trail, [KEY])
    assert (4, "hash_mismatch") in found(report) and (5, "link_mismatch") in found(report), report.render()
    assert {(n, "hash_mismatch") for n in (5, 6, 7)} <= found(report)  # the renumbered ones


def test_an_entry_appended_behind_the_writers_back_is_past_the_head(trail: Database) -> None:
    made = append(trail, 3)
    sql(
        trail,
        "INSERT INTO audit_log (seq, version, recorded_at, actor, action, subject, details, key_id, prev_hash, "
        "entry_hash) VALUES (4, 1, :at, 'system', 'key.create', 'key_x', '{}', :key_id, :prev, :prev)",
        at=made[2].recorded_at,
        key_id=KEY.key_id,
        prev=made[2].entry_hash,
    )
    assert found(verify(trail, [KEY])) == {(4, "past_head")}


def test_a_deleted_middle_entry_is_named(trail: Database) -> None:
    append(trail, 6)
    sql(trail, "DELETE FROM audit_log WHERE seq = 3")
    report = verify(trail, [KEY])
    assert found(report) == {(3, "missing")}, report.render()
    sql(trail, "DELETE FROM audit_log WHERE seq IN (4, 5)")
    assert found(verify(trail, [KEY])) == {(3, "missing")}
    assert "entries 3..5 are missing" in verify(trail, [KEY]).render()


def test_deleting_the_newest_entries_leaves_the_head_pointing_past_the_end(trail: Database) -> None:
    made = append(trail, 6)
    sql(trail, "DELETE FROM audit_log WHERE seq >= 5")
    report = verify(trail, [KEY])
    assert found(report) == {(5, "missing")} and "entries 5..6 are missing" in report.render()
    # Rewinding the head too leaves a shorter trail that checks: only a hash noted outside the database shows it.
    sql(trail, "UPDATE audit_head SET last_seq = 4, last_hash = :h", h=made[3].entry_hash)
    assert verify(trail, [KEY]).ok
    assert found(verify(trail, [KEY], anchor=(6, made[5].entry_hash))) == {(6, "anchor_missing")}
    assert verify(trail, [KEY], anchor=(4, made[3].entry_hash)).ok


def test_deleting_everything_is_named(trail: Database) -> None:
    append(trail, 4)
    sql(trail, "DELETE FROM audit_log")
    report = verify(trail, [KEY])
    assert found(report) == {(1, "missing")} and "every entry is missing" in report.render()
    sql(trail, "DELETE FROM audit_head")
    assert found(verify(trail, [KEY])) == {(None, "head_missing")}


def test_reordered_entries_are_named(trail: Database) -> None:
    append(trail, 6)
    sql(trail, "UPDATE audit_log SET seq = 100 WHERE seq = 2")
    sql(trail, "UPDATE audit_log SET seq = 2 WHERE seq = 4")
    sql(trail, "UPDATE audit_log SET seq = 4 WHERE seq = 100")
    report = verify(trail, [KEY])
    assert {(2, "hash_mismatch"), (4, "hash_mismatch")} <= found(report), report.render()
    assert {seq for seq, _ in found(report)} <= {2, 3, 4, 5}


def test_an_edited_head_and_a_foreign_key_are_named(trail: Database) -> None:
    append(trail, 3)
    sql(trail, "UPDATE audit_head SET last_hash = :h", h="f" * 64)
    assert found(verify(trail, [KEY])) == {(3, "head_mismatch")}
    other = ChainKey(secrets.token_bytes(32))
    assert {kind for _, kind in found(verify(trail, [other]))} == {"unknown_key", "head_mismatch"}


# -- the command -------------------------------------------------------------------------------------------------


def test_the_command_exits_0_when_intact_and_1_naming_the_entry(own_database: Database, tmp_path: Path) -> None:
    """`paygate audit verify` as an operator runs it, with the master key of the data directory."""
    _reset(own_database)
    env = {**os.environ, "PAYGATE_DATA_DIR": str(tmp_path), "PAYGATE_DATABASE_URL": own_database.url}
    audit.enable(own_database, audit.chain_key(Settings(data_dir=tmp_path, channel_sim_listen="")))
    try:
        append(own_database, 4)

        def paygate(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "stack", "audit", *args],
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
            )

        intact = paygate("verify", "--json")
        assert intact.returncode == 0, intact.stdout + intact.stderr
        head = json.loads(intact.stdout)["head"]
        assert head["seq"] == 4
        anchored = paygate("verify", "--anchor", f"4:{head['hash']}")
        assert anchored.returncode == 0 and "intact: 4 entries" in anchored.stdout
        sql(own_database, "UPDATE audit_log SET subject = 'x' WHERE seq = 2")
        broken = paygate("verify")
        assert broken.returncode == 1 and "entry 2: hash_mismatch" in broken.stdout, broken.stdout
        assert paygate("verify", "--anchor", "nonsense").returncode == 2
        listed = paygate("list", "--json", "--limit", "2", "--action", "test.append")
        assert [e["seq"] for e in json.loads(listed.stdout)["entries"]] == [3, 4]
    finally:
        _reset(own_database)
