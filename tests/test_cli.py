"""The operator CLI, in-process through ``main([...])`` and as real ``python -m resilience``
processes, against the real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from resilience import Breaker, ErrorKind, Target
from resilience.cli import build_parser, main, parse_duration
from tests.conftest import make_settings

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


def one_line_error(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("15m") == 900
    assert parse_duration("1h") == 3600
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("60") == 60
    assert parse_duration("0.5") == 0.5
    for bad in ("", "1x", "h", "-5m", "0", "1h 30m", "5mm", "inf", "nan"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


def _all_commands() -> list[list[str]]:
    parser = build_parser()
    out: list[list[str]] = [[]]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            out.append([name])
            for sub_action in sub._actions:
                if isinstance(sub_action.choices, dict):
                    out.extend([name, child] for child in sub_action.choices)
    return out


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _all_commands()
    names = {c[0] for c in commands if c}
    assert {"status", "block", "unblock", "reset", "snapshot", "report", "prune", "db"} <= names
    assert ["db", "upgrade"] in commands and ["db", "status"] in commands
    for cmd in commands:
        code, out, err = run(capsys, *cmd, "--help")
        assert code == 0, cmd
        assert out.startswith(f"usage: resilience {' '.join(cmd)}".rstrip()), (cmd, out)
        assert err == ""


def test_help_needs_no_valid_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "nope")
    code, out, _ = run(capsys, "report", "--help")
    assert code == 0 and "--since" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["block", "openai"], "required"),
        (["block", "openai", "gpt-4o"], "--for"),
        (["block", "openai", "gpt-4o", "--for", "1x"], "invalid duration '1x'"),
        (["prune"], "--older-than"),
        (["prune", "--older-than=-3d"], "invalid duration"),
        (["report", "--format", "xml"], "invalid choice"),
        (["snapshot", "--every", "0"], "invalid duration"),
        (["db"], "required"),
        (["db", "downgrade", "--steps", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], argv: list[str], needle: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    line = one_line_error(err)
    assert needle in line
    assert "--help" in line


def test_invalid_settings_are_one_line(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "0")
    code, _, err = run(capsys, "status")
    assert code == 2
    assert "RESILIENCE_FAILURE_THRESHOLD" in one_line_error(err)


def test_unreachable_redis(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    for argv in (["status"], ["block", "p", "m", "--for", "1h"], ["snapshot"]):
        code, _, err = run(capsys, *argv)
        assert code == 3, argv
        line = one_line_error(err)
        assert "Redis" in line and "hunter2" not in line


def test_unreachable_postgres(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_DATABASE_URL", "postgresql://postgres:hunter2@127.0.0.1:1/x")
    for argv in (
        ["report"],
        ["db", "upgrade"],
        ["db", "status"],
        ["prune", "--older-than", "90d"],
        ["snapshot"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 4, argv
        line = one_line_error(err)
        assert "PostgreSQL unavailable" in line and "hunter2" not in line


def test_missing_migration(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    for argv in (["report"], ["snapshot"], ["prune", "--older-than", "90d"]):
        code, _, err = run(capsys, *argv)
        assert code == 5, argv
        assert "resilience db upgrade" in one_line_error(err)


def test_status_needs_no_postgres(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "no targets" in out


def test_block_status_unblock_reset(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], redis_url: str, prefix: str
) -> None:
    with Breaker(make_settings(redis_url, prefix, local_view=False)) as b:
        for _ in range(3):
            b.record_failure(Target("openai", "gpt-4o"), ErrorKind.SERVER_ERROR)
        b.record_success(Target("groq", "llama"))

    code, out, _ = run(
        capsys, "block", "openai", "gpt-4o", "--for", "1h", "--reason", "vendor incident"
    )
    assert code == 0
    assert "blocked openai/gpt-4o for 1h" in out and "vendor incident" in out

    code, out, _ = run(capsys, "status", "--format", "json")
    states = {(s["provider"], s["model"]): s for s in json.loads(out)}
    blocked = states[("openai", "gpt-4o")]
    assert (blocked["state"], blocked["blacklisted"], blocked["manual"]) == ("open", True, True)
    assert blocked["reason"] == "vendor incident"
    assert blocked["error_count"] == 3
    assert states[("groq", "llama")]["state"] == "closed"

    code, out, _ = run(capsys, "status", "--provider", "groq")
    assert code == 0
    assert "llama" in out and "gpt-4o" not in out
    code, out, _ = run(capsys, "status")
    header = out.splitlines()[0]
    assert header.split()[:3] == ["provider", "model", "state"]
    assert "2 targets, 1 blocked" in out
    code, out, _ = run(capsys, "status", "--blocked", "--format", "json")
    assert [s["model"] for s in json.loads(out)] == ["gpt-4o"]

    code, out, _ = run(capsys, "unblock", "openai", "gpt-4o")
    assert code == 0 and "openai/gpt-4o: closed" in out
    code, out, _ = run(capsys, "reset", "openai", "gpt-4o")
    assert code == 0
    _, out, _ = run(capsys, "status", "--format", "json", "--provider", "openai")
    assert json.loads(out)[0]["error_count"] == 0

    code, out, _ = run(capsys, "block", "groq", "any", "--for", "30m", "--provider-wide")
    assert code == 0 and "blocked provider groq for 30m" in out
    _, out, _ = run(capsys, "status", "--format", "json", "--provider", "groq")
    records = {r["scope"]: r for r in json.loads(out)}
    assert records["provider"]["blacklisted"] is True
    assert records["target"]["provider_blocked_until"] is not None
    assert [r["model"] for r in json.loads(out)] == [None, "llama"]  # no groq/any row
    code, _, _ = run(capsys, "unblock", "groq", "any", "--provider-wide")
    _, out, _ = run(capsys, "status", "--format", "json", "--provider", "groq")
    assert [(r["model"], r["blacklisted"]) for r in json.loads(out)] == [("llama", False)]


def test_db_snapshot_report_prune(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    redis_url: str,
    prefix: str,
    database_url: str,
    pg_schema: str,
    tmp_path: Path,
) -> None:
    code, out, _ = run(capsys, "db", "status")
    assert code == 0 and out.count("pending") == 7
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "applied 0001_initial, 0002_report_views, 0003_event_numbers" in out
    code, out, _ = run(capsys, "db", "status", "--format", "json")
    assert [r["state"] for r in json.loads(out)] == ["applied"] * 7

    with Breaker(make_settings(redis_url, prefix, local_view=False)) as b:
        for _ in range(5):
            b.record_failure(Target("openai", "gpt-4o"), ErrorKind.SERVER_ERROR)
        for _ in range(3):
            b.record_success(Target("openai", "gpt-4o-mini"))

    code, out, _ = run(capsys, "snapshot")
    assert code == 0
    assert "2 targets" in out and "1 transitions" in out

    code, out, _ = run(capsys, "report", "--since", "1h", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    top = doc["problematic_models"][0]
    assert (top["model"], top["errors"], top["trips"], top["state"]) == ("gpt-4o", 5, 1, "open")
    assert doc["provider_success_rates"][0]["success_rate"] == pytest.approx(3 / 8)

    code, out, _ = run(capsys, "report", "--format", "csv", "--section", "problematic_models")
    assert code == 0 and out.startswith("provider,model,errors")
    code, out, _ = run(capsys, "report")
    assert code == 0 and "Problematic models (1)" in out

    png = tmp_path / "r.png"
    code, out, err = run(capsys, "report", "--plot", str(png))
    assert code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    code, out, _ = run(capsys, "prune", "--older-than", "90d")
    assert code == 0 and "0 history" in out
    with psycopg.connect(database_url) as c:
        rows = c.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(pg_schema, "model_compatibility_hints")
            )
        ).fetchone()
    assert rows == (2,)

    code, out, _ = run(capsys, "db", "downgrade")
    assert code == 0 and "reverted 0007_compat_hints" in out
    code, out, _ = run(capsys, "db", "downgrade")
    assert code == 0 and "reverted 0006_change_only_history" in out
    code, out, _ = run(capsys, "db", "downgrade", "--steps", "2")
    assert code == 0 and "reverted 0005_key_prefix, 0004_checklist_names" in out
    code, out, _ = run(capsys, "db", "downgrade")
    assert code == 0 and "reverted 0003_event_numbers" in out
    code, out, _ = run(capsys, "db", "downgrade")
    assert code == 0 and "reverted 0002_report_views" in out
    code, _, err = run(capsys, "db", "downgrade")
    assert code == 1 and "--drop-data" in one_line_error(err)
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "applied 0002_report_views, 0003_event_numbers" in out
    with psycopg.connect(database_url) as c:
        rows = c.execute(
            sql.SQL("SELECT key_prefix, count(*) FROM {} GROUP BY 1").format(
                sql.Identifier(pg_schema, "model_compatibility_hints")
            )
        ).fetchall()
    assert rows == [(prefix, 2)]  # through down and up again: the rows stay this app's


def test_plot_without_matplotlib(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert run(capsys, "db", "upgrade")[0] == 0
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(capsys, "report", "--plot", str(tmp_path / "x.png"))
    assert code == 1
    assert "pip install 'llm-resilience[plot]'" in one_line_error(err)
    assert out == ""


def _subprocess_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


@pytest.mark.slow
def test_python_dash_m_resilience(env: dict[str, str], redis_url: str, prefix: str) -> None:
    full = _subprocess_env(env)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "resilience", *argv],
            env=full,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("db", "upgrade").returncode == 0
    with Breaker(make_settings(redis_url, prefix, local_view=False)) as b:
        b.record_success(Target("openai", "gpt-4o"))
    done = cli("snapshot")
    assert done.returncode == 0, done.stderr
    assert "1 targets" in done.stdout
    status = cli("status", "--format", "json")
    assert json.loads(status.stdout)[0]["success_count"] == 1
    bad = cli("block", "openai")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    down = subprocess.run(
        [sys.executable, "-m", "resilience", "status"],
        env={**full, "RESILIENCE_REDIS_URL": "redis://127.0.0.1:1/0"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 3
    assert len(down.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_snapshot_every_stops_cleanly_on_sigterm(
    env: dict[str, str], database_url: str, pg_schema: str
) -> None:
    assert main(["db", "upgrade"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience", "snapshot", "--every", "0.3"],
        env=_subprocess_env(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("snapshot ") for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "snapshot loop stopped after" in out
    assert "Traceback" not in err
    with psycopg.connect(database_url) as c:
        row = c.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(pg_schema, "resilience_snapshots")
            )
        ).fetchone()
    assert row is not None and row[0] >= 2


@pytest.mark.slow
def test_scripts_snapshot_wrapper(env: dict[str, str]) -> None:
    assert main(["db", "upgrade"]) == 0
    script = ROOT / "scripts" / "snapshot"
    assert os.access(script, os.X_OK)
    done = subprocess.run(
        [str(script)],
        env=_subprocess_env(env),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "snapshot" in done.stdout and "0 targets" in done.stdout
