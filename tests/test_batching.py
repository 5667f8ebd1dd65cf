"""Batched success accounting against the real Redis: a healthy target's successes are summed
in-process and merged once per flush; failures and anything on a failing target stay
immediate; nothing is lost on close, at exit, across processes or through an outage."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import pytest
import redis

from resilience import Breaker, ErrorKind, Settings, Target
from resilience._keys import KeySpace
from resilience._types import Denial
from tests.conftest import PrivateRedis, make_settings

T = Target("openai", "gpt-4o")


def raw(client: redis.Redis, prefix: str, target: Target = T) -> dict[str, str]:
    """The target's hash as Redis holds it (not what the process reads with its sums)."""
    return client.hgetall(KeySpace(prefix).target(target))  # type: ignore[return-value]


def warm(b: Breaker, target: Target = T) -> None:
    """The target's first success is written at once; after it the view knows it healthy."""
    assert b.allow(target)
    b.record_success(target)
    deadline = time.monotonic() + 5
    while not b._engine.view.healthy(target):
        assert time.monotonic() < deadline, "the subscription did not come up"
        b.allow(target)
        time.sleep(0.01)


def test_successes_are_summed_and_merged(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix, success_flush_seconds=60)
    with Breaker(s) as b:
        warm(b)
        for _ in range(100):
            b.record_success(T, latency_s=0.2)
        assert raw(rclient, prefix)["success_count"] == "1"  # not written yet
        assert b.state(T).success_count == 101  # but the process reads its own writes
        b._sync_io().flush()
        h = raw(rclient, prefix)
        assert h["success_count"] == "101"
        assert int(h["latency_ms"]) > 100  # the batch's mean latency moved the average
    assert raw(rclient, prefix)["success_count"] == "101"


def test_close_writes_what_is_summed(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix, success_flush_seconds=60)
    with Breaker(s) as b:
        warm(b)
        for _ in range(10):
            b.record_success(T)
        assert raw(rclient, prefix)["success_count"] == "1"
    assert raw(rclient, prefix)["success_count"] == "11"


def test_a_merge_keeps_the_provider_index_in_one_write(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """merge.lua writes the index of all its targets in one ZADD: each member's score is the
    merge's server time, a member the index lost comes back, and a new member prunes the
    members idle longer than any key can live (as every other script's touch_index does)."""
    s = make_settings(redis_url, prefix, success_flush_seconds=60)
    ts = [Target("openai", f"m{i}") for i in range(3)]
    idx = KeySpace(prefix).index("openai")
    with Breaker(s) as b:
        for t in ts:
            warm(b, t)
        rclient.zrem(idx, "m1")
        rclient.zadd(idx, {"stale": 1})
        rclient.persist(idx)
        for t in ts:
            b.record_success(t)
        b._sync_io().flush()
        assert raw(rclient, prefix, ts[1])["success_count"] == "2"
        scores = dict(rclient.zrange(idx, 0, -1, withscores=True))
        assert set(scores) == {"m0", "m1", "m2"}
        assert len(set(scores.values())) == 1
        ttl_ms = (s.state_ttl_seconds + s.max_retry_after_seconds) * 1000
        assert ttl_ms - 60_000 < rclient.pttl(idx) <= ttl_ms


def test_flushes_keep_the_view_of_the_provider_fresh(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """A merge reply carries the provider's own state: while flushes go through, the view's
    provider entry never outlives ``local_view_max_age_seconds``, so a healthy process asks
    Redis nothing for an admission; and a provider-wide block the view had not heard of is
    learned from the next merge."""
    s = make_settings(redis_url, prefix, success_flush_seconds=0.05, local_view_max_age_seconds=0.4)
    with Breaker(s) as b:
        warm(b)
        sources = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            permit = b.acquire(T)
            sources.add(permit.source)
            b.record_success(T, permit=permit)
            time.sleep(0.005)
        assert sources == {"local"}
        # Blocked in Redis with no announcement (as if the message were lost).
        server_ms = int(rclient.time()[0]) * 1000
        rclient.hset(
            KeySpace(prefix).provider("openai"),
            mapping={"state": "open", "gen": "7", "open_until": server_ms + 60_000,
                     "reason": "quota", "since": server_ms},
        )  # fmt: skip
        b.record_success(T)
        b._sync_io().flush()
        denial = b._engine.view.decide(T)
        assert isinstance(denial, Denial)
        assert (denial.source, denial.reason) == ("local", "provider blocked")
        assert 50 < denial.retry_after_s <= 61
        assert not b.allow(T)


def test_many_successes_flush_early(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = make_settings(redis_url, prefix, success_flush_seconds=60, success_flush_count=50)
    with Breaker(s) as b:
        warm(b)
        for _ in range(60):
            b.record_success(T)
        deadline = time.monotonic() + 5
        while int(raw(rclient, prefix).get("success_count", 0)) < 51:
            assert time.monotonic() < deadline, "no early flush"
            time.sleep(0.01)


def test_failures_are_never_delayed_and_reset_consecutive_errors_exactly(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    s = make_settings(redis_url, prefix, success_flush_seconds=60, failure_threshold=100)
    with Breaker(s) as b:
        warm(b)
        b.record_success(T)  # summed
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        h = raw(rclient, prefix)
        assert (h["error_count"], h["consecutive_errors"]) == ("2", "2")  # at once
        b.record_success(T)  # the first success after errors: immediate, resets
        assert raw(rclient, prefix)["consecutive_errors"] == "0"
        b.record_success(T)  # healthy again: summed
        assert raw(rclient, prefix)["success_count"] == "2"
    assert raw(rclient, prefix)["success_count"] == "4"


def test_a_probe_success_is_never_summed(redis_url: str, prefix: str) -> None:
    s = make_settings(
        redis_url, prefix, success_flush_seconds=60, failure_threshold=1, open_seconds=0.1
    )
    with Breaker(s) as b:
        warm(b)
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        time.sleep(0.15)
        assert b.allow(T)  # the probe
        b.record_success(T)
        assert b.state(T).state == "closed"  # closed at once, not at the next flush


def _worker(url: str, prefix: str, n: int, start: Any) -> None:
    s = Settings(
        redis_url=url, key_prefix=prefix, success_flush_seconds=0.2, failure_threshold=10**6
    )
    with Breaker(s) as b:
        start.wait()
        for i in range(n):
            b.record_success(T)
            if i % 10 == 0:
                b.record_failure(Target("openai", "flaky"), ErrorKind.SERVER_ERROR)


def test_eight_processes_counts_exact_after_flush(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(redis_url, prefix, 500, start)) for _ in range(8)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert raw(rclient, prefix)["success_count"] == str(8 * 500)
    assert raw(rclient, prefix, Target("openai", "flaky"))["error_count"] == str(8 * 50)


def _killed_worker(url: str, prefix: str, ready: Any) -> None:
    s = Settings(redis_url=url, key_prefix=prefix, success_flush_seconds=3600)
    b = Breaker(s)
    warm(b)
    for _ in range(20):
        b.record_success(T)
    for _ in range(7):
        b.record_failure(Target("openai", "flaky"), ErrorKind.SERVER_ERROR)
    ready.set()
    time.sleep(60)


def test_kill_9_loses_at_most_the_summed_successes_never_a_failure(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """What ``kill -9`` can lose: the successes summed since the last flush; failures are
    written at once."""
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_killed_worker, args=(redis_url, prefix, ready))
    p.start()
    assert ready.wait(30)
    os.kill(p.pid or 0, signal.SIGKILL)
    p.join()
    assert raw(rclient, prefix, Target("openai", "flaky"))["error_count"] == "7"
    assert raw(rclient, prefix)["success_count"] == "1"  # the 20 summed ones are lost


def test_at_exit_the_sums_are_written(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    """A short-lived process that never closes its breaker loses nothing at a normal exit."""
    import subprocess
    import sys

    code = (
        "import time\n"
        "from resilience import Breaker, Settings, Target\n"
        f"s = Settings(redis_url={redis_url!r}, key_prefix={prefix!r}, "
        "success_flush_seconds=3600)\n"
        "b = Breaker(s)\n"
        "t = Target('openai', 'gpt-4o')\n"
        "b.allow(t); b.record_success(t)\n"
        "deadline = time.monotonic() + 5\n"
        "while not b._engine.view.healthy(t) and time.monotonic() < deadline:\n"
        "    b.allow(t); time.sleep(0.01)\n"
        "for _ in range(30): b.record_success(t)\n"
        "assert len(b._engine.pending)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert raw(rclient, prefix)["success_count"] == "31"


def test_sums_survive_an_outage_and_are_merged_after_it(private_redis: PrivateRedis) -> None:
    s = make_settings(
        private_redis.url,
        "outage",
        success_flush_seconds=3600,
        redis_socket_timeout=0.2,
        redis_connect_timeout=0.2,
        store_retry_seconds=0.1,
    )
    with Breaker(s) as b:
        warm(b)
        for _ in range(5):
            b.record_success(T)  # summed
        private_redis.stop()
        b._sync_io().flush()  # fails: the sums are kept
        assert b._engine.pending.successes_of(T) == 5
        for _ in range(3):
            b.record_failure(T, ErrorKind.SERVER_ERROR)  # decided in-process
            b.record_success(T)
        private_redis.start()
        time.sleep(0.15)
        b.record_failure(Target("openai", "other"), ErrorKind.TIMEOUT)  # Redis again
        b._sync_io().flush()
        client = redis.Redis(port=private_redis.port, decode_responses=True)
        try:
            h = client.hgetall(KeySpace("outage").target(T))
        finally:
            client.close()
    # restarted empty: the summed successes and what the outage saw, as counts
    assert (h["success_count"], h["error_count"]) == ("8", "3")
    assert h.get("state", "closed") == "closed"  # counts only, never a transition


def test_the_sums_are_bounded(redis_url: str, prefix: str) -> None:
    from resilience._pending import Pending

    p = Pending(max_targets=3)
    for i in range(5):
        for _ in range(10):
            p.add_success(Target("p", f"m{i}"), None)
    assert len(p) == 3 and p.dropped == 20 and p.successes == 30
    p.put_back(p.take())
    assert len(p) == 3 and p.successes == 30


@pytest.mark.parametrize("flush", [0.0, 60.0])
def test_immediate_mode_writes_every_success(
    redis_url: str, prefix: str, rclient: redis.Redis, flush: float
) -> None:
    s = make_settings(redis_url, prefix, success_flush_seconds=flush)
    with Breaker(s) as b:
        warm(b)
        for _ in range(10):
            b.record_success(T)
        written = int(raw(rclient, prefix)["success_count"])
        assert written == (11 if flush == 0 else 1)
