"""The demo's orchestration: provider, worker processes, live view, snapshot, summary.

:func:`run_demo` starts a :class:`~.provider.FakeProvider` on loopback, resets the demo's
targets in Redis (so every run starts clean under its key prefix), starts the worker
processes (``multiprocessing`` spawn), releases them together, redraws the live view while
they run, then reads the transitions and states from Redis, takes a snapshot into Postgres,
prints the report and a one-paragraph summary, and returns a :class:`DemoSummary`.

Where the figures come from:

* calls made and failures: the provider's own request log (ground truth);
* calls skipped (calls saved) and probes: the workers' hooks (``on_rejected``,
  ``on_allowed`` with ``probe``);
* trips, recoveries: the transitions in the Redis event log (``breaker.events()``), whose
  times come from the Redis server's clock, the same host clock the provider log uses;
* "calls the first trip took": requests the provider received for the model (for a
  provider-wide block: for any model of the provider) up to the first transition to open
  (its millisecond included: see :data:`TRANSITION_TIME_RESOLUTION_S`), across all workers
  together; requests that arrive within :data:`IN_FLIGHT_GRACE_S` after it
  were admitted before the trip and are counted apart as in flight;
* probe calls of a recovery: requests received between :data:`IN_FLIGHT_GRACE_S` after the
  first trip and the first transition back to closed;
* endpoint hints: the learned ``endpoint_hint`` of the final states, and the calls that were
  sent to a hint handed out at admission;
* compatibility hints: the learned ``compat`` of the final states (``TargetState.compat``);
  per hint, the calls refused with the error that teaches it (counted by the workers, which
  classify each failure: these are the calls that failed before the fleet adapted), the calls
  sent adapted by it (``attempt.adapt``, at once or as the router's retry of a refused call)
  and the requests that passed the model by without a call because they need what it lacks
  (``needs=``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_mod
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

import resilience
from resilience import (
    Breaker,
    CompatHint,
    ResilienceError,
    Settings,
    Target,
    TargetState,
    TransitionEvent,
)

from .provider import DEMO_MODELS, FakeProvider, ModelSpec, ProviderRequest
from .worker import (
    ROUTES,
    Route,
    TargetCounters,
    WorkerConfig,
    WorkerStats,
    is_endpoint,
    worker_main,
)

__all__ = [
    "DEMO_OVERRIDES",
    "IN_FLIGHT_GRACE_S",
    "DemoOptions",
    "DemoSummary",
    "HintSummary",
    "ModelSummary",
    "demo_settings",
    "run_demo",
    "summarize",
]

IN_FLIGHT_GRACE_S = 0.5
"""Requests a provider receives within this many seconds after a trip were admitted before
it (each worker has at most one call in flight; the fake provider answers in milliseconds)."""

TRANSITION_TIME_RESOLUTION_S = 0.001
"""Resolution of a transition's time (s): the event log keeps the Redis server's
milliseconds, so a request received within a transition's millisecond came before it (the
answer to it is what the transition counted)."""

DEMO_OVERRIDES: dict[str, Any] = {
    "failure_threshold": 3,
    "model_not_found_threshold": 2,
    "window_seconds": 10.0,
    "min_calls": 20,
    "failure_rate_threshold": 0.5,
    "open_seconds": 2.5,
    "backoff_factor": 2.0,
    "max_open_seconds": 20.0,
    "jitter": 0.0,
    "model_not_found_open_seconds": 3600.0,
    "provider_block_seconds": 3600.0,
    "rate_limit_default_seconds": 2.0,
    "half_open_successes": 1,
    "probe_lease_seconds": 5.0,
    "state_ttl_seconds": 3600,
}
"""Short, demo-friendly breaker settings (seconds): a break of 2.5 s, trips after 3
consecutive failures (2 for a missing model), no jitter so runs are comparable."""


def demo_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` (where Redis and Postgres are, key prefix, schema, kill switch, shadow mode)
    with the demo's thresholds from :data:`DEMO_OVERRIDES`, then ``overrides``."""
    values = base.model_dump()
    values.update(DEMO_OVERRIDES)
    values.update(overrides)
    return Settings(**values)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How the demo runs.

    Attributes:
        duration_s: how long the workers send requests (s).
        workers: worker processes.
        seed: seeds the provider's answers and each worker's choice of routes.
        interval_s: pause of each worker between two requests (s).
        live: redraw the live view (None: when the output is a terminal).
        refresh_s: how often the live view is redrawn (s); without a terminal a progress line
            is printed every ``5 * refresh_s``.
        snapshot: take a snapshot into Postgres at the end and print the report.
        migrate: apply pending Postgres migrations before the snapshot.
        metrics_port: serve Prometheus metrics of the fleet's state on 127.0.0.1 at this port
            while the demo runs (None: no metrics).
        overloaded_recover_s: seconds after its first request when the overloaded model
            recovers (keep it below ``open_seconds`` to see one probe close it).
        flaky_failure_rate: share of the flaky model's requests that fail.
        rate_limit_requests, rate_limit_window_s: the rate-limited model's budget.
        routes: the routes workers pick from.
    """

    duration_s: float = 20.0
    workers: int = 4
    seed: int = 7
    interval_s: float = 0.04
    live: bool | None = None
    refresh_s: float = 0.4
    snapshot: bool = True
    migrate: bool = True
    metrics_port: int | None = None
    overloaded_recover_s: float = 1.5
    flaky_failure_rate: float = 0.35
    rate_limit_requests: int = 4
    rate_limit_window_s: float = 2.0
    routes: tuple[Route, ...] = ROUTES

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError("duration must be > 0 seconds")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.interval_s < 0:
            raise ValueError("interval must be >= 0 seconds")


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """The figures of one model after the run.

    Attributes:
        provider, model, behaviour, label: the model and how the fake provider treats it.
        calls: requests the provider received for it (all workers).
        failures: of those, answered with an error status.
        calls_by_path: requests per endpoint path.
        ok_by_path: 2xx answers per endpoint path.
        first_trip_at: wall time (s since the epoch) of its first transition to open, or of
            its provider's first provider-wide block if that came first; None if never.
        first_trip_kind: what caused it (error kind).
        first_trip_provider_wide: True when the first trip was a provider-wide block.
        calls_to_first_trip: requests received up to the first trip (for a provider-wide
            block: for every model of the provider), across all workers.
        in_flight_at_trip: requests received within ``IN_FLIGHT_GRACE_S`` after the trip.
        opens: transitions of this model (not provider-wide) to open.
        recovered_at: wall time of the first transition back to closed after the first
            trip, or None.
        probe_calls: requests received between the first trip (plus the grace) and the
            recovery: the probes that closed it; None if it did not recover.
        skips: calls not sent because it was known to be failing (calls saved).
        shadow_skips: calls shadow mode let through that would have been skipped.
        probes: half-open probes handed out (workers' hooks).
        hint_calls: calls sent to a learned endpoint hint handed out at admission.
        retry_calls: immediate retries on the endpoint an error named.
        state: final state in Redis; blacklisted: calls skipped at the end.
        endpoint_hint: the learned hint at the end, or None.
        error_count, success_count: the counters in Redis at the end.
        compat: the compatibility hints learned for it at the end (``TargetState.compat``).
        refused_calls: calls refused with an error that teaches a compatibility hint.
        adapted_calls: calls sent adapted by a learned hint (``attempt.adapt``), at once or
            as the router's retry of a refused call.
        needs_skips: requests that passed it by without a call because they need what the
            fleet knows it lacks (``needs=``; not charged).
    """

    provider: str
    model: str
    behaviour: str
    label: str
    calls: int = 0
    failures: int = 0
    calls_by_path: dict[str, int] = field(default_factory=dict)
    ok_by_path: dict[str, int] = field(default_factory=dict)
    first_trip_at: float | None = None
    first_trip_kind: str | None = None
    first_trip_provider_wide: bool = False
    calls_to_first_trip: int | None = None
    in_flight_at_trip: int = 0
    opens: int = 0
    recovered_at: float | None = None
    probe_calls: int | None = None
    skips: int = 0
    shadow_skips: int = 0
    probes: int = 0
    hint_calls: int = 0
    retry_calls: int = 0
    state: str = "closed"
    blacklisted: bool = False
    endpoint_hint: str | None = None
    error_count: int = 0
    success_count: int = 0
    compat: tuple[CompatHint, ...] = ()
    refused_calls: int = 0
    adapted_calls: int = 0
    needs_skips: int = 0

    @property
    def target(self) -> Target:
        """The (provider, model) pair."""
        return Target(self.provider, self.model)


@dataclass(frozen=True, slots=True)
class HintSummary:
    """One compatibility hint the fleet learned for a model, and what it did.

    Attributes:
        provider, model: the model it was learned for.
        hint: the hint (one of the model's ``TargetState.compat`` at the end).
        refused: calls refused with the error that teaches it, across all workers: the
            calls that failed before the fleet adapted (the first one, plus those already
            in flight when it was recorded).
        adapted: calls sent adapted by it from the start (known at admission).
        retried: refused calls the router retried at once on the same model, adapted by it.
        routed_away: for a feature the model lacks, requests that went to another model
            without calling it (``needs=``; the demo's requests need tools only, so every
            such request of the model is counted for each of its feature hints).
    """

    provider: str
    model: str
    hint: CompatHint
    refused: int = 0
    adapted: int = 0
    retried: int = 0
    routed_away: int = 0

    @property
    def used(self) -> int:
        """Calls that used the hint once it was learned: adapted, or routed away."""
        return self.adapted + self.retried + self.routed_away


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo did, with the figures its summary paragraph states.

    Attributes:
        duration_s: how long the workers ran (s, measured).
        workers, seed: the options.
        requests: user requests the workers made (router calls).
        answered, unanswered: router calls some target answered / none did.
        calls: provider calls made (the provider's log, every model).
        failures: provider calls that failed.
        skipped: calls not sent to a model known to be failing (calls saved).
        shadow_skipped: calls shadow mode let through that would have been skipped.
        probes: half-open probes handed out.
        hints_learned: ``"provider/model"`` -> learned endpoint hint (an endpoint path; a
            capability hint such as ``capability:tools-unsupported`` is in ``compat``).
        hint_calls: calls sent to a learned endpoint hint.
        models: one :class:`ModelSummary` per demo model, in display order.
        events: the transitions of this run, oldest first.
        snapshot: a short description of the snapshot into Postgres, or None.
        report: the report text, or None.
        worker_errors: tracebacks of workers that crashed (empty on success).
        enabled, shadow: the kill switch and shadow mode of the run's settings.
        compat: the compatibility hints learned, one :class:`HintSummary` each, in the
            models' display order.
        tool_requests: requests that offered tools (routed with ``needs=Needs(tools=True)``).
    """

    duration_s: float
    workers: int
    seed: int
    requests: int
    answered: int
    unanswered: int
    calls: int
    failures: int
    skipped: int
    shadow_skipped: int
    probes: int
    hints_learned: dict[str, str]
    hint_calls: int
    models: tuple[ModelSummary, ...]
    events: tuple[TransitionEvent, ...] = ()
    snapshot: str | None = None
    report: str | None = None
    worker_errors: tuple[str, ...] = ()
    enabled: bool = True
    shadow: bool = False
    compat: tuple[HintSummary, ...] = ()
    tool_requests: int = 0

    def model(self, provider: str, model: str) -> ModelSummary:
        """The summary of one model; KeyError when it is not a demo model."""
        for m in self.models:
            if m.provider == provider and m.model == model:
                return m
        raise KeyError(f"{provider}/{model}")

    @property
    def ok(self) -> bool:
        """True when every worker finished without crashing."""
        return not self.worker_errors

    @property
    def text(self) -> str:
        """The one-paragraph summary with the figures."""
        return format_summary(self)


# --------------------------------------------------------------------------- figures


def _ts(event: TransitionEvent) -> float:
    return event.time.timestamp()


def _sum(stats: Iterable[WorkerStats], key: str, attr: str) -> int:
    total = 0
    for s in stats:
        c = s.targets.get(key)
        if c is not None:
            total += int(getattr(c, attr))
    return total


def _hint_summaries(
    spec: ModelSpec, hints: Sequence[CompatHint], stats: Sequence[WorkerStats]
) -> list[HintSummary]:
    c = counters_of(stats, Target(spec.provider, spec.model))
    return [
        HintSummary(
            spec.provider,
            spec.model,
            h,
            refused=c.refused.get(h.encode(), 0),
            adapted=c.adapted.get(h.encode(), 0),
            retried=c.adapted_retries.get(h.encode(), 0),
            routed_away=c.needs_skips if h.kind == "feature_unsupported" else 0,
        )
        for h in hints
    ]


def summarize(
    *,
    specs: Sequence[ModelSpec],
    log: Sequence[ProviderRequest],
    stats: Sequence[WorkerStats],
    events: Sequence[TransitionEvent],
    states: Sequence[TargetState],
    duration_s: float,
    seed: int,
    enabled: bool = True,
    shadow: bool = False,
    snapshot: str | None = None,
    report: str | None = None,
) -> DemoSummary:
    """Computes the figures from the provider log, the workers' counters and the Redis
    transitions and states (pure: no I/O)."""
    by_target = {(s.provider, s.model): s for s in states}
    events = sorted(events, key=lambda e: (_ts(e), e.id))
    models: list[ModelSummary] = []
    compat: list[HintSummary] = []
    for spec in specs:
        key = f"{spec.provider}/{spec.model}"
        mine = [r for r in log if r.provider == spec.provider and r.model == spec.model]
        by_path: dict[str, int] = {}
        ok_by_path: dict[str, int] = {}
        for r in mine:
            by_path[r.path] = by_path.get(r.path, 0) + 1
            if r.ok:
                ok_by_path[r.path] = ok_by_path.get(r.path, 0) + 1
        own = [e for e in events if e.provider == spec.provider and e.model == spec.model]
        wide = [e for e in events if e.provider == spec.provider and e.model is None]
        opens = [e for e in own if e.to_state == "open"]
        first_candidates = [e for e in (*opens, *wide) if e.to_state == "open"]
        first = min(first_candidates, key=_ts, default=None)
        to_trip: int | None = None
        in_flight = 0
        recovered_at: float | None = None
        probe_calls: int | None = None
        provider_wide = first is not None and first.model is None
        if first is not None:
            t = _ts(first)
            t_end = t + TRANSITION_TIME_RESOLUTION_S
            counted = (
                [r for r in log if r.provider == spec.provider and r.model]
                if provider_wide
                else mine
            )
            to_trip = sum(1 for r in counted if r.time < t_end)
            in_flight = sum(1 for r in counted if t_end <= r.time <= t + IN_FLIGHT_GRACE_S)
            closes = [
                e
                for e in (wide if provider_wide else own)
                if e.to_state == "closed" and _ts(e) >= t
            ]
            if closes:
                recovered_at = _ts(closes[0])
                closed_end = recovered_at + TRANSITION_TIME_RESOLUTION_S
                probe_calls = sum(1 for r in mine if t + IN_FLIGHT_GRACE_S < r.time < closed_end)
        st = by_target.get((spec.provider, spec.model))
        learned = st.compat if st is not None else ()
        compat.extend(_hint_summaries(spec, learned, stats))
        models.append(
            ModelSummary(
                provider=spec.provider,
                model=spec.model,
                behaviour=spec.behaviour,
                label=spec.label,
                calls=len(mine),
                failures=sum(1 for r in mine if not r.ok),
                calls_by_path=by_path,
                ok_by_path=ok_by_path,
                first_trip_at=None if first is None else _ts(first),
                first_trip_kind=None if first is None else first.kind,
                first_trip_provider_wide=provider_wide,
                calls_to_first_trip=to_trip,
                in_flight_at_trip=in_flight,
                opens=len(opens),
                recovered_at=recovered_at,
                probe_calls=probe_calls,
                skips=_sum(stats, key, "skips"),
                shadow_skips=_sum(stats, key, "shadow_skips"),
                probes=_sum(stats, key, "probes"),
                hint_calls=_sum(stats, key, "hint_calls"),
                retry_calls=_sum(stats, key, "retry_calls"),
                state=st.state if st is not None else "closed",
                blacklisted=st.blacklisted if st is not None else False,
                endpoint_hint=st.endpoint_hint if st is not None else None,
                error_count=st.error_count if st is not None else 0,
                success_count=st.success_count if st is not None else 0,
                compat=learned,
                refused_calls=_sum(stats, key, "refused_calls"),
                adapted_calls=_sum(stats, key, "adapted_calls"),
                needs_skips=_sum(stats, key, "needs_skips"),
            )
        )
    hints = {
        f"{s.provider}/{s.model}": s.endpoint_hint
        for s in states
        if s.endpoint_hint is not None
        and is_endpoint(s.endpoint_hint)
        and any((m.provider, m.model) == (s.provider, s.model) for m in specs)
    }
    return DemoSummary(
        duration_s=duration_s,
        workers=len(stats),
        seed=seed,
        requests=sum(s.requests for s in stats),
        answered=sum(s.answered for s in stats),
        unanswered=sum(s.unanswered for s in stats),
        calls=sum(1 for r in log if r.model),
        failures=sum(1 for r in log if r.model and not r.ok),
        skipped=sum(m.skips for m in models),
        shadow_skipped=sum(m.shadow_skips for m in models),
        probes=sum(m.probes for m in models),
        hints_learned=hints,
        hint_calls=sum(m.hint_calls for m in models),
        models=tuple(models),
        events=tuple(events),
        snapshot=snapshot,
        report=report,
        worker_errors=tuple(s.error for s in stats if s.error),
        enabled=enabled,
        shadow=shadow,
        compat=tuple(compat),
        tool_requests=sum(s.tool_requests for s in stats),
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_summary(s: DemoSummary) -> str:
    """The one-paragraph summary of a run, with its figures."""
    parts = [
        f"{_plural(s.workers, 'worker')} ran for {s.duration_s:.1f}s (seed {s.seed}) and made "
        f"{_plural(s.requests, 'request')} ({s.answered} answered, {s.unanswered} not). "
        f"They sent {_plural(s.calls, 'provider call')}, {s.failures} of which failed, and "
        f"skipped {_plural(s.skipped, 'call')} to models the fleet knew were failing "
        f"(calls saved); {_plural(s.probes, 'probe')} tested models after a break."
    ]
    if s.shadow:
        parts.append(
            f"Shadow mode was on: nothing was blocked; {s.shadow_skipped} calls would have "
            "been skipped."
        )
    if not s.enabled:
        parts.append("The kill switch was on (RESILIENCE_ENABLED=false): nothing was recorded.")
    trips: list[str] = []
    seen_providers: set[str] = set()
    for m in sorted(
        (m for m in s.models if m.first_trip_at is not None),
        key=lambda m: m.first_trip_at or 0.0,
    ):
        if m.first_trip_provider_wide:
            if m.provider in seen_providers:
                continue
            seen_providers.add(m.provider)
            who = f"provider {m.provider} (every model)"
        else:
            who = f"{m.provider}/{m.model}"
        extra = f" + {m.in_flight_at_trip} in flight" if m.in_flight_at_trip else ""
        trips.append(
            f"{who} after {_plural(m.calls_to_first_trip or 0, 'call')}{extra} "
            f"({m.first_trip_kind})"
        )
    if trips:
        parts.append(
            "First trips, counting calls across all workers together: " + "; ".join(trips) + "."
        )
    recoveries = [
        f"{m.provider}/{m.model} closed again through "
        f"{_plural(m.probe_calls or 0, 'probe call')} "
        f"{(m.recovered_at or 0.0) - (m.first_trip_at or 0.0):.1f}s after it opened"
        for m in s.models
        if m.recovered_at is not None and not m.first_trip_provider_wide
    ]
    if recoveries:
        parts.append("Recoveries: " + "; ".join(recoveries) + ".")
    if s.hints_learned:
        learned = ", ".join(f"{t} -> {h}" for t, h in sorted(s.hints_learned.items()))
        parts.append(
            f"Endpoint hints learned: {len(s.hints_learned)} ({learned}), used by "
            f"{_plural(s.hint_calls, 'call')} after they were learned."
        )
    else:
        parts.append("No endpoint hint was learned.")
    parts.append(_compat_text(s))
    if s.worker_errors:
        parts.append(f"{len(s.worker_errors)} worker(s) crashed; see the tracebacks above.")
    return " ".join(parts)


def _compat_text(s: DemoSummary) -> str:
    """The sentences on compatibility hints: per hint, the calls refused before the fleet
    adapted and the calls that used it afterwards."""
    if not s.compat:
        return "No compatibility hint was learned."
    told: list[str] = []
    for h in s.compat:
        used: list[str] = []
        if h.adapted or h.retried:
            what = "the retry of the refused call" if h.retried == 1 else "retries of refused calls"
            retried = ""
            if h.retried:
                retried = f" ({what})" if not h.adapted else f" ({h.retried} of them {what})"
            used.append(f"{_plural(h.adapted + h.retried, 'call')} sent adapted{retried}")
        if h.routed_away:
            needing = h.hint.feature or "it"
            used.append(
                f"{_plural(h.routed_away, 'request')} needing {needing} routed to another "
                "model without a call"
            )
        told.append(
            f"{h.provider}/{h.model} ({h.hint}): {_plural(h.refused, 'call')} refused before "
            f"the fleet adapted, then {' and '.join(used) or 'no call used it'}"
        )
    return f"Compatibility hints learned: {len(s.compat)}. " + "; ".join(told) + "."


# --------------------------------------------------------------------------- live view


def _left(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _state_text(st: TargetState | None, provider_until: float | None, now: float) -> str:
    """The state column: a provider-wide block (``provider_until``, wall time s) shows on
    every model of the provider, also on one without state of its own yet."""
    if provider_until is not None and provider_until > now:
        return f"provider blocked {_left(provider_until - now)}"
    if st is None:
        return "closed"
    if st.state == "open" and st.open_until is not None:
        left = st.open_until.timestamp() - now
        return f"open {_left(left)}" if left > 0 else "open, probe due"
    return st.state


def _hinted(stats: Sequence[WorkerStats], key: str) -> int:
    """Calls of one target that used a learned hint: sent to an endpoint hint or adapted,
    or requests routed away without a call for what they need."""
    return sum(_sum(stats, key, a) for a in ("hint_calls", "adapted_calls", "needs_skips"))


def render_table(
    specs: Sequence[ModelSpec],
    log: Sequence[ProviderRequest],
    stats: Sequence[WorkerStats],
    states: Sequence[TargetState] | None,
    elapsed_s: float,
    duration_s: float,
    recent: Sequence[str] = (),
    workers: int | None = None,
) -> list[str]:
    """The live view: one line per model (state from Redis, calls from the provider log,
    skips, probes and calls that used a learned hint from the workers), then the latest
    transition lines."""
    now = time.time()
    by_target = {(s.provider, s.model): s for s in states or ()}
    blocked: dict[str, float] = {}
    for row in states or ():
        if row.provider_blocked_until is not None:
            until = row.provider_blocked_until.timestamp()
            blocked[row.provider] = max(until, blocked.get(row.provider, 0.0))
    calls: dict[tuple[str, str], list[int]] = {}
    for r in log:
        c = calls.setdefault((r.provider, r.model), [0, 0])
        c[0] += 1
        c[1] += 0 if r.ok else 1
    requests = sum(s.requests for s in stats)
    width = max(len(f"{s.provider}/{s.model}") for s in specs) if specs else 10
    lines = [
        f"resilience demo  {elapsed_s:5.1f}s / {duration_s:.0f}s   "
        f"{workers if workers is not None else len(stats)} workers   {requests} requests   "
        f"{sum(1 for r in log if r.model)} calls   "
        f"{sum(1 for r in log if r.model and not r.ok)} failed   "
        f"{sum(_sum(stats, f'{s.provider}/{s.model}', 'skips') for s in specs)} saved",
        f"{'model':<{width}}  {'behaviour':<18} {'state':<22} {'calls':>6} {'fail':>5} "
        f"{'trips':>5} {'saved':>6} {'probes':>6} {'hinted':>6}",
    ]
    for spec in specs:
        key = f"{spec.provider}/{spec.model}"
        st = by_target.get((spec.provider, spec.model))
        n, failed = calls.get((spec.provider, spec.model), [0, 0])
        state = _state_text(st, blocked.get(spec.provider), now)
        lines.append(
            f"{key:<{width}}  {spec.label[:18]:<18} {state[:22]:<22} "
            f"{n:>6} {failed:>5} {(st.trips if st else 0):>5} "
            f"{_sum(stats, key, 'skips'):>6} {_sum(stats, key, 'probes'):>6} "
            f"{_hinted(stats, key):>6}"
        )
    if recent:
        lines.append("latest:")
        lines.extend(f"  {line[:150]}" for line in recent[-5:])
    return lines


class _Live:
    """Redraws the table in place on a terminal; prints a progress line otherwise."""

    def __init__(self, out: TextIO, tty: bool, refresh_s: float) -> None:
        self.out = out
        self.tty = tty
        self.refresh_s = refresh_s if tty else refresh_s * 5
        self._drawn = 0
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.refresh_s

    def draw(self, lines: list[str]) -> None:
        self._last = time.monotonic()
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}A\x1b[J")
            self.out.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self.out.write(lines[0] + "\n")
        self.out.flush()

    def note(self, line: str) -> None:
        if not self.tty:
            self.out.write(f"  {line}\n")
            self.out.flush()


# --------------------------------------------------------------------------- the run


def _reset_targets(breaker: Breaker, specs: Sequence[ModelSpec]) -> tuple[dict[str, str], int]:
    """Forgets what an earlier run left of the demo targets (state, counters, provider
    blocks). Returns event cursors (provider -> last event id), so only this run's
    transitions are read at the end, and how many targets were reset. A first run under a
    key prefix changes nothing."""
    providers = sorted({s.provider for s in specs})
    wanted = {(s.provider, s.model) for s in specs}
    logger = logging.getLogger("resilience")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the resets' own "recovered" lines would only confuse
    reset = 0
    try:
        for st in breaker.states():
            if (st.provider, st.model) in wanted:
                breaker.reset(st.target)
                reset += 1
            if st.provider in providers and st.provider_blocked_until is not None:
                breaker.unblock(Target(st.provider, st.model), provider_wide=True)
    finally:
        logger.setLevel(level)
    cursors: dict[str, str] = {}
    for event in breaker.events(providers=providers):
        cursors[event.provider] = event.id
    return cursors, reset


def _drain(
    q: Any, stats: dict[int, WorkerStats], ready: set[int], recent: list[str], live: _Live
) -> bool:
    """Reads every queued message; True when something arrived."""
    got = False
    while True:
        try:
            msg = q.get_nowait()
        except queue_mod.Empty:
            return got
        except (OSError, EOFError, ValueError):
            return got
        got = True
        tag = msg[0]
        if tag == "ready":
            ready.add(int(msg[1]))
        elif tag == "stats":
            s: WorkerStats = msg[1]
            stats[s.index] = s
        elif tag == "log":
            recent.append(str(msg[1]))
            del recent[:-20]
            live.note(str(msg[1]))


def _take_snapshot(breaker: Breaker, settings: Settings, migrate: bool) -> str:
    """Applies migrations when asked (``resilience db upgrade``), takes a snapshot into
    Postgres; returns a short line."""
    if migrate:
        _resilience_cli(settings, "db", "upgrade")
    result = resilience.take_snapshot(breaker, settings)
    return _describe_snapshot(result)


def _cli_env(settings: Settings) -> dict[str, str]:
    """The environment that gives the ``resilience`` CLI these settings."""
    env = dict(os.environ)
    for name in ("redis_url", "key_prefix", "database_url", "database_schema"):
        env[f"RESILIENCE_{name.upper()}"] = str(getattr(settings, name))
    return env


def _resilience_cli(settings: Settings, *args: str) -> None:
    """Runs one ``resilience`` CLI command with these settings; raises on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience", *args],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"resilience {' '.join(args)}: {done.stderr.strip()}")


def _describe_snapshot(result: object) -> str:
    describe = getattr(result, "describe", None)
    text = describe() if callable(describe) else str(result)
    return f"Postgres: {text}"


def _report_text(settings: Settings, since: datetime) -> str:
    """The package's report (table) of the snapshot history since ``since``."""
    report = resilience.build_report(settings, since, limit=20, transitions_limit=12)
    return resilience.format_report(report, "table")


def run_demo(
    settings: Settings,
    options: DemoOptions | None = None,
    out: TextIO | None = None,
    *,
    specs: Sequence[ModelSpec] = DEMO_MODELS,
    report: Callable[[Settings, datetime], str] | None = None,
) -> DemoSummary:
    """Runs the whole demo and returns its summary (also printed to ``out``).

    Args:
        settings: where Redis and Postgres are, the key prefix and schema, kill switch and
            shadow mode; the thresholds are replaced by the demo's (:func:`demo_settings`).
        options: duration, workers, seed, ... (:class:`DemoOptions`).
        out: where the live view, the report and the summary go (default stdout).
        specs: the models shown and summarised.
        report: builds the report text from the settings and the start of the run (default:
            the package's report of the snapshot history for the run).

    Raises:
        StoreUnavailableError: Redis is unreachable (the demo needs it to show anything).
        DatabaseError: Postgres failed while taking the snapshot (only with ``snapshot``).
    """
    options = options or DemoOptions()
    out = out or sys.stdout
    settings = demo_settings(settings)
    tty = options.live if options.live is not None else bool(out.isatty())
    live = _Live(out, tty, options.refresh_s)
    ctx = multiprocessing.get_context("spawn")
    stats: dict[int, WorkerStats] = {}
    ready: set[int] = set()
    recent: list[str] = []
    metrics_server: Any = None
    with (
        Breaker(settings) as breaker,
        FakeProvider(
            seed=options.seed,
            flaky_failure_rate=options.flaky_failure_rate,
            overloaded_recover_s=options.overloaded_recover_s,
            rate_limit_requests=options.rate_limit_requests,
            rate_limit_window_s=options.rate_limit_window_s,
        ) as provider,
    ):
        cursors, reset = _reset_targets(breaker, specs)
        if options.metrics_port is not None:
            metrics_server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "resilience",
                    "serve-metrics",
                    "--port",
                    str(options.metrics_port),
                ],
                env=_cli_env(settings),
            )
            out.write(f"metrics: http://127.0.0.1:{options.metrics_port}/metrics\n")
        q = ctx.Queue()
        start, stop = ctx.Event(), ctx.Event()
        procs = []
        for index in range(options.workers):
            config = WorkerConfig(
                index=index,
                seed=options.seed,
                settings=settings.model_dump(),
                base_url=provider.base_url,
                duration_s=options.duration_s,
                interval_s=options.interval_s,
                routes=options.routes,
            )
            p = ctx.Process(
                target=worker_main,
                args=(config, q, start, stop),
                name=f"resilience-demo-worker-{index}",
                daemon=True,
            )
            p.start()
            procs.append(p)
        out.write(
            f"resilience demo: fake providers on {provider.base_url}, "
            f"{options.workers} workers, {options.duration_s:.0f}s, seed {options.seed}, "
            f"Redis key prefix {settings.key_prefix!r}"
            + (f" ({reset} targets of an earlier run reset)" if reset else "")
            + "\n"
        )
        out.flush()
        began = time.time()
        t0 = time.monotonic()
        interrupted = False
        try:
            # Spawned workers import the package and connect first; the clock starts when
            # all are ready (or one died: its crash report ends up in the summary).
            wait_until = time.monotonic() + 90.0
            while len(ready) < options.workers and time.monotonic() < wait_until:
                _drain(q, stats, ready, recent, live)
                if any(p.exitcode not in (None, 0) for p in procs):
                    break
                time.sleep(0.02)
            began = time.time()
            t0 = time.monotonic()
            start.set()
            hard_stop = t0 + options.duration_s + 30.0
            while True:
                _drain(q, stats, ready, recent, live)
                finished = sum(1 for s in stats.values() if s.done)
                if finished >= options.workers or not any(p.is_alive() for p in procs):
                    break
                if time.monotonic() > hard_stop:
                    stop.set()
                if live.due():
                    elapsed = min(time.monotonic() - t0, options.duration_s)
                    states = _safe_states(breaker)
                    live.draw(
                        render_table(
                            specs,
                            provider.requests(),
                            list(stats.values()),
                            states,
                            elapsed,
                            options.duration_s,
                            recent,
                            options.workers,
                        )
                    )
                time.sleep(0.05)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            out.write("\ninterrupted: stopping the workers\n")
        finally:
            start.set()
            for p in procs:
                p.join(timeout=10)
            for p in procs:
                if p.is_alive():
                    stop.set()
                    p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
            _drain(q, stats, ready, recent, live)
            q.close()
            if metrics_server is not None:
                metrics_server.terminate()
                metrics_server.wait(timeout=5)
        ran_s = time.time() - began
        for index, p in enumerate(procs):
            ws = stats.setdefault(index, WorkerStats(index))
            if (p.exitcode != 0 or not ws.done) and not interrupted and not ws.error:
                ws.error = f"worker {index} exited with code {p.exitcode} before finishing"
            ws.done = True
        log_ = provider.requests()
    with Breaker(settings) as reader:
        events = reader.events(cursors, providers=sorted({s.provider for s in specs}))
        # One read per target: a model never called still shows its provider's block.
        states = [reader.state(Target(s.provider, s.model)) for s in specs]
        final = render_table(
            specs,
            log_,
            list(stats.values()),
            states,
            ran_s,
            options.duration_s,
            recent if tty else (),
            options.workers,
        )
        if tty:
            live.draw(final)
        else:
            out.write("\n".join(final) + "\n")
        snapshot_line: str | None = None
        report_text: str | None = None
        if options.snapshot:
            snapshot_line = _take_snapshot(reader, settings, options.migrate)
            since = datetime.fromtimestamp(began - 1.0, tz=timezone.utc)
            report_text = (report or _report_text)(settings, since)
    summary = summarize(
        specs=specs,
        log=log_,
        stats=[stats[i] for i in sorted(stats)],
        events=events,
        states=states,
        duration_s=ran_s,
        seed=options.seed,
        enabled=settings.enabled,
        shadow=settings.shadow,
        snapshot=snapshot_line,
        report=report_text,
    )
    for err in summary.worker_errors:
        out.write(f"worker error:\n{err}\n")
    if report_text:
        out.write("\n" + report_text.rstrip() + "\n")
    if snapshot_line:
        out.write(snapshot_line + "\n")
    out.write("\n" + summary.text + "\n")
    out.flush()
    return summary


def _safe_states(breaker: Breaker) -> list[TargetState] | None:
    with contextlib.suppress(ResilienceError):
        return breaker.states()
    return None


def counters_of(summary_stats: Sequence[WorkerStats], target: Target) -> TargetCounters:
    """The counters of one target summed over workers (for tests and tools)."""
    key = str(target)
    total = TargetCounters()
    for s in summary_stats:
        c = s.targets.get(key)
        if c is not None:
            total.add(c)
    return total
