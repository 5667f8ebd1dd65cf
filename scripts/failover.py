"""Failover and outage replay under load: what callers see, what is lost, how long it takes.

Each scenario starts its own servers on private loopback ports (a master with a replica and
three sentinels, a Redis Cluster with a replica per master, a primary endpoint, a lone
redis-server with an append-only file), runs 4 worker processes (2 ``Breaker``, 2
``AsyncBreaker``) making guarded calls in a loop (a healthy target, a failing one that
never trips, one an operator blocked for the whole run), injects the fault, and prints:

* made: outcomes the workers made (successes and provider failures);
* lost: of those, how many the counters in Redis do not hold at the end (for an empty
  restart: beyond what Redis held at the crash, which the crash erases by definition);
  negative means counted twice (a write Redis applied whose reply the crash lost, counted
  again from the in-process sums);
* foreign: exceptions other than the provider's own or ``CircuitOpenError`` that reached
  a caller (must be 0); admitted to open: calls admitted to the blocked target (must be 0,
  but for an empty restart, which erases the block itself);
* Redis: seconds from the fault until Redis named the new master (sentinels, cluster,
  endpoint);
* recovered: seconds from the fault until calls were decided by the new master again (the
  promotion, the last call decided in-process, the last script the old master ran); for
  a restart, from the restart.

The tests (tests/test_failover.py, tests/test_replay.py) run the same scenarios and assert
on them; see docs/managed-redis.md for the bounds.

    scripts/failover
    scripts/failover --only sentinel-failover,sentinel-unfollowed
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ha import (  # the repository root is on the path only now
    ClusterSet,
    Outcome,
    cluster_scenario,
    endpoint_scenario,
    replay_scenario,
    sentinel_scenario,
)

SCENARIOS: dict[str, str] = {
    "sentinel-failover": "Sentinel: SENTINEL FAILOVER of the live master",
    "sentinel-unfollowed": "Sentinel: the same, redis-py's Sentinel support alone",
    "sentinel-kill": "Sentinel: kill -9 of the master",
    "endpoint": "primary endpoint: FAILOVER, then the name moved",
    "cluster-failover": "Cluster: CLUSTER FAILOVER of the workers' slot",
    "cluster-kill": "Cluster: kill -9 of the slot's master",
    "restart-data": "kill -9, restart with its data (AOF)",
    "restart-empty": "kill -9, restart empty",
}


def run(key: str, workers: int, cluster: Callable[[], ClusterSet]) -> Outcome:
    if key.startswith("sentinel-"):
        fault = "kill" if key == "sentinel-kill" else "failover"
        return sentinel_scenario(fault, follow=key != "sentinel-unfollowed", workers=workers)
    if key == "endpoint":
        return endpoint_scenario(workers=workers)
    if key.startswith("cluster-"):
        return cluster_scenario(cluster(), key.removeprefix("cluster-"), workers=workers)
    return replay_scenario(empty=key == "restart-empty", workers=workers)


def row(key: str, o: Outcome) -> str:
    lost = o.lost
    if key == "restart-empty" and o.recorded_at_fault is not None:
        lost -= o.recorded_at_fault
    pct = f"{100 * lost / max(1, o.made):.1f}%"
    foreign = f"{o.foreign}" + (f" ({', '.join(o.foreign_names)})" if o.foreign else "")
    redis_s = f"{o.redis_failover_s:.2f} s" if o.redis_failover_s is not None else "-"
    recovered = f"{o.back_s if key.startswith('restart-') else o.recovery_s:.2f} s"
    last = o.old_master_last_write
    if last is not None and o.stopped_at - last < 0.5:
        recovered = f"not in {o.run_s:.1f} s (the old master took writes to the end)"
    admitted = f"{o.admitted_to_open}" + (
        " (the block was erased)" if key.endswith("empty") else ""
    )
    return (
        f"| {SCENARIOS[key]} | {o.made} | {lost} ({pct}) | {foreign} | {admitted} "
        f"| {redis_s} | {recovered} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            print(f"failover: {tool} is needed (scripts/services installs it)", file=sys.stderr)
            return 2
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    logging.getLogger("resilience").setLevel(logging.ERROR)  # the workers' outage warnings
    print(f"{args.workers} worker processes (half Breaker, half AsyncBreaker), guarded calls")
    print("every ~2 ms each; store_retry_seconds 0.25, socket timeouts 0.25 s")
    print()
    print("| scenario | made | lost | foreign exceptions | admitted to open | Redis | recovered |")
    print("|---|---|---|---|---|---|---|")
    with contextlib.ExitStack() as stack:
        made: list[ClusterSet] = []

        def cluster() -> ClusterSet:  # one cluster for both cluster scenarios
            if not made:
                made.append(ClusterSet())
                stack.callback(made[0].stop)
            return made[0]

        for key in chosen:
            print(row(key, run(key, args.workers, cluster)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
