"""The operator's side, through the CLI against the real Redis and PostgreSQL: the
checklist's SQL, several applications in one schema, unknown targets, health checks, status,
report sections and the review, configuration, doctor, and the snapshot leader lease."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from resilience import Breaker, Classification, ErrorKind, Settings, Target
from resilience._db import CHECKLIST_SQL
from resilience._exceptions import ExitCode
from resilience._snapshot import LEADER_LEASE_S, take_snapshot
from resilience.cli import main
from tests.conftest import PrivateRedis, make_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str, database_url: str, pg_schema: str
) -> dict[str, str]:
    values = {
        "RESILIENCE_REDIS_URL": redis_url,
        "RESILIENCE_KEY_PREFIX": prefix,
        "RESILIENCE_DATABASE_URL": database_url,
        "RESILIENCE_DATABASE_SCHEMA": pg_schema,
        "RESILIENCE_JITTER": "0",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def breaker_for(redis_url: str, prefix: str) -> Breaker:
    return Breaker(make_settings(redis_url, prefix, local_view=False))


@pytest.fixture
def pg(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield c


def cli_process(env: dict[str, str], *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilience", *argv],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


# --------------------------------------------------------------------------- the checklist SQL


def test_checklist_sql_runs_as_written_on_what_the_cli_wrote(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    redis_url: str,
    prefix: str,
    pg: psycopg.Connection[Any],
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    with breaker_for(redis_url, prefix) as b:
        for _ in range(4):
            b.record_failure(Target("openai", "bad-model"), ErrorKind.MODEL_NOT_FOUND)
        for _ in range(3):
            b.record_failure(Target("openai", "gpt-4o"), ErrorKind.SERVER_ERROR)
        b.record_success(Target("groq", "llama"))
    assert run(capsys, "snapshot")[0] == 0

    results = [pg.execute(s.encode()) for s in CHECKLIST_SQL[:-1]]
    assert results[0].fetchone() is not None
    ranked = results[1].fetchall()
    assert ranked[0] == ("openai", "bad-model", 4, 0, "⚠️ BLACKLISTED")
    assert ranked[1] == ("openai", "gpt-4o", 3, 0, "✓ OK")
    assert ranked[2] == ("groq", "llama", 0, 1, "✓ OK")
    assert len(results[2].fetchall()) == 1  # WHERE modelId = 'bad-model'
    assert results[3].fetchall() == [("bad-model", 4, 0, True), ("gpt-4o", 3, 0, False)]
    assert pg.execute(CHECKLIST_SQL[-1].encode()).rowcount == 0  # nothing 90 days idle
    pg.execute(
        "UPDATE model_compatibility_hints SET error_count = 0, success_count = 0,"
        " last_error_time = now() - interval '91 days' WHERE model_id = 'gpt-4o'"
    )
    assert pg.execute(CHECKLIST_SQL[-1].encode()).rowcount == 1


# --------------------------------------------------------------------------- two applications


def test_two_key_prefixes_in_one_schema_stay_apart(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    prefix: str,
    pg: psycopg.Connection[Any],
) -> None:
    other = f"{prefix}-b"
    target = Target("openai", "gpt-4o")
    # every snapshot a keyframe: prune keeps only the newest keyframe before its cutoff
    monkeypatch.setenv("RESILIENCE_SNAPSHOT_KEYFRAME_SECONDS", "0.001")
    assert run(capsys, "db", "upgrade")[0] == 0
    try:
        with breaker_for(redis_url, prefix) as a, breaker_for(redis_url, other) as b:
            for _ in range(5):
                a.record_failure(target, ErrorKind.SERVER_ERROR)  # A trips once
            for _ in range(7):
                b.record_success(target)
            b.block(target, 60, "incident B")  # B's own transition, same provider
        for round_ in range(2):
            for pre in (prefix, other):
                monkeypatch.setenv("RESILIENCE_KEY_PREFIX", pre)
                code, out, _ = run(capsys, "snapshot")
                assert code == 0, out
                assert "0 counter resets" in out, out  # nothing merged into the other's rows
                if round_ == 0:
                    assert "1 transitions" in out, (pre, out)  # B's transition is not skipped

        monkeypatch.setenv("RESILIENCE_KEY_PREFIX", prefix)
        doc = json.loads(run(capsys, "report", "--since", "1h", "--format", "json")[1])
        assert doc["period"]["key_prefix"] == prefix
        assert [(m["model"], m["errors"], m["successes"]) for m in doc["problematic_models"]] == [
            ("gpt-4o", 5, 0)
        ]
        assert [t["kind"] for t in doc["recent_transitions"]] == ["server_error"]

        doc = json.loads(
            run(capsys, "report", "--since", "1h", "--format", "json", "--all-prefixes")[1]
        )
        assert doc["period"]["key_prefix"] is None
        kinds = {(t["key_prefix"], t["kind"]) for t in doc["recent_transitions"]}
        assert kinds == {(prefix, "server_error"), (other, "manual")}
        rows = pg.execute(
            "SELECT key_prefix, error_count, success_count FROM model_compatibility_hints"
            " ORDER BY key_prefix"
        ).fetchall()
        assert rows == [(prefix, 5, 0), (other, 0, 7)]

        time.sleep(1.1)
        code, out, _ = run(capsys, "prune", "--older-than", "1s")
        assert code == 0 and f"key prefix {prefix!r}" in out
        left = pg.execute(
            "SELECT key_prefix, count(*) FROM resilience_snapshots GROUP BY 1 ORDER BY 1"
        ).fetchall()
        # only this application's history went, up to its newest keyframe (kept: the value
        # each target starts from)
        assert left == [(prefix, 1), (other, 2)]
        code, out, _ = run(capsys, "prune", "--older-than", "1s", "--all-prefixes")
        assert code == 0 and "every key prefix" in out and "1 snapshots" in out
        left = pg.execute(
            "SELECT key_prefix, count(*) FROM resilience_snapshots GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert left == [(prefix, 1), (other, 1)]
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{other}:*"))
        if keys:
            client.delete(*keys)
        client.close()


# --------------------------------------------------------------------------- unknown targets


def test_unknown_targets_are_refused_with_the_closest_names(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with breaker_for(redis_url, prefix) as b:
        b.record_failure(Target("openai", "gpt-4o"), ErrorKind.SERVER_ERROR)
        b.record_success(Target("openai", "gpt-4o-mini"))
    for verb in ("unblock", "reset"):
        code, out, err = run(capsys, verb, "openai", "gpt-4oo")
        assert code == 1 and out == ""
        line = one_line(err)
        assert "no such target openai/gpt-4oo" in line
        assert "closest: openai/gpt-4o" in line and "--force" in line
        code, _, err = run(capsys, verb, "openai", "doesnotexist")
        assert code == 1 and "no such target" in err
    _, out, _ = run(capsys, "status", "--format", "json")
    assert sorted(s["model"] for s in json.loads(out)) == ["gpt-4o", "gpt-4o-mini"]  # no phantom

    code, out, _ = run(capsys, "reset", "openai", "new-model", "--force")
    assert code == 0 and "reset: openai/new-model" in out
    code, out, err = run(capsys, "block", "openai", "gpt-4o-min", "--for", "1m")
    assert code == 0  # a block may precede the first call; a note names the close ones
    assert "openai/gpt-4o-mini" in err


def test_unblock_says_when_the_provider_block_still_applies(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with breaker_for(redis_url, prefix) as b:
        b.record_failure(
            Target("openai", "gpt-4o"),
            Classification(ErrorKind.AUTH, scope="provider", message="bad key"),
        )
    code, out, _ = run(capsys, "unblock", "openai", "gpt-4o")
    assert code == 0
    assert "note: provider openai is still blocked until" in out
    assert "resilience unblock openai --provider-wide" in out


# --------------------------------------------------------------------------- health checks


def test_db_status_check_exits_5_while_migrations_are_pending(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    code, out, err = run(capsys, "db", "status", "--check")
    assert code == ExitCode.MIGRATION == 5
    assert out == "" and "0001_initial pending" in one_line(err)
    assert "resilience db upgrade" in err
    assert run(capsys, "db", "upgrade", "--to", "4")[0] == 0
    code, _, err = run(capsys, "db", "status", "--check")
    assert code == 5 and "0005_key_prefix pending" in err and "0004" not in err
    assert run(capsys, "db", "upgrade")[0] == 0
    code, out, _ = run(capsys, "db", "status", "--check")
    assert code == 0 and "7 migrations applied" in out


def test_snapshot_check_compares_the_newest_snapshot_with_the_interval(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    code, _, err = run(capsys, "snapshot", "--check")
    assert code == 1 and "no snapshot of key prefix" in one_line(err)

    assert run(capsys, "snapshot")[0] == 0  # one-shot: no interval recorded
    code, _, err = run(capsys, "snapshot", "--check")
    assert code == 1 and "interval is unknown" in err and "--max-age" in err
    assert run(capsys, "snapshot", "--check", "--max-age", "1m")[0] == 0

    settings = make_settings(redis_url, prefix, database_schema=env["RESILIENCE_DATABASE_SCHEMA"])
    with Breaker(settings) as b:
        take_snapshot(b, settings, interval_s=0.5)  # as `snapshot --every 0.5` records it
    code, out, _ = run(capsys, "snapshot", "--check")
    assert code == 0 and "limit 1s" in out and "(recorded)" in out
    time.sleep(1.2)  # two intervals go by without a snapshot: the job is dead
    code, _, err = run(capsys, "snapshot", "--check")
    assert code == 1 and "the job is down" in one_line(err)
    assert run(capsys, "snapshot", "--check", "--every", "1m")[0] == 0  # a given interval


# --------------------------------------------------------------------------- the leader lease

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from resilience import Settings
    from resilience._snapshot import LeaderLock
    lock = LeaderLock(Settings())
    assert lock.acquire()
    with lock.renewing():
        print("held", flush=True)
        time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_killed_snapshot_blocks_the_next_one_for_the_lease_only(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(LEADER_LEASE_S * 0.5)  # alive past half the lease: it keeps renewing
        code, out, err = run(capsys, "snapshot")
        assert code == ExitCode.SKIPPED == 6
        assert out == "" and "another replica holds the snapshot lock" in one_line(err)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        while True:
            code, out, _ = run(capsys, "snapshot")
            if code == 0:
                break
            assert code == 6
            assert time.monotonic() - killed < LEADER_LEASE_S + 2
            time.sleep(0.25)
        waited = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
    assert out.startswith("snapshot 1 (keyframe):")
    assert waited <= LEADER_LEASE_S + 1  # seconds, not the old 2 minutes


def test_a_long_snapshot_keeps_its_lease(
    redis_url: str, prefix: str, pg_schema: str, env: dict[str, str]
) -> None:
    from resilience._snapshot import LeaderLock

    settings = make_settings(redis_url, prefix, database_schema=pg_schema)
    with LeaderLock(settings, 0.6) as mine, LeaderLock(settings, 30) as other:
        assert mine.acquire()
        with mine.renewing():
            time.sleep(2.0)  # three leases
            assert not other.acquire()
        mine.release()
        assert other.acquire()


# --------------------------------------------------------------------------- durations, exits


@pytest.mark.parametrize(
    "argv",
    [
        ["block", "openai", "gpt", "--for", "99999999999d"],
        ["report", "--since", "99999999999d"],
        ["prune", "--older-than", "4000d"],
        ["snapshot", "--every", "1e12"],
        ["status", "--watch", "inf"],
        ["snapshot", "--check", "--max-age", "nan"],
    ],
)
def test_every_duration_argument_is_checked_alike(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == ExitCode.USAGE == 2
    assert out == ""
    assert "invalid duration" in one_line(err)


def test_a_bad_duration_reaches_no_service(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_REDIS_URL", "redis://127.0.0.1:1/0")
    code, _, err = run(capsys, "block", "openai", "gpt", "--for", "99999999999d")
    assert code == 2 and "at most 3650d" in err


def test_errors_choose_their_exit_code_and_a_value_error_is_no_usage_error(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilience import (
        DatabaseError,
        DatabaseUnavailableError,
        MigrationError,
        MigrationRequiredError,
        ResilienceError,
        SnapshotError,
        StoreUnavailableError,
    )

    assert ResilienceError.exit_code == 1
    assert StoreUnavailableError.exit_code == 3
    assert (DatabaseError.exit_code, DatabaseUnavailableError.exit_code) == (4, 4)
    assert (MigrationError.exit_code, MigrationRequiredError.exit_code) == (1, 5)
    assert SnapshotError("redis", "x").exit_code == 3
    assert SnapshotError("postgres", "x").exit_code == 4

    from resilience.cli import targets

    def broken(args: Any, settings: Settings) -> int:
        raise ValueError("a bug, not bad arguments")

    monkeypatch.setattr(targets, "_cmd_status", broken)
    code, _, err = run(capsys, "status")
    assert code == 1
    assert "unexpected error: ValueError: a bug" in one_line(err)

    class Custom(ResilienceError):
        exit_code = 4

    def raises(args: Any, settings: Settings) -> int:
        raise Custom("chosen by the class")

    monkeypatch.setattr(targets, "_cmd_status", raises)
    assert run(capsys, "status")[0] == 4


# --------------------------------------------------------------------------- status


def test_status_shows_probe_due_relative_times_and_the_last_error(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with breaker_for(redis_url, prefix) as b:
        for _ in range(2):
            b.record_failure(
                Target("openai", "gpt-4o"), httpx_error("upstream exploded (request 42)")
            )
        b.block(Target("openai", "gpt-4o"), 0.5, "short")
        b.block(Target("openai", "o1"), 3600, "long incident")
        b.record_success(Target("groq", "llama"))
    time.sleep(0.7)
    code, out, _ = run(capsys, "status")
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines()[2:] if line.strip()}
    assert "probe due (break ended" in rows["gpt-4o"] and "ago)" in rows["gpt-4o"]
    assert "(in 59m)" in rows["o1"] or "(in 1h)" in rows["o1"]
    assert "upstream exploded (request 42)" in rows["gpt-4o"]
    assert "server_error" in rows["gpt-4o"]
    assert "1 probe due" in out

    doc = json.loads(run(capsys, "status", "--format", "json")[1])
    due = {s["model"]: s["probe_due"] for s in doc}
    assert due == {"gpt-4o": True, "o1": False, "llama": False}
    assert next(s for s in doc if s["model"] == "gpt-4o")["last_error_message"]

    _, out, _ = run(capsys, "status", "--model", "gpt-*", "--format", "json")
    assert [s["model"] for s in json.loads(out)] == ["gpt-4o"]
    _, out, _ = run(capsys, "status", "--model", "llama", "--format", "json")
    assert [s["provider"] for s in json.loads(out)] == ["groq"]
    _, out, _ = run(capsys, "status", "--sort", "errors", "--format", "json")
    assert json.loads(out)[0]["model"] == "gpt-4o"
    _, out, _ = run(capsys, "status", "--sort", "until", "--format", "json")
    assert [s["model"] for s in json.loads(out)] == ["gpt-4o", "o1", "llama"]


def httpx_error(message: str) -> Any:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return httpx.Response(500, json={"error": {"message": message}}, request=request)


@pytest.mark.slow
def test_status_watch_redraws_until_ctrl_c(
    env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with breaker_for(redis_url, prefix) as b:
        b.record_success(Target("openai", "gpt-4o"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience", "status", "--watch", "0.2"],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        frames = 0
        deadline = time.monotonic() + 20
        while frames < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            frames += line.startswith("every 0.2s")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert frames == 3
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_status_and_report_agree_on_trips(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    t = Target("openai", "gpt-4o")
    with breaker_for(redis_url, prefix) as b:
        b.record_failure(t, Classification(ErrorKind.RATE_LIMITED, retry_after_s=0.2))
        time.sleep(0.3)
        assert b.allow(t)  # the rate-limit break ends with a probe
        b.record_success(t)
        for _ in range(5):
            b.record_failure(t, ErrorKind.SERVER_ERROR)  # one trip
        b.block(t, 60, "manual")  # already open; a manual block is never a trip
    assert run(capsys, "snapshot")[0] == 0
    status = json.loads(run(capsys, "status", "--format", "json")[1])
    report = json.loads(run(capsys, "report", "--since", "1h", "--format", "json")[1])
    assert status[0]["trips"] == 1
    assert report["problematic_models"][0]["trips"] == 1
    assert report["provider_success_rates"][0]["trips"] == 1


# --------------------------------------------------------------------------- report


def test_report_csv_sections_out_dir_review_and_plot_checks(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    with breaker_for(redis_url, prefix) as b:
        for _ in range(5):
            b.record_failure(Target("openai", "gpt-4o"), ErrorKind.SERVER_ERROR)
        for _ in range(3):
            b.record_success(Target("azure", "gpt-4o-2024-08-06"))
    assert run(capsys, "snapshot")[0] == 0

    code, out, err = run(capsys, "report", "--format", "csv")
    assert code == 2 and out == ""
    assert "--section" in one_line(err) and "--out DIR" in err

    code, out, _ = run(capsys, "report", "--format", "csv", "--section", "provider_success_rates")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:3] == ["provider", "models", "errors"]
    assert {r[0] for r in rows[1:]} == {"openai", "azure"}

    code, out, _ = run(capsys, "report", "--format", "csv", "--out", str(tmp_path))
    assert code == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "blacklisted.csv",
        "compat_hints.csv",
        "endpoint_hints.csv",
        "problematic_models.csv",
        "provider_success_rates.csv",
        "recent_transitions.csv",
    ]
    assert sorted(out.split()) == [str(tmp_path / f) for f in files]
    header = (tmp_path / "recent_transitions.csv").read_text().splitlines()[0]
    assert header.startswith("time,provider,model,from_state")

    code, out, _ = run(capsys, "report", "--section", "blacklisted")
    assert code == 0 and "Blacklisted now (1)" in out and "Problematic models" not in out

    code, out, _ = run(capsys, "report", "--quarterly")
    assert code == 0
    assert "Providers, lowest success rate first (2)" in out
    assert "Suggested target order per model family (best first) (1)" in out
    assert "azure/gpt-4o-2024-08-06 > openai/gpt-4o" in out
    code, out, _ = run(capsys, "report", "--since", "30d", "--review", "--format", "json")
    assert json.loads(out)["providers"][0]["verdict"] == "replace or move down"
    code, _, err = run(capsys, "report", "--quarterly", "--since", "7d")
    assert code == 2 and "not allowed with" in err
    code, _, err = run(capsys, "report", "--review", "--section", "blacklisted")
    assert code == 2 and "the review has no section 'blacklisted'" in err

    for bad, needle in (
        (tmp_path / "nodir" / "r.png", "does not exist"),
        (tmp_path / "r.txt", "unknown image format"),
    ):
        code, out, err = run(capsys, "report", "--plot", str(bad))
        assert code == 2 and out == "", err  # checked before anything is printed
        assert needle in one_line(err)
    code, out, err = run(capsys, "report", "--plot", str(tmp_path / "r.svg"))
    assert code == 0 and (tmp_path / "r.svg").read_text().startswith("<?xml")


# --------------------------------------------------------------------------- configuration


def test_a_mistyped_variable_warns_with_the_closest_name(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_FAILURE_TRESHOLD", "3")
    code, _, err = run(capsys, "status")
    assert code == 0
    assert (
        "resilience: warning: RESILIENCE_FAILURE_TRESHOLD in the environment is not a "
        "resilience setting and is ignored; did you mean RESILIENCE_FAILURE_THRESHOLD?"
    ) in err


def test_env_file_and_durations_with_units(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
) -> None:
    other = f"rt-envfile-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("RESILIENCE_KEY_PREFIX")
    dotenv = tmp_path / "app.env"
    dotenv.write_text(
        f"RESILIENCE_KEY_PREFIX={other}\nRESILIENCE_OPEN_SECONDS=5m\n"
        "RESILIENCE_STORE_RETRY_SECONDS=0s\nPOSTGRES_PASSWORD=not-ours\n"
    )
    try:
        with breaker_for(redis_url, other) as b:
            b.record_success(Target("envfile", "model"))
        code, out, err = run(capsys, "--env-file", str(dotenv), "status", "--format", "json")
        assert code == 0, err
        assert [s["provider"] for s in json.loads(out)] == ["envfile"]
        assert err == ""  # POSTGRES_PASSWORD belongs to another program: no warning
        code, out, _ = run(capsys, "status", "--env-file", str(dotenv), "--format", "json")
        assert code == 0 and json.loads(out)[0]["provider"] == "envfile"
        code, _, err = run(capsys, "--env-file", str(tmp_path / "none.env"), "status")
        assert code == 2 and "no such file" in one_line(err)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{other}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    s = Settings(_env_file=str(dotenv))
    assert (s.open_seconds, s.store_retry_seconds) == (300.0, 0.0)


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("RESILIENCE_OPEN_SECONDS", "5x", "invalid duration '5x'"),
        ("RESILIENCE_FAILURE_THRESHOLD", "0", "greater than or equal to 1"),
        ("RESILIENCE_REDIS_URL", "http://u:hunter2@h/0", "must start with redis://"),
    ],
)
def test_invalid_settings_are_short_lines(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    value: str,
    needle: str,
) -> None:
    monkeypatch.setenv(var, value)
    code, out, err = run(capsys, "status")
    assert code == 2 and out == ""
    line = one_line(err)
    field = var.removeprefix("RESILIENCE_").lower()
    assert line.startswith(f"resilience: invalid setting: {field} ({var}): ")
    assert needle in line
    assert "errors.pydantic.dev" not in line and "further information" not in line
    assert "hunter2" not in line
    assert len(line) < 200


def test_every_invalid_setting_is_a_line(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_OPEN_SECONDS", "5x")
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "0")
    monkeypatch.setenv("RESILIENCE_REDIS_SENTINEL_PASSWORD", "hunter2")
    code, out, err = run(capsys, "status")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "resilience: invalid setting: redis_sentinel_password "
        "(RESILIENCE_REDIS_SENTINEL_PASSWORD): is for sentinels: RESILIENCE_REDIS_URL must "
        "then be a redis+sentinel:// or rediss+sentinel:// URL",
        "resilience: invalid setting: failure_threshold (RESILIENCE_FAILURE_THRESHOLD): must "
        "be greater than or equal to 1 (got '0')",
        "resilience: invalid setting: open_seconds (RESILIENCE_OPEN_SECONDS): invalid "
        "duration '5x': use e.g. 90s, 5m, 1h, 1h30m, 7d, 2w or plain seconds",
    ]


# --------------------------------------------------------------------------- doctor


def test_doctor_all_ok(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    settings = make_settings(redis_url, prefix, database_schema=env["RESILIENCE_DATABASE_SCHEMA"])
    with Breaker(settings) as b:
        b.record_success(Target("openai", "gpt-4o"))
        for _ in range(2):
            b.record_failure(Target("openai", "retired"), ErrorKind.MODEL_NOT_FOUND)
        take_snapshot(b, settings, interval_s=60)
        b.block_provider("anthropic", 600, "billing")
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    lines = {line.split()[1]: line for line in out.splitlines()[1:] if line[:4] in ("ok  ",)}
    for name in ("Redis", "eviction", "scripts", "pub/sub", "PostgreSQL", "migrations"):
        assert any(k.startswith(name.split()[0]) for k in lines), (name, out)
    assert "its 5 statements run as written" in out
    assert "2 of 2 targets recorded outcomes in the last 24 h" in out
    assert "2: anthropic (provider-wide) (billing, ends in 9m)" in out
    assert "openai/retired (model_not_found" in out
    assert "0 failed, 0 warnings" in out
    doc = json.loads(run(capsys, "doctor", "--format", "json")[1])
    assert doc["ok"] is True
    assert {c["status"] for c in doc["checks"]} == {"ok"}
    # the checks used a scratch prefix and left nothing behind
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}.doctor-*")) == []
    finally:
        client.close()
    with Breaker(settings) as b:
        assert {s.provider for s in b.states()} == {"openai"}


def test_doctor_answers_table_not_created_and_no_learning(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    code, out, _ = run(capsys, "doctor")
    assert code == 1
    assert "fail  migrations" in out
    assert "the checklist's 'table not created'" in out
    assert "skip  snapshot job" in out
    assert "warn  learning" in out and "no learning happening" in out
    assert "1 failed, 1 warnings" in out


def test_doctor_without_redis_and_with_a_stale_job(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    assert run(capsys, "snapshot")[0] == 0
    monkeypatch.setenv("RESILIENCE_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    code, out, _ = run(capsys, "doctor", "--snapshot-max-age", "1s")
    assert code == 1
    assert "fail  Redis reachable" in out and "hunter2" not in out
    assert "skip  scripts" in out and "skip  learning" in out
    assert "ok    migrations" in out
    time.sleep(1.1)
    code, out, _ = run(capsys, "doctor", "--snapshot-max-age", "1s")
    assert "fail  snapshot job" in out and "the job is down" in out


def test_doctor_warns_about_an_evicting_redis(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    private_redis: PrivateRedis,
) -> None:
    client = redis.Redis(port=private_redis.port)
    client.config_set("maxmemory-policy", "volatile-ttl")
    client.close()
    monkeypatch.setenv("RESILIENCE_REDIS_URL", private_redis.url)
    assert run(capsys, "db", "upgrade")[0] == 0
    code, out, _ = run(capsys, "doctor", "--snapshot-max-age", "1h")
    assert code == 1 and "fail  snapshot job" in out  # no snapshot yet
    assert run(capsys, "snapshot")[0] == 0
    code, out, _ = run(capsys, "doctor", "--snapshot-max-age", "1h")
    assert code == 0, out  # warnings do not fail the verification
    assert "warn  eviction policy" in out and "volatile-ttl" in out
    assert "set maxmemory-policy noeviction" in out
    assert "erases keys under memory pressure" in out


# --------------------------------------------------------------------------- provider-wide


def test_provider_wide_block_needs_no_model_and_leaves_no_row(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with breaker_for(redis_url, prefix) as b:
        b.record_success(Target("openai", "gpt-4o"))
    code, out, _ = run(
        capsys, "block", "openai", "--provider-wide", "--for", "30m", "--reason", "INC-7"
    )
    assert code == 0
    assert out.startswith("blocked provider openai for 30m: provider openai: open until")
    assert "(INC-7)" in out
    doc = json.loads(run(capsys, "status", "--format", "json")[1])
    assert [(r["scope"], r["model"], r["blacklisted"]) for r in doc] == [
        ("provider", None, True),
        ("target", "gpt-4o", True),
    ]
    _, table, _ = run(capsys, "status")
    assert "(provider-wide)" in table and "provider-wide: openai open" in table

    code, out, _ = run(capsys, "unblock", "openai", "gpt-4o")
    assert code == 0 and "note: provider openai is still blocked" in out

    code, out, _ = run(capsys, "unblock", "openai", "--provider-wide")
    assert code == 0 and out.startswith("unblocked: provider openai: closed")
    doc = json.loads(run(capsys, "status", "--format", "json")[1])
    assert [(r["model"], r["blacklisted"]) for r in doc] == [("gpt-4o", False)]

    code, out, _ = run(capsys, "block", "openai", "*", "--for", "1m")  # '*': the provider
    assert code == 0 and "blocked provider openai" in out
    doc = json.loads(run(capsys, "status", "--format", "json")[1])
    assert [r["model"] for r in doc] == [None, "gpt-4o"]  # no openai/* row
    assert run(capsys, "unblock", "openai", "*")[0] == 0

    code, out, err = run(capsys, "block", "openai", "--for", "1m")
    assert code == 2 and "MODEL is required unless --provider-wide" in one_line(err)
    code, _, err = run(capsys, "unblock", "opneai", "--provider-wide")
    assert code == 1 and "no such provider opneai" in err and "closest: openai" in err
    code, _, err = run(capsys, "block", "", "--provider-wide", "--for", "1m")
    assert code == 2 and "must not be empty" in err
