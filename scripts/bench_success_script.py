"""What one immediate success costs Redis inside ``success.lua``, beside a one-HMGET gate and
the parts the script is made of, on a private redis-server in one run.

Each script runs ``--calls`` times (pipelined, so the client does not matter) against one
target hash laid out as the library writes a healthy target's (14 fields, in the order
record.lua creates them), ``--rounds`` rounds taking turns; printed: the median of the
rounds' ``INFO commandstats`` microseconds per EVALSHA (a script's time includes the
commands it runs), and the ratio to the gate.

* ``gate``: ``HMGET`` of two fields (the reference: the least a Lua gate asks of Redis);
* ``success.lua``: the library's script, as shipped;
* ``floor: TIME + HMGET + HSET``: the three commands a success needs (server time, the
  fields that say the target is plainly healthy, the counters written), with no check, no
  arithmetic and a constant reply: no script that checks and counts can cost less;
* ``TIME + HMGET`` and ``empty script``: what the floor is made of.

    scripts/bench_success_script [--calls 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchlib import RedisServer

ROOT = Path(__file__).resolve().parent.parent

FIELDS = ("gen", "wt", "wf", "latency_ms", "last_success_time", "since", "state",
          "consecutive_errors", "success_count", "pt", "provider", "pf", "model", "wb")  # fmt: skip

SCRIPTS = {
    "gate: HMGET of two fields": "return redis.call('HMGET', KEYS[1], 'state', 'open_until')",
    "success.lua": (ROOT / "resilience" / "lua" / "success.lua").read_text(),
    "floor: TIME + HMGET + HSET": """
local t = redis.call('TIME')
local f = redis.call('HMGET', KEYS[1], 'state', 'consecutive_errors', 'wb', 'success_count', 'wt')
redis.call('HSET', KEYS[1], 'success_count', f[4], 'wt', f[5], 'last_success_time', t[1])
return 1
""",
    "TIME + HMGET": """
local t = redis.call('TIME')
local f = redis.call('HMGET', KEYS[1], 'state', 'consecutive_errors', 'wb', 'success_count', 'wt')
return 1
""",
    "empty script": "return 1",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="EVALSHAs per script per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (7)")
    args = parser.parse_args()
    window_ms = 3_600_000
    server = RedisServer()
    try:
        r = server.client()
        key = "bench:{openai}:t:gpt-4o"
        shas = {name: r.script_load(text) for name, text in SCRIPTS.items()}
        usec: dict[str, list[float]] = {name: [] for name in SCRIPTS}
        for _ in range(args.rounds):
            for name, sha in shas.items():
                seconds, micros = r.time()
                now = seconds * 1000 + micros // 1000
                r.delete(key)
                r.hset(key, mapping={f: "12345" for f in FIELDS})
                healthy = {"state": "closed", "consecutive_errors": "0", "success_count": "5",
                           "wb": str(now // window_ms), "wt": "3", "provider": "openai",
                           "model": "gpt-4o"}  # fmt: skip
                r.hset(key, mapping=healthy)
                server.reset_stats()
                pipe = r.pipeline(transaction=False)
                for i in range(args.calls):
                    pipe.evalsha(sha, 1, key, window_ms)
                    if i % 1000 == 999:
                        pipe.execute()
                pipe.execute()
                stats = r.info("commandstats")["cmdstat_evalsha"]
                usec[name].append(stats["usec"] / stats["calls"])
                if (
                    name == "success.lua"
                    and int(r.hget(key, "success_count") or 0) != 5 + args.calls
                ):
                    print("success.lua did not count every success", file=sys.stderr)
                    return 1
        gate = statistics.median(usec["gate: HMGET of two fields"])
        print(f"| script ({args.rounds} rounds x {args.calls:,} calls) | Redis µs per call "
              "(median) | x gate |")  # fmt: skip
        print("|---|---|---|")
        for name, values in usec.items():
            m = statistics.median(values)
            print(f"| {name} | {m:.2f} | {m / gate:.2f} |")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
