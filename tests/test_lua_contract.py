"""Lua contract: reply shapes, a TTL on every key written, NOSCRIPT reload, server time."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis

from resilience import Breaker, Classification, ErrorKind, Target
from resilience._keys import KeySpace
from resilience._wire import (
    ADMIN_FIELDS,
    ALLOW_FIELDS,
    CONFIG_FIELDS,
    MERGE_FIELDS,
    RECORD_FIELDS,
    REPLY_FIELDS,
    SCRIPT_NAMES,
    STANDALONE,
    SUCCESS_FIELDS,
    _lua,
    config_arg,
    load_script,
    names_argv,
    parse_view,
    record_argv,
    script_argv,
)
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")
ROOT = Path(__file__).resolve().parent.parent


def run(client: redis.Redis, name: str, settings: object, extra: list[str]) -> list[object]:
    keys = KeySpace(settings.key_prefix)  # type: ignore[attr-defined]
    argv = script_argv(config_arg(settings, keys), names_argv(T), extra)  # type: ignore[arg-type]
    script = client.register_script(load_script(name))
    return list(script(keys=keys.script_keys(T), args=argv))


def _own_header(name: str) -> str:
    """The leading comment block of a script's own file."""
    text = (ROOT / "resilience" / "lua" / name).read_text("utf-8")
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def _lua_tuple(name: str, var: str) -> tuple[str, ...]:
    text = (ROOT / "resilience" / "lua" / name).read_text("utf-8")
    m = re.search(rf"local {var} = \{{(.*?)\}}", text, flags=re.S)
    assert m is not None, f"{name} does not declare {var}"
    return tuple(re.findall(r"'([a-z_]+)'", m.group(1)))


def test_every_script_has_a_header() -> None:
    for name in (*SCRIPT_NAMES, "common.lua"):
        header = _own_header(name)
        assert header.startswith(f"-- {name}"), f"{name} lacks its header"
        assert "KEYS" in header and "ARGV" in header, name
        if name != "common.lua":
            assert "Returns" in header and "Atomic" in header, name
    for name in SCRIPT_NAMES:
        prelude = load_script(name).startswith("-- common.lua")
        assert prelude == (name not in STANDALONE), name


def test_lua_and_python_agree_on_every_layout() -> None:
    assert _lua_tuple("common.lua", "CONFIG_FIELDS") == CONFIG_FIELDS
    assert _lua_tuple("common.lua", "REPLY_FIELDS") == REPLY_FIELDS
    assert _lua_tuple("record.lua", "RECORD_FIELDS") == RECORD_FIELDS
    assert _lua_tuple("allow.lua", "ALLOW_FIELDS") == ALLOW_FIELDS
    assert _lua_tuple("admin.lua", "ADMIN_FIELDS") == ADMIN_FIELDS
    assert _lua_tuple("merge.lua", "MERGE_FIELDS") == MERGE_FIELDS
    assert _lua_tuple("success.lua", "SUCCESS_FIELDS") == SUCCESS_FIELDS
    # each script's header names its own arguments, in order
    for name, fields in (
        ("record.lua", RECORD_FIELDS),
        ("allow.lua", ALLOW_FIELDS),
        ("admin.lua", ADMIN_FIELDS),
        ("merge.lua", MERGE_FIELDS),
        ("success.lua", SUCCESS_FIELDS),
    ):
        header = _own_header(name)
        positions = [header.find(f"--   {f}") for f in fields]
        assert all(p > 0 for p in positions), (name, fields, positions)
        assert positions == sorted(positions), name


def test_no_script_compares_kind_names() -> None:
    """The policy lives in Python: Lua receives the kind's row and never tests a kind."""
    for name in (*SCRIPT_NAMES, "common.lua"):
        text = (ROOT / "resilience" / "lua" / name).read_text("utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        for kind in ErrorKind:
            assert f"'{kind.value}'" not in code, (name, kind)


def test_every_hash_field_is_documented() -> None:
    doc = (ROOT / "docs" / "state-machine.md").read_text("utf-8")
    written: set[str] = set()
    for name in (*SCRIPT_NAMES, "common.lua"):
        text = (ROOT / "resilience" / "lua" / name).read_text("utf-8")
        written |= set(re.findall(r"set\(\w+, \w+, '(\w+)'", text))
    assert written
    for field in sorted(written):
        assert f"`{field}`" in doc, f"hash field {field} missing from docs/state-machine.md"


def test_reply_shapes(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix)
    allow = run(rclient, "allow.lua", s, ["tok"])
    c = Classification(ErrorKind.SERVER_ERROR, message="m")
    own = record_argv(
        s, c=c, generation=None, token="", used=None, message="m", latency_s=None, jitter=0.0
    )
    record = run(rclient, "record.lua", s, own)
    admin = run(rclient, "admin.lua", s, ["block", "1000", "why"])
    for reply in (allow, record, admin):
        assert len(reply) == len(REPLY_FIELDS)
        v = parse_view(reply)
        assert v.now_ms > 1_600_000_000_000
    assert parse_view(allow).code == 1 and parse_view(allow).state == "closed"
    assert parse_view(record).error_count == 1
    assert parse_view(admin).state == "open" and parse_view(admin).transition == "closed>open"


def test_success_script_answers_the_time_or_hands_over(
    breaker: Breaker, rclient: redis.Redis, prefix: str
) -> None:
    """success.lua answers one integer: the server's time (ms) when it counted the success,
    0 when the target is not plainly healthy, and then it writes nothing."""
    key = KeySpace(prefix).target(T)
    slim = rclient.register_script(load_script("success.lua"))
    window = str(breaker._engine.success_config[0])

    def fields() -> dict[str, str]:
        return {str(k): str(v) for k, v in rclient.hgetall(key).items()}

    assert slim(keys=[key], args=[window]) == 0  # unknown target
    assert not rclient.exists(key)
    breaker.record_success(T)  # its first success: the full script
    before = fields()
    seconds, micros = rclient.time()
    now = slim(keys=[key], args=[window])
    assert isinstance(now, int) and abs(now - (seconds * 1000 + micros // 1000)) < 1000
    after = fields()
    assert int(after["success_count"]) == int(before["success_count"]) + 1
    assert int(after["wt"]) == int(before["wt"]) + 1
    assert int(after["last_success_time"]) == now
    breaker.record_failure(T, ErrorKind.SERVER_ERROR)  # errors consecutive: hand over
    before = fields()
    assert slim(keys=[key], args=[window]) == 0
    assert fields() == before
    rclient.hset(key, mapping={"consecutive_errors": "0", "wb": "0"})  # an old window bucket
    before = fields()
    assert slim(keys=[key], args=[window]) == 0
    assert fields() == before
    rclient.hset(key, mapping={"wb": before["wb"], "success_count": "many"})  # not a number
    assert slim(keys=[key], args=[window]) == 0


def test_arguments_and_configuration_read_as_split_reads_them(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """``args`` and the configuration block (one pattern match for the expected number of
    fields) read exactly what splitting on the separator reads: empty fields kept, missing
    ones empty, a field list of another length split as before."""
    s = make_settings(redis_url, prefix)
    keys = KeySpace(prefix)
    probe = _lua("common.lua") + (
        "\nlocal a = args({'x', 'y', 'z'})"
        "\nreturn {a.x, a.y, a.z, tostring(CFG.window_ms), tostring(CFG.jitter), CFG.channel}"
    )
    script = rclient.register_script(probe)
    config = config_arg(s, keys)
    raw = config.split("\t")
    as_lua = [f"{float(raw[CONFIG_FIELDS.index(n)]):.14g}" for n in ("window_ms", "jitter")]
    for own, expected in (
        ("1\x1f2\x1f3", ["1", "2", "3"]),
        ("\x1f\x1f", ["", "", ""]),
        ("a b\x1f\x1fc", ["a b", "", "c"]),
        ("1", ["1", "", ""]),
        ("1\x1f2", ["1", "2", ""]),
        ("1\x1f2\x1f3\x1f4", ["1", "2", "3"]),
        ("", ["", "", ""]),
    ):
        argv = script_argv(config, names_argv(T), own.split("\x1f"))
        got = script(keys=keys.script_keys(T), args=argv)
        assert got == [*expected, *as_lua, f"{prefix}:transitions"], own
    # a block missing its last fields: those read as nil (the reply stops at the first)
    short = "\t".join(raw[:-2])
    got = script(keys=keys.script_keys(T), args=script_argv(short, names_argv(T), ["1"]))
    assert got == ["1", "", "", *as_lua]


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
    assert breaker._engine.health.down_since is None


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
