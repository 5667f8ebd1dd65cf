"""Lua contract: reply shapes, a TTL on every key written, NOSCRIPT reload, server time."""

from __future__ import annotations

import time

import pytest
import redis

from resilience import Breaker, Classification, ErrorKind, Target
from resilience._core import SCRIPT_NAMES, config_argv, load_script, names_argv, parse_view
from resilience._keys import KeySpace
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")


def run(client: redis.Redis, name: str, settings: object, extra: list[str]) -> list[object]:
    keys = KeySpace(settings.key_prefix)  # type: ignore[attr-defined]
    argv = [*config_argv(settings, keys), *names_argv(T), *extra]  # type: ignore[arg-type]
    script = client.register_script(load_script(name))
    return list(script(keys=keys.script_keys(T), args=argv))


def test_every_script_has_a_header() -> None:
    for name in SCRIPT_NAMES:
        body = load_script(name).split("\n\n", 1)[0]
        assert "KEYS" in load_script(name) and "ARGV" in load_script(name)
        assert body.startswith("-- common.lua")
    for name in SCRIPT_NAMES:
        own = load_script(name).split("-- " + name, 1)
        assert len(own) == 2, f"{name} lacks its header"
        header = own[1][:1500]
        assert "KEYS" in header and "ARGV" in header and "Returns" in header
        assert "Atomic" in header


def test_reply_shapes(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix)
    allow = run(rclient, "allow.lua", s, ["tok"])
    record = run(rclient, "record.lua", s, ["server_error", "", "", "", "", "", "m", "", "t", "0"])
    admin = run(rclient, "admin.lua", s, ["block", "1000", "why"])
    for reply in (allow, record, admin):
        assert len(reply) == 18
        v = parse_view(reply)
        assert v.now_ms > 1_600_000_000_000
    assert parse_view(allow).code == 1 and parse_view(allow).state == "closed"
    assert parse_view(record).error_count == 1
    assert parse_view(admin).state == "open" and parse_view(admin).transition == "closed>open"


def test_unknown_admin_operation_is_an_error(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    s = make_settings(redis_url, prefix)
    with pytest.raises(redis.ResponseError, match="unknown admin operation"):
        run(rclient, "admin.lua", s, ["explode", "0", ""])


def test_every_key_written_has_a_ttl(breaker: Breaker, rclient: redis.Redis, prefix: str) -> None:
    other = Target("openai", "other")
    breaker.record_success(T)
    for _ in range(5):
        breaker.record_failure(T, ErrorKind.SERVER_ERROR)
    breaker.record_failure(other, Classification(ErrorKind.AUTH, scope="provider"))
    breaker.record_failure(
        Target("groq", "x"), Classification(ErrorKind.RATE_LIMITED, retry_after_s=3)
    )
    breaker.block(Target("gemini", "y"), 10, "test")
    breaker.block(Target("mistral", "z"), 10, "test", provider_wide=True)
    breaker.allow(T)
    keys = list(rclient.scan_iter(match=f"{prefix}:*"))
    kinds = {rclient.type(k) for k in keys}
    assert {"hash", "zset", "stream"} <= kinds
    for key in keys:
        ttl = rclient.pttl(key)
        assert ttl > 0, f"{key} has no TTL ({ttl})"


def test_ttl_outlives_a_long_break(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix, state_ttl_seconds=60)
    with Breaker(s) as b:
        b.block(T, 3600, "long")
    ttl = rclient.pttl(KeySpace(prefix).target(T))
    assert ttl > 3600 * 1000


def test_scripts_reload_after_script_flush(breaker: Breaker, rclient: redis.Redis) -> None:
    breaker.record_failure(T, ErrorKind.TIMEOUT)
    rclient.script_flush()
    breaker.record_failure(T, ErrorKind.TIMEOUT)  # NOSCRIPT -> EVAL, transparently
    assert breaker.state(T).error_count == 2
    assert breaker._core.store_usable()


def test_time_comes_from_the_redis_server(breaker: Breaker, rclient: redis.Redis) -> None:
    breaker.record_failure(T, ErrorKind.TIMEOUT)
    seconds, micros = rclient.time()
    server_ms = seconds * 1000 + micros // 1000
    st = breaker.state(T)
    assert st.last_error_time is not None
    assert abs(st.last_error_time.timestamp() * 1000 - server_ms) < 2000
    assert st.since is not None


def test_idle_index_members_expire(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix, state_ttl_seconds=60)
    with Breaker(s) as b:
        b.record_success(T)
        rclient.delete(KeySpace(prefix).target(T))  # as if its TTL ran out
        assert b.states() == []
        time.sleep(0.01)
