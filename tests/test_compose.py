"""docker-compose.yml and the Dockerfile, checked statically (Docker does not run in CI):
valid YAML, the services and their wiring, and every ``resilience ...`` command they run
parses with the real CLI parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from resilience import Settings
from resilience.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"redis", "postgres", "migrate", "provider", "worker", "snapshot", "metrics"}
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def defaults(value: str) -> str:
    """``${VAR:-default}`` replaced by its default, as compose does with VAR unset."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


def resilience_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every ``resilience`` command in service commands and healthchecks."""
    found = []
    for name, svc in services(compose).items():
        command = svc.get("command")
        if isinstance(command, str):
            command = command.split()
        if command and command[0] == "resilience":
            found.append((f"{name}.command", [str(c) for c in command]))
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:2] == ["CMD", "resilience"]:
            found.append((f"{name}.healthcheck", [str(c) for c in test[1:]]))
    return found


def test_services(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    pg = services(compose)["postgres"]
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert "pgdata" in compose["volumes"]


def test_workers_run_three_replicas(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert worker["deploy"]["replicas"] == 3
    argv = worker["command"]
    assert argv[:3] == ["resilience", "demo", "worker"]
    url = argv[argv.index("--provider-url") + 1]
    assert url == "http://provider:8080"  # the provider service, on the port it binds
    assert services(compose)["provider"]["command"][-2:] == ["--port", "8080"]


def test_one_shot_migration_runs_first(compose: dict[str, Any]) -> None:
    s = services(compose)
    assert s["migrate"]["command"] == ["resilience", "db", "upgrade"]
    assert s["migrate"]["restart"] == "no"
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "snapshot"):
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_snapshot_job_every_60_seconds(compose: dict[str, Any]) -> None:
    assert services(compose)["snapshot"]["command"] == [
        "resilience",
        "snapshot",
        "--every",
        "60",
    ]


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        if name == "migrate":
            assert "healthcheck" not in svc
            continue
        test = svc["healthcheck"]["test"]
        assert isinstance(test, list), name
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert len(test) > 1, name


@pytest.mark.parametrize(
    "argv",
    [
        ["resilience", "db", "upgrade"],
        ["resilience", "demo", "--duration", "8"],
        ["resilience", "serve-metrics", "--once"],
    ],
)
def test_the_cli_has_the_commands_compose_relies_on(argv: list[str]) -> None:
    args = build_parser().parse_args(argv[1:])
    assert callable(args.func)


def test_every_resilience_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    commands = resilience_commands(compose)
    where = {w for w, _ in commands}
    assert {
        "migrate.command",
        "provider.command",
        "worker.command",
        "snapshot.command",
        "metrics.command",
        "snapshot.healthcheck",
    } <= where
    parser = build_parser()
    for w, argv in commands:
        args = parser.parse_args(argv[1:])  # raises on an unknown command or option
        assert callable(args.func), w


def test_environment_is_valid_settings(compose: dict[str, Any]) -> None:
    env = compose["x-resilience-env"]
    fields = set(Settings.model_fields)
    values: dict[str, Any] = {}
    for key, value in env.items():
        assert key.startswith("RESILIENCE_"), key
        field = key.removeprefix("RESILIENCE_").lower()
        assert field in fields, f"{key} is not a setting"
        values[field] = defaults(str(value))
    assert {"enabled", "shadow", "redis_url", "database_url", "key_prefix"} <= set(values)
    settings = Settings(**values)  # raises ValueError on a bad value
    assert settings.enabled is True
    assert settings.shadow is False
    assert settings.redis_url == "redis://redis:6379/0"
    assert "@postgres:5432/" in settings.database_url
    for name in SERVICES - {"redis", "postgres"}:
        assert services(compose)[name]["environment"] == env, name


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = [
        (name, port) for name, svc in services(compose).items() for port in svc.get("ports", [])
    ]
    assert published  # the metrics exporter is reachable from the host
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_dockerfile_builds_the_cli_with_metrics() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+", text, re.M)
    assert "COPY pyproject.toml" in text
    assert "COPY resilience ./resilience" in text
    assert 'pip install ".[metrics]"' in text
    assert re.search(r"^USER (?!root)", text, re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^metrics = \[", pyproject, re.M)  # the extra the image installs
    assert re.search(r'^resilience = "resilience\.cli:main"', pyproject, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored
    assert ".git" in ignored


def test_app_services_build_the_image(compose: dict[str, Any]) -> None:
    for name in SERVICES - {"redis", "postgres"}:
        svc = services(compose)[name]
        assert svc["build"] == ".", name
        assert svc.get("init") is True, name  # PID 1 forwards SIGTERM: clean shutdowns


# --------------------------------------------------------------------------- the runbook

RUNBOOK = ROOT / "docs" / "runbook.md"


def runbook_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", RUNBOOK.read_text(), re.S)


def runbook_commands() -> list[list[str]]:
    """Every ``resilience ...`` command in the runbook's bash blocks and inline code."""
    import shlex

    lines = [line for block in runbook_blocks("bash") for line in block.splitlines()]
    lines += re.findall(r"`(resilience [^`]+)`", RUNBOOK.read_text())
    found = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line.startswith("resilience "):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv = []
        for token in lexer:
            if token in (">", "|", "&&", ";", "$("):
                break
            argv.append(token)
        found.append(argv)
    return found


def test_runbook_commands_exist_in_the_cli() -> None:
    commands = runbook_commands()
    assert len(commands) > 15
    names = {argv[1] for argv in commands}
    assert {"db", "status", "snapshot", "report", "prune", "block", "unblock", "reset"} <= names
    assert ["resilience", "prune", "--older-than", "90d"] in commands
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert callable(args.func), argv


def test_runbook_sql_runs_on_a_migrated_schema(database_url: str, pg_schema: str) -> None:
    import psycopg
    from psycopg import sql

    from resilience import _db

    _db.upgrade(Settings(database_url=database_url, database_schema=pg_schema))
    statements = [
        s.strip()
        for block in runbook_blocks("sql")
        for s in block.split(";\n")
        if s.strip() and not all(line.startswith("--") for line in s.strip().splitlines())
    ]
    assert any("WHERE error_count > 2" in s for s in statements)  # the weekly query
    assert len(statements) >= 8
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        for statement in statements:
            cur = conn.execute(statement.rstrip(";").encode())
            if cur.description is not None:
                cur.fetchall()


def test_runbook_shows_the_checklist_sql_as_written() -> None:
    from resilience._db import CHECKLIST_SQL

    blocks = [b.strip() for b in runbook_blocks("sql")]
    for statement in CHECKLIST_SQL:
        assert statement in blocks, statement


README = ROOT / "README.md"


def test_readme_cli_commands_exist() -> None:
    import shlex

    text = README.read_text()
    section = text.split("## History in PostgreSQL, reports and the CLI", 1)[1].split("\n## ")[0]
    lines = [
        line.split(" #", 1)[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
    ]
    commands = [shlex.split(line) for line in lines if line.startswith("resilience ")]
    commands += [shlex.split(c) for c in re.findall(r"`(resilience [^`]+)`", section)]
    assert len(commands) >= 15
    names = {argv[1] for argv in commands}
    assert {"db", "status", "snapshot", "report", "prune", "block", "unblock", "doctor"} <= names
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert callable(args.func), argv
