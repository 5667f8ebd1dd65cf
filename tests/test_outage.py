"""The paths that only run when Redis misbehaves, against real (private) Redis servers:
a Lua error is a bug and not an outage, the fallback starts from what the worker knew,
write refusals do not flap, and an evicting Redis is warned about."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from resilience import Breaker, ErrorKind, Settings, Target
from resilience._wire import load_script
from tests.conftest import PrivateRedis, make_settings

T = Target("openai", "gpt-4o")
ROOT = Path(__file__).resolve().parent.parent


class Errors:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_store_error(self, e: Any) -> None:
        self.events.append(e)


def quick(url: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_socket_timeout": 0.2,
        "redis_connect_timeout": 0.2,
        "store_retry_seconds": 0.1,
        "local_view": False,
    }
    values.update(kw)
    return make_settings(url, "outage", **values)


@pytest.mark.lua_error_expected
def test_a_lua_error_is_reported_as_a_bug_not_an_outage(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors = Errors()
    with Breaker(make_settings(redis_url, prefix), hooks=[errors]) as b:
        b.record_success(T)
        io = b._sync_io()
        good = io._scripts["record.lua"]
        broken = load_script("record.lua").replace(
            "local A = args(RECORD_FIELDS)", "local A = args(RECORD_FIELDS) + 1"
        )
        io._scripts["record.lua"] = io.client.register_script(broken)
        with caplog.at_level(logging.WARNING, logger="resilience"):
            b.record_failure(T, ErrorKind.SERVER_ERROR)
        io._scripts["record.lua"] = good
        # the call was not affected, Redis is not treated as down, and the next outcome
        # goes to Redis at once
        assert b._engine.health.down_since is None
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        assert b.state(T).error_count == 1
        assert b.state(T).success_count == 1
    [event] = errors.events
    assert (event.operation, event.kind) == ("record", "script_error")
    assert event.error.startswith("record.lua:")
    line = int(event.error.split(":")[1])
    source = (ROOT / "resilience" / "lua" / "record.lua").read_text().splitlines()
    assert "local A = args(RECORD_FIELDS)" in source[line - 1]
    errors_logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors_logged) == 1
    text = errors_logged[0].getMessage()
    assert "Lua error in record.lua:" in text and "bug" in text
    assert "[REDACTED]" not in text
    assert "unavailable" not in caplog.text


def test_the_fallback_starts_from_what_the_worker_knew(private_redis: PrivateRedis) -> None:
    s = quick(private_redis.url, failure_threshold=1, open_seconds=60)
    other = Target("openai", "known-healthy")
    with Breaker(s) as b:
        b.record_failure(T, ErrorKind.SERVER_ERROR)  # open for 60 s in Redis
        assert b.allow(other)
        with Breaker(s) as elsewhere:  # another worker opens the provider entirely
            elsewhere.block_provider("anthropic", 60, "incident")
        assert not b.allow(Target("anthropic", "claude"))
        private_redis.stop()
        # every call now runs on the fallback: the open target stays refused (not
        # failure_threshold calls per process), a healthy one goes
        assert [b.allow(T) for _ in range(10)] == [False] * 10
        assert not b.allow(Target("anthropic", "claude"))
        assert b.allow(other)
        st = b._engine.memory_state(T)
        assert st.state == "open" and st.open_until is not None


def test_write_refusals_do_not_flap(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    errors = Errors()
    s = quick(private_redis.url, failure_threshold=1, open_seconds=60)
    admin = redis.Redis(port=private_redis.port)
    blocked = Target("openai", "blocked")
    try:
        with Breaker(s, hooks=[errors]) as b, caplog.at_level(logging.WARNING, "resilience"):
            b.record_failure(blocked, ErrorKind.SERVER_ERROR)  # open for 60 s
            b.record_success(T)
            admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # read only, like a replica
            admitted_to_open = 0
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                admitted_to_open += b.allow(blocked)
                assert b.allow(T)
                b.record_success(T)
                time.sleep(0.01)
            assert admitted_to_open == 0
            assert {e.kind for e in errors.events} == {"write_refused"}
            assert "reachable again" not in caplog.text
            refusals = [r for r in caplog.records if "refuses writes" in r.getMessage()]
            assert len(refusals) == 1  # logged once, then again only every minute
            admin.execute_command("REPLICAOF", "NO", "ONE")
            time.sleep(0.15)
            b.record_success(T)
            assert caplog.text.count("reachable again") == 1
            assert b.state(T).success_count >= 2
    finally:
        admin.close()


@pytest.mark.parametrize(("policy", "warned"), [("noeviction", False), ("allkeys-lru", True)])
def test_an_evicting_redis_is_warned_about_once(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture, policy: str, warned: bool
) -> None:
    admin = redis.Redis(port=private_redis.port)
    try:
        admin.config_set("maxmemory-policy", policy)
    finally:
        admin.close()
    with Breaker(quick(private_redis.url)) as b, caplog.at_level(logging.WARNING, "resilience"):
        for _ in range(3):
            b.allow(T)
            b.record_success(T)
    lines = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "allkeys-lru" in lines[0].getMessage() and "noeviction" in lines[0].getMessage()


def test_sums_dropped_past_the_bound_are_said_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis unreachable: outcomes are summed for later, at most fallback_max_entries
    targets; what the bound drops is counted and logged (not once per call)."""
    s = Settings(
        redis_url="redis://127.0.0.1:1/0",
        key_prefix="dropped",
        fallback_max_entries=10,
        redis_connect_timeout=0.05,
        store_retry_seconds=60,
    )
    caplog.set_level(logging.WARNING, logger="resilience")
    with Breaker(s) as b:
        for i in range(25):
            b.record_failure(Target("openai", f"m{i}"), ErrorKind.SERVER_ERROR)
            b.record_failure(Target("openai", f"m{i}"), ErrorKind.SERVER_ERROR)
        lines = [r.getMessage() for r in caplog.records if "Dropped" in r.getMessage()]
        assert lines == ["[CompatibilityHint] Dropped 2 outcomes held for Redis so far (more "
                         "than fallback_max_entries=10 targets waiting); they will not reach "
                         "Redis"]  # fmt: skip
        assert b._engine.pending.dropped == 2 * 15  # every target past the first ten
