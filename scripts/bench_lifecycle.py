"""Short-lived processes: what a cron job, a CLI call, a serverless function or a Celery task
pays for the breaker, measured as whole processes in one run.

Each figure is the median wall time of ``--runs`` fresh interpreter processes (after one
warm-up round; the commands take turns, one run of each per round), against a private
redis-server on loopback, with bytecode cached as for an installed package:

* a bare interpreter start, ``import redis``, ``import resilience``;
* a plain redis-py script (connect, one PING, close): the reference;
* the natural short-lived pattern, ``with Breaker(Settings(...)) as b:`` around one guarded
  call (sync), and ``async with AsyncBreaker(...)`` around one (async);
* ``resilience status`` on an empty key prefix.

Inside one process it also prints, sync and async: construct, the first guarded call and
``close()`` / ``aclose()`` (ms), and the threads left after close.

    scripts/bench_lifecycle [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import RedisServer

PLAIN = """
import redis
r = redis.Redis.from_url({url!r})
r.ping()
r.close()
"""

SYNC = """
from resilience import Breaker, Settings
with Breaker(Settings(redis_url={url!r}, key_prefix="life")) as b:
    @b.guard("openai", "gpt-4o")
    def call():
        return 1
    call()
"""

ASYNC = """
import asyncio
from resilience import AsyncBreaker, Settings
async def main():
    async with AsyncBreaker(Settings(redis_url={url!r}, key_prefix="life")) as b:
        @b.guard("openai", "gpt-4o")
        async def call():
            return 1
        await call()
asyncio.run(main())
"""

INSIDE = """
import asyncio, json, threading, time
t0 = time.perf_counter()
from resilience import AsyncBreaker, Breaker, Settings
t1 = time.perf_counter()
s = Settings(redis_url={url!r}, key_prefix="life")
threads = threading.active_count()
out = {{"import_ms": (t1 - t0) * 1000}}
a = time.perf_counter()
b = Breaker(s)
guarded = b.guard("openai", "gpt-4o")(lambda: 1)
c = time.perf_counter()
guarded()
d = time.perf_counter()
b.close()
e = time.perf_counter()
out.update(sync_construct_ms=(c - a) * 1000, sync_first_call_ms=(d - c) * 1000,
           sync_close_ms=(e - d) * 1000, sync_threads_left=threading.active_count() - threads)
async def run():
    a = time.perf_counter()
    ab = AsyncBreaker(s)
    @ab.guard("openai", "gpt-4o")
    async def call():
        return 1
    c = time.perf_counter()
    await call()
    d = time.perf_counter()
    await ab.aclose()
    e = time.perf_counter()
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    out.update(async_construct_ms=(c - a) * 1000, async_first_call_ms=(d - c) * 1000,
               async_close_ms=(e - d) * 1000, async_tasks_left=len(left))
asyncio.run(run())
print(json.dumps(out))
"""


def walls(
    commands: list[tuple[str, list[str], dict[str, str]]], runs: int
) -> list[tuple[str, float, float]]:
    """Median wall time and median CPU time (user + system, ms) of ``runs`` runs of each
    command, after one warm-up round. The commands take turns (one run of each per round),
    so a change in the machine's load meanwhile weighs on every row alike; CPU time is what
    the process itself spent, less sensitive to a shared machine than wall time."""
    times: dict[str, list[float]] = {label: [] for label, _, _ in commands}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in commands}
    for i in range(runs + 1):
        for label, argv, env in commands:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env)
            wall = (time.perf_counter() - start) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:
                times[label].append(wall)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                cpus[label].append(cpu * 1000)
    return [
        (label, statistics.median(times[label]), statistics.median(cpus[label]))
        for label, _, _ in commands
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="processes per figure (15)")
    args = parser.parse_args()
    server = RedisServer()
    py = sys.executable
    url = server.url
    # Bytecode is cached as for an installed package (a private cache folder), even where
    # the environment says not to write it (PYTHONDONTWRITEBYTECODE).
    cache = tempfile.mkdtemp(prefix="bench-pyc-")
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base["PYTHONPYCACHEPREFIX"] = cache
    env = {**base, "RESILIENCE_REDIS_URL": url, "RESILIENCE_KEY_PREFIX": "life-empty"}
    try:
        rows = walls(
            [
                ("bare interpreter (python -c pass)", [py, "-c", "pass"], base),
                ("import redis", [py, "-c", "import redis"], base),
                ("import resilience", [py, "-c", "import resilience"], base),
                ("plain redis-py script: connect, PING, close",
                 [py, "-c", PLAIN.format(url=url)], base),
                ("with Breaker(...) around one guarded call",
                 [py, "-c", SYNC.format(url=url)], base),
                ("async with AsyncBreaker(...) around one guarded call",
                 [py, "-c", ASYNC.format(url=url)], base),
                ("resilience status (empty key prefix)", [py, "-m", "resilience", "status"], env),
            ],
            args.runs,
        )  # fmt: skip
        inside = [
            json.loads(
                subprocess.run(
                    [py, "-c", INSIDE.format(url=url)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=base,
                ).stdout
            )
            for _ in range(args.runs)
        ]
    finally:
        server.stop()
        shutil.rmtree(cache, ignore_errors=True)
    ping, ping_cpu = rows[3][1], rows[3][2]
    print(
        f"| process ({args.runs} runs, median) | wall ms | vs plain redis-py script "
        "| CPU ms | vs plain redis-py script |"
    )
    print("|---|---|---|---|---|")
    for label, ms, cpu in rows:
        print(f"| {label} | {ms:.1f} | {ms - ping:+.1f} | {cpu:.1f} | {cpu - ping_cpu:+.1f} |")
    print()
    print("| inside one process (median) | sync | async |")
    print("|---|---|---|")
    for what in ("construct", "first_call", "close"):
        s = statistics.median(r[f"sync_{what}_ms"] for r in inside)
        a = statistics.median(r[f"async_{what}_ms"] for r in inside)
        print(f"| {what.replace('_', ' ')} (ms) | {s:.2f} | {a:.2f} |")
    threads = max(r["sync_threads_left"] for r in inside)
    tasks = max(r["async_tasks_left"] for r in inside)
    print(f"| threads / tasks left after close (max) | {threads} | {tasks} |")
    status_gap, status_cpu = rows[6][1] - rows[1][1], rows[6][2] - rows[1][2]
    print(
        f"\nresilience status - import redis: {status_gap:+.1f} ms wall, {status_cpu:+.1f} ms CPU"
    )


if __name__ == "__main__":
    main()
