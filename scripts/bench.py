"""Per-call overhead of a guarded call next to one plain Redis PING, measured in one run.

Prints, for a healthy target: the time of a bare function call, one PING round trip, a
guarded call (sync and asyncio, with and without the local view), the guarded overhead as
a ratio to one PING, and the Redis round trips each guarded call makes (counted on the
client's connections). Uses a unique key prefix and deletes its keys afterwards.

    scripts/bench [--calls 5000] [--redis-url redis://127.0.0.1:6379/0]

By default it starts a private redis-server on a free loopback port, so that INFO
commandstats also gives the commands Redis executes per call (inside the script).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from benchlib import RedisServer

from resilience import AsyncBreaker, Breaker, Settings
from resilience._io import client_kwargs

ROUND_TRIPS = 0


class CountingConnection(redis.Connection):
    """Counts packets sent: one per command or pipeline, i.e. one per round trip."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        global ROUND_TRIPS
        ROUND_TRIPS += 1
        super().send_packed_command(command, check_health)


class AsyncCountingConnection(aioredis.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        global ROUND_TRIPS
        ROUND_TRIPS += 1
        await super().send_packed_command(command, check_health)


def timed(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean time per call, in microseconds."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


async def atimed(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def sync_client(settings: Settings) -> redis.Redis:
    kw = client_kwargs(settings)
    pool = redis.ConnectionPool.from_url(
        settings.redis_url, connection_class=CountingConnection, **kw
    )
    return redis.Redis(connection_pool=pool)


def async_client(settings: Settings) -> aioredis.Redis:
    kw = client_kwargs(settings)
    pool = aioredis.ConnectionPool.from_url(
        settings.redis_url, connection_class=AsyncCountingConnection, **kw
    )
    return aioredis.Redis(connection_pool=pool)


def round_trips_per_call(fn: Callable[[], object], n: int = 500) -> float:
    global ROUND_TRIPS
    ROUND_TRIPS = 0
    for _ in range(n):
        fn()
    return ROUND_TRIPS / n


class PrivateServer(RedisServer):
    """The benchmark's own redis-server: INFO commandstats counts exactly what it causes."""

    def total_commands(self) -> int:
        skip = ("info", "config|resetstat")
        return sum(n for name, n in self.commands().items() if name not in skip)


def server_commands_per_call(server: PrivateServer) -> float:
    """Commands Redis executes per healthy guarded call: the EVALSHA plus the commands the
    script runs inside the server (counted by INFO commandstats)."""
    s = Settings(redis_url=server.url, key_prefix="bench")
    with Breaker(s) as b:
        guarded = b.guard("bench", "cmds")(lambda: 1)
        guarded()
        time.sleep(0.3)
        guarded()
        server.reset_stats()
        for _ in range(1000):
            guarded()
        total = server.total_commands()
    pings = 1  # the subscriber pings about once a second
    return (total - pings) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="measure against this Redis (default: a private redis-server on loopback)",
    )
    args = parser.parse_args()
    n = args.calls
    server = PrivateServer() if args.redis_url is None else None
    if server is not None:
        args.redis_url = server.url
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rows: list[tuple[str, float, float | None]] = []

    def bare() -> int:
        return 1

    plain = redis.Redis.from_url(args.redis_url)
    plain.ping()
    ping_us = timed(plain.ping, n)
    bare_us = timed(bare, n)
    try:
        for local_view in (True, False):
            s = Settings(redis_url=args.redis_url, key_prefix=prefix, local_view=local_view)
            with Breaker(s, client=sync_client(s)) as b:
                guarded = b.guard("bench", f"sync-{local_view}")(bare)
                guarded()
                time.sleep(0.3)  # subscriber up: the local view is trusted
                guarded()
                us = timed(guarded, n)
                rt = round_trips_per_call(guarded)
            label = "guarded sync call" + ("" if local_view else " (local_view=False)")
            rows.append((label, us, rt))

        async def run_async() -> None:
            global ROUND_TRIPS
            s = Settings(redis_url=args.redis_url, key_prefix=prefix)
            async with AsyncBreaker(s, client=async_client(s)) as ab:

                @ab.guard("bench", "async")
                async def call() -> int:
                    return 1

                await call()
                await asyncio.sleep(0.3)
                await call()
                us = await atimed(call, n)
                ROUND_TRIPS = 0
                for _ in range(500):
                    await call()
                rows.append(("guarded async call", us, ROUND_TRIPS / 500))

        asyncio.run(run_async())
    finally:
        for key in plain.scan_iter(match=f"{prefix}:*"):
            plain.delete(key)

    print(f"resilience benchmark: {n} calls per figure, median of 5 runs, one process")
    print(f"{'what':<42}{'us/call':>10}{'overhead/PING':>15}{'round trips':>13}")
    print(f"{'bare function call':<42}{bare_us:>10.2f}{'':>15}{0:>13}")
    print(f"{'redis PING (redis-py, sync)':<42}{ping_us:>10.2f}{1.0:>15.2f}{1:>13}")
    for label, us, rt in rows:
        ratio = (us - bare_us) / ping_us
        rts = f"{rt:.2f}" if rt is not None else "-"
        print(f"{label:<42}{us:>10.2f}{ratio:>15.2f}{rts:>13}")
    print("overhead/PING = (guarded - bare) / PING; round trips counted per guarded call")
    if server is not None:
        per_call = server_commands_per_call(server)
        print(
            f"Redis commands executed per healthy guarded call: {per_call:.1f} "
            "(1 EVALSHA sent; the rest run inside the script, no extra round trip)"
        )
        server.stop()
    plain.close()


if __name__ == "__main__":
    main()
