"""One demo worker: an asyncio loop sending requests through :class:`AsyncRouter`.

A worker owns its :class:`AsyncBreaker` (one per process, as the README asks), an
``AsyncRouter`` per route (with ``adapt=True``) and one ``httpx.AsyncClient``. It sends one
request at a time, picking a route (an ordered list of models) with a random generator seeded
from the demo seed and the worker index, and pauses ``interval_s`` between requests. Its call
function posts to the learned endpoint hint (``attempt.endpoint``) or
``/v1/chat/completions``, with the request's parameters passed through ``attempt.adapt``
(the compatibility hints the fleet learned: ``max_tokens`` renamed, ...), and calls
``response.raise_for_status()``, so the library classifies the provider's own error. A
request that offers tools (a share of a route's requests, :attr:`Route.tools_share`) is
routed with ``needs=Needs(tools=True)``: a model the fleet knows lacks tools is passed by
without a call.

Counters (per target: calls sent, failures, calls on a learned endpoint hint, calls
adapted, calls refused with a compatibility error, requests routed away for what they need,
skips, probes) are counted by the call function and by a hook, and sent to the parent over a
``multiprocessing`` queue as cumulative :class:`WorkerStats` every ``report_every_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import httpx

from resilience import (
    AllowedEvent,
    AllTargetsFailedError,
    AsyncBreaker,
    AsyncRouter,
    Attempt,
    Needs,
    OutcomeEvent,
    RejectedEvent,
    Settings,
    Target,
    TransitionInfo,
    classify,
)

from .provider import CHAT_PATH, RESPONSES_PATH

__all__ = [
    "ROUTES",
    "Route",
    "TargetCounters",
    "WorkerConfig",
    "WorkerStats",
    "endpoint_path",
    "is_endpoint",
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
        tools_share: share of this route's requests that offer tools (0-1); those are
            routed with ``needs=Needs(tools=True)``.
    """

    name: str
    targets: tuple[Target, ...]
    weight: float = 1.0
    tools_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.tools_share <= 1.0:
            raise ValueError(f"route {self.name}: tools_share must be within 0-1")


_HEALTHY = Target("openai", "gpt-4o-mini")

ROUTES: tuple[Route, ...] = (
    Route("summarize", (Target("openai", "gpt-4-0314"), _HEALTHY)),
    Route("reason", (Target("openai", "o3-pro"), _HEALTHY)),
    Route("think", (Target("openai", "o1"), _HEALTHY)),
    Route("local", (Target("ollama", "deepseek-r1:14b"), _HEALTHY), tools_share=0.5),
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
"""The routes every demo worker picks from (equal weights). Every chat request caps its
answer with ``max_tokens``; half the requests of ``local`` offer tools."""


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
        adapted_calls: calls sent adapted by a learned compatibility hint
            (``attempt.adapt``), at once or as the router's retry of a refused call.
        refused_calls: calls refused with an error that teaches a compatibility hint.
        refused: the same, per hint taught (``CompatHint.encode()`` -> calls).
        adapted: calls sent adapted by a hint known at admission, per hint applied.
        adapted_retries: refused calls the router retried at once on the same target,
            adapted by the hint the refusal taught, per hint applied.
        needs_skips: requests that passed the target by without calling it, because the
            fleet knew it lacks something they need (``needs=``; not charged).
    """

    calls: int = 0
    failures: int = 0
    hint_calls: int = 0
    retry_calls: int = 0
    skips: int = 0
    shadow_skips: int = 0
    probes: int = 0
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)
    adapted_calls: int = 0
    refused_calls: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    adapted: dict[str, int] = field(default_factory=dict)
    adapted_retries: dict[str, int] = field(default_factory=dict)
    needs_skips: int = 0

    def add(self, other: TargetCounters) -> None:
        """Adds ``other``'s counts to these (counters summed over workers)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for name, n in theirs.items():
                    mine[name] = mine.get(name, 0) + n
            elif isinstance(mine, list):
                mine.extend(theirs)
            else:
                setattr(self, f.name, mine + theirs)


@dataclass(slots=True)
class WorkerStats:
    """Cumulative counters of one worker (picklable; sent over the queue).

    Attributes:
        index: the worker's number (0-based).
        requests: router calls made (user requests).
        tool_requests: of those, requests that offered tools (routed with
            ``needs=Needs(tools=True)``).
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
    tool_requests: int = 0

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
    """Counts admissions, skips, probes and transitions per target for this worker, and
    keeps the targets admitted during the current request (``admitted``, cleared by the
    request loop): one admitted but never called was passed by for what the request needs."""

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats
        self.admitted: set[Target] = set()

    def on_allowed(self, event: AllowedEvent) -> None:
        self.admitted.add(event.target)
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


def is_endpoint(hint: str | None) -> bool:
    """True when a learned endpoint hint is a URL path the demo can call (``/v1/...``); a
    capability hint such as ``capability:tools-unsupported`` names what the model lacks."""
    if not hint or ":" in hint:
        return False
    return ("/" + hint.strip().lstrip("/")).startswith("/v1/")


def endpoint_path(hint: str | None) -> str:
    """The URL path a call uses: the learned hint when it is an endpoint path, else chat
    completions."""
    if hint is None or not is_endpoint(hint):
        return CHAT_PATH
    return "/" + hint.strip().lstrip("/")


_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _body(model: str, path: str, n: int, tools: bool = False) -> dict[str, Any]:
    """The request parameters (OpenAI style): every chat request caps its answer with
    ``max_tokens`` (16 tokens), as most code written before the reasoning models does."""
    prompt = f"Say hello (request {n})."
    if path == RESPONSES_PATH:
        return {"model": model, "input": prompt, "max_output_tokens": 16}
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
    }
    if tools:
        body["tools"] = _TOOLS
    return body


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


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
    hook = _CountingHook(stats)
    async with (
        AsyncBreaker(settings, hooks=[hook]) as breaker,
        httpx.AsyncClient(timeout=config.timeout_s, trust_env=False, headers=headers) as client,
    ):
        routers = {r.name: AsyncRouter(breaker, r.targets, adapt=True) for r in routes}
        # Connect before the clock starts (a read: it records nothing).
        with contextlib.suppress(Exception):
            await breaker.state(_HEALTHY)
        queue.put(("ready", config.index))
        if start is not None:
            await asyncio.to_thread(start.wait, 120.0)
        deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
        last_report = time.monotonic()

        tried: list[tuple[Target, str | None]] = []  # (target, endpoint) called this request
        tools = False  # the current request offers tools

        async def call(attempt: Attempt) -> dict[str, Any]:
            target = attempt.target
            c = stats.of(target)
            path = endpoint_path(attempt.endpoint)
            params = attempt.adapt(_body(target.model, path, stats.requests, tools))
            again = bool(tried) and tried[-1][0] == target  # the router retries it at once
            c.calls += 1
            if again and tried[-1][1] != attempt.endpoint:
                c.retry_calls += 1  # the router retries on the endpoint an error named
            elif not again and is_endpoint(attempt.endpoint):
                c.hint_calls += 1  # a learned endpoint hint handed out at admission
            if attempt.applied:
                c.adapted_calls += 1
            for hint in attempt.applied:
                _count(c.adapted_retries if again else c.adapted, hint.encode())
            tried.append((target, attempt.endpoint))
            url = f"{config.base_url}/{target.provider}{path}"
            try:
                response = await client.post(url, json=params)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                c.failures += 1
                taught = classify(exc, target.provider).compat
                if taught:
                    c.refused_calls += 1
                for hint in taught:
                    _count(c.refused, hint.encode())
                raise
            result: dict[str, Any] = response.json()
            return result

        while True:
            if stop is not None and stop.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            route = rng.choices(routes, weights)[0]
            tools = route.tools_share > 0 and rng.random() < route.tools_share
            stats.requests += 1
            if tools:
                stats.tool_requests += 1
            tried.clear()
            hook.admitted.clear()
            try:
                await routers[route.name].call(call, needs=Needs(tools=True) if tools else None)
            except AllTargetsFailedError:
                stats.unanswered += 1
            except Exception:  # a caller error re-raised by the router: keep going
                stats.unanswered += 1
            else:
                stats.answered += 1
            # Admitted, never called: passed by for what the request needs (not charged).
            for target in hook.admitted - {t for t, _ in tried}:
                stats.of(target).needs_skips += 1
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
    return copy.deepcopy(stats)


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
