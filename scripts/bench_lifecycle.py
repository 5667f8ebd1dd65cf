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

Each row also gives its difference from the plain script's run of the same round (median),
and its fastest run's difference from the plain script's fastest run (interference from the
shared machine only ever adds time, so the fastest runs are the least disturbed).

``import redis`` costs this machine 250-500 ms, with swings of a hundred milliseconds from
one process to the next, which both sides pay and which hide a difference of a few tens of
milliseconds between whole processes. So it also times, from inside fresh processes after
``import redis``, sync and async: ``import resilience``, construct, the first guarded call,
``close()`` / ``aclose()`` and the whole pattern, beside the plain script's connect, PING
and close (redis.asyncio's for the async column), the difference (the figure the target is
about), the threads or tasks left after close, and how long the interpreter takes to exit
after each (from its last statement to the exit being seen).

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

# Inside one process, after ``import redis`` (which both patterns pay, and which costs this
# machine 250-500 ms with wide swings): the plain script's part and the breaker's part, timed
# from within the process so the swings of the shared import do not hide them.
ASYNC_PLAIN_PROCESS = """
import asyncio
import redis.asyncio as aioredis
async def main():
    r = aioredis.Redis.from_url({url!r})
    await r.ping()
    await r.aclose()
asyncio.run(main())
"""

INSIDE_PLAIN = """
import json, time
import redis
t0 = time.perf_counter()
r = redis.Redis.from_url({url!r})
r.ping()
r.close()
t1 = time.perf_counter()
print(json.dumps({{"plain_ms": (t1 - t0) * 1000, "end": time.time()}}))
"""

INSIDE_SYNC = """
import json, threading, time
import redis
threads = threading.active_count()
t0 = time.perf_counter()
from resilience import Breaker, Settings
t1 = time.perf_counter()
with Breaker(Settings(redis_url={url!r}, key_prefix="life")) as b:
    guarded = b.guard("openai", "gpt-4o")(lambda: 1)
    t2 = time.perf_counter()
    guarded()
    t3 = time.perf_counter()
t4 = time.perf_counter()
print(json.dumps({{"import_ms": (t1 - t0) * 1000, "construct_ms": (t2 - t1) * 1000,
                  "first_call_ms": (t3 - t2) * 1000, "close_ms": (t4 - t3) * 1000,
                  "total_ms": (t4 - t0) * 1000,
                  "left": threading.active_count() - threads, "end": time.time()}}))
"""

INSIDE_ASYNC = """
import asyncio, json, time
import redis
t0 = time.perf_counter()
from resilience import AsyncBreaker, Settings
t1 = time.perf_counter()
out = {{}}
async def run():
    a = time.perf_counter()
    ab = AsyncBreaker(Settings(redis_url={url!r}, key_prefix="life"))
    @ab.guard("openai", "gpt-4o")
    async def call():
        return 1
    c = time.perf_counter()
    await call()
    d = time.perf_counter()
    await ab.aclose()
    e = time.perf_counter()
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    out.update(construct_ms=(c - a) * 1000, first_call_ms=(d - c) * 1000,
               close_ms=(e - d) * 1000, left=len(left), run_s=(e - a) * 1000)
asyncio.run(run())
out.update(import_ms=(t1 - t0) * 1000, total_ms=out.pop("run_s") + (t1 - t0) * 1000)
out.update(end=time.time())
print(json.dumps(out))
"""

ASYNC_PLAIN = """
import asyncio, json, time
import redis.asyncio as aioredis
t0 = time.perf_counter()
async def run():
    r = aioredis.Redis.from_url({url!r})
    await r.ping()
    await r.aclose()
asyncio.run(run())
t1 = time.perf_counter()
print(json.dumps({{"plain_ms": (t1 - t0) * 1000, "end": time.time()}}))
"""


def walls(
    commands: list[tuple[str, list[str], dict[str, str]]], runs: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU times (user + system, ms) of ``runs`` runs of each command, after one
    warm-up round. The commands take turns (one run of each per round), so a change in the
    machine's load meanwhile weighs on every row alike, and a row's run can be compared with
    the reference's run of the same round; CPU time is what the process itself spent."""
    times: dict[str, tuple[list[float], list[float]]] = {
        label: ([], []) for label, _, _ in commands
    }
    for i in range(runs + 1):
        for label, argv, env in commands:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env)
            wall = (time.perf_counter() - start) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                times[label][0].append(wall)
                times[label][1].append(cpu * 1000)
    return times


def json_runs(
    scripts: dict[str, str], runs: int, env: dict[str, str]
) -> dict[str, list[dict[str, float]]]:
    """What each script printed (one JSON object), ``runs`` fresh processes each, taking
    turns, after one warm-up round; ``exit_ms`` is added: from the script's last statement
    (its ``end``, wall clock) to this process seeing it exit (the interpreter's shutdown)."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in scripts}
    for i in range(runs + 1):
        for name, source in scripts.items():
            done = subprocess.run(
                [sys.executable, "-c", source], check=True, capture_output=True, text=True, env=env
            )
            seen = time.time()
            if i:
                printed = json.loads(done.stdout)
                printed["exit_ms"] = (seen - printed.pop("end")) * 1000
                out[name].append(printed)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


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
    plain_label = "plain redis-py script: connect, PING, close"
    try:
        rows = walls(
            [
                ("bare interpreter (python -c pass)", [py, "-c", "pass"], base),
                ("import redis", [py, "-c", "import redis"], base),
                ("import resilience", [py, "-c", "import resilience"], base),
                (plain_label, [py, "-c", PLAIN.format(url=url)], base),
                ("with Breaker(...) around one guarded call",
                 [py, "-c", SYNC.format(url=url)], base),
                ("plain redis.asyncio script: asyncio.run(connect, PING, close)",
                 [py, "-c", ASYNC_PLAIN_PROCESS.format(url=url)], base),
                ("async with AsyncBreaker(...) around one guarded call",
                 [py, "-c", ASYNC.format(url=url)], base),
                ("resilience status (empty key prefix)", [py, "-m", "resilience", "status"], env),
            ],
            args.runs,
        )  # fmt: skip
        inside = json_runs(
            {
                "plain": INSIDE_PLAIN.format(url=url),
                "sync": INSIDE_SYNC.format(url=url),
                "async_plain": ASYNC_PLAIN.format(url=url),
                "async": INSIDE_ASYNC.format(url=url),
            },
            args.runs,
            base,
        )
    finally:
        server.stop()
        shutil.rmtree(cache, ignore_errors=True)
    ref_wall, ref_cpu = rows[plain_label]
    print(
        f"| process ({args.runs} runs) | wall ms, median | vs plain redis-py script "
        "| CPU ms, median | vs plain redis-py script | vs plain, same round (median) "
        "| fastest run vs plain's fastest |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, (w, c) in rows.items():
        paired = median([a - b for a, b in zip(w, ref_wall, strict=True)])
        print(
            f"| {label} | {median(w):.1f} | {median(w) - median(ref_wall):+.1f} "
            f"| {median(c):.1f} | {median(c) - median(ref_cpu):+.1f} | {paired:+.1f} "
            f"| {min(w) - min(ref_wall):+.1f} |"
        )
    print()
    print("Inside one process, after `import redis` (both pay it; the rows above swing with it):")
    print()
    print("| inside one process (median ms) | sync | async |")
    print("|---|---|---|")
    for what in ("import", "construct", "first_call", "close", "total"):
        s_ = median([r[f"{what}_ms"] for r in inside["sync"]])
        a_ = median([r[f"{what}_ms"] for r in inside["async"]])
        label = "import resilience" if what == "import" else what.replace("_", " ")
        if what == "total":
            label = "the whole pattern: import resilience, breaker around one call, close"
        print(f"| {label} | {s_:.2f} | {a_:.2f} |")
    plain_s = median([r["plain_ms"] for r in inside["plain"]])
    plain_a = median([r["plain_ms"] for r in inside["async_plain"]])
    print(f"| plain redis-py: connect, PING, close | {plain_s:.2f} | {plain_a:.2f} |")
    exit_s = median([r["exit_ms"] for r in inside["sync"]])
    exit_a = median([r["exit_ms"] for r in inside["async"]])
    exit_ps = median([r["exit_ms"] for r in inside["plain"]])
    exit_pa = median([r["exit_ms"] for r in inside["async_plain"]])
    print(f"| interpreter exit after the pattern | {exit_s:.2f} | {exit_a:.2f} |")
    print(f"| interpreter exit after the plain script | {exit_ps:.2f} | {exit_pa:.2f} |")
    extra_s = median([r["total_ms"] for r in inside["sync"]]) - plain_s
    extra_a = median([r["total_ms"] for r in inside["async"]]) - plain_a
    print(f"| **the pattern minus the plain script** | **{extra_s:+.2f}** | **{extra_a:+.2f}** |")
    threads = max(r["left"] for r in inside["sync"])
    tasks = max(r["left"] for r in inside["async"])
    print(f"| threads / tasks left after close (max) | {threads} | {tasks} |")
    for pattern, plain in (
        ("with Breaker(...) around one guarded call", plain_label),
        (
            "async with AsyncBreaker(...) around one guarded call",
            "plain redis.asyncio script: asyncio.run(connect, PING, close)",
        ),
    ):
        (pw, pc), (rw, rc) = rows[pattern], rows[plain]
        same = median([a - b for a, b in zip(pw, rw, strict=True)])
        print(
            f"\n{pattern} - {plain}: {median(pw) - median(rw):+.1f} ms wall "
            f"({same:+.1f} same round, {min(pw) - min(rw):+.1f} fastest), "
            f"{median(pc) - median(rc):+.1f} ms CPU"
        )
    status_w, status_c = rows["resilience status (empty key prefix)"]
    redis_w, redis_c = rows["import redis"]
    status_gap = median([a - b for a, b in zip(status_w, redis_w, strict=True)])
    print(
        f"resilience status - import redis: {median(status_w) - median(redis_w):+.1f} ms wall "
        f"({status_gap:+.1f} same round), {median(status_c) - median(redis_c):+.1f} ms CPU"
    )


if __name__ == "__main__":
    main()
