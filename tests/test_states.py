"""``states()`` (pipelined bulk reads, one parse per row) against the per-target ``state()``
(two HGETALLs, the reference parse) on the real Redis: equal values for every kind of target,
sync and async; the TargetState built for a listing is a TargetState in every way."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import resilience._bulk as bulk
import resilience._flow as flow
from resilience import (
    AsyncBreaker,
    Breaker,
    Classification,
    CompatHint,
    ErrorKind,
    Settings,
    Target,
    TargetState,
)
from resilience._keys import KeySpace
from resilience._states import fast_target_state
from resilience._wire import READ_FIELDS
from tests.conftest import make_settings
from tests.test_batching import warm

K = ErrorKind
OK = Target("openai", "healthy")
HINT = Target("openai", "hinted/model:x")  # a name to encode
COMPAT = Target("openai", "compat")
OPEN = Target("openai", "tripped")
HALF_OPEN = Target("openai", "probing")
BREAK_OVER = Target("openai", "break over")
GONE = Target("openai", "retired")
MANUAL = Target("openai", "manual")
HELD = Target("openai", "held successes")
BLOCKED = Target("anthropic", "claude")  # its provider is blocked
BLOCKED_2 = Target("anthropic", "tripped")
ALL = (OK, HINT, COMPAT, OPEN, HALF_OPEN, BREAK_OVER, GONE, MANUAL, HELD, BLOCKED, BLOCKED_2)


def settings(redis_url: str, prefix: str) -> Settings:
    return make_settings(
        redis_url,
        prefix,
        failure_threshold=3,
        model_not_found_threshold=1,
        open_seconds=600.0,
        retry_after_floor_seconds=0.05,
        success_flush_seconds=600.0,  # HELD's successes stay summed in this process
    )


def fill(b: Breaker) -> None:
    """Every kind of target the listing must show as ``state()`` does."""
    b.record_success(OK, 0.2)
    b.record_failure(HINT, Classification(K.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses"))
    b.record_success(HINT)
    renamed = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")
    b.record_failure(COMPAT, Classification(K.BAD_REQUEST, compat=(renamed,), message="no"))
    for t in (OPEN, BLOCKED_2):
        for _ in range(3):
            b.record_failure(t, Classification(K.SERVER_ERROR, message="boom: 500"))
    b.record_failure(GONE, K.MODEL_NOT_FOUND)
    b.block(MANUAL, 600, "maintenance")
    for t in (HALF_OPEN, BREAK_OVER):  # short breaks (Retry-After), then ended
        b.record_failure(t, Classification(K.RATE_LIMITED, retry_after_s=0.05))
    b.record_success(BLOCKED)
    b.record_failure(BLOCKED, Classification(K.AUTH, scope="provider", message="bad key"))
    time.sleep(0.2)
    assert b.allow(HALF_OPEN)  # the probe: half open, lease held
    warm(b, HELD)  # its first success is written; the view then knows it healthy
    for _ in range(3):
        b.record_success(HELD)  # summed in this process, not written yet


@pytest.fixture
def b(redis_url: str, prefix: str) -> Iterator[Breaker]:
    with Breaker(settings(redis_url, prefix)) as breaker:
        fill(breaker)
        yield breaker


def shown(states: list[TargetState]) -> dict[Target, TargetState]:
    out = {s.target: s for s in states}
    assert len(out) == len(states)  # each target once
    return out


def test_the_mix_is_what_it_claims(b: Breaker) -> None:
    got = shown(b.states())
    assert set(got) == set(ALL)
    assert [got[t].state for t in (OK, OPEN, HALF_OPEN, BREAK_OVER, GONE, MANUAL)] == [
        "closed", "open", "half_open", "open", "open", "open"
    ]  # fmt: skip
    assert [got[t].blacklisted for t in (OK, OPEN, HALF_OPEN, BREAK_OVER, GONE, MANUAL)] == [
        False, True, True, False, True, True
    ]  # fmt: skip
    assert got[BLOCKED].reason == "provider: auth" and got[BLOCKED].provider_blocked_until
    assert got[BLOCKED_2].blacklisted and got[BLOCKED_2].provider_blocked_until
    assert got[HINT].endpoint_hint == "/v1/responses" and got[COMPAT].compat
    assert got[MANUAL].manual and got[MANUAL].reason == "maintenance"
    assert got[HELD].success_count == 4
    assert len(b._engine.pending) == 1


@pytest.mark.parametrize("batch", [1000, 2], ids=["one-batch", "batches-of-2"])
def test_states_equal_the_state_of_each_target(
    b: Breaker, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow, "STATES_BATCH", batch)
    listed = shown(b.states())
    assert gc.isenabled()
    assert listed == {t: b.state(t) for t in ALL}
    assert shown(b.states("anthropic")) == {t: b.state(t) for t in (BLOCKED, BLOCKED_2)}


@pytest.mark.parametrize("parser", ["hiredis", "redis-py"])
async def test_async_states_equal_the_state_of_each_target(
    b: Breaker, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if parser == "redis-py":
        monkeypatch.setattr(bulk, "hiredis", None)
    monkeypatch.setattr(flow, "STATES_BATCH", 3)
    async with AsyncBreaker(b.settings) as ab:
        listed = shown(await ab.states())
        expected = {t: await ab.state(t) for t in ALL}
    assert listed == expected
    assert expected[HELD].success_count == 1  # another process's sums are not its own
    assert {t: s for t, s in listed.items() if t != HELD} == {
        t: s for t, s in shown(b.states()).items() if t != HELD
    }


async def test_an_async_read_given_up_half_way_leaves_the_client_usable(
    b: Breaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow, "STATES_BATCH", 2)
    async with AsyncBreaker(b.settings) as ab:
        calls = []

        def boom(self: object, *args: object) -> None:
            calls.append(args)
            raise RuntimeError("parse failed")

        with monkeypatch.context() as m:
            m.setattr(flow.Engine, "_rows", boom)
            with pytest.raises(RuntimeError, match="parse failed"):
                await ab.states()  # the next batch's replies were never read
            assert gc.isenabled()
        assert len(calls) == 1
        for _ in range(5):
            assert await ab.providers() == ["anthropic", "openai"]
        assert len(await ab.states()) == len(ALL)


def test_a_store_error_half_way_is_a_store_error(
    b: Breaker, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilience import StoreUnavailableError

    monkeypatch.setattr(flow, "STATES_BATCH", 2)
    real = bulk._take

    def cut(reader: object, out: list[object], n: int) -> bool:
        raise redis.ConnectionError("cut")

    monkeypatch.setattr(bulk, "_take", cut)
    with pytest.raises(StoreUnavailableError):
        b.states()
    assert gc.isenabled()  # paused while the states are made, and only then
    monkeypatch.setattr(bulk, "_take", real)
    assert shown(b.states()) == {t: b.state(t) for t in ALL}


def test_a_listed_state_is_a_target_state_in_every_way() -> None:
    values = dict(
        provider="p",
        model="m",
        state="open",
        error_count=3,
        success_count=2,
        consecutive_errors=3,
        trips=1,
        blacklisted=True,
        open_until=None,
        last_error_kind="timeout",
        last_error_message="slow",
        last_error_time=None,
        last_success_time=None,
        endpoint_hint=None,
        generation=4,
        reason="timeout",
        manual=False,
        provider_blocked_until=None,
        since=None,
        compat=(),
        compat_at=None,
        compat_message=None,
    )
    ref = TargetState(**values)  # type: ignore[arg-type]
    fast = fast_target_state(*values.values())
    assert type(fast) is TargetState
    assert fast == ref and hash(fast) == hash(ref) and repr(fast) == repr(ref)
    assert dataclasses.astuple(fast) == dataclasses.astuple(ref)
    assert pickle.loads(pickle.dumps(fast)) == ref
    assert dataclasses.replace(fast, success_count=9) == dataclasses.replace(ref, success_count=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.state = "closed"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(TargetState)] == list(values)


async def test_a_cancelled_async_read_runs_the_garbage_collector_again(
    b: Breaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is paused while the states are read; a read cancelled half way (a
    timeout around ``states()``) leaves it running, and the client usable."""
    async with AsyncBreaker(b.settings) as ab:
        io = ab._async_io()
        pool = io.client.connection_pool
        real_get = pool.get_connection

        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            conn = await real_get(*args, **kwargs)
            real_send = conn.send_packed_command

            async def send(*args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(0)  # where a cancellation lands, whatever is buffered
                return await real_send(*args, **kwargs)

            monkeypatch.setattr(conn, "send_packed_command", send)
            return conn

        seen: list[int] = []

        def sink(i: int, rows: list[Any], now: int) -> None:
            seen.append(i)
            assert not gc.isenabled()
            if i == 0:
                read.cancel()

        keys = [[KeySpace(b.settings.key_prefix).target(t)] for t in ALL]
        with monkeypatch.context() as m:
            m.setattr(pool, "get_connection", get_connection)
            read = asyncio.create_task(bulk.each_async(io.client, keys, READ_FIELDS, sink))
            with pytest.raises(asyncio.CancelledError):
                await read
        assert seen == [0]
        assert gc.isenabled()
        expected = {t: await ab.state(t) for t in ALL}
        assert shown(await ab.states()) == expected
