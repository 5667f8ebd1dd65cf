"""Fleet scale: what healthy guarded calls cost Redis as processes and targets grow.

N worker processes (1, 4, 8, 16) each call M targets (1, 1000) round robin in a loop, for a
few seconds, against one private redis-server on loopback, in four modes measured in the
same run:

* ``batched``: guarded calls with the defaults (successes summed, merged once a second);
* ``immediate``: guarded calls with ``success_flush_seconds=0`` (the slim success script);
* ``failing``: guarded calls to targets that keep failing (every call fails; the threshold
  is out of reach, so nothing trips): each call asks Redis to admit it and records its
  failure, two script calls;
* ``gate``: one EVALSHA of a Lua script doing one HMGET per call (the reference gate: the
  least a Lua-based breaker asks of Redis per call);
* ``ping``: one Redis PING per call (the floor of anything that asks Redis per call);
* ``in-process``: a minimal in-process breaker (a lock, a dict and a counter), no Redis.

Printed per run: calls/s (all processes), Redis server microseconds per call (INFO
commandstats ``usec`` of the commands clients sent; a script's usec includes the commands
it ran), Redis CPU %
(INFO cpu over the window), client p50 / p99 per call (µs), and Redis commands per call
(executed, including inside scripts; and sent by clients).

With ``--rate R`` each process makes R calls per second (a worker's pace rather than a
tight loop) and the table adds Redis commands per 1,000 calls (sent) and how many such
processes one Redis core would serve (1 s of Redis CPU over the Redis CPU seconds each
process costs per second).

    scripts/bench_fleet                          the full grid, 3 s per run
    scripts/bench_fleet --procs 1,4 --targets 1 --seconds 2
    scripts/bench_fleet --procs 16 --targets 10 --rate 100 --seconds 10 --modes batched,immediate
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from benchlib import RedisServer

from resilience import Breaker, Settings, Target

MODES = ("batched", "immediate", "failing", "gate", "ping", "in-process")
GATE = "return redis.call('HMGET', KEYS[1], 'state', 'open_until')"
INSIDE_SCRIPTS = {"time", "hgetall", "hset", "hmget", "hincrby", "pexpire", "zadd", "publish"}


class Down(Exception):
    status_code = 503


class InProcess:
    """The reference: an in-process breaker's decision and record (no Redis)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[Target, int] = {}
        self.open: dict[Target, float] = {}

    def call(self, target: Target) -> int:
        with self.lock:
            if self.open.get(target, 0.0) > time.monotonic():
                raise RuntimeError("open")
        result = 1
        with self.lock:
            self.counts[target] = self.counts.get(target, 0) + 1
        return result


@dataclass
class Report:
    calls: int
    latencies_us: list[float]


def pace(rate: float, start: float, i: int) -> None:
    """Sleeps until call ``i`` is due at ``rate`` calls/s (no wait when ``rate`` is 0)."""
    if rate > 0:
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def worker(mode: str, url: str, prefix: str, targets: int, rate: float, ready: Any, go: Any,
           stop: Any, out: Any) -> None:  # fmt: skip
    ts = [Target("fleet", f"m{i}") for i in range(targets)]
    lat: list[float] = []
    calls = 0
    if mode in ("batched", "immediate", "failing"):
        flush = 1.0 if mode == "batched" else 0.0
        s = Settings(
            redis_url=url,
            key_prefix=prefix,
            success_flush_seconds=flush,
            failure_threshold=10**9,
            min_calls=10**9,
        )
        with Breaker(s) as b:

            def call(model: str) -> int:
                if mode == "failing":
                    raise Down("503")
                return 1

            inner = b.guard("fleet", model_arg="model")(call)

            def guarded(model: str) -> None:
                with contextlib.suppress(Down):
                    inner(model=model)

            for t in ts:  # first successes are written at once; the view comes up
                guarded(model=t.model)
            deadline = time.monotonic() + 10
            while not b._engine.view.subscribed and time.monotonic() < deadline:
                time.sleep(0.01)
            for t in ts:
                guarded(model=t.model)
            b._sync_io().flush()
            ready.put(1)
            go.wait()
            i = 0
            begin = time.perf_counter()
            while not stop.is_set():
                pace(rate, begin, i)
                t0 = time.perf_counter()
                guarded(model=ts[i % targets].model)
                lat.append((time.perf_counter() - t0) * 1e6)
                i += 1
            calls = i
        out.put(Report(calls, lat[:: max(1, len(lat) // 20000)]))
        return
    client = redis.Redis.from_url(url)
    gate = client.register_script(GATE)
    keys = [f"{prefix}:{{fleet}}:t:{t.model}" for t in ts]
    ref = InProcess()
    ready.put(1)
    go.wait()
    i = 0
    begin = time.perf_counter()
    while not stop.is_set():
        pace(rate, begin, i)
        t0 = time.perf_counter()
        if mode == "ping":
            client.ping()
        elif mode == "gate":
            gate(keys=[keys[i % targets]])
        else:
            ref.call(ts[i % targets])
        lat.append((time.perf_counter() - t0) * 1e6)
        i += 1
    client.close()
    out.put(Report(i, lat[:: max(1, len(lat) // 20000)]))


def cpu_seconds(c: redis.Redis) -> float:
    info = c.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(
    server: RedisServer,
    mode: str,
    procs: int,
    targets: int,
    seconds: float,
    rate: float,
    breakdown: bool = False,
) -> list[str]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    prefix = f"fleet-{uuid.uuid4().hex[:6]}"
    ps = [
        ctx.Process(
            target=worker, args=(mode, server.url, prefix, targets, rate, ready, go, stop, out)
        )
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=120)
    c = server.client()
    c.ping()  # connected before the reset: its handshake is not counted
    server.reset_stats()
    cpu0 = cpu_seconds(c)
    start = time.perf_counter()
    go.set()
    time.sleep(seconds)
    # Read on the open connection before the workers stop: neither a new connection's
    # handshake nor the workers' closing is counted.
    cpu = cpu_seconds(c) - cpu0
    info = c.info("commandstats")
    wall = time.perf_counter() - start
    stop.set()
    outside = INSIDE_SCRIPTS | {"info", "config|resetstat"}
    usec = sum(int(v["usec"]) for k, v in info.items() if k.removeprefix("cmdstat_") not in outside)
    stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    reports = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(30)
    for key in c.scan_iter(match=f"{prefix}:*", count=1000):
        c.delete(key)
    c.close()
    calls = sum(r.calls for r in reports)
    lat = sorted(x for r in reports for x in r.latencies_us)
    executed = sum(v for k, v in stats.items() if k not in ("info", "config|resetstat"))
    sent = sum(v for k, v in stats.items() if k not in outside)
    if breakdown:
        us = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in info.items()}
        parts = ", ".join(
            f"{k} {1000 * v / max(1, calls):.2f} ({us[k] / max(1, v):.1f} µs each)"
            for k, v in sorted(stats.items(), key=lambda kv: -kv[1])
            if k not in ("info", "config|resetstat")
        )
        print(f"  {procs} x {mode}: commands per 1,000 calls: {parts}", file=sys.stderr)
    p50 = statistics.median(lat) if lat else 0.0
    p99 = lat[int(len(lat) * 0.99) - 1] if len(lat) > 1 else p50
    row = [
        str(procs),
        f"{targets:,}",
        mode,
        f"{calls / wall:,.0f}",
        f"{usec / max(1, calls):.3f}",
        f"{100 * cpu / wall:.0f}%",
        f"{p50:.1f} / {p99:.1f}",
        f"{executed / max(1, calls):.4f} / {sent / max(1, calls):.4f}",
    ]
    if rate > 0:
        per_process_s = cpu / wall / procs  # Redis CPU seconds per second, per process
        row.append(f"{1000 * sent / max(1, calls):.2f}")
        row.append(f"{1 / per_process_s:,.0f}" if per_process_s > 0 else "-")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,4,8,16", help="process counts (1,4,8,16)")
    parser.add_argument("--targets", default="1,1000", help="targets per process (1,1000)")
    parser.add_argument("--modes", default=",".join(MODES), help=", ".join(MODES))
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per run (3)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="calls/s per process (0: as fast as it can)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print (to stderr) the commands per 1,000 calls by name, sent and run by scripts",
    )
    args = parser.parse_args()
    server = RedisServer()
    head = [
        "processes",
        "targets",
        "mode",
        "calls/s",
        "Redis µs/call",
        "Redis CPU",
        "client p50 / p99 (µs)",
        "commands/call (executed / sent)",
    ]
    if args.rate > 0:
        head += ["commands sent per 1,000 calls", "such processes per Redis core"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    try:
        for procs in (int(x) for x in args.procs.split(",")):
            for targets in (int(x) for x in args.targets.split(",")):
                for mode in args.modes.split(","):
                    row = run(server, mode, procs, targets, args.seconds, args.rate, args.breakdown)
                    print("| " + " | ".join(row) + " |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
