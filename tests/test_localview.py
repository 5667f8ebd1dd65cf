"""The per-process local view: pub/sub keeps it current, own replies update it at once, and
a healthy guarded call costs one Redis round trip."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from resilience import Breaker, ErrorKind, Target
from resilience._types import Denial, Permit
from tests.conftest import PrivateRedis, asubscribed, make_settings, subscribed

T = Target("openai", "gpt-4o")


def wait_for(cond: Any, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.001)
    raise AssertionError("condition not reached in time")


def test_transition_elsewhere_reaches_the_view_through_pubsub(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, local_view_max_age_seconds=60)
    with Breaker(s) as a, Breaker(s) as b:
        assert b.allow(T)
        wait_for(lambda: subscribed(b))
        assert b.allow(T)
        local = b._engine.view.decide(T)
        assert isinstance(local, Permit) and local.source == "local"
        a.block(T, 60, "incident")
        # b's entry is trusted for 60 s: only the announcement can change it
        wait_for(lambda: isinstance(b._engine.view.decide(T), Denial), timeout=2.0)
        assert not b.allow(T)
        a.unblock(T)
        wait_for(lambda: isinstance(b._engine.view.decide(T), Permit), timeout=2.0)
        assert b.allow(T)


def test_own_reply_updates_own_view_at_once(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(s) as b:
        b.allow(T)
        wait_for(lambda: subscribed(b))
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        decision = b._engine.view.decide(T)  # no wait for pub/sub
        assert isinstance(decision, Denial) and decision.source == "local"


def test_failing_target_is_always_decided_by_redis(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix)
    with Breaker(s) as b:
        b.allow(T)
        wait_for(lambda: subscribed(b))
        b.record_failure(T, ErrorKind.TIMEOUT)
        assert b._engine.view.decide(T) is None  # hot: ask Redis
        b.record_success(T)
        assert isinstance(b._engine.view.decide(T), Permit)


def test_view_not_trusted_without_subscription(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, local_view=False)
    with Breaker(s) as b:
        b.record_success(T)
        assert b._engine.view.decide(T) is None


@pytest.mark.parametrize("flush_seconds", [5.0, 0.0])
def test_what_a_healthy_guarded_call_costs(
    private_redis: PrivateRedis, flush_seconds: float
) -> None:
    """Batched (the default): no round trip per call, one merge per flush. Immediate
    (``success_flush_seconds=0``): one slim script call per call."""
    s = make_settings(private_redis.url, "onert", success_flush_seconds=flush_seconds)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def call() -> int:
            return 1

        call()  # warm: first admission reads Redis, scripts load, the entry exists
        wait_for(lambda: subscribed(b))
        call()
        b._sync_io().flush()
        private_redis.reset_stats()
        for _ in range(200):
            call()
        stats = private_redis.commands()
        assert b.state(T).success_count == 202  # a process reads its own writes
    # commandstats also counts the commands a script runs inside Redis; those are not round
    # trips. Everything else a client sent:
    inside_scripts = {"time", "hgetall", "hset", "hmget", "hincrby", "pexpire", "zadd"}
    housekeeping = {"ping", "config|resetstat", "info", "hello", "client|setinfo"}
    sent = {k: v for k, v in stats.items() if k not in inside_scripts | housekeeping}
    if flush_seconds:
        assert sent == {}  # nothing sent for 200 healthy calls
    else:
        assert sent == {"evalsha": 200}
        assert stats["hmget"] == 200 and "hgetall" not in stats  # the slim path
    client = redis.Redis(port=private_redis.port, decode_responses=True)
    try:  # close() wrote what was summed
        assert client.hget("onert:{openai}:t:gpt-4o", "success_count") == "202"
    finally:
        client.close()


async def test_async_view_follows_pubsub(redis_url: str, prefix: str) -> None:
    import asyncio

    from resilience import AsyncBreaker

    s = make_settings(redis_url, prefix, local_view_max_age_seconds=60)
    async with AsyncBreaker(s) as a, AsyncBreaker(s) as b:
        assert await b.allow(T)
        for _ in range(200):
            if await asubscribed(b):
                break
            await asyncio.sleep(0.01)
        assert await b.allow(T)
        assert isinstance(b._engine.view.decide(T), Permit)
        await a.block(T, 60, "incident")
        for _ in range(200):
            if isinstance(b._engine.view.decide(T), Denial):
                break
            await asyncio.sleep(0.01)
        assert not await b.allow(T)


def test_subscription_stays_trusted_past_the_grace_period(redis_url: str, prefix: str) -> None:
    """Ping answers keep the subscription alive while no transition happens."""
    from resilience._view import SUBSCRIPTION_GRACE_S

    s = make_settings(redis_url, prefix)
    with Breaker(s) as b:
        b.allow(T)
        wait_for(lambda: subscribed(b))
        deadline = time.monotonic() + SUBSCRIPTION_GRACE_S + 1.5
        while time.monotonic() < deadline:
            assert b._engine.view.subscribed
            b.allow(T)
            time.sleep(0.05)


async def test_async_subscription_stays_trusted_past_the_grace_period(
    redis_url: str, prefix: str
) -> None:
    import asyncio

    from resilience import AsyncBreaker
    from resilience._view import SUBSCRIPTION_GRACE_S

    s = make_settings(redis_url, prefix)
    async with AsyncBreaker(s) as b:
        await b.allow(T)
        for _ in range(200):
            if await asubscribed(b):
                break
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + SUBSCRIPTION_GRACE_S + 1.5
        while time.monotonic() < deadline:
            assert b._engine.view.subscribed
            await b.allow(T)
            await asyncio.sleep(0.05)


def _first_entry_survives(url: str, prefix: str, out: Any) -> None:
    from resilience import Breaker as B
    from resilience import Settings as S

    with B(S(redis_url=url, key_prefix=prefix, local_view_max_age_seconds=60)) as b:
        b.record_success(T)  # the entry exists in Redis
        b.allow(T)  # the process's first admission: its reply fills the view
        b.allow(T)
        b.allow(T)  # third admission: the subscriber starts
        deadline = time.monotonic() + 5
        while not b._engine.view.subscribed and time.monotonic() < deadline:
            time.sleep(0.005)
        out.put(isinstance(b._engine.view.decide(T), Permit))


def test_the_subscription_confirmation_keeps_the_first_entry(redis_url: str, prefix: str) -> None:
    """Fresh processes: the entry the first call wrote survives the subscription's
    confirmation (it used to be wiped, racing the first call)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_first_entry_survives, args=(redis_url, prefix, out)) for _ in range(12)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [True] * len(procs)


def test_the_view_is_bounded(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, local_view_max_entries=50)
    with Breaker(s) as b:
        for i in range(300):
            b.allow(Target("openai", f"m{i}"))
        assert len(b._engine.view) == 50
        assert b._engine.view.decide(Target("openai", "m0")) is None  # the oldest went


def test_a_missed_announcement_is_caught_up_after_a_reconnect(
    private_redis: PrivateRedis,
) -> None:
    """Entries are revalidated when the subscription comes back, not dropped and not left
    stale until they age out."""
    s = make_settings(private_redis.url, "reconnect", local_view_max_age_seconds=60)
    rclient = redis.Redis(port=private_redis.port, decode_responses=True)
    with Breaker(s) as a, Breaker(s) as b:
        a.block(T, 600, "incident")
        wait_for(lambda: subscribed(b))
        b.allow(T)
        assert isinstance(b._engine.view.decide(T), Denial)
        # cut b's subscription, and change T while b cannot hear of it
        for c in rclient.client_list(_type="pubsub"):
            rclient.client_kill_filter(_id=c["id"])
        a.unblock(T)
        wait_for(lambda: not b._engine.view.subscribed, timeout=5)
        wait_for(lambda: b._engine.view.subscribed, timeout=10)
        wait_for(lambda: isinstance(b._engine.view.decide(T), Permit), timeout=2)
    rclient.close()
