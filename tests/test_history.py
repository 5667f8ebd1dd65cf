"""Change-only history (migration 0006) against the real Redis and PostgreSQL: rows only for
targets that changed, state rows upserted only when they change, keyframes, counter resets
and vanished targets, a keyframe spanning a prune, the conversion of an existing history and
its reversal, and reports that a history of one row per target per snapshot would give."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from resilience import Breaker, Classification, ErrorKind, Settings, Target
from resilience._db import downgrade, upgrade
from resilience._keys import KeySpace
from resilience._report import Report, build_report, build_review
from resilience._snapshot import SnapshotResult, prune, take_snapshot
from tests.conftest import make_settings

SE = ErrorKind.SERVER_ERROR

_HISTORY = (
    "provider_id, model_id, state, is_blacklisted, blacklisted_until, error_delta,"
    " success_delta, error_count, success_count, raw_error_count, raw_success_count,"
    " consecutive_errors, trips, in_redis"
)
"""The history columns that carry data (not the snapshot's id, time or key prefix)."""


def _schema(database_url: str) -> Iterator[str]:
    name = f"rt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def other_schema(database_url: str) -> Iterator[str]:
    yield from _schema(database_url)


def _connect(database_url: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return conn


@pytest.fixture
def pg(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with _connect(database_url, pg_schema) as c:
        yield c


def settings_for(redis_url: str, prefix: str, schema: str, **overrides: Any) -> Settings:
    s = make_settings(redis_url, prefix, database_schema=schema, local_view=False, **overrides)
    upgrade(s)
    return s


def rows_of(pg: psycopg.Connection[Any], snapshot_id: int | None) -> dict[tuple[str, str], Any]:
    """History rows of one snapshot, by target."""
    found = pg.execute(
        f"SELECT {_HISTORY} FROM model_compatibility_history WHERE snapshot_id = %s",
        (snapshot_id,),
    ).fetchall()
    return {(r[0], r[1]): r for r in found}


def hint_rows(pg: psycopg.Connection[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    cur = pg.execute("SELECT * FROM model_compatibility_hints")
    names = [d.name for d in cur.description or ()]
    found = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {(r["provider_id"], r["model_id"]): r for r in found}


def at(pg: psycopg.Connection[Any], when: datetime) -> dict[tuple[str, str], Any]:
    """model_compatibility_history_at(when), by target (data columns only)."""
    found = pg.execute(
        f"SELECT {_HISTORY} FROM model_compatibility_history_at(%s)", (when,)
    ).fetchall()
    return {(r[0], r[1]): r for r in found}


def fail(b: Breaker, t: Target, n: int) -> None:
    for _ in range(n):
        b.record_failure(t, SE)


def succeed(b: Breaker, t: Target, n: int = 1) -> None:
    for _ in range(n):
        b.record_success(t)


A, B, C = Target("openai", "gpt-4o"), Target("openai", "gpt-4o-mini"), Target("groq", "llama")


# --------------------------------------------------------------------------- changes only


def test_a_snapshot_writes_rows_only_for_targets_that_changed(
    redis_url: str, prefix: str, pg_schema: str, pg: psycopg.Connection[Any], rclient: redis.Redis
) -> None:
    s = settings_for(redis_url, prefix, pg_schema, open_seconds=2.0, max_open_seconds=2.0)
    with Breaker(s) as b:
        succeed(b, A)
        succeed(b, B)
        fail(b, C, 5)  # trips for 2 s
        tripped = time.monotonic()
        first = take_snapshot(b, s)
        assert first.keyframe and (first.history_rows, first.hint_rows) == (3, 3)
        stamps = {k: r["updated_at"] for k, r in hint_rows(pg).items()}

        idle = take_snapshot(b, s)
        assert not idle.keyframe and (idle.targets, idle.history_rows, idle.hint_rows) == (3, 0, 0)
        assert {k: r["updated_at"] for k, r in hint_rows(pg).items()} == stamps  # not rewritten

        succeed(b, A, 2)  # counters only
        r = take_snapshot(b, s)
        assert (r.history_rows, r.hint_rows) == (1, 1)
        row = rows_of(pg, r.snapshot_id)[("openai", "gpt-4o")]
        assert row[5:9] == (0, 2, 0, 3)  # error/success delta, lifetime totals

        b.block(B, 3600, "incident")  # state only: no counter moves
        r = take_snapshot(b, s)
        assert (r.history_rows, r.hint_rows) == (1, 1)
        row = rows_of(pg, r.snapshot_id)[("openai", "gpt-4o-mini")]
        assert row[2:4] == ("open", True) and row[5:7] == (0, 0)

        # a column of the state row alone (the endpoint hint): that row, no history row
        rclient.hset(KeySpace(prefix).target(A), "endpoint_hint", "/v1/responses")
        r = take_snapshot(b, s)
        assert (r.history_rows, r.hint_rows) == (0, 1)
        assert hint_rows(pg)[("openai", "gpt-4o")]["endpoint_hint"] == "/v1/responses"

        time.sleep(max(0.0, tripped + 2.1 - time.monotonic()))
        # C's break ended with no write to Redis: no longer blacklisted
        r = take_snapshot(b, s)
        assert (r.history_rows, r.hint_rows) == (1, 1)
        assert rows_of(pg, r.snapshot_id)[("groq", "llama")][3] is False

    # the increments still add up to the lifetime totals, target by target
    sums = pg.execute(
        "SELECT provider_id, model_id, sum(error_delta), sum(success_delta)"
        " FROM model_compatibility_history GROUP BY 1, 2"
    ).fetchall()
    totals = {k: (r["error_count"], r["success_count"]) for k, r in hint_rows(pg).items()}
    assert {(p, m): (int(e), int(ok)) for p, m, e, ok in sums} == totals
    recorded = pg.execute(
        "SELECT keyframe, history_rows, hint_rows FROM resilience_snapshots ORDER BY id"
    ).fetchall()
    assert recorded == [
        (True, 3, 3),
        (False, 0, 0),
        (False, 1, 1),
        (False, 1, 1),
        (False, 0, 1),
        (False, 1, 1),
    ]


def test_counter_resets_and_vanished_targets(
    redis_url: str, prefix: str, pg_schema: str, pg: psycopg.Connection[Any], rclient: redis.Redis
) -> None:
    s = settings_for(redis_url, prefix, pg_schema)
    key = ("openai", "gpt-4o")
    with Breaker(s) as b:
        fail(b, A, 3)
        succeed(b, A, 2)
        take_snapshot(b, s)

        b.reset(A)  # counters restart with a new `since`
        fail(b, A, 4)  # higher than before: only `since` tells
        r = take_snapshot(b, s)
        assert r.counter_resets == 1
        assert rows_of(pg, r.snapshot_id)[key][5:11] == (4, 0, 7, 2, 4, 0)

        b.reset(A)  # back to zero: the raw counters changed, the totals did not
        r = take_snapshot(b, s)
        assert (r.counter_resets, r.history_rows) == (1, 1)
        assert rows_of(pg, r.snapshot_id)[key][5:11] == (0, 0, 7, 2, 0, 0)

        b.reset(A)  # zero again, a new `since`: only the state row knows
        r = take_snapshot(b, s)
        assert (r.counter_resets, r.history_rows, r.hint_rows) == (1, 0, 1)

        rclient.delete(KeySpace(prefix).target(A))  # the entry expires
        gone = take_snapshot(b, s)
        assert (gone.targets, gone.history_rows, gone.hint_rows) == (0, 1, 1)
        row = rows_of(pg, gone.snapshot_id)[key]
        assert row[2:4] == ("closed", False) and row[5:9] == (0, 0, 7, 2) and row[13] is False
        assert key not in at(pg, gone.taken_at)  # not in Redis then
        assert take_snapshot(b, s).history_rows == 0  # gone once, not at every snapshot

        fail(b, A, 2)  # it comes back: all of its counters are new
        back = take_snapshot(b, s)
        assert back.counter_resets == 1
        assert rows_of(pg, back.snapshot_id)[key][5:9] == (2, 0, 9, 2)
        assert at(pg, back.taken_at)[key][13] is True

    deltas = pg.execute(
        "SELECT error_delta, error_count FROM model_compatibility_history ORDER BY snapshot_id"
    ).fetchall()
    assert sum(e for e, _ in deltas) == 9
    assert [c for _, c in deltas] == sorted(c for _, c in deltas)  # totals only grow


def age(pg: psycopg.Connection[Any], by: timedelta) -> None:
    """Moves the whole history ``by`` into the past, as if it had been written then."""
    pg.execute("UPDATE resilience_snapshots SET taken_at = taken_at - %s", (by,))
    pg.execute("UPDATE model_compatibility_history SET taken_at = taken_at - %s", (by,))


def test_keyframes_come_at_the_configured_interval(
    redis_url: str, prefix: str, pg_schema: str, pg: psycopg.Connection[Any]
) -> None:
    s = settings_for(redis_url, prefix, pg_schema, snapshot_keyframe_seconds=3600)
    assert Settings(snapshot_keyframe_seconds="1d").snapshot_keyframe_seconds == 86400
    assert Settings().snapshot_keyframe_seconds == 86400  # default: a day
    with Breaker(s) as b:
        succeed(b, A)
        succeed(b, B)
        results = [take_snapshot(b, s), take_snapshot(b, s)]
        age(pg, timedelta(minutes=59))
        results.append(take_snapshot(b, s))
        age(pg, timedelta(minutes=2))  # the first keyframe is an hour and a minute old
        results += [take_snapshot(b, s), take_snapshot(b, s)]
    assert [(r.keyframe, r.history_rows) for r in results] == [
        (True, 2),
        (False, 0),
        (False, 0),
        (True, 2),  # nothing changed, every target written
        (False, 0),
    ]
    assert "(keyframe)" in results[3].describe() and "(keyframe)" not in results[4].describe()
    again, first = rows_of(pg, results[3].snapshot_id), rows_of(pg, results[0].snapshot_id)
    assert {k: r[5:7] for k, r in again.items()} == {k: (0, 0) for k in first}
    # the same values written again (the first keyframe also counted the first calls)
    assert {k: r[:5] + r[7:] for k, r in again.items()} == {
        k: r[:5] + r[7:] for k, r in first.items()
    }


def test_a_keyframe_spanning_a_prune_keeps_every_starting_value(
    redis_url: str, prefix: str, pg_schema: str, pg: psycopg.Connection[Any]
) -> None:
    s = settings_for(redis_url, prefix, pg_schema)  # a keyframe a day
    h = timedelta(hours=1)
    with Breaker(s) as b:
        for t in (A, B, C):
            succeed(b, t)
        k0 = take_snapshot(b, s)
        succeed(b, A)
        take_snapshot(b, s)
        age(pg, 25 * h)
        succeed(b, B)
        k1 = take_snapshot(b, s)  # the next keyframe: 3 rows, B's change among them
        age(pg, 2 * h)
        succeed(b, A)
        take_snapshot(b, s)
        age(pg, h)
        fail(b, C, 1)
        last = take_snapshot(b, s)
    # now: K0 and a change 28 h ago, K1 3 h ago, a change 1 h ago, the last one now
    assert k0.keyframe and k1.keyframe and not last.keyframe
    assert last.taken_at is not None
    cutoff = last.taken_at - 2 * h
    starting = at(pg, cutoff)
    assert set(starting) == {("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("groq", "llama")}
    assert starting[("openai", "gpt-4o")][8] == 2  # A's change before K1 is in K1's row
    newest = at(pg, last.taken_at)
    report = build_report(s, cutoff, now=last.taken_at)

    result = prune(s, 2 * h)  # the cutoff falls between K1 and the next snapshot
    assert (result.snapshots, result.history) == (2, 4)  # K0 (3 rows) and A's first change
    left = pg.execute("SELECT id, keyframe FROM resilience_snapshots ORDER BY id").fetchall()
    assert left[0] == (k1.snapshot_id, True)  # the keyframe before the cutoff stays
    assert len(left) == 3
    assert at(pg, cutoff) == starting  # every target still has its value at the cutoff
    assert at(pg, last.taken_at) == newest
    assert build_report(s, cutoff, now=last.taken_at) == report
    # a longer prune keeps K1 too: the newest keyframe before any cutoff stays
    assert prune(s, timedelta(minutes=1)).snapshots == 0
    assert at(pg, last.taken_at) == newest


# --------------------------------------------------------------------------- both layouts


def _ordinal_rows(pg: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """History rows with the snapshot's position instead of its id and time."""
    return [
        tuple(r)
        for r in pg.execute(
            "SELECT dense_rank() OVER (ORDER BY snapshot_id), "
            + _HISTORY
            + " FROM model_compatibility_history ORDER BY 1, 2, 3"
        ).fetchall()
    ]


def _snapshot_times(pg: psycopg.Connection[Any]) -> list[datetime]:
    return [r[0] for r in pg.execute("SELECT taken_at FROM resilience_snapshots ORDER BY id")]


def _comparable_report(r: Report) -> Report:
    return replace(
        r,
        since=r.since.min,
        until=r.until.min,
        last_snapshot_at=None,
        endpoint_hints=[replace(h, updated_at=None) for h in r.endpoint_hints],
    )


def test_reports_are_the_same_from_both_layouts_and_the_migration_converts_between_them(
    redis_url: str,
    prefix: str,
    pg_schema: str,
    other_schema: str,
    database_url: str,
    rclient: redis.Redis,
) -> None:
    # The same Redis state, snapshot after every step into two schemas: `dense` takes a
    # keyframe at every snapshot (one row per target per snapshot: the layout before 0006),
    # `sparse` the default daily keyframe.
    long = {"open_seconds": 600.0, "max_open_seconds": 600.0}  # no break ends meanwhile
    dense = settings_for(redis_url, prefix, pg_schema, snapshot_keyframe_seconds=1e-6, **long)
    sparse = settings_for(redis_url, prefix, other_schema, **long)
    targets = [Target(p, m) for p in ("openai", "anthropic") for m in ("a", "b", "c")]
    hint = Classification(ErrorKind.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses")

    def step(b: Breaker) -> None:
        for s in (dense, sparse):
            assert take_snapshot(b, s).written

    with Breaker(dense) as b:
        for i, t in enumerate(targets):
            succeed(b, t, i + 1)
            fail(b, t, i % 2)
        step(b)
        fail(b, targets[0], 5)  # a trip
        b.record_failure(targets[1], hint)
        step(b)
        step(b)  # nothing changed
        b.reset(targets[2])
        b.block_provider("anthropic", 3600, "key revoked")
        succeed(b, targets[4], 3)
        step(b)
        rclient.delete(KeySpace(prefix).target(targets[5]))  # expires
        b.unblock_provider("anthropic")
        step(b)
        step(b)
        fail(b, targets[5], 2)  # comes back
        succeed(b, targets[3])
        step(b)
        step(b)

    with _connect(database_url, pg_schema) as d, _connect(database_url, other_schema) as p:
        dense_rows, sparse_rows = _ordinal_rows(d), _ordinal_rows(p)
        assert len(sparse_rows) < len(dense_rows)
        times_d, times_p = _snapshot_times(d), _snapshot_times(p)
        assert len(times_d) == len(times_p) == 8

        # the value of every target at every snapshot (the increments are the newest row's)
        for i, when in enumerate(times_p, start=1):
            expected = {r[1:3]: r[1:6] + r[8:] for r in dense_rows if r[0] == i and r[-1]}
            assert {k: r[:5] + r[7:] for k, r in at(p, when).items()} == expected, i

        # the reports over every period that starts at a snapshot, and over all of them: the
        # same period for both (the sparse snapshot of a step is taken after the dense one)
        end = p.execute("SELECT now()").fetchone()
        assert end is not None
        for i, since in enumerate([times_d[0] - timedelta(hours=1), *times_p]):
            got = [build_report(s, since, now=end[0]) for s in (dense, sparse)]
            assert _comparable_report(got[1]) == _comparable_report(got[0]), i
            got_review = [build_review(s, since, now=end[0]) for s in (dense, sparse)]
            assert got_review[1] == got_review[0], i
        whole = build_report(sparse, times_d[0] - timedelta(hours=1), now=end[0])
        assert {(r.provider, r.model) for r in whole.problematic_models} >= {
            ("openai", "a"),
            ("anthropic", "c"),
        }
        assert not any(r.provider == "anthropic" for r in whole.blacklisted)  # unblocked

        # the state rows are the same too
        def state(c: psycopg.Connection[Any]) -> dict[Any, Any]:
            return {
                k: {n: v for n, v in r.items() if n not in ("updated_at", "updatedat")}
                | {"created_at": None, "createdat": None}
                for k, r in hint_rows(c).items()
            }

        assert state(p) == state(d)

        # the migration: the dense history, taken back to 0005, is a history of one row per
        # target per snapshot; 0006 turns it into the change-only one, and back without loss
        downgrade(dense, to=5)
        old = [r[:-1] for r in dense_rows if r[-1]]  # without the rows of vanished targets
        assert [r[:-1] for r in _ordinal_rows_v5(d)] == old
        upgrade(dense)
        assert _ordinal_rows(d) == sparse_rows
        keyframes = d.execute("SELECT keyframe FROM resilience_snapshots ORDER BY id").fetchall()
        assert [k for (k,) in keyframes] == [True] + [False] * 7  # within a day: the first
        downgrade(dense, to=5)
        assert [r[:-1] for r in _ordinal_rows_v5(d)] == old


def _ordinal_rows_v5(pg: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """As :func:`_ordinal_rows` for a schema at version 5 (no in_redis column); each row ends
    with True to keep the same shape."""
    columns = _HISTORY.replace(", in_redis", ", true")
    return [
        tuple(r)
        for r in pg.execute(
            "SELECT dense_rank() OVER (ORDER BY snapshot_id), "
            + columns
            + " FROM model_compatibility_history ORDER BY 1, 2, 3"
        ).fetchall()
    ]


def test_migration_converts_a_hand_written_history(
    redis_url: str, pg_schema: str, pg: psycopg.Connection[Any]
) -> None:
    """Rows as the job before 0006 wrote them: every target at every snapshot; one target
    unchanged throughout, one changing, one vanishing after the second snapshot and back at
    the fourth; the snapshots span two days."""
    s = make_settings(redis_url, "app", database_schema=pg_schema)
    upgrade(s, target=5)
    start = pg.execute("SELECT now() - interval '3 days'").fetchone()
    assert start is not None
    times = [start[0] + timedelta(hours=h) for h in (0, 1, 25, 26, 27)]
    present = {
        "still": [0, 1, 2, 3, 4],
        "busy": [0, 1, 2, 3, 4],
        "flaky": [0, 1, 3, 4],
    }
    for n, when in enumerate(times, start=1):
        pg.execute(
            "INSERT INTO resilience_snapshots (id, key_prefix, taken_at, targets, transitions)"
            " VALUES (%s, 'app', %s, 3, 0)",
            (n, when),
        )
        for model, where in present.items():
            if n - 1 not in where:
                continue
            grow = model == "busy" or (model == "flaky" and n == 4)
            total = {"still": 1, "busy": n, "flaky": 2 if n >= 4 else 1}[model]
            pg.execute(
                "INSERT INTO model_compatibility_history (snapshot_id, key_prefix, taken_at,"
                " provider_id, model_id, state, is_blacklisted, error_delta, success_delta,"
                " error_count, success_count, raw_error_count, raw_success_count,"
                " consecutive_errors, trips) VALUES (%s, 'app', %s, 'p', %s, 'closed', false,"
                " 0, %s, 0, %s, 0, %s, 0, 0)",
                (n, when, model, 1 if (grow or n == 1) else 0, total, total),
            )
    before = _ordinal_rows_v5(pg)
    upgrade(s)
    after = {(r[0], r[2]): r[-1] for r in _ordinal_rows(pg)}
    assert [k for (k,) in pg.execute("SELECT keyframe FROM resilience_snapshots ORDER BY id")] == [
        True,
        False,
        True,  # the first a day after the previous keyframe
        False,
        False,
    ]
    assert after == {
        (1, "busy"): True,
        (1, "flaky"): True,
        (1, "still"): True,
        (2, "busy"): True,
        (3, "busy"): True,
        (3, "flaky"): False,  # vanished
        (3, "still"): True,  # keyframe
        (4, "busy"): True,
        (4, "flaky"): True,
        (5, "busy"): True,
    }
    assert set(at(pg, times[1])) == {("p", "busy"), ("p", "flaky"), ("p", "still")}
    assert set(at(pg, times[2])) == {("p", "busy"), ("p", "still")}
    downgrade(s, to=5)
    assert _ordinal_rows_v5(pg) == before


def test_snapshot_result_describes_rows_written() -> None:
    r = SnapshotResult(True, targets=10, history_rows=2, hint_rows=3, snapshot_id=7)
    assert r.describe().startswith("snapshot 7: 10 targets (0 new, 0 counter resets), 2 history")


def test_a_snapshot_counts_the_successes_its_own_breaker_still_holds_summed(
    redis_url: str, prefix: str, pg_schema: str, pg: psycopg.Connection[Any]
) -> None:
    s = settings_for(redis_url, prefix, pg_schema)
    s = s.model_copy(update={"local_view": True, "success_flush_seconds": 600.0})
    with Breaker(s) as b:
        for _ in range(30):
            assert b.allow(A)
            b.record_success(A)
        assert len(b._engine.pending)  # some successes are not in Redis yet
        assert take_snapshot(b, s).targets == 1
    assert hint_rows(pg)[("openai", "gpt-4o")]["success_count"] == 30
