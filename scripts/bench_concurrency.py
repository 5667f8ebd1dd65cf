"""Concurrency inside one process: outcomes recorded / made, round trips per call, and the
event loop's lag, for bursts of threads and tasks against a private redis-server.

* Threads: one ``Breaker`` shared by 16, 150 and 500 threads; each thread makes 20 guarded
  calls over 10 targets, half of which fail (threshold high: nothing trips).
* Tasks: one ``AsyncBreaker``; bursts of 100, 1,000 and 10,000 concurrent tasks, one guarded
  call each over 50 targets, half failing. Beside each burst, the same burst of tasks without
  the library. A ticker task that wants to run every 5 ms measures the loop's lag (how late
  it ran): the longest stall shows synchronous work holding the loop.

Round trips are the pipelines the breaker sent for script calls, per guarded call (a call
that finds its answer in the local view costs none).

    scripts/bench_concurrency [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from benchlib import RedisServer

from resilience import AsyncBreaker, Breaker, Settings

TICK_S = 0.005


class ProviderDown(Exception):
    status_code = 503


def settings(url: str) -> Settings:
    return Settings(
        redis_url=url,
        key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        failure_threshold=10**6,
        min_calls=10**6,
    )


def threads_row(url: str, n: int, calls_each: int = 20) -> tuple[str, ...]:
    with Breaker(settings(url)) as b:
        ok = b.guard("bench", model_arg="model")(lambda model: 1)

        @b.guard("bench", model_arg="model")
        def down(model: str) -> int:
            raise ProviderDown("503")

        barrier = threading.Barrier(n)

        def one(i: int) -> None:
            barrier.wait()
            for j in range(calls_each):
                k = (i + j) % 10
                if k < 5:
                    ok(model=f"healthy-{k}")
                else:
                    with contextlib.suppress(ProviderDown):
                        down(model=f"failing-{k}")

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(one, range(n)))
        elapsed = time.perf_counter() - start
        states = b.states("bench")
        batcher = b._sync_io().batcher
    made = n * calls_each
    recorded = sum(s.success_count + s.error_count for s in states)
    per_call = batcher.round_trips / made
    return (
        f"{n} threads",
        f"{recorded}/{made}",
        f"{per_call:.3f}",
        f"{made / elapsed:,.0f}",
        "-",
        "-",
    )


async def lagged(burst: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Runs ``burst`` beside a 5 ms ticker; returns the ticker's longest and p99 lag (ms)."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(max(0.0, time.perf_counter() - t - TICK_S) * 1000)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_S * 2)
    await burst()
    done.set()
    await tick
    lags.sort()
    return lags[-1], lags[int(len(lags) * 0.99) - 1 if len(lags) > 1 else 0]


async def tasks_rows(url: str, n: int) -> list[tuple[str, ...]]:
    async with AsyncBreaker(settings(url)) as b:

        @b.guard("bench", model_arg="model")
        async def call(model: str, fail: bool) -> int:
            await asyncio.sleep(0)
            if fail:
                raise ProviderDown("503")
            return 1

        async def plain(model: str, fail: bool) -> int:
            await asyncio.sleep(0)
            if fail:
                raise ProviderDown("503")
            return 1

        async def one(fn: Callable[..., Awaitable[int]], i: int) -> None:
            with contextlib.suppress(ProviderDown):
                await fn(model=f"m{i % 50}", fail=i % 2 == 1)

        await call(model="warm", fail=False)  # scripts loaded, subscriber started
        await asyncio.sleep(0.3)
        base_max, base_p99 = await lagged(
            lambda: asyncio.gather(*(one(plain, i) for i in range(n)))  # type: ignore[arg-type,return-value]
        )
        batcher = b._async_io().batcher
        calls_before = batcher.round_trips
        start = time.perf_counter()
        lib_max, lib_p99 = await lagged(
            lambda: asyncio.gather(*(one(call, i) for i in range(n)))  # type: ignore[arg-type,return-value]
        )
        elapsed = time.perf_counter() - start
        trips = batcher.round_trips - calls_before
        states = [s for s in await b.states("bench") if s.model != "warm"]
    recorded = sum(s.success_count + s.error_count for s in states)
    return [
        (
            f"{n:,} tasks",
            f"{recorded}/{n}",
            f"{trips / n:.3f}",
            f"{n / elapsed:,.0f}",
            f"{lib_max:.1f} / {lib_p99:.1f}",
            f"{base_max:.1f} / {base_p99:.1f}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args()
    server = RedisServer() if args.redis_url is None else None
    url = server.url if server is not None else args.redis_url
    try:
        rows = [threads_row(url, n) for n in (16, 150, 500)]
        for n in (100, 1_000, 10_000):
            rows.extend(asyncio.run(tasks_rows(url, n)))
    finally:
        if server is not None:
            server.stop()
    head = (
        "burst",
        "outcomes recorded/made",
        "round trips per call",
        "calls/s",
        "loop lag max / p99 (ms)",
        "same burst without the library",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nloop lag: how late a task asking to run every {TICK_S * 1000:.0f} ms ran; "
        "max and 99th percentile over the burst"
    )


if __name__ == "__main__":
    main()
