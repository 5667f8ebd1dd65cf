"""Short-lived processes: a breaker that makes a call or two starts no thread, closing stops
everything at once and writes everything, and a process that exits records every outcome."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import redis

from resilience import AsyncBreaker, Breaker, ErrorKind, Target
from resilience._keys import KeySpace
from tests.conftest import make_settings, subscribed

T = Target("openai", "gpt-4o")


def ours() -> list[str]:
    """The breakers' threads (the process-wide one recording dropped streams, started by a
    stream test and ending when idle, is tested with the streams)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith("resilience-") and t.name != "resilience-dropped"
    )


def test_a_call_or_two_start_no_thread(redis_url: str, prefix: str) -> None:
    with Breaker(make_settings(redis_url, prefix)) as b:
        guarded = b.guard("openai", "gpt-4o")(lambda: 1)
        guarded()
        guarded()
        assert ours() == []
        assert b.state(T).success_count == 2  # both written at once: no view, no batching


def test_close_stops_every_thread_and_writes_every_sum(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    before = ours()
    b = Breaker(make_settings(redis_url, prefix, success_flush_seconds=3600))
    guarded = b.guard("openai", "gpt-4o")(lambda: 1)
    calls = 0
    deadline = time.monotonic() + 5
    while not (subscribed(b) and b._engine.view.healthy(T)):
        assert time.monotonic() < deadline
        guarded()
        calls += 1
    for _ in range(20):
        guarded()  # summed: the flusher thread runs
        calls += 1
    assert set(ours()) - set(before) == {"resilience-subscriber", "resilience-flusher"}
    written = int(rclient.hget(KeySpace(prefix).target(T), "success_count") or 0)
    assert written < calls  # some were summed, not written yet
    b.close()
    assert ours() == before  # nothing left, and close() did not wait out a poll to get there
    assert rclient.hget(KeySpace(prefix).target(T), "success_count") == str(calls)


async def test_aclose_leaves_no_task(redis_url: str, prefix: str) -> None:
    b = AsyncBreaker(make_settings(redis_url, prefix, success_flush_seconds=3600))

    @b.guard("openai", "gpt-4o")
    async def call() -> int:
        return 1

    for _ in range(10):
        await call()
        await asyncio.sleep(0.01)
    await b.aclose()
    left = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and "resilience" in t.get_name()
    ]
    assert left == []
    async with AsyncBreaker(make_settings(redis_url, prefix)) as reader:
        assert (await reader.state(T)).success_count == 10


def test_close_gives_a_held_probe_lease_back(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, failure_threshold=1, open_seconds=0.1)
    with Breaker(s) as a:
        a.record_failure(T, ErrorKind.SERVER_ERROR)
        time.sleep(0.15)
        assert a.allow(T)  # a holds the probe...
        with Breaker(s) as other:
            assert not other.allow(T)
    with Breaker(s) as other:
        assert other.allow(T)  # ...and gave it back when it closed: no 30 s wait


def test_ephemeral_starts_nothing_and_writes_at_once(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    with Breaker.ephemeral(make_settings(redis_url, prefix)) as b:
        guarded = b.guard("openai", "gpt-4o")(lambda: 1)
        for _ in range(50):
            guarded()
        assert ours() == []
        assert rclient.hget(KeySpace(prefix).target(T), "success_count") == "50"


def test_a_short_lived_process_records_every_outcome(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    code = f"""
from resilience import Breaker, Settings

class Down(Exception):
    status_code = 503

with Breaker(Settings(redis_url={redis_url!r}, key_prefix={prefix!r})) as b:
    @b.guard("openai", "gpt-4o")
    def call(fail):
        if fail:
            raise Down("503")
        return 1
    for fail in (True, False, False, False, True):
        try:
            call(fail)
        except Down:
            pass
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    h = rclient.hgetall(KeySpace(prefix).target(T))
    assert (h["success_count"], h["error_count"]) == ("3", "2")
