"""How fast traffic returns after a provider recovers, and what a failing model costs meanwhile.

A local provider-like HTTP server on 127.0.0.1 and a fleet of worker processes calling it
through ``resilience.Router`` (a primary model, then a healthy fallback), on the real Redis
under a private key prefix (deleted afterwards). Every policy runs every scenario at once, each
(policy, scenario) pair on a model of its own, so one run of about 2.5 minutes fills the table
(``--scenarios flap --duration 605`` for ten minutes of flapping):

* ``outage``: the model answers 500 for ``--outage`` seconds, then heals (``--lanes`` copies,
  their heals ``--stagger`` seconds apart, so the heal falls at different points of a break);
* ``flap``: the model answers 500 for ``--flap-down`` seconds of every ``--flap-period``;
* ``429+RA`` / ``429``: 429s with a Retry-After (the seconds left in the provider's current
  ``--window``-second window) or without one, for ``--outage`` seconds;
* ``503+RA``: 503s with such a Retry-After, for ``--outage`` seconds.

Figures come from the server's own log of every request (ground truth) and the transitions
each policy's breakers logged in Redis (or the reference's cooldowns):

* ``to trip``: failing calls from the first failure until the first break ended (median of
  the copies);
* ``fails/min broken``: failing calls per minute after the first break, until the heal (all
  copies pooled);
* ``max at re-entry``: the most failing calls between one break's end and the next;
* ``heal -> traffic``: from the heal until the model serves at least half of its calls again
  (per outage copy: min / median / max);
* flapping: trips, failing calls per minute, the shortest stay between being let back in and
  tripping again, and the share of the healthy phases' calls the model served.

Policies: the library with its current ``Settings()`` defaults (``defaults``) and with other
break settings, the library's earlier defaults (``old``: 30 s doubled by every trip, a 503's
Retry-After ignored), and ``ref-30s``, a fixed 30 s cooldown after 5 failures in a minute
with no probe (how LiteLLM's Router cools a deployment down), as the reference.

Run ``scripts/bench_recovery --help`` for the options; ``--markdown`` prints the tables as the
README shows them. The figures hold only when the machine keeps up: the run reports transport
errors and Redis errors (a Redis call slower than ``redis_socket_timeout`` sends a worker's
decisions to its in-process breaker), and a busy machine should use a lower ``--rate``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import redis

from resilience import Classification, ErrorKind, Router, Settings, Target, classify
from resilience._breaker import Breaker
from resilience._durations import MAX_DURATION_S

REDIS_URL = os.environ.get("RESILIENCE_REDIS_URL", "redis://127.0.0.1:6379/0")
PROVIDER = "prov"
FALLBACK = Target("fallback", "backup")
WARMUP_S = 5.0
SCENARIOS = ("outage", "flap", "429+RA", "429", "503+RA")

# The library's policies: Settings overrides (the rest are Settings() defaults).
POLICIES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "defaults, no flap rule": {"flap_window_seconds": 0},
    "success streak (3)": {"half_open_successes": 3, "flap_window_seconds": 0},
    "10s + flap rule": {"open_seconds": 10},
    "30s x1": {"open_seconds": 30, "backoff_factor": 1, "flap_window_seconds": 0},
    # The earlier defaults: every trip doubled the break, for good (a flap window without end
    # comes closest; the earlier rule also counted failed probes of earlier outages).
    "old (30s x2)": {
        "open_seconds": 30,
        "backoff_factor": 2,
        "max_open_seconds": 600,
        "jitter": 0.1,
        "flap_window_seconds": MAX_DURATION_S,
        "flap_factor": 2,
    },
}
OLD = "old (30s x2)"
REFERENCE = "ref-30s"
REF_COOLDOWN_S = 30.0
REF_ALLOWED_FAILS = 5


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Lane:
    """One (policy, scenario) pair: its own model at the provider."""

    policy: str
    scenario: str
    copy: int
    fail_start: float  # seconds after t0
    fail_end: float  # the heal (math.inf: never)

    @property
    def model(self) -> str:
        return f"{self.policy}|{self.scenario}|{self.copy}"


@dataclass(frozen=True)
class Plan:
    t0: float  # wall clock (s since the epoch) when the lanes start
    end: float  # seconds after t0
    rate: float  # calls per second per lane, fleet-wide
    workers: int
    window: float
    flap_period: float
    flap_down: float
    prefix: str
    port: int
    lanes: tuple[Lane, ...]
    by_model: dict[str, Lane]

    def answer(self, model: str, now: float) -> tuple[int, dict[str, str]]:
        """Status and headers the provider gives ``model`` at wall-clock ``now``."""
        lane = self.by_model.get(model)
        if lane is None:
            return 404, {}
        t = now - self.t0
        if not lane.fail_start <= t < lane.fail_end:
            return 200, {}
        if lane.scenario == "flap":
            if (t - lane.fail_start) % self.flap_period >= self.flap_down:
                return 200, {}
            return 500, {}
        if lane.scenario == "outage":
            return 500, {}
        into = (t - lane.fail_start) % self.window
        wait = {"retry-after": str(max(1, math.ceil(self.window - into)))}
        if lane.scenario == "429+RA":
            return 429, wait
        if lane.scenario == "429":
            return 429, {}
        return 503, wait


def make_plan(args: argparse.Namespace, port: int) -> Plan:
    lanes: list[Lane] = []
    last_heal = WARMUP_S + args.outage + (args.lanes - 1) * args.stagger
    end = args.duration or last_heal + args.observe
    for policy in args.policies:
        for scenario in args.scenarios:
            if scenario == "outage":
                for i in range(args.lanes):
                    heal = WARMUP_S + args.outage + i * args.stagger
                    lanes.append(Lane(policy, scenario, i, WARMUP_S, heal))
            elif scenario == "flap":
                lanes.append(Lane(policy, scenario, 0, WARMUP_S, math.inf))
            else:
                lanes.append(Lane(policy, scenario, 0, WARMUP_S, WARMUP_S + args.outage))
    return Plan(
        t0=time.time() + args.startup,
        end=end,
        rate=args.rate,
        workers=args.workers,
        window=args.window,
        flap_period=args.flap_period,
        flap_down=args.flap_down,
        prefix=f"bench-recovery-{uuid.uuid4().hex[:8]}",
        port=port,
        lanes=tuple(lanes),
        by_model={lane.model: lane for lane in lanes},
    )


def policy_prefix(plan: Plan, policy: str) -> str:
    return f"{plan.prefix}-{list(POLICIES).index(policy) if policy in POLICIES else 'ref'}"


def settings_for(plan: Plan, policy: str) -> Settings:
    return Settings(redis_url=REDIS_URL, key_prefix=policy_prefix(plan, policy), **POLICIES[policy])


# --------------------------------------------------------------------------- the provider


@dataclass(frozen=True, slots=True)
class Request:
    time: float
    model: str
    status: int


class Provider:
    """The provider-like server: answers by the plan, logs every request."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def reply(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        now = time.time()
        try:
            model = str(json.loads(body)["model"])
        except (ValueError, KeyError, TypeError):
            return 400, {}, b'{"error": {"message": "no model", "type": "invalid_request"}}'
        assert self.plan is not None
        status, headers = self.plan.answer(model, now)
        with self._lock:
            self.log.append(Request(now, model, status))
        payload: dict[str, Any]
        if status == 200:
            payload = {"id": "c", "object": "chat.completion", "model": model, "choices": []}
        elif status == 429:
            payload = {"error": {"message": "Rate limit reached for requests", "type": "requests"}}
        elif status == 503:
            payload = {"error": {"message": "Service Unavailable", "type": "server_error"}}
        elif status == 500:
            payload = {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                }
            }
        else:
            payload = {"error": {"message": "model not found", "code": "model_not_found"}}
        return status, headers, json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # every worker thread connects at once when the run starts
    errors = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors += 1  # counted and reported with the clients' transport errors


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, headers, out = provider.reply(body)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --------------------------------------------------------------------------- the fleet


def old_classifier(error: object, provider: str | None) -> Classification | None:
    """The earlier behaviour: a trip never read a 503's Retry-After."""
    c = classify(error, provider)
    if c.kind in (ErrorKind.SERVER_ERROR, ErrorKind.OVERLOADED):
        return dataclasses.replace(c, retry_after_s=None)
    return c


class Reference:
    """A fixed cooldown shared through Redis, no probe: after ``REF_ALLOWED_FAILS`` failures
    within a minute the model is skipped for ``REF_COOLDOWN_S``, then every worker calls it
    again (LiteLLM's Router cooldown, in miniature)."""

    def __init__(self, client: redis.Redis, prefix: str, lane: Lane) -> None:
        self.r = client
        self.cool = f"{prefix}:cool:{lane.model}"
        self.fails = f"{prefix}:fails:{lane.model}"
        self.events = f"{prefix}:events:{lane.model}"

    def call(self, fn: Callable[[Target], str], primary: Target) -> None:
        if self.r.exists(self.cool):
            fn(FALLBACK)
            return
        try:
            fn(primary)
        except httpx.HTTPError:
            n = self.r.incr(self.fails)
            if n == 1:
                self.r.pexpire(self.fails, 60_000)
            now = time.time()  # before the cooldown starts: its recorded end is never late
            if n >= REF_ALLOWED_FAILS and self.r.set(
                self.cool, "1", nx=True, px=int(REF_COOLDOWN_S * 1000)
            ):
                self.r.rpush(self.events, f"{now}:{now + REF_COOLDOWN_S}")
                self.r.pexpire(self.events, 3_600_000)
            fn(FALLBACK)


def worker(plan: Plan, index: int, results: Any) -> None:
    """One worker process: a thread per lane, each calling at ``rate / workers`` per second."""
    logging.getLogger("resilience").setLevel(logging.CRITICAL)
    store_errors: list[tuple[float, str]] = []

    class StoreErrors:
        """Redis calls that failed (a timeout under CPU starvation, most likely): those
        decisions fell back to the process's own breaker, so the figures are not the
        fleet's; the run reports them."""

        def on_store_error(self, event: Any) -> None:
            store_errors.append((time.time() - plan.t0, "store"))

    breakers = {
        policy: Breaker(settings_for(plan, policy), hooks=[StoreErrors()])
        for policy in {lane.policy for lane in plan.lanes}
        if policy in POLICIES
    }
    client = redis.Redis.from_url(REDIS_URL)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{plan.port}",
        limits=httpx.Limits(max_connections=len(plan.lanes) + 4),
        timeout=10.0,
    )

    transport_errors: list[tuple[float, str]] = []

    def call(target: Target) -> str:
        if target == FALLBACK:
            return "fallback"
        body = {"model": target.model, "messages": [{"role": "user", "content": "hi"}]}
        try:
            http.post("/v1/chat/completions", json=body).raise_for_status()
        except httpx.TransportError as exc:  # not the provider's answer: the bench wants none
            transport_errors.append((time.time() - plan.t0, type(exc).__name__))
            raise
        return "primary"

    def run_lane(lane: Lane) -> None:
        primary = Target(PROVIDER, lane.model)
        if lane.policy == REFERENCE:
            ref = Reference(client, policy_prefix(plan, REFERENCE), lane)

            def once() -> None:
                ref.call(call, primary)

        else:
            classifier = old_classifier if lane.policy == OLD else None
            router = Router(breakers[lane.policy], [primary, FALLBACK], classifier=classifier)

            def once() -> None:
                router.call(lambda attempt: call(attempt.target))

        interval = plan.workers / plan.rate
        due = plan.t0 + random.uniform(0, interval)
        stop = plan.t0 + plan.end
        while due < stop:
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            elif wait < -interval:  # fell behind: skip, never burst
                due = time.time()
            with contextlib.suppress(Exception):
                once()
            due += interval

    threads = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in plan.lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    http.close()
    for b in breakers.values():
        b.close()
    client.close()
    results.put(transport_errors + store_errors)


# --------------------------------------------------------------------------- the figures


@dataclass
class Breaks:
    """What a policy did to one lane: trips (start, end of the break) and closes."""

    trips: list[tuple[float, float]]
    reopens: list[tuple[float, float]]  # failed probes, rate-limit re-openings
    closes: list[float]

    @property
    def ends(self) -> list[float]:
        return sorted(end for _, end in self.trips + self.reopens)


def breaks_of(plan: Plan) -> dict[str, Breaks]:
    out: dict[str, Breaks] = {lane.model: Breaks([], [], []) for lane in plan.lanes}
    policies = {lane.policy for lane in plan.lanes}
    for policy in policies & set(POLICIES):
        with Breaker(settings_for(plan, policy)) as b:
            for e in b.events(providers=[PROVIDER]):
                if e.model not in out:
                    continue
                br = out[e.model]
                at = e.time.timestamp()
                if e.to_state == "closed":
                    br.closes.append(at)
                elif e.to_state == "open":
                    end = e.open_until.timestamp() if e.open_until else at
                    (br.trips if e.from_state == "closed" else br.reopens).append((at, end))
    if REFERENCE in policies:
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        prefix = policy_prefix(plan, REFERENCE)
        for lane in plan.lanes:
            if lane.policy != REFERENCE:
                continue
            for item in client.lrange(f"{prefix}:events:{lane.model}", 0, -1):
                start, end = (float(x) for x in item.split(":"))
                out[lane.model].trips.append((start, end))
                out[lane.model].closes.append(end)
        client.close()
    return out


def heal_to_traffic(plan: Plan, lane: Lane, log: list[Request]) -> float | None:
    """Seconds from the heal until the model serves at least half its calls over a second."""
    heal = plan.t0 + lane.fail_end
    ok = [r.time for r in log if r.status == 200 and r.time >= heal]
    need = max(1, math.ceil(plan.rate * 0.5))
    for i, t in enumerate(ok):
        j = i
        while j < len(ok) and ok[j] < t + 1.0:
            j += 1
        if j - i >= need:
            return t - heal
    return None


@dataclass
class OutageFigures:
    to_trip: int
    per_min: float | None
    max_reentry: int
    heals: list[float | None]


def outage_figures(
    plan: Plan, lanes: list[Lane], logs: dict[str, list[Request]], br: dict[str, Breaks]
) -> OutageFigures:
    to_trip, reentry, heals = [], [], []
    broken_fails, broken_s = 0, 0.0
    for lane in lanes:
        log = logs.get(lane.model, [])
        start, heal = plan.t0 + lane.fail_start, plan.t0 + lane.fail_end
        fails = [r.time for r in log if r.status != 200 and start <= r.time < heal]
        b = br[lane.model]
        first_end = min((end for s, end in b.trips if s >= start), default=heal)
        first_end = min(first_end, heal)
        to_trip.append(sum(1 for t in fails if t < first_end))
        broken = [t for t in fails if t >= first_end]
        broken_fails += len(broken)
        broken_s += heal - first_end
        ends = [e for e in b.ends if first_end <= e < heal] or [first_end]
        bounds = [*ends, heal]
        counts = [sum(1 for t in broken if a <= t < z) for a, z in itertools.pairwise(bounds)]
        reentry.append(max(counts, default=0))
        heals.append(heal_to_traffic(plan, lane, log))
    return OutageFigures(
        to_trip=round(statistics.median(to_trip)),
        per_min=broken_fails * 60.0 / broken_s if broken_s > 1 else None,
        max_reentry=max(reentry),
        heals=heals,
    )


@dataclass
class FlapFigures:
    trips: int
    minutes: float
    per_min: float
    shortest_stay: float | None
    served: float


def flap_figures(plan: Plan, lane: Lane, log: list[Request], b: Breaks) -> FlapFigures:
    start, stop = plan.t0 + lane.fail_start, plan.t0 + plan.end
    minutes = (stop - start) / 60.0
    fails = sum(1 for r in log if r.status != 200 and r.time >= start)
    trips = sorted(s for s, _ in b.trips if s >= start)
    stays = []
    for close in b.closes:
        later = [t for t in trips if t > close]
        if later:
            stays.append(later[0] - close)
    healthy = 0.0
    cycle = lane.fail_start
    while cycle < plan.end:
        healthy += max(0.0, min(cycle + plan.flap_period, plan.end) - (cycle + plan.flap_down))
        cycle += plan.flap_period
    served = sum(1 for r in log if r.status == 200 and r.time >= start)
    return FlapFigures(
        trips=len(trips),
        minutes=minutes,
        per_min=fails / minutes,
        shortest_stay=min(stays) if stays else None,
        served=served / max(1.0, healthy * plan.rate),
    )


def _s(v: float | None, unit: str = " s") -> str:
    return "never" if v is None else f"{v:.1f}{unit}"


def _heals(values: list[float | None], left: float) -> str:
    """min / median / max; a heal with no traffic before the run ended counts as ``left``."""
    known = sorted(v for v in values if v is not None)
    missing = len(values) - len(known)
    if not known:
        return f"> {left:.0f} s"
    if len(values) == 1:
        return _s(known[0])
    text = f"{known[0]:.1f} / {statistics.median(known):.1f} / {known[-1]:.1f} s"
    return text + (f" ({missing} > {left:.0f} s)" if missing else "")


def table(rows: list[list[str]], header: list[str], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*r) for r in rows]
    )


def report(plan: Plan, log: list[Request], markdown: bool) -> str:
    logs: dict[str, list[Request]] = {}
    for r in log:
        logs.setdefault(r.model, []).append(r)
    br = breaks_of(plan)
    policies = list(dict.fromkeys(lane.policy for lane in plan.lanes))
    rows: list[list[str]] = []
    flap_rows: list[list[str]] = []
    for scenario in dict.fromkeys(lane.scenario for lane in plan.lanes):
        for policy in policies:
            lanes = [x for x in plan.lanes if x.policy == policy and x.scenario == scenario]
            if scenario == "flap":
                f = flap_figures(plan, lanes[0], logs.get(lanes[0].model, []), br[lanes[0].model])
                flap_rows.append(
                    [
                        policy,
                        str(f.trips),
                        f"{f.per_min:.1f}",
                        _s(f.shortest_stay),
                        f"{f.served * 100:.0f} %",
                    ]
                )
                continue
            o = outage_figures(plan, lanes, logs, br)
            rows.append(
                [
                    scenario,
                    policy,
                    str(o.to_trip),
                    "-" if o.per_min is None else f"{o.per_min:.1f}",
                    str(o.max_reentry),
                    _heals(o.heals, plan.end - max(x.fail_end for x in lanes)),
                ]
            )
    out = []
    if rows:
        out.append(
            table(
                rows,
                [
                    "scenario",
                    "policy",
                    "to trip",
                    "fails/min broken",
                    "max at re-entry",
                    "heal -> traffic",
                ],
                markdown,
            )
        )
    if flap_rows:
        minutes = (plan.end - WARMUP_S) / 60.0
        out.append(
            f"flapping: 500s for {plan.flap_down:.0f} s of every {plan.flap_period:.0f} s, "
            f"over {minutes:.1f} min"
        )
        out.append(
            table(
                flap_rows,
                ["policy", "trips", "fails/min", "shortest stay", "healthy calls served"],
                markdown,
            )
        )
    return "\n\n".join(out)


def cleanup(plan: Plan) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{plan.prefix}-*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def describe(plan: Plan, args: argparse.Namespace) -> str:
    d = Settings()
    return (
        f"{args.workers} worker processes, {args.rate:g} calls/s per (policy, scenario), "
        f"outages of {args.outage:g} s ({args.lanes} copies healed {args.stagger:g} s apart), "
        f"{plan.end:.0f} s run\n"
        f"defaults: open_seconds={d.open_seconds:g} backoff_factor={d.backoff_factor:g} "
        f"max_open_seconds={d.max_open_seconds:g} jitter={d.jitter:g} "
        f"flap_window_seconds={d.flap_window_seconds:g} flap_factor={d.flap_factor:g} "
        f"retry_after_floor_seconds={d.retry_after_floor_seconds:g} "
        f"rate_limit_default_seconds={d.rate_limit_default_seconds:g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--rate", type=float, default=6.0, help="calls/s per lane, fleet-wide")
    parser.add_argument("--outage", type=float, default=40.0, help="failing time (s)")
    parser.add_argument("--lanes", type=int, default=6, help="outage copies per policy")
    parser.add_argument("--stagger", type=float, default=10.0, help="between their heals (s)")
    parser.add_argument("--observe", type=float, default=45.0, help="after the last heal (s)")
    parser.add_argument("--duration", type=float, default=0.0, help="whole run (s; 0: computed)")
    parser.add_argument("--flap-period", type=float, default=30.0, help="flapping cycle (s)")
    parser.add_argument("--flap-down", type=float, default=10.0, help="failing part of it (s)")
    parser.add_argument("--window", type=float, default=10.0, help="Retry-After window (s)")
    parser.add_argument("--startup", type=float, default=4.0, help="for workers to start (s)")
    parser.add_argument(
        "--policies",
        nargs="+",
        default=[*POLICIES, REFERENCE],
        choices=[*POLICIES, REFERENCE],
        metavar="POLICY",
        help=f"of: {', '.join(repr(p) for p in [*POLICIES, REFERENCE])}",
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS, metavar="SCENARIO"
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    if args.workers < 1 or args.rate <= 0 or args.lanes < 1 or args.outage <= 0:
        parser.error("--workers, --rate, --lanes and --outage must be positive")
    if not 0 < args.flap_down < args.flap_period:
        parser.error("--flap-down must be between 0 and --flap-period")

    provider = Provider()
    plan = make_plan(args, provider.port)
    provider.plan = plan
    provider.thread.start()
    print(describe(plan, args), file=sys.stderr)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(plan, i, results), daemon=True)
        for i in range(args.workers)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=plan.t0 + plan.end - time.time() + 60)
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise SystemExit(f"bench_recovery: a worker failed (exit codes {bad})")
        print(report(plan, provider.log, args.markdown))
        errors = [e for _ in procs for e in results.get(timeout=5)]
        print(f"\n{len(provider.log)} calls reached the provider", file=sys.stderr)
        if provider.server.errors:
            print(f"{provider.server.errors} requests failed in the server", file=sys.stderr)
        if errors:
            kinds = ", ".join(sorted({name for _, name in errors}))
            times = f"{min(t for t, _ in errors):.1f}-{max(t for t, _ in errors):.1f} s"
            print(
                f"{len(errors)} transport or Redis errors ({kinds}) at {times}: lower --rate "
                "or fewer --policies if the machine is busy",
                file=sys.stderr,
            )
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        provider.server.shutdown()
        cleanup(plan)


if __name__ == "__main__":
    main()
