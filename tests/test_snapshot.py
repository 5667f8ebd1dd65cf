"""The snapshot job against the real Redis and PostgreSQL: contents equal the Redis state,
all-or-nothing transactions, transitions exactly once, counter resets, leader election."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from resilience import Breaker, Classification, ErrorKind, Settings, Target
from resilience._db import upgrade
from resilience._keys import KeySpace
from resilience._snapshot import (
    LeaderLock,
    SnapshotError,
    SnapshotResult,
    run_every,
    take_snapshot,
)
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent

SE = ErrorKind.SERVER_ERROR


@pytest.fixture
def snap_settings(redis_url: str, prefix: str, pg_schema: str, database_url: str) -> Settings:
    s = make_settings(redis_url, prefix, database_schema=pg_schema, local_view=False)
    upgrade(s)
    return s


@pytest.fixture
def sb(snap_settings: Settings) -> Iterator[Breaker]:
    with Breaker(snap_settings) as b:
        yield b


@pytest.fixture
def pg(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield c


def hints(pg: psycopg.Connection[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    cur = pg.execute("SELECT * FROM model_compatibility_hints")
    names = [d.name for d in cur.description or ()]
    return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def count(pg: psycopg.Connection[Any], table: str) -> int:
    row = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def counts(pg: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        t: count(pg, t)
        for t in (
            "model_compatibility_hints",
            "model_compatibility_history",
            "model_compatibility_transitions",
            "resilience_snapshots",
            "resilience_event_cursors",
        )
    }


def transition_ids(pg: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = pg.execute(
        "SELECT provider_id, event_id FROM model_compatibility_transitions"
        " ORDER BY provider_id, event_ms, event_seq"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def fail(b: Breaker, t: Target, n: int, kind: ErrorKind | Classification = SE) -> None:
    for _ in range(n):
        b.record_failure(t, kind)


def succeed(b: Breaker, t: Target, n: int) -> None:
    for _ in range(n):
        b.record_success(t)


# --------------------------------------------------------------------------- contents


def test_snapshot_contents_equal_the_redis_state(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    tripped = Target("openai", "gpt-4o")
    mixed = Target("openai", "gpt-4o-mini")
    blocked = Target("anthropic", "claude-sonnet-4")
    hinted = Target("openai", "o3-pro")
    odd = Target("together", "meta-llama/x:y{z} 模型")
    fail(sb, tripped, 6)
    succeed(sb, mixed, 4)
    fail(sb, mixed, 1)
    sb.block(blocked, 3600, "vendor incident INC-42")
    sb.record_failure(
        hinted, Classification(ErrorKind.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses")
    )
    succeed(sb, odd, 2)

    result = take_snapshot(sb, snap_settings)
    assert result.written
    assert result.targets == 5
    assert result.new_targets == 5
    assert result.snapshot_id is not None

    states = {(s.provider, s.model): s for s in sb.states()}
    rows = hints(pg)
    assert set(rows) == set(states)
    for key, s in states.items():
        row = rows[key]
        assert row["error_count"] == s.error_count, key
        assert row["success_count"] == s.success_count, key
        assert row["raw_error_count"] == s.error_count, key
        assert row["state"] == s.state, key
        assert row["is_blacklisted"] == s.blacklisted, key
        assert row["blacklisted_until"] == (s.open_until if s.blacklisted else None), key
        assert row["consecutive_errors"] == s.consecutive_errors, key
        assert row["trips"] == s.trips, key
        assert row["endpoint_hint"] == s.endpoint_hint, key
        assert row["last_error_kind"] == s.last_error_kind, key
        assert row["last_error_time"] == s.last_error_time, key
        assert row["last_success_time"] == s.last_success_time, key
        assert row["reason"] == s.reason, key
        assert row["manual"] == s.manual, key
        assert row["redis_since"] == s.since, key
    assert rows[("openai", "gpt-4o")]["is_blacklisted"] is True
    assert rows[("openai", "gpt-4o")]["error_count"] == 6
    assert rows[("anthropic", "claude-sonnet-4")]["reason"] == "vendor incident INC-42"
    assert rows[("openai", "o3-pro")]["endpoint_hint"] == "/v1/responses"

    history = pg.execute(
        "SELECT provider_id, model_id, error_delta, success_delta, error_count, snapshot_id"
        " FROM model_compatibility_history"
    ).fetchall()
    assert len(history) == 5
    assert {r[5] for r in history} == {result.snapshot_id}
    assert {(r[0], r[1]): r[2] for r in history}[("openai", "gpt-4o")] == 6

    events = sb.events({})
    assert transition_ids(pg) == sorted(
        ((e.provider, e.id) for e in events),
        key=lambda x: (x[0], *map(int, x[1].split("-"))),
    )
    assert result.transitions == len(events) >= 2  # the trip and the manual block
    row = pg.execute(
        "SELECT model_id, from_state, to_state, kind, occurred_at FROM"
        " model_compatibility_transitions WHERE provider_id = 'openai'"
    ).fetchone()
    assert row is not None
    assert row[:4] == ("gpt-4o", "closed", "open", "server_error")

    # the operators' runbook query, unchanged
    runbook = pg.execute(
        "SELECT provider_id, model_id, error_count, success_count, is_blacklisted FROM "
        "model_compatibility_hints WHERE error_count > 2 ORDER BY error_count DESC;"
    ).fetchall()
    assert runbook == [("openai", "gpt-4o", 6, 0, True)]


def test_names_postgres_cannot_store_do_not_break_the_snapshot(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    succeed(sb, Target("p", "nul\x00byte"), 1)
    succeed(sb, Target("p", "fine"), 1)
    result = take_snapshot(sb, snap_settings)
    assert result.targets == 2
    assert set(hints(pg)) == {("p", "nul\\x00byte"), ("p", "fine")}


def test_provider_wide_block_is_copied(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    t = Target("mistral", "large")
    succeed(sb, t, 1)
    sb.block(t, 600, "key rotated", provider_wide=True)
    take_snapshot(sb, snap_settings)
    row = hints(pg)[("mistral", "large")]
    assert row["is_blacklisted"] is True
    assert row["provider_blocked_until"] is not None
    models = pg.execute(
        "SELECT model_id, to_state FROM model_compatibility_transitions"
        " WHERE provider_id = 'mistral'"
    ).fetchall()
    assert (None, "open") in models  # the provider-wide event has no model


def test_compatibility_hints_reach_the_state_row_and_the_report_when_they_change(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    from datetime import timedelta

    from resilience import classify_response
    from resilience._report import build_report, format_report

    o1 = Target("openai", "o1")
    succeed(sb, o1, 3)
    take_snapshot(sb, snap_settings)
    assert hints(pg)[("openai", "o1")]["compat_hints"] == []
    refusal = classify_response(
        400,
        None,
        '{"error": {"message": "Unsupported parameter: \'max_tokens\' is not supported with'
        " this model. Use 'max_completion_tokens' instead. key sk-abcdefghijklmnopqrstuvwx\","
        ' "param": "max_tokens", "code": "unsupported_parameter"}}',
    )
    sb.record_failure(o1, refusal)
    before = count(pg, "model_compatibility_history")
    second = take_snapshot(sb, snap_settings)
    row = hints(pg)[("openai", "o1")]
    assert row["compat_hints"] == ["kind=param_renamed&param=max_tokens&to=max_completion_tokens"]
    assert row["compat_learned_at"] == sb.state(o1).compat_at is not None
    assert "Use 'max_completion_tokens' instead" in row["compat_message"]
    assert "sk-abc" not in row["compat_message"]  # redacted before it was stored
    assert row["error_count"] == 0  # a compatibility error is no failure
    # a hint changes the state row only: counters and state did not move
    assert (second.history_rows, count(pg, "model_compatibility_history")) == (0, before)
    third = take_snapshot(sb, snap_settings)
    assert third.hint_rows == 0  # unchanged: not written again

    report = build_report(snap_settings, timedelta(days=1))
    [r] = report.compat_hints
    assert (r.provider, r.model, r.hints) == (
        "openai",
        "o1",
        ("max_tokens -> max_completion_tokens",),
    )
    text = format_report(report, "table")
    assert "Learned compatibility hints" in text and "max_tokens -> max_completion_tokens" in text

    sb.reset(o1)  # reset forgets the hints; the next snapshot says so
    succeed(sb, o1, 1)
    take_snapshot(sb, snap_settings)
    assert hints(pg)[("openai", "o1")]["compat_hints"] == []


# --------------------------------------------------------------------------- exactly once


def test_a_second_run_does_not_double_transitions(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    t = Target("openai", "gpt-4o")
    fail(sb, t, 5)
    first = take_snapshot(sb, snap_settings)
    assert first.transitions == 1
    second = take_snapshot(sb, snap_settings)
    assert second.transitions == 0
    assert count(pg, "model_compatibility_transitions") == 1
    assert count(pg, "resilience_snapshots") == 2
    assert count(pg, "model_compatibility_history") == 1  # nothing changed: no second row
    assert (second.history_rows, second.hint_rows) == (0, 0)
    assert hints(pg)[("openai", "gpt-4o")]["error_count"] == 5  # not 10

    sb.unblock(t)
    third = take_snapshot(sb, snap_settings)
    assert third.transitions == 1
    assert [
        r[0]
        for r in pg.execute(
            "SELECT to_state FROM model_compatibility_transitions ORDER BY event_ms, event_seq"
        )
    ] == ["open", "closed"]


def test_cursor_survives_prune_of_old_transitions(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    t = Target("openai", "gpt-4o")
    fail(sb, t, 5)
    take_snapshot(sb, snap_settings)
    pg.execute("DELETE FROM model_compatibility_transitions")  # as prune would, after 90 days
    assert take_snapshot(sb, snap_settings).transitions == 0  # the event is still in Redis
    assert count(pg, "model_compatibility_transitions") == 0


# --------------------------------------------------------------------------- all or nothing


def _install_failing_trigger(pg: psycopg.Connection[Any], table: str, body: str) -> None:
    pg.execute(
        sql.SQL(
            "CREATE FUNCTION test_trap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            + body
            + " RETURN NULL; END $$"
        )
    )
    pg.execute(
        sql.SQL(
            "CREATE TRIGGER test_trap BEFORE INSERT ON {} FOR EACH STATEMENT "
            "EXECUTE FUNCTION test_trap()"
        ).format(sql.Identifier(table))
    )


def _drop_trigger(pg: psycopg.Connection[Any], table: str) -> None:
    pg.execute(sql.SQL("DROP TRIGGER test_trap ON {}").format(sql.Identifier(table)))
    pg.execute("DROP FUNCTION test_trap()")


def test_postgres_failure_mid_transaction_leaves_nothing_and_next_run_catches_up(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    a, b = Target("openai", "gpt-4o"), Target("groq", "llama")
    fail(sb, a, 3)
    take_snapshot(sb, snap_settings)
    before = counts(pg)
    before_hints = hints(pg)

    fail(sb, a, 2)  # trips: a new transition
    succeed(sb, b, 4)
    # the transitions insert comes after the state upsert and the history insert: it
    # fails with rows already written in the transaction
    _install_failing_trigger(
        pg, "model_compatibility_transitions", "RAISE EXCEPTION 'disk full (test)';"
    )
    with pytest.raises(SnapshotError, match=r"nothing written.*disk full") as info:
        take_snapshot(sb, snap_settings)
    assert info.value.service == "postgres"
    assert "\n" not in str(info.value)
    assert counts(pg) == before
    assert hints(pg) == before_hints

    _drop_trigger(pg, "model_compatibility_transitions")
    result = take_snapshot(sb, snap_settings)
    assert result.transitions == 1
    rows = hints(pg)
    assert rows[("openai", "gpt-4o")]["error_count"] == 5
    assert rows[("groq", "llama")]["success_count"] == 4
    assert count(pg, "model_compatibility_transitions") == 1


def _wait_for_sleeping_backend(pg: psycopg.Connection[Any], schema: str) -> int:
    """The pid of the backend sleeping in the trap while holding locks in ``schema`` (tests
    of other schemas may sleep at the same time)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = pg.execute(
            "SELECT a.pid FROM pg_stat_activity a WHERE a.wait_event = 'PgSleep'"
            " AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            "   JOIN pg_namespace n ON n.oid = c.relnamespace"
            "   WHERE l.pid = a.pid AND n.nspname = %s)",
            (schema,),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the snapshot never reached the trap")


def test_terminated_backend_leaves_nothing(
    sb: Breaker,
    snap_settings: Settings,
    pg: psycopg.Connection[Any],
    pg_schema: str,
) -> None:
    fail(sb, Target("openai", "gpt-4o"), 5)
    succeed(sb, Target("openai", "gpt-4.1"), 2)
    _install_failing_trigger(pg, "model_compatibility_transitions", "PERFORM pg_sleep(30);")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            take_snapshot(sb, snap_settings)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    pid = _wait_for_sleeping_backend(pg, pg_schema)
    pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SnapshotError), errors
    assert errors[0].service == "postgres"
    assert "nothing written" in str(errors[0])
    assert counts(pg) == dict.fromkeys(counts(pg), 0)


@pytest.mark.slow
def test_killed_snapshot_process_leaves_nothing_and_next_run_copies_once(
    sb: Breaker,
    snap_settings: Settings,
    pg: psycopg.Connection[Any],
    pg_schema: str,
    database_url: str,
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
) -> None:
    t = Target("openai", "gpt-4o")
    fail(sb, t, 5)
    sb.unblock(t)
    fail(sb, Target("groq", "llama"), 5)
    n_events = len(sb.events({}))
    assert n_events == 3
    _install_failing_trigger(pg, "model_compatibility_transitions", "PERFORM pg_sleep(2);")
    env = {
        **os.environ,
        "RESILIENCE_REDIS_URL": redis_url,
        "RESILIENCE_KEY_PREFIX": prefix,
        "RESILIENCE_DATABASE_URL": database_url,
        "RESILIENCE_DATABASE_SCHEMA": pg_schema,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience", "snapshot"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        pid = _wait_for_sleeping_backend(pg, pg_schema)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    # the orphaned backend finishes its statement, finds the client gone and rolls back
    deadline = time.monotonic() + 30
    while pg.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert counts(pg) == dict.fromkeys(counts(pg), 0)

    # the killed job still holds the leader lock until its lease ends: end it now
    lock = KeySpace(prefix).snapshot_lock
    assert rclient.exists(lock)
    rclient.pexpire(lock, 1)
    time.sleep(0.01)
    _drop_trigger(pg, "model_compatibility_transitions")
    result = take_snapshot(sb, snap_settings)
    assert result.transitions == n_events
    assert take_snapshot(sb, snap_settings).transitions == 0
    assert count(pg, "model_compatibility_transitions") == n_events


def test_redis_outage_is_a_clear_error_and_writes_nothing(
    snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    down = snap_settings.model_copy(update={"redis_url": "redis://:s3cret@127.0.0.1:1/0"})
    with Breaker(down) as b:
        for lock in (True, False):
            with pytest.raises(SnapshotError, match="Redis unavailable") as info:
                take_snapshot(b, down, lock=lock)
            assert info.value.service == "redis"
            assert "s3cret" not in str(info.value)
    assert counts(pg) == dict.fromkeys(counts(pg), 0)


def test_postgres_outage_is_a_clear_error(sb: Breaker, snap_settings: Settings) -> None:
    succeed(sb, Target("openai", "gpt-4o"), 1)
    down = snap_settings.model_copy(
        update={"database_url": "postgresql://postgres:s3cret@127.0.0.1:1/postgres"}
    )
    with pytest.raises(SnapshotError, match="PostgreSQL unavailable") as info:
        take_snapshot(sb, down)
    assert info.value.service == "postgres"
    assert "s3cret" not in str(info.value)
    # the one-shot lock was released: the next run is not blocked
    assert take_snapshot(sb, snap_settings).written


# --------------------------------------------------------------------------- counter resets


def test_counter_resets_never_lose_or_double_counts(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any], rclient: redis.Redis
) -> None:
    t = Target("openai", "gpt-4o")
    key = ("openai", "gpt-4o")
    fail(sb, t, 3)
    succeed(sb, t, 2)
    take_snapshot(sb, snap_settings)
    assert (hints(pg)[key]["error_count"], hints(pg)[key]["success_count"]) == (3, 2)

    sb.reset(t)  # counters restart from zero with a new `since`
    fail(sb, t, 4)  # higher than before the reset: only `since` tells it restarted
    succeed(sb, t, 1)
    r = take_snapshot(sb, snap_settings)
    assert r.counter_resets == 1
    assert (hints(pg)[key]["error_count"], hints(pg)[key]["success_count"]) == (7, 3)

    fail(sb, t, 1)  # same entry: only the increment is added
    take_snapshot(sb, snap_settings)
    assert hints(pg)[key]["error_count"] == 8

    sb.reset(t)
    fail(sb, t, 1)  # lower than before
    take_snapshot(sb, snap_settings)
    assert hints(pg)[key]["error_count"] == 9

    # the entry expires (idle TTL): the target disappears from Redis, then comes back
    rclient.delete(KeySpace(snap_settings.key_prefix).target(t))
    take_snapshot(sb, snap_settings)
    row = hints(pg)[key]
    assert (row["in_redis"], row["state"], row["error_count"]) == (False, "closed", 9)
    fail(sb, t, 2)
    assert take_snapshot(sb, snap_settings).counter_resets == 1
    assert hints(pg)[key]["error_count"] == 11
    assert hints(pg)[key]["in_redis"] is True

    deltas = pg.execute(
        "SELECT error_delta, success_delta, error_count FROM model_compatibility_history"
        " ORDER BY snapshot_id"
    ).fetchall()
    assert all(e >= 0 and s >= 0 for e, s, _ in deltas)
    assert sum(e for e, _, _ in deltas) == 11
    totals = [c for _, _, c in deltas]
    assert totals == sorted(totals)  # lifetime totals only grow


def test_target_gone_from_redis_is_no_longer_blacklisted(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any], rclient: redis.Redis
) -> None:
    t = Target("openai", "gpt-4o")
    fail(sb, t, 5)
    take_snapshot(sb, snap_settings)
    assert hints(pg)[("openai", "gpt-4o")]["is_blacklisted"] is True
    rclient.delete(KeySpace(snap_settings.key_prefix).target(t))
    take_snapshot(sb, snap_settings)
    row = hints(pg)[("openai", "gpt-4o")]
    assert (row["is_blacklisted"], row["blacklisted_until"], row["error_count"]) == (
        False,
        None,
        5,
    )


# --------------------------------------------------------------------------- leader election


def test_leader_lock_is_exclusive_renewable_and_expires(snap_settings: Settings) -> None:
    with LeaderLock(snap_settings, 30) as a, LeaderLock(snap_settings, 30) as b:
        assert a.acquire()
        assert not b.acquire()
        assert a.acquire()  # renewal
        a.release()
        assert b.acquire()
        assert not a.acquire()
    with LeaderLock(snap_settings, 0.2) as short, LeaderLock(snap_settings, 30) as other:
        assert short.acquire()
        assert not other.acquire()
        time.sleep(0.3)  # the holder "died": its lease ran out
        assert other.acquire()


def test_snapshot_skips_while_another_replica_leads(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    succeed(sb, Target("openai", "gpt-4o"), 1)
    with LeaderLock(snap_settings, 30) as other:
        assert other.acquire()
        result = take_snapshot(sb, snap_settings)
    assert result == SnapshotResult(written=False, duration_s=result.duration_s)
    assert count(pg, "resilience_snapshots") == 0
    assert take_snapshot(sb, snap_settings).written  # released on exit


@pytest.mark.slow
def test_replicas_running_every_interval_have_one_leader(
    snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    with Breaker(snap_settings) as b:
        succeed(b, Target("openai", "gpt-4o"), 1)
    stop = threading.Event()
    results: dict[int, list[SnapshotResult]] = {0: [], 1: []}
    written: dict[int, int] = {}

    def replica(i: int) -> None:
        with Breaker(snap_settings) as b:
            written[i] = run_every(
                0.2,
                b,
                snap_settings,
                stop=stop,
                on_result=results[i].append,
                handle_signals=False,
            )

    threads = [threading.Thread(target=replica, args=(i,)) for i in (0, 1)]
    for th in threads:
        th.start()
        time.sleep(0.05)
    time.sleep(1.5)
    stop.set()
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive()
    leaders = [i for i in (0, 1) if any(r.written for r in results[i])]
    assert len(leaders) == 1, results
    follower = 1 - leaders[0]
    assert results[follower] and not any(r.written for r in results[follower])
    assert written[leaders[0]] >= 4
    assert count(pg, "resilience_snapshots") == written[leaders[0]]
    # the leader released the lock when it stopped
    with LeaderLock(snap_settings, 30) as lock:
        assert lock.acquire()


def test_run_every_stops_on_sigterm_between_snapshots(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    succeed(sb, Target("openai", "gpt-4o"), 1)
    seen: list[SnapshotResult] = []

    def on_result(r: SnapshotResult) -> None:
        seen.append(r)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the loop runs

    before = signal.getsignal(signal.SIGTERM)
    n = run_every(0.1, sb, snap_settings, on_result=on_result)
    assert n == 2
    assert count(pg, "resilience_snapshots") == 2
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_run_every_reports_outages_and_goes_on(snap_settings: Settings) -> None:
    down = snap_settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/x"})
    stop = threading.Event()
    errors: list[Exception] = []

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        if len(errors) == 2:
            stop.set()

    with Breaker(down) as b:
        assert run_every(0.05, b, down, stop=stop, on_error=on_error, handle_signals=False) == 0
    assert len(errors) == 2
    assert all(isinstance(e, SnapshotError) and e.service == "postgres" for e in errors)


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_two_thousand_targets_in_one_snapshot(
    sb: Breaker, snap_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    targets = [Target(f"p{i % 7}", f"model-{i}") for i in range(2000)]
    for i, t in enumerate(targets):
        if i % 10 == 0:
            fail(sb, t, 5)
        else:
            sb.record_success(t)
    first = take_snapshot(sb, snap_settings)
    assert first.targets == 2000
    assert first.transitions == 200
    second = take_snapshot(sb, snap_settings)
    assert second.targets == 2000 and second.transitions == 0
    assert first.keyframe and not second.keyframe
    assert (first.history_rows, second.history_rows) == (2000, 0)
    assert count(pg, "model_compatibility_history") == 2000
    row = pg.execute(
        "SELECT sum(error_count), sum(success_count) FROM model_compatibility_hints"
    ).fetchone()
    assert row == (1000, 1800)


def test_events_trimmed_before_copy_are_reported(
    redis_url: str, prefix: str, database_url: str, pg_schema: str
) -> None:
    """A job down longer than the capped log holds: the loss is reported, never silent."""
    from resilience import ErrorKind, Target, take_snapshot
    from resilience._db import upgrade

    s = make_settings(
        redis_url,
        prefix,
        database_schema=pg_schema,
        events_max_len=100,
        failure_threshold=1,
        open_seconds=0.001,
    )
    upgrade(s)
    t = Target("openai", "gpt-4o")
    with Breaker(s) as b:
        b.record_failure(t, ErrorKind.SERVER_ERROR)
        first = take_snapshot(b, s)
        assert first.events_lost == 0
        # a few hundred transitions while no snapshot runs: the log keeps about 100
        for _ in range(150):
            b.block(t, 60, "x")
            b.unblock(t)
        second = take_snapshot(b, s)
        kept = len(b.events({"openai": "0-0"}))
        # 1 event copied, 300 logged since, `kept` still in the log: the rest was dropped
        assert second.events_lost == 300 - kept > 0
        assert second.transitions == kept
        assert "lost" in second.describe()
        b.block(t, 60, "y")
        third = take_snapshot(b, s)
        assert (third.events_lost, third.transitions) == (0, 1)
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        rows = conn.execute("SELECT events_lost FROM resilience_snapshots ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [0, 300 - kept, 0]


def test_events_lost_arithmetic() -> None:

    from resilience import TransitionEvent
    from resilience._snapshot import events_lost

    def ev(provider: str, n: int | None) -> TransitionEvent:
        now = datetime.now(tz=timezone.utc)
        return TransitionEvent("1-0", provider, "m", "closed", "open", "x", "", 1, now, None, n)

    events = [ev("a", 5), ev("a", 6), ev("b", 3), ev("c", 1), ev("d", 9), ev("e", 2)]
    copied = {"a": 4, "b": 1, "c": 7, "d": None}
    # a: contiguous; b: one dropped; c: log restarted; d: old cursor; e: first copy, 1 dropped
    assert events_lost(events, copied) == {"b": 1, "e": 1}
