"""Concurrency claims, proven with real processes against the real Redis."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from resilience import Breaker, ErrorKind, Settings, Target
from tests.conftest import make_settings, subscribed

T = Target("openai", "gpt-4o")
PROCESSES = 8


def _fail_until_denied(settings: dict[str, Any], barrier: Any, out: Any) -> None:
    """Each process: admit, record a failure, repeat until admission is refused."""
    transitions: list[str] = []

    class Hook:
        def on_transition(self, e: Any) -> None:
            transitions.append(f"{e.from_state}>{e.to_state}")

    admitted: list[tuple[str, int | None]] = []
    with Breaker(Settings(**settings), hooks=[Hook()]) as b:
        barrier.wait()
        for _ in range(50):
            try:
                permit = b.acquire(T)
            except Exception:
                break
            admitted.append((permit.source, permit.admitted_at_ms))
            b.record_failure(T, ErrorKind.SERVER_ERROR, permit=permit)
    out.put({"admitted": admitted, "transitions": transitions})


def _probe_once(settings: dict[str, Any], barrier: Any, out: Any) -> None:
    with Breaker(Settings(**settings)) as b:
        barrier.wait()
        answers = [b.allow(T) for _ in range(20)]
        # close() gives an unused probe lease back (the next caller probes at once):
        # every process answers before any closes
        barrier.wait()
    out.put(sum(answers))


def _run(fn: Any, settings: Settings) -> list[Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    values = settings.model_dump()
    procs = [ctx.Process(target=fn, args=(values, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_eight_processes_trip_exactly_once(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=5, open_seconds=60)
    results = _run(_fail_until_denied, settings)
    admitted = [a for r in results for a in r["admitted"]]
    transitions = [t for r in results for t in r["transitions"]]

    with Breaker(settings) as b:
        state = b.state(T)
        events = b.events()
    # exactly one transition, reported to exactly one process, logged once
    assert transitions == ["closed>open"]
    assert [(e.from_state, e.to_state) for e in events] == [("closed", "open")]
    assert state.state == "open" and state.trips == 1
    # no count lost: every admitted call's failure was counted
    assert state.error_count == len(admitted)
    assert 5 <= len(admitted) <= 5 + PROCESSES - 1
    # no call admitted after the trip was committed: every admission was decided by Redis
    # (a failing target is never answered from a local view) at or before the trip's time
    trip_ms = int(events[0].id.split("-")[0])
    assert all(source == "redis" for source, _ in admitted)
    assert all(at is not None and at <= trip_ms for _, at in admitted)


def test_eight_processes_after_the_break_admit_exactly_one_probe(
    redis_url: str, prefix: str
) -> None:
    settings = make_settings(
        redis_url, prefix, failure_threshold=1, open_seconds=0.5, probe_lease_seconds=60
    )
    with Breaker(settings) as b:
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        assert b.state(T).state == "open"
    time.sleep(0.6)
    results = _run(_probe_once, settings)
    assert sum(results) == 1
    with Breaker(settings) as b:
        assert b.state(T).state == "half_open"


def _forked_child(b: Breaker, out: Any) -> None:
    # the parent's view said "healthy"; the child must not trust it without its own
    # subscription, so its first answer comes from Redis and sees the trip
    local = b._engine.view.decide(T)
    out.put((local is None, b.allow(T)))


def test_forked_children_do_not_trust_the_parents_view(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1, local_view_max_age_seconds=60)
    ctx = mp.get_context("fork")
    with Breaker(settings) as parent, Breaker(settings) as other:
        assert parent.allow(T)
        deadline = time.monotonic() + 5
        while not subscribed(parent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert parent.allow(T)  # answered locally from now on
        other.record_failure(T, ErrorKind.SERVER_ERROR)  # trips
        out = ctx.Queue()
        procs = [ctx.Process(target=_forked_child, args=(parent, out)) for _ in range(4)]
        for p in procs:
            p.start()
        results = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=10)
    assert results == [(True, False)] * 4


def _mixed_outcomes(settings: dict[str, Any], barrier: Any, out: Any) -> None:
    """300 outcomes per process on 3 targets, failures never consecutive enough to trip."""
    targets = [Target("openai", f"m{i}") for i in range(3)]
    counts = {str(t): [0, 0] for t in targets}
    with Breaker(Settings(**settings)) as b:
        barrier.wait()
        for i in range(300):
            t = targets[i % 3]
            if i % 4 == 0:
                b.record_failure(t, ErrorKind.TIMEOUT)
                counts[str(t)][0] += 1
            else:
                b.record_success(t, latency_s=0.01)
                counts[str(t)][1] += 1
    out.put(counts)


def test_eight_processes_lose_no_count(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1000, min_calls=100_000)
    results = _run(_mixed_outcomes, settings)
    with Breaker(settings) as b:
        stored = {str(s.target): (s.error_count, s.success_count) for s in b.states()}
    expected = {
        name: (sum(r[name][0] for r in results), sum(r[name][1] for r in results))
        for name in results[0]
    }
    assert stored == expected
    assert sum(e + s for e, s in stored.values()) == PROCESSES * 300
