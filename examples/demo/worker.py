"""One demo worker: an asyncio loop sending requests through :class:`AsyncRouter`.

A worker owns its :class:`AsyncBreaker` (one per process, as the README asks), an
``AsyncRouter`` per route and one ``httpx.AsyncClient``. It sends one request at a time,
picking a route (an ordered list of models) with a random generator seeded from the demo seed
and the worker index, and pauses ``interval_s`` between requests. Its call function posts to
the learned endpoint hint (``attempt.endpoint``) or ``/v1/chat/completions`` and calls
``response.raise_for_status()``, so the library classifies the provider's own error.

Counters (per target: calls sent, failures, calls on a learned hint, skips, probes) are
counted by the call function and by a hook, and sent to the parent over a
``multiprocessing`` queue as cumulative :class:`WorkerStats` every ``report_every_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from resilience import (
    AllowedEvent,
    AllTargetsFailedError,
    AsyncBreaker,
    AsyncRouter,
    Attempt,
    OutcomeEvent,
    RejectedEvent,
    Settings,
    Target,
    TransitionInfo,
)

from .provider import CHAT_PATH, RESPONSES_PATH

__all__ = [
    "ROUTES",
    "Route",
    "TargetCounters",
    "WorkerConfig",
    "WorkerStats",
    "run_worker",
    "worker_main",
]


@dataclass(frozen=True, slots=True)
class Route:
    """A kind of request and the models it may use, most preferred first.

    Attributes:
        name: short name shown in logs.
        targets: the ordered (provider, model) list handed to the router.
        weight: relative frequency of this route.
    """

    name: str
    targets: tuple[Target, ...]
    weight: float = 1.0


_HEALTHY = Target("openai", "gpt-4o-mini")

ROUTES: tuple[Route, ...] = (
    Route("summarize", (Target("openai", "gpt-4-0314"), _HEALTHY)),
    Route("reason", (Target("openai", "o3-pro"), _HEALTHY)),
    Route(
        "chat",
        (Target("anthropic", "claude-sonnet-4"), Target("openai", "gpt-4o"), _HEALTHY),
    ),
    Route("extract", (Target("openai", "gpt-4o"), _HEALTHY)),
    Route("fast", (Target("groq", "llama-3.3-70b-versatile"), _HEALTHY)),
    Route(
        "bulk",
        (
            Target("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            Target("together", "Qwen/Qwen2.5-72B-Instruct"),
            _HEALTHY,
        ),
    ),
)
"""The routes every demo worker picks from (equal weights)."""


@dataclass(slots=True)
class TargetCounters:
    """What one worker saw of one target.

    Attributes:
        calls: HTTP requests sent to it.
        failures: of those, answered with an error status (or failed in transport).
        hint_calls: calls sent to a learned endpoint hint handed out at admission.
        retry_calls: calls the router retried at once on the endpoint an
            ``endpoint_mismatch`` error named (the call that teaches the hint).
        skips: calls not sent because the fleet knows the target is failing (calls saved).
        shadow_skips: calls that would have been skipped (shadow mode let them go).
        probes: half-open probes this worker was given.
        transitions: transitions this worker's calls made, as (wall time s, from, to, kind).
    """

    calls: int = 0
    failures: int = 0
    hint_calls: int = 0
    retry_calls: int = 0
    skips: int = 0
    shadow_skips: int = 0
    probes: int = 0
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)


@dataclass(slots=True)
class WorkerStats:
    """Cumulative counters of one worker (picklable; sent over the queue).

    Attributes:
        index: the worker's number (0-based).
        requests: router calls made (user requests).
        answered: router calls some target answered.
        unanswered: router calls where every target failed or was skipped (or that raised
            a caller error).
        targets: ``"provider/model"`` (or ``"provider/*"`` for provider-wide changes) ->
            counters.
        done: True in the last report.
        error: a traceback when the worker crashed, else None.
    """

    index: int
    requests: int = 0
    answered: int = 0
    unanswered: int = 0
    targets: dict[str, TargetCounters] = field(default_factory=dict)
    done: bool = False
    error: str | None = None

    def of(self, target: Target | str) -> TargetCounters:
        """The counters of one target (created on first use)."""
        key = str(target)
        c = self.targets.get(key)
        if c is None:
            c = self.targets[key] = TargetCounters()
        return c


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker process needs (picklable).

    Attributes:
        index: the worker's number (0-based).
        seed: the demo seed (route choice is seeded with ``seed`` and ``index``).
        settings: ``Settings.model_dump()`` of the breaker settings.
        base_url: the fake provider's ``http://host:port``; provider ``p`` is served under
            ``<base_url>/<p>``.
        duration_s: how long to send requests after the start signal (s); None = until
            stopped.
        interval_s: pause between two requests (s).
        report_every_s: how often cumulative stats go to the parent (s).
        routes: the routes to pick from.
        timeout_s: HTTP timeout of one call (s).
        heartbeat_file: a file touched after every request (container healthchecks), or None.
    """

    index: int
    seed: int
    settings: dict[str, Any]
    base_url: str
    duration_s: float | None = 20.0
    interval_s: float = 0.04
    report_every_s: float = 0.5
    routes: tuple[Route, ...] = ROUTES
    timeout_s: float = 10.0
    heartbeat_file: str | None = None


class _Queue(Protocol):
    def put(self, obj: Any) -> None: ...


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class _CountingHook:
    """Counts admissions, skips, probes and transitions per target for this worker."""

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats

    def on_allowed(self, event: AllowedEvent) -> None:
        if event.probe:
            self.stats.of(event.target).probes += 1

    def on_rejected(self, event: RejectedEvent) -> None:
        c = self.stats.of(event.target)
        if event.shadow:
            c.shadow_skips += 1
        else:
            c.skips += 1

    def on_outcome(self, event: OutcomeEvent) -> None:
        pass

    def on_transition(self, event: TransitionInfo) -> None:
        self.stats.of(event.target).transitions.append(
            (time.time(), event.from_state, event.to_state, event.kind)
        )


def endpoint_path(hint: str | None) -> str:
    """The URL path a call uses: the learned hint when it is an endpoint path, else chat
    completions (a capability hint such as ``capability:tools-unsupported`` is no path)."""
    if not hint or ":" in hint:
        return CHAT_PATH
    path = "/" + hint.strip().lstrip("/")
    return path if path.startswith("/v1/") else CHAT_PATH


def _body(model: str, path: str, n: int) -> dict[str, Any]:
    prompt = f"Say hello (request {n})."
    if path == RESPONSES_PATH:
        return {"model": model, "input": prompt, "max_output_tokens": 16}
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}


async def run_worker(
    config: WorkerConfig,
    queue: _Queue,
    start: _Event | None = None,
    stop: _Event | None = None,
) -> WorkerStats:
    """Sends requests until ``duration_s`` after ``start`` is set, or until ``stop`` is set.

    Puts ``("ready", index)`` on the queue once connected, then ``("stats", stats)``
    every ``report_every_s`` and a last one with ``done=True``. Returns the final stats.
    """
    stats = WorkerStats(config.index)
    settings = Settings(**config.settings)
    rng = random.Random(f"{config.seed}:{config.index}")
    routes = list(config.routes)
    weights = [r.weight for r in routes]
    heartbeat = Path(config.heartbeat_file) if config.heartbeat_file else None
    headers = {"x-demo-worker": str(config.index), "authorization": "Bearer sk-demo-not-a-key"}
    async with (
        AsyncBreaker(settings, hooks=[_CountingHook(stats)]) as breaker,
        httpx.AsyncClient(timeout=config.timeout_s, trust_env=False, headers=headers) as client,
    ):
        routers = {r.name: AsyncRouter(breaker, r.targets) for r in routes}
        # Connect before the clock starts (a read: it records nothing).
        with contextlib.suppress(Exception):
            await breaker.state(_HEALTHY)
        queue.put(("ready", config.index))
        if start is not None:
            await asyncio.to_thread(start.wait, 120.0)
        deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
        last_report = time.monotonic()

        tried: list[Target] = []

        async def call(attempt: Attempt) -> dict[str, Any]:
            target = attempt.target
            c = stats.of(target)
            path = endpoint_path(attempt.endpoint)
            c.calls += 1
            if tried and tried[-1] == target:
                c.retry_calls += 1  # the router retries on the endpoint an error named
            elif attempt.endpoint is not None:
                c.hint_calls += 1  # a learned hint handed out at admission
            tried.append(target)
            url = f"{config.base_url}/{target.provider}{path}"
            try:
                response = await client.post(url, json=_body(target.model, path, stats.requests))
                response.raise_for_status()
            except httpx.HTTPError:
                c.failures += 1
                raise
            result: dict[str, Any] = response.json()
            return result

        while True:
            if stop is not None and stop.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            route = rng.choices(routes, weights)[0]
            stats.requests += 1
            tried.clear()
            try:
                await routers[route.name].call(call)
            except AllTargetsFailedError:
                stats.unanswered += 1
            except Exception:  # a caller error re-raised by the router: keep going
                stats.unanswered += 1
            else:
                stats.answered += 1
            if heartbeat is not None:
                with contextlib.suppress(OSError):
                    heartbeat.touch()
            now = time.monotonic()
            if now - last_report >= config.report_every_s:
                queue.put(("stats", _copy(stats)))
                last_report = now
            if config.interval_s > 0:
                await asyncio.sleep(config.interval_s)
    stats.done = True
    queue.put(("stats", _copy(stats)))
    return stats


def _copy(stats: WorkerStats) -> WorkerStats:
    return WorkerStats(
        stats.index,
        stats.requests,
        stats.answered,
        stats.unanswered,
        {
            k: TargetCounters(
                v.calls,
                v.failures,
                v.hint_calls,
                v.retry_calls,
                v.skips,
                v.shadow_skips,
                v.probes,
                list(v.transitions),
            )
            for k, v in stats.targets.items()
        },
        stats.done,
        stats.error,
    )


class _QueueLogHandler(logging.Handler):
    """Sends the library's warnings (trips, recoveries) to the parent as ``("log", line)``."""

    def __init__(self, queue: _Queue, index: int) -> None:
        super().__init__(logging.WARNING)
        self.queue = queue
        self.index = index

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put(("log", f"worker {self.index}: {record.getMessage()}"))
        except Exception:
            self.handleError(record)


def worker_main(config: WorkerConfig, queue: Any, start: Any = None, stop: Any = None) -> None:
    """Process entry point (``multiprocessing`` spawn): runs :func:`run_worker`.

    The library's warnings go to the parent over the queue (so they do not tear the live
    view). A crash is reported as a last ``("stats", stats)`` with ``error`` set, so the
    parent never waits for a worker that died.
    """
    logger = logging.getLogger("resilience")
    logger.addHandler(_QueueLogHandler(queue, config.index))
    logger.propagate = False
    try:
        asyncio.run(run_worker(config, queue, start, stop))
    except KeyboardInterrupt:
        pass
    except BaseException:
        queue.put(("stats", WorkerStats(config.index, done=True, error=traceback.format_exc())))
        raise


def routes_named(names: Sequence[str]) -> tuple[Route, ...]:
    """The routes with these names (all of :data:`ROUTES` when ``names`` is empty)."""
    if not names:
        return ROUTES
    wanted = set(names)
    unknown = wanted - {r.name for r in ROUTES}
    if unknown:
        raise ValueError(f"unknown demo routes: {', '.join(sorted(unknown))}")
    return tuple(r for r in ROUTES if r.name in wanted)
