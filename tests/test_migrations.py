"""Migrations against the real PostgreSQL: up/down/up, data kept on rollback, one step per
transaction, three real processes upgrading at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from resilience import Settings
from resilience._db import (
    CHECKLIST_SQL,
    Migration,
    MigrationError,
    MigrationRequiredError,
    _lock_key,
    check_schema,
    connect,
    downgrade,
    latest_version,
    load_migrations,
    require_schema,
    status,
    upgrade,
)
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent

RUNBOOK_QUERY = (
    "SELECT provider_id, model_id, error_count, success_count, is_blacklisted "
    "FROM model_compatibility_hints WHERE error_count > 2 ORDER BY error_count DESC;"
)


@pytest.fixture
def db_settings(redis_url: str, prefix: str, pg_schema: str) -> Settings:
    return make_settings(redis_url, prefix, database_schema=pg_schema)


@pytest.fixture
def conn(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield c


def tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
    ).fetchall()
    return {r[0] for r in rows}


def views(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute("SELECT viewname FROM pg_views WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


def applied(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM resilience_migrations ORDER BY 1")]


def test_migration_files_are_complete_and_ordered() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].label == "0001_initial"
    assert migrations[0].destroys_data  # dropping the tables needs --drop-data
    assert not any(m.destroys_data for m in migrations[1:])
    assert all(len(m.checksum) == 64 for m in migrations)
    assert latest_version() == migrations[-1].version


def test_upgrade_creates_tables_and_the_runbook_query_works(
    db_settings: Settings, conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    done = upgrade(db_settings)
    assert [m.version for m in done] == [m.version for m in load_migrations()]
    assert {
        "resilience_migrations",
        "model_compatibility_hints",
        "model_compatibility_history",
        "model_compatibility_transitions",
        "resilience_snapshots",
        "resilience_event_cursors",
    } <= tables(conn, pg_schema)
    conn.execute(
        "INSERT INTO model_compatibility_hints (key_prefix, provider_id, model_id, error_count,"
        " success_count, is_blacklisted) VALUES ('app', 'openai', 'gpt-4o', 7, 1, true),"
        " ('app', 'openai', 'gpt-4o-mini', 2, 50, false), ('app', 'groq', 'llama', 3, 0, false)"
    )
    rows = conn.execute(RUNBOOK_QUERY).fetchall()
    assert rows == [("openai", "gpt-4o", 7, 1, True), ("groq", "llama", 3, 0, False)]
    # a second upgrade finds nothing to do
    assert upgrade(db_settings) == []
    assert applied(conn) == [m.version for m in load_migrations()]


def test_up_down_up_keeps_data_until_asked_to_drop_it(
    db_settings: Settings, conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    upgrade(db_settings)
    conn.execute(
        "INSERT INTO model_compatibility_hints (key_prefix, provider_id, model_id, error_count)"
        " VALUES (%s, 'openai', 'gpt-4o', 9)",
        (db_settings.key_prefix,),
    )
    assert "provider_success_rates" in views(conn, pg_schema)

    reverted = downgrade(db_settings)  # one step: 0007, the compatibility hints
    assert [m.version for m in reverted] == [7]
    reverted = downgrade(db_settings)  # 0006, change-only history (no row lost)
    assert [m.version for m in reverted] == [6]
    reverted = downgrade(db_settings)  # one step: 0005, the key prefix (one prefix: no loss)
    assert [m.version for m in reverted] == [5]
    reverted = downgrade(db_settings)  # one step: 0004, the camelCase columns
    assert [m.version for m in reverted] == [4]
    reverted = downgrade(db_settings)  # one step: 0003, a column of bookkeeping
    assert [m.version for m in reverted] == [3]
    reverted = downgrade(db_settings)  # one step: 0002, views only
    assert [m.version for m in reverted] == [2]
    assert applied(conn) == [1]
    assert "provider_success_rates" not in views(conn, pg_schema)
    assert conn.execute("SELECT error_count FROM model_compatibility_hints").fetchone() == (9,)

    with pytest.raises(MigrationError, match="drop-data"):
        downgrade(db_settings)  # 0001 would drop the tables
    assert applied(conn) == [1]
    assert conn.execute("SELECT count(*) FROM model_compatibility_hints").fetchone() == (1,)

    assert [m.version for m in upgrade(db_settings)] == [2, 3, 4, 5, 6, 7]
    assert conn.execute(
        "SELECT key_prefix, error_count FROM provider_success_rates"
    ).fetchone() == (db_settings.key_prefix, 9)

    reverted = downgrade(db_settings, to=0, drop_data=True)
    assert [m.version for m in reverted] == [7, 6, 5, 4, 3, 2, 1]
    assert tables(conn, pg_schema) == {"resilience_migrations"}
    assert applied(conn) == []

    upgrade(db_settings)
    assert applied(conn) == [1, 2, 3, 4, 5, 6, 7]
    assert conn.execute("SELECT count(*) FROM model_compatibility_hints").fetchone() == (0,)


def test_upgrade_to_a_version_and_status(
    db_settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    assert [s.state for s in status(db_settings)] == ["pending"] * 7
    upgrade(db_settings, target=1)
    rows = status(db_settings)
    assert [(s.version, s.state) for s in rows] == [
        (1, "applied"),
        (2, "pending"),
        (3, "pending"),
        (4, "pending"),
        (5, "pending"),
        (6, "pending"),
        (7, "pending"),
    ]
    assert rows[0].applied_at is not None
    assert rows[1].applied_at is None
    conn.execute("UPDATE resilience_migrations SET checksum = 'x' WHERE version = 1")
    conn.execute(
        "INSERT INTO resilience_migrations (version, name, checksum) VALUES (99, 'future', 'y')"
    )
    states = {s.version: s.state for s in status(db_settings)}
    assert states == {
        1: "modified",
        2: "pending",
        3: "pending",
        4: "pending",
        5: "pending",
        6: "pending",
        7: "pending",
        99: "unknown",
    }
    with pytest.raises(MigrationError, match="newer"):
        downgrade(db_settings)
    with pytest.raises(MigrationError, match="unknown migration version"):
        upgrade(db_settings, target=42)


def test_a_failing_step_leaves_nothing(
    db_settings: Settings,
    conn: psycopg.Connection[Any],
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = load_migrations()
    broken = Migration(
        version=8,
        name="broken",
        up="CREATE TABLE half_done (x int); SELECT 1/0;",
        down="DROP TABLE half_done;",
        checksum="0" * 64,
        destroys_data=False,
    )
    monkeypatch.setattr("resilience._db.load_migrations", lambda: [*real, broken])
    with pytest.raises(MigrationError, match="0008_broken failed and was rolled back"):
        upgrade(db_settings)
    assert applied(conn) == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]  # the good steps stay, each in its own transaction
    assert "half_done" not in tables(conn, pg_schema)


def test_missing_migration_is_a_clear_error(db_settings: Settings) -> None:
    with (
        connect(db_settings, autocommit=True) as c,
        pytest.raises(MigrationRequiredError, match="resilience db upgrade"),
    ):
        require_schema(c, db_settings)
    upgrade(db_settings, target=5)
    with (
        connect(db_settings, autocommit=True) as c,
        pytest.raises(MigrationRequiredError, match="need version 7"),
    ):
        require_schema(c, db_settings)  # the job needs the change-only history of 0006
    upgrade(db_settings)
    with connect(db_settings, autocommit=True) as c:
        require_schema(c, db_settings)


def test_schema_name_must_be_an_identifier() -> None:
    assert check_schema("rt_abc") == "rt_abc"
    for bad in ("a-b", "x;drop", "1abc", "", 'a"b'):
        with pytest.raises(ValueError, match="schema"):
            check_schema(bad)


def test_connect_sets_the_search_path(db_settings: Settings, pg_schema: str) -> None:
    upgrade(db_settings)
    with connect(db_settings) as c:
        row = c.execute("SELECT current_schema()").fetchone()
        assert row == (pg_schema,)


def _waiting_on_advisory_lock(conn: psycopg.Connection[Any], key: int) -> int:
    # pg_locks splits a bigint advisory key into classid (high 32 bits) and objid (low).
    hi, lo = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid::bigint = %s AND objid::bigint = %s",
        (hi, lo),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_three_processes_upgrading_at_once_apply_each_step_once(
    db_settings: Settings, database_url: str, pg_schema: str
) -> None:
    env = {
        **os.environ,
        "RESILIENCE_DATABASE_URL": database_url,
        "RESILIENCE_DATABASE_SCHEMA": pg_schema,
    }
    key = _lock_key(pg_schema)
    with psycopg.connect(database_url, autocommit=True) as holder:
        # Hold the runner's lock so the three processes queue up behind it together.
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "resilience", "db", "upgrade"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 30
        while _waiting_on_advisory_lock(holder, key) < 3:
            assert time.monotonic() < deadline, "the processes never waited on the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    stdout = [out for out, _err in outputs]
    applied_line = (
        "applied 0001_initial, 0002_report_views, 0003_event_numbers, 0004_checklist_names, "
        "0005_key_prefix, 0006_change_only_history, 0007_compat_hints"
    )
    assert sum(applied_line in o for o in stdout) == 1, stdout
    assert sum("up to date" in o for o in stdout) == 2, stdout
    with psycopg.connect(database_url, autocommit=True) as c:
        rows = c.execute(
            sql.SQL("SELECT version, count(*) FROM {} GROUP BY version ORDER BY version").format(
                sql.Identifier(pg_schema, "resilience_migrations")
            )
        ).fetchall()
    assert rows == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]


def test_upgrade_creates_a_missing_schema(
    db_settings: Settings, conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(pg_schema)))
    upgrade(db_settings)
    assert "model_compatibility_hints" in tables(conn, pg_schema)


# --------------------------------------------------------------------------- the checklist


def _seed_rows(conn: psycopg.Connection[Any], prefix: str) -> None:
    conn.execute(
        "INSERT INTO model_compatibility_hints (key_prefix, provider_id, model_id, error_count,"
        " success_count, is_blacklisted, last_error_time) VALUES"
        " (%(p)s, 'openai', 'gpt-4o', 7, 1, true, now() - interval '1 day'),"
        " (%(p)s, 'openai', 'bad-model', 3, 0, true, now() - interval '2 days'),"
        " (%(p)s, 'groq', 'llama', 0, 40, false, NULL),"
        " (%(p)s, 'groq', 'idle-old', 0, 0, false, now() - interval '120 days'),"
        " (%(p)s, 'groq', 'idle-new', 0, 0, false, now() - interval '10 days'),"
        " (%(p)s, 'groq', 'busy-old', 0, 5, false, now() - interval '200 days')",
        {"p": prefix},
    )


def test_checklist_sql_runs_as_written_and_gives_the_right_answers(
    db_settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    upgrade(db_settings)
    _seed_rows(conn, "app")
    first, ranked, one, over_two, _delete = CHECKLIST_SQL

    row = conn.execute(first).fetchone()
    cur = conn.execute(first)
    names = [d.name for d in cur.description or ()]
    assert row is not None
    assert {"providerid", "modelid", "errorcount", "successcount", "isblacklisted"} <= set(names)
    assert {"provider_id", "model_id", "error_count", "success_count"} <= set(names)

    rows = conn.execute(ranked).fetchall()
    assert rows[:2] == [
        ("openai", "gpt-4o", 7, 1, "⚠️ BLACKLISTED"),
        ("openai", "bad-model", 3, 0, "⚠️ BLACKLISTED"),
    ]
    assert {r[4] for r in rows[2:]} == {"✓ OK"}
    assert len(rows) == 6

    found = conn.execute(one).fetchall()
    assert len(found) == 1
    rec = dict(zip([d.name for d in conn.execute(one).description or ()], found[0], strict=True))
    assert (rec["providerid"], rec["provider_id"], rec["errorcount"]) == ("openai", "openai", 3)

    assert conn.execute(over_two).fetchall() == [("gpt-4o", 7, 1, True), ("bad-model", 3, 0, True)]
    # the snake_case names keep working
    assert conn.execute(
        "SELECT model_id FROM model_compatibility_hints WHERE error_count > 2"
        " ORDER BY error_count DESC"
    ).fetchall() == [("gpt-4o",), ("bad-model",)]


def test_checklist_delete_deletes_the_rows_the_snake_case_delete_deletes(
    db_settings: Settings, conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    upgrade(db_settings)
    snake = (
        "DELETE FROM model_compatibility_hints WHERE last_error_time < NOW() - INTERVAL "
        "'90 days' AND error_count = 0 AND success_count = 0"
    )
    results = []
    for statement in (CHECKLIST_SQL[-1], snake):
        conn.execute("DELETE FROM model_compatibility_hints")
        _seed_rows(conn, "app")
        deleted = conn.execute(statement.encode()).rowcount
        left = conn.execute(
            "SELECT provider_id, model_id FROM model_compatibility_hints ORDER BY 1, 2"
        ).fetchall()
        results.append((deleted, left))
    assert results[0] == results[1]
    assert results[0][0] == 1  # groq/idle-old only
    assert ("groq", "idle-old") not in results[0][1]


def test_generated_columns_follow_updates_and_cannot_be_written(
    db_settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    upgrade(db_settings)
    _seed_rows(conn, "app")
    conn.execute("UPDATE model_compatibility_hints SET error_count = 42 WHERE model_id = 'llama'")
    assert conn.execute(
        "SELECT errorCount FROM model_compatibility_hints WHERE modelId = 'llama'"
    ).fetchone() == (42,)
    with pytest.raises(psycopg.errors.GeneratedAlways):
        conn.execute("UPDATE model_compatibility_hints SET errorCount = 1")


# --------------------------------------------------------------------------- key prefixes

_HISTORY_TABLES = (
    "model_compatibility_hints",
    "model_compatibility_history",
    "model_compatibility_transitions",
    "resilience_event_cursors",
    "resilience_snapshots",
)


def _dump(conn: psycopg.Connection[Any], table: str, without: tuple[str, ...] = ()) -> list[Any]:
    cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1, 2, 3").format(sql.Identifier(table)))
    names = [d.name for d in cur.description or ()]
    keep = [i for i, n in enumerate(names) if n not in without]
    return [tuple(r[i] for i in keep) for r in cur.fetchall()]


def _old_rows(conn: psycopg.Connection[Any]) -> None:
    """Rows as a version-3 schema holds them (no key prefix anywhere)."""
    conn.execute(
        "INSERT INTO model_compatibility_hints (provider_id, model_id, error_count,"
        " success_count) VALUES ('openai', 'gpt-4o', 5, 7), ('groq', 'llama', 0, 3)"
    )
    conn.execute(
        "INSERT INTO resilience_snapshots (id, taken_at, targets, transitions)"
        " VALUES (1, now() - interval '1 hour', 2, 1)"
    )
    conn.execute(
        "INSERT INTO model_compatibility_history (snapshot_id, taken_at, provider_id, model_id,"
        " state, is_blacklisted, error_delta, success_delta, error_count, success_count,"
        " raw_error_count, raw_success_count, consecutive_errors, trips) VALUES"
        " (1, now() - interval '1 hour', 'openai', 'gpt-4o', 'open', true, 5, 7, 5, 7, 5, 7,"
        " 5, 1), (1, now() - interval '1 hour', 'groq', 'llama', 'closed', false, 0, 3, 0, 3,"
        " 0, 3, 0, 0)"
    )
    conn.execute(
        "INSERT INTO model_compatibility_transitions (provider_id, event_ms, event_seq,"
        " model_id, from_state, to_state, kind, occurred_at) VALUES"
        " ('openai', 1000, 0, 'gpt-4o', 'closed', 'open', 'server_error', now())"
    )
    conn.execute(
        "INSERT INTO resilience_event_cursors (provider_id, event_ms, event_seq, event_n)"
        " VALUES ('openai', 1000, 0, 1)"
    )


def test_key_prefix_migration_keeps_every_row_and_reverts(
    redis_url: str, pg_schema: str, conn: psycopg.Connection[Any]
) -> None:
    app = make_settings(redis_url, "app-a", database_schema=pg_schema)
    upgrade(app, target=4)
    _old_rows(conn)
    before = {t: _dump(conn, t) for t in _HISTORY_TABLES}

    assert [m.version for m in upgrade(app, target=5)] == [5]
    for table in _HISTORY_TABLES:
        prefixes = conn.execute(
            sql.SQL("SELECT DISTINCT key_prefix FROM {}").format(sql.Identifier(table))
        ).fetchall()
        assert prefixes == [("app-a",)], table  # the upgrading application's rows
        after = _dump(conn, table, without=("key_prefix", "interval_seconds"))
        assert after == before[table], table  # nothing lost or changed

    # a second application writes into the same schema: the old layout cannot hold both
    conn.execute(
        "INSERT INTO model_compatibility_hints (key_prefix, provider_id, model_id)"
        " VALUES ('app-b', 'openai', 'gpt-4o')"
    )
    with pytest.raises(MigrationError, match=r"2 key prefixes \(app-a, app-b\)"):
        downgrade(app)
    assert applied(conn) == [1, 2, 3, 4, 5]  # refused: nothing changed

    conn.execute("DELETE FROM model_compatibility_hints WHERE key_prefix = 'app-b'")
    assert [m.version for m in downgrade(app)] == [5]
    for table in _HISTORY_TABLES:
        assert _dump(conn, table) == before[table], table
    assert [m.version for m in upgrade(app, target=5)] == [5]


def test_without_the_runner_old_rows_get_the_default_prefix(
    db_settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    upgrade(db_settings, target=4)
    _old_rows(conn)
    five = next(m for m in load_migrations() if m.version == 5)
    conn.execute(five.up.encode())  # applied by hand, as psql would
    assert conn.execute("SELECT DISTINCT key_prefix FROM model_compatibility_hints").fetchall() == [
        ("resilience",)
    ]
