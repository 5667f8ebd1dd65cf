"""Concurrency inside one process, against the real Redis: hundreds of threads and thousands
of tasks share one breaker, and not one outcome is lost.

Concurrent script calls share pipelined round trips (``resilience._io.SyncBatcher`` /
``AsyncBatcher``); a pool limit is never an outage. Asserted for each burst: exact counts, no
store-error hook, one trip, one probe per target after a break, no call admitted after the
trip committed, and nothing left queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from resilience import (
    AsyncBreaker,
    Breaker,
    CircuitOpenError,
    ErrorKind,
    Settings,
    Target,
    TransitionInfo,
)
from tests.conftest import make_settings

HEALTHY = [Target("openai", f"healthy-{i}") for i in range(5)]
FAILING = [Target("anthropic", f"failing-{i}") for i in range(5)]


class ProviderDown(Exception):
    status_code = 503


class Recorder:
    def __init__(self) -> None:
        self.store_errors: list[Any] = []
        self.transitions: list[TransitionInfo] = []
        self.lock = threading.Lock()

    def on_store_error(self, e: Any) -> None:
        with self.lock:
            self.store_errors.append(e)

    def on_transition(self, e: TransitionInfo) -> None:
        with self.lock:
            self.transitions.append(e)


def no_trip(redis_url: str, prefix: str, **kw: Any) -> Settings:
    return make_settings(
        redis_url,
        prefix,
        failure_threshold=10**6,
        min_calls=10**6,
        redis_max_connections=8,  # far fewer connections than callers
        **kw,
    )


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("threads", [16, 150, 500])
def test_threads_lose_no_outcome(redis_url: str, prefix: str, threads: int) -> None:
    rec = Recorder()
    calls_each = 12
    with Breaker(no_trip(redis_url, prefix), hooks=[rec]) as b:

        def one(i: int) -> None:
            for j in range(calls_each):
                k = (i + j) % 10
                if k < 5:
                    target = HEALTHY[k]
                    b.record_success(target, permit=b.acquire(target))
                else:
                    target = FAILING[k - 5]
                    b.record_failure(target, ProviderDown("503"), permit=b.acquire(target))

        run_threads(threads, one)
        states = {s.target: s for s in b.states()}
        io = b._sync_io()
        assert io.batcher._queue == [] and not io.batcher._busy
        trips, calls = io.batcher.round_trips, io.batcher.calls
    healthy_calls = sum(1 for i in range(threads) for j in range(calls_each) if (i + j) % 10 < 5)
    assert sum(states[t].success_count for t in HEALTHY) == healthy_calls
    assert sum(states[t].error_count for t in FAILING) == threads * calls_each - healthy_calls
    assert rec.store_errors == []
    if threads >= 150:
        assert trips < calls  # concurrent calls shared round trips


def run_threads(n: int, fn: Callable[[int], None]) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(start, range(n)))
    assert errors == []


@pytest.mark.parametrize("threads", [16, 150, 500])
def test_threads_trip_once_and_admit_one_probe(redis_url: str, prefix: str, threads: int) -> None:
    rec = Recorder()
    target = Target("groq", "flaky")
    s = make_settings(
        redis_url, prefix, failure_threshold=5, open_seconds=0.5, redis_max_connections=8
    )
    with Breaker(s, hooks=[rec]) as b:
        b.record_failure(target, ProviderDown("503"))  # hot: every admission asks Redis
        admitted_at: list[int] = []
        lock = threading.Lock()

        def fail_once(i: int) -> None:
            try:
                permit = b.acquire(target)
            except CircuitOpenError:
                return
            with lock:
                admitted_at.append(permit.admitted_at_ms or 0)
            b.record_failure(target, ProviderDown("503"), permit=permit)

        run_threads(threads, fail_once)
        opened = [e for e in rec.transitions if e.to_state == "open"]
        assert len(opened) == 1  # exactly one trip
        [trip] = [e for e in b.events() if e.to_state == "open"]
        assert all(0 < t <= trip.time.timestamp() * 1000 for t in admitted_at)
        st = b.state(target)
        assert st.error_count == len(admitted_at) + 1
        # after the break: exactly one probe among all threads
        import time

        time.sleep(0.6)
        probes: list[bool] = []

        def probe(i: int) -> None:
            ok = b.allow(target)
            with lock:
                probes.append(ok)

        run_threads(threads, probe)
        assert probes.count(True) == 1
    assert rec.store_errors == []


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("tasks", [100, 1000, 10000])
async def test_tasks_lose_no_outcome(redis_url: str, prefix: str, tasks: int) -> None:
    rec = Recorder()
    targets = HEALTHY + FAILING + [Target("gemini", f"m{i}") for i in range(40)]  # 50 targets
    async with AsyncBreaker(no_trip(redis_url, prefix), hooks=[rec]) as b:

        @b.guard("fleet", model_arg="model")
        async def call(model: str, fail: bool) -> int:
            await asyncio.sleep(0)
            if fail:
                raise ProviderDown("503")
            return 1

        async def one(i: int) -> None:
            t = targets[i % len(targets)]
            with contextlib.suppress(ProviderDown):
                await call(t.provider + "/" + t.model, i % 2 == 1)

        await asyncio.gather(*(one(i) for i in range(tasks)))
        states = await b.states("fleet")
        io = b._async_io()
        assert io.batcher._queue == [] and not io.batcher._busy
        trips, calls = io.batcher.round_trips, io.batcher.calls
    assert sum(s.success_count for s in states) == tasks // 2
    assert sum(s.error_count for s in states) == tasks - tasks // 2
    assert len(states) == min(len(targets), tasks)
    assert rec.store_errors == []
    assert trips < calls


@pytest.mark.parametrize("tasks", [100, 1000, 10000])
async def test_tasks_trip_once_and_admit_one_probe(redis_url: str, prefix: str, tasks: int) -> None:
    rec = Recorder()
    target = Target("groq", "flaky")
    s = make_settings(
        redis_url, prefix, failure_threshold=5, open_seconds=0.5, redis_max_connections=8
    )
    async with AsyncBreaker(s, hooks=[rec]) as b:
        await b.record_failure(target, ProviderDown("503"))
        admitted_at: list[int] = []

        async def fail_once() -> None:
            try:
                permit = await b.acquire(target)
            except CircuitOpenError:
                return
            admitted_at.append(permit.admitted_at_ms or 0)
            await b.record_failure(target, ProviderDown("503"), permit=permit)

        await asyncio.gather(*(fail_once() for _ in range(tasks)))
        assert [e.to_state for e in rec.transitions].count("open") == 1
        [trip] = [e for e in await b.events() if e.to_state == "open"]
        assert all(0 < t <= trip.time.timestamp() * 1000 for t in admitted_at)
        assert (await b.state(target)).error_count == len(admitted_at) + 1
        await asyncio.sleep(0.6)
        probes = await asyncio.gather(*(b.allow(target) for _ in range(tasks)))
        assert probes.count(True) == 1
    assert rec.store_errors == []


async def test_a_pool_limit_is_not_an_outage(redis_url: str, prefix: str) -> None:
    """Two connections for 500 concurrent reads and calls: callers wait, nothing fails."""
    rec = Recorder()
    s = make_settings(redis_url, prefix, redis_max_connections=2, redis_socket_timeout=2.0)
    async with AsyncBreaker(s, hooks=[rec]) as b:
        t = Target("openai", "gpt-4o")
        await asyncio.gather(
            *(b.record_failure(t, ErrorKind.RATE_LIMITED) for _ in range(250)),
            *(b.state(t) for _ in range(250)),
        )
        assert (await b.state(t)).error_count == 250
    assert rec.store_errors == []


def test_one_async_breaker_on_several_event_loops(redis_url: str, prefix: str) -> None:
    """Each event loop gets its own connections; outcomes from every loop count."""
    rec = Recorder()
    b = AsyncBreaker(no_trip(redis_url, prefix), hooks=[rec])
    t = Target("openai", "gpt-4o")

    async def calls() -> None:
        for _ in range(50):
            await b.record_failure(t, ErrorKind.SERVER_ERROR)
        await b.aclose()  # closes this loop's connections only

    def in_thread() -> None:
        asyncio.run(calls())

    threads = [threading.Thread(target=in_thread) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    async def check() -> int:
        async with b:
            return (await b.state(t)).error_count

    assert asyncio.run(check()) == 200
    assert rec.store_errors == []


def test_the_first_failure_is_classified_off_the_event_loop(redis_url: str, prefix: str) -> None:
    """Loading the classification rules takes tens of milliseconds: the first failure of a
    process is classified in a worker thread (the loop keeps running), later ones inline;
    both are recorded."""
    import subprocess
    import sys

    code = f"""
import asyncio, threading
from resilience import AsyncBreaker, Settings, Target
from resilience._classify._compat import CAPABILITY_PREFIX  # the package, not the rules
seen = []
def mine(error, provider):
    seen.append(threading.current_thread() is threading.main_thread())
    return None
class Down(Exception):
    status_code = 503
async def main():
    s = Settings(redis_url={redis_url!r}, key_prefix={prefix!r}, failure_threshold=100)
    async with AsyncBreaker(s, classifier=mine) as b:
        @b.guard("p", "m")
        async def call():
            raise Down("503")
        for _ in range(2):
            try:
                await call()
            except Down:
                pass
        st = await b.state(Target("p", "m"))
        print(seen, st.error_count)
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "[False, True] 2", out.stdout + out.stderr


def test_an_async_router_has_the_rules_loaded_before_its_first_failure() -> None:
    """An AsyncRouter classifies on the event loop: it loads the rules in a background
    thread when it is made, so its first failure does not compile them on the loop."""
    import subprocess
    import sys

    code = """
import sys, time
from resilience import AsyncBreaker, AsyncRouter, Settings, Target
before = "resilience._classify._core" in sys.modules
AsyncRouter(AsyncBreaker(Settings()), [Target("p", "m")])
deadline = time.monotonic() + 30
while "resilience._classify._core" not in sys.modules and time.monotonic() < deadline:
    time.sleep(0.01)
print(before, "resilience._classify._core" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "False True", out.stdout + out.stderr
