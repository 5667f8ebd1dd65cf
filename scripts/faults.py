"""Fault injection against a private Redis under load: what callers see when Redis fails.

Starts a private ``redis-server`` on a free loopback port, N worker processes (default 4)
making guarded calls in a loop through one ``Breaker`` each (a healthy target, a failing
one that never trips, and one an operator blocked for the whole run), injects one fault per
scenario, and prints per scenario:

* foreign exceptions: exceptions other than the provider's own error or ``CircuitOpenError``
  that reached a caller (must be 0);
* admitted to open: calls admitted to the blocked target (must be 0);
* counts lost: outcomes made by the workers that the Redis counters do not hold at the end;
* recovery: seconds from the end of the fault until the workers' outcomes reach Redis again.

Scenarios: Redis killed (``kill -9``) and restarted with its data (AOF) and empty,
``CLIENT PAUSE`` for 2 s, ``SCRIPT FLUSH`` every 50 ms for 2 s, a black-holed connection
(a proxy that stops answering) for 2 s, and ``maxmemory`` reached with ``noeviction`` for 2 s.

    scripts/faults                    every scenario, 4 workers
    scripts/faults --workers 8 --only pause,blackhole
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from benchlib import RedisServer as Server

from resilience import Breaker, CircuitOpenError, Settings, Target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ha import Endpoint as Proxy
from tests.ha import ProviderError

HEALTHY = Target("faults", "healthy")
FAILING = Target("faults", "failing")
BLOCKED = Target("faults", "blocked")
PREFIX = "faults"


@dataclass
class Counts:
    successes: int = 0
    failures: int = 0
    refused_blocked: int = 0
    admitted_to_open: int = 0
    foreign: int = 0
    foreign_names: str = ""


def worker(url: str, stop: Any, out: Any, ready: Any, first: int) -> None:
    settings = Settings(
        redis_url=url,
        key_prefix=PREFIX,
        failure_threshold=10**6,
        failure_rate_threshold=1.0,
        min_calls=10**6,
        redis_socket_timeout=0.25,
        redis_connect_timeout=0.25,
        store_retry_seconds=0.25,
    )
    counts = Counts()
    with Breaker(settings) as b:

        @b.guard(HEALTHY.provider, HEALTHY.model)
        def healthy() -> int:
            return 1

        @b.guard(FAILING.provider, FAILING.model)
        def failing() -> int:
            raise ProviderError("upstream 500")

        @b.guard(BLOCKED.provider, BLOCKED.model)
        def blocked() -> int:
            return 1

        calls: list[tuple[Callable[[], int], str]] = [
            (healthy, "successes"),
            (failing, "failures"),
            (blocked, "blocked"),
        ]
        i = first
        while not stop.is_set():
            fn, what = calls[i % 3]
            i += 1
            if i == first + 3:
                ready.put(first)  # every target seen once: the worker knows what Redis knows
            try:
                fn()
                if what == "successes":
                    counts.successes += 1
                elif what == "blocked":
                    counts.admitted_to_open += 1
            except ProviderError:
                counts.failures += 1
            except CircuitOpenError:
                if what == "blocked":
                    counts.refused_blocked += 1
                else:
                    counts.foreign += 1  # a healthy target refused: counted as wrong too
                    counts.foreign_names = "CircuitOpenError on a target that is not open"
            except Exception as exc:
                counts.foreign += 1
                counts.foreign_names = type(exc).__name__
            time.sleep(0.002)
    out.put(counts)


@dataclass
class Result:
    name: str
    foreign: int
    admitted_to_open: int
    made: int
    recorded: int
    recovery_s: float | None
    note: str = ""

    @property
    def lost(self) -> int:
        return self.made - self.recorded


def recorded(server: Server) -> tuple[int, int]:
    c = server.client()
    try:
        key = f"{PREFIX}:{{faults}}:t:"
        h = c.hgetall(key + "healthy")
        f = c.hgetall(key + "failing")
        return int(h.get("success_count", 0)), int(f.get("error_count", 0))
    finally:
        c.close()


@contextlib.contextmanager
def fleet(url: str, workers: int) -> Iterator[tuple[Any, list[Counts]]]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    out = ctx.Queue()
    ready = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, stop, out, ready, i)) for i in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    results: list[Counts] = []
    try:
        yield stop, results
    finally:
        stop.set()
        for _ in procs:
            results.append(out.get(timeout=30))
        for p in procs:
            p.join(timeout=10)


def wait_recovery(server: Server, start: float, timeout: float = 20.0) -> float | None:
    """Seconds from ``start`` until the workers' outcomes reach Redis again."""
    before = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = sum(recorded(server))
        except redis.RedisError:
            time.sleep(0.02)
            continue
        if before is None:
            before = now
        elif now > before:
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def run_scenario(name: str, workers: int, fault: Callable[[Server, Proxy], None]) -> Result:
    server = Server(aof=True)
    proxy = Proxy(server)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        with Breaker(Settings(redis_url=server.url, key_prefix=PREFIX)) as admin:
            admin.block(BLOCKED, 3600, "blocked for the whole run")
        with fleet(url, workers) as (_stop, results):
            time.sleep(2.0)  # warm: scripts loaded, views subscribed
            fault(server, proxy)
            end = time.monotonic()
            recovery = wait_recovery(server, end)
            time.sleep(2.0)
        time.sleep(0.3)
        names = {r.foreign_names for r in results if r.foreign_names}
        return Result(
            name,
            foreign=sum(r.foreign for r in results),
            admitted_to_open=sum(r.admitted_to_open for r in results),
            made=sum(r.successes + r.failures for r in results),
            recorded=sum(recorded(server)),
            recovery_s=recovery,
            note=", ".join(sorted(names)),
        )
    finally:
        proxy.close()
        server.stop()


def kill_restart(with_data: bool) -> Callable[[Server, Proxy], None]:
    def fault(server: Server, proxy: Proxy) -> None:
        server.kill()
        if not with_data:
            server.wipe()
        time.sleep(2.0)
        server.start()

    return fault


def client_pause(server: Server, proxy: Proxy) -> None:
    c = server.client()
    c.execute_command("CLIENT", "PAUSE", "2000", "ALL")
    c.close()
    time.sleep(2.0)


def script_flush(server: Server, proxy: Proxy) -> None:
    c = server.client()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        c.script_flush()
        time.sleep(0.05)
    c.close()


def blackhole(server: Server, proxy: Proxy) -> None:
    proxy.black.set()
    time.sleep(2.0)
    proxy.black.clear()


def out_of_memory(server: Server, proxy: Proxy) -> None:
    c = server.client()
    used = int(c.info("memory")["used_memory"])
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("maxmemory", str(max(1, used // 2)))
    time.sleep(2.0)
    c.config_set("maxmemory", "0")
    c.close()


SCENARIOS: dict[str, tuple[str, Callable[[Server, Proxy], None]]] = {
    "kill-data": ("kill -9, restart with its data", kill_restart(True)),
    "kill-empty": ("kill -9, restart empty", kill_restart(False)),
    "pause": ("CLIENT PAUSE 2 s", client_pause),
    "flush": ("SCRIPT FLUSH every 50 ms, 2 s", script_flush),
    "blackhole": ("black-holed connection, 2 s", blackhole),
    "oom": ("maxmemory reached (noeviction), 2 s", out_of_memory),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("faults: redis-server is needed (scripts/services installs it)", file=sys.stderr)
        return 2
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    print(f"{args.workers} worker processes, one Breaker each, guarded calls every ~2 ms")
    print()
    header = (
        "| scenario | foreign exceptions | admitted to open | outcomes made | "
        "counts lost | recovery |"
    )
    print(header)
    print("|---|---|---|---|---|---|")
    for key in chosen:
        title, fault = SCENARIOS[key]
        r = run_scenario(title, args.workers, fault)
        rec = f"{r.recovery_s:.2f} s" if r.recovery_s is not None else "none in 20 s"
        lost = f"{r.lost} ({100 * r.lost / max(1, r.made):.1f}%)"
        note = f" ({r.note})" if r.note else ""
        print(
            f"| {r.name} | {r.foreign}{note} | {r.admitted_to_open} | {r.made} | {lost} | {rec} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
