"""The ACL line of docs/managed-redis.md, tested against a real ACL user on a private
redis-server: every library path (scripts, pub/sub, reads, operator changes, the snapshot
lock, ``resilience doctor``, the metrics exporter) runs as that user, and Redis denies
nothing (``ACL LOG`` stays empty).

The line is read from the guide itself, so the guide cannot drift from what is tested.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resilience import AsyncBreaker, Breaker, ErrorKind, Settings, Target
from resilience._types import Denial
from tests.conftest import subscribed
from tests.ha import Node

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "managed-redis.md"
ADMIN_PASSWORD = "adm1n-Pa55"
APP_PASSWORD = "app-Pa55word"
PREFIX = "acl-app"
T = Target("openai", "gpt-4o")
OPTIONAL = ("+info", "+config|get")
"""Commands of the line only ``resilience doctor`` and the eviction warning use."""


def acl_line(prefix: str, password: str) -> str:
    """The guide's ``ACL SETUSER`` line, for ``prefix`` and ``password``."""
    found = re.search(r"^ACL SETUSER resilience .*$", GUIDE.read_text(), flags=re.M)
    assert found, "docs/managed-redis.md has no ACL SETUSER line"
    line = found.group(0)
    return (
        line.replace("resilience:", f"{prefix}:")
        .replace("resilience.", f"{prefix}.")
        .replace("<password>", password)
    )


class Errors:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_store_error(self, e: Any) -> None:
        self.errors.append(f"{e.operation}: {e.error}")


@pytest.fixture(params=["minimal", "with doctor's commands"])
def acl_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, str]]:
    """A redis-server whose default user is an administrator, and the guide's user."""
    node = Node(
        tmp_path,
        "--requirepass",
        ADMIN_PASSWORD,
        "--maxmemory-policy",
        "noeviction",
        auth=(None, ADMIN_PASSWORD),
    )
    line = acl_line(PREFIX, APP_PASSWORD)
    if request.param == "minimal":
        for command in OPTIONAL:
            assert f" {command}" in line
            line = line.replace(f" {command}", "")
    admin = node.client()
    admin.execute_command(*line.split())
    admin.execute_command("ACL", "LOG", "RESET")
    yield node, request.param
    node.kill()


def settings_for(node: Node, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": f"redis://resilience:{APP_PASSWORD}@127.0.0.1:{node.port}/2",
        "key_prefix": PREFIX,
        "redis_socket_timeout": 2.0,
        "redis_connect_timeout": 2.0,
        "local_view_max_age_seconds": 60,
    }
    values.update(kw)
    return Settings(**values)


def denied(node: Node) -> list[str]:
    """``ACL LOG`` as lines: ``<reason> <object> (<context>)``."""
    entries = node.client().execute_command("ACL", "LOG")
    out = []
    for entry in entries:
        e = dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else entry
        out.append(f"{e.get('reason')} {e.get('object')} ({e.get('context')})")
    return out


def until(cond: Any, timeout_s: float = 5.0) -> bool:
    """Whether ``cond()`` became true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def exercise(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs every library path as ``settings``' user; returns what the checks need."""
    from resilience.cli import main

    errors = Errors()
    seen: dict[str, Any] = {}
    healthy = Target("openai", "gpt-4o-mini")
    with Breaker(settings, hooks=[errors]) as a, Breaker(settings, hooks=[errors]) as b:

        @a.guard(healthy.provider, healthy.model)
        def call() -> int:
            return 1

        for _ in range(5):
            call()  # allow.lua, success.lua, then summed successes
        assert b.allow(T)
        seen["subscribed"] = until(lambda: subscribed(b))
        for _ in range(settings.failure_threshold):
            a.record_failure(T, ErrorKind.SERVER_ERROR)  # record.lua: the trip, XADD, PUBLISH
        a._sync_io().flush()  # merge.lua
        # b's view learns of the trip by pub/sub
        seen["announced"] = until(lambda: isinstance(b._engine.view.decide(T), Denial))
        a.block_provider("anthropic", 60, "billing")
        a.unblock_provider("anthropic")
        a.block(healthy, 60, "test")
        a.unblock(healthy)
        a.reset(healthy)
        seen["states"] = sorted(s.model for s in a.states())
        seen["state"] = a.state(T).error_count
        seen["providers"] = a.providers()
        seen["provider_states"] = [p.provider for p in a.provider_states()]
        seen["events"] = len(a.events())

    async def async_paths() -> None:
        async with AsyncBreaker(settings, hooks=[errors]) as c:
            await c.record_failure(Target("groq", "llama"), ErrorKind.TIMEOUT)
            seen["async_state"] = (await c.state(Target("groq", "llama"))).error_count
            await c.allow(Target("groq", "llama"))
            seen["async_states"] = len(await c.states())

    asyncio.run(async_paths())
    seen["store_errors"] = errors.errors

    from resilience._snapshot import LeaderLock

    with LeaderLock(settings) as lock:  # the snapshot job's leader lock (its own scripts)
        seen["lock"] = lock.acquire() and lock.acquire()
        lock.release()

    for key, value in {
        "RESILIENCE_REDIS_URL": settings.redis_url,
        "RESILIENCE_KEY_PREFIX": settings.key_prefix,
    }.items():
        monkeypatch.setenv(key, value)
    seen["cli"] = {
        "status": main(["status"]),
        "block": main(["block", "openai", "gpt-4o", "--for", "1m", "--reason", "acl"]),
        "unblock": main(["unblock", "openai", "gpt-4o"]),
        "reset": main(["reset", "openai", "gpt-4o"]),
        "serve-metrics": main(["serve-metrics", "--once"]),
    }
    from resilience.cli.doctor import run_checks

    seen["doctor"] = {c.name: (c.status, c.detail) for c in run_checks(settings)}
    return seen


def test_every_library_path_runs_as_the_guides_acl_user(
    acl_redis: tuple[Node, str], monkeypatch: pytest.MonkeyPatch, database_url: str, pg_schema: str
) -> None:
    node, variant = acl_redis
    settings = settings_for(node, database_url=database_url, database_schema=pg_schema)
    seen = exercise(settings, monkeypatch)
    refused = denied(node)
    if variant == "minimal":  # only the optional commands, which the library does without
        assert {r.split()[1] for r in refused} <= {"info", "config|get"}, refused
    else:
        assert refused == []  # Redis refused nothing the library sent
    assert seen["store_errors"] == []
    assert seen["announced"] and seen["subscribed"]
    assert seen["states"] == ["gpt-4o", "gpt-4o-mini"]
    assert seen["state"] == settings.failure_threshold
    assert seen["providers"] == ["anthropic", "openai"]
    assert seen["provider_states"] == ["anthropic"]
    assert seen["events"] >= 5
    assert seen["async_state"] == 1 and seen["async_states"] == 3
    assert seen["lock"] is True
    assert all(code == 0 for code in seen["cli"].values()), seen["cli"]
    doctor = seen["doctor"]
    for name in ("Redis reachable", "scripts", "pub/sub", "learning"):
        assert doctor[name][0] == "ok", (name, doctor[name])
    if variant == "minimal":  # INFO and CONFIG GET refused: the checks say so and warn
        assert doctor["Redis version"][0] == "warn"
        assert "INFO refused" in doctor["Redis version"][1]
        assert doctor["eviction policy"][0] == "warn"
        assert "CONFIG GET refused" in doctor["eviction policy"][1]
    else:
        assert doctor["Redis version"][0] == "ok"
        assert doctor["eviction policy"] == ("ok", "noeviction")


def test_the_acl_user_reaches_nothing_else(acl_redis: tuple[Node, str]) -> None:
    node, _ = acl_redis
    user = redis.Redis(port=node.port, username="resilience", password=APP_PASSWORD)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.get("other-app:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.publish("other-app:transitions", "x")
        assert user.get(f"{PREFIX}:nothing") is None
    finally:
        user.close()
