"""``Router`` and ``AsyncRouter``: try targets in order, skipping the ones the fleet knows
are failing.

For each target in order: skip it when it (or its provider) is open; otherwise call
``fn(attempt)`` with the learned endpoint hint. On success, record it and return the result.
On a provider failure, record it and fall over to the next target; an ``endpoint_mismatch``
that names a new endpoint is retried once on that endpoint first. A caller error
(context_length, content_policy, bad_request) is re-raised at once: another model would
refuse the same request (``fall_over_on_caller_errors=True`` changes that). Cancellation is
re-raised and never recorded. A :class:`CircuitOpenError` raised inside ``fn`` (a nested
guarded call found its own target open) counts as a skip and falls over. When nothing
succeeded, :class:`AllTargetsFailedError` lists every attempt.

The policies (all off by default):

* ``fallbacks={kind: [targets]}``: a failure of that kind goes on with those targets (the
  ones not tried yet in this call) instead of the rest of the list or re-raising; a
  ``context_length`` failure of a target declared with a ``context_window`` goes on with the
  router's targets declared with a larger one (or, with a list for it, with that list's
  targets whose window is not known to be smaller).
* ``retry_within=seconds``: a provider failure that asked to wait (Retry-After) no longer than
  that is retried on the same target after the wait (jittered, growing with each retry),
  at most ``max_retries`` times per target.
* ``wait_up_to=seconds``: when the targets ran out and one that was skipped as open, or
  failed asking to wait, may be tried again within that time (counted from the start of the
  call), wait for it and try it again.

``stream(fn)`` runs the same route for a streamed answer: a failure before the first chunk
falls over like a failure of ``call``; once a chunk reached the caller, a failure is recorded
and raised (never a silent switch to another model mid-answer), the end of the stream is a
success, a stream the caller closes early is a success, a cancellation while waiting for
the provider is nothing.

The route is written once, as a generator (``_RouterBase._route``) yielding what it needs
(admit a target, invoke ``fn``, record an outcome, sleep, relay a stream's chunks);
``Router`` and ``AsyncRouter`` are its blocking and asyncio drivers. They reach the breaker
through its gate (``resilience._breaker``), not its private methods.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from ._attempts import AllTargetsFailedError, Attempt, AttemptOutcome
from ._breaker import (
    AsyncBreaker,
    AsyncGate,
    Breaker,
    SyncGate,
    async_gate,
    classify_exception,
    load_rules_in_background,
    sync_gate,
)
from ._classification import Classification, CompatHint
from ._classify._compat import CAPABILITY_PREFIX
from ._compat import Needs, unmet
from ._exceptions import CircuitOpenError
from ._policy import policy_of
from ._stream import Opened, aclose_quietly, aopen_stream, close_quietly, early_close, open_stream
from ._types import Classifier, Denial, ErrorKind, Permit, Target

__all__ = ["AsyncRouter", "Router"]

log = logging.getLogger("resilience")
T = TypeVar("T")

RETRY_BASE_S = 0.1
"""First backoff of a same-target retry (s); the n-th retry waits at least
``RETRY_BASE_S`` x 2^(n-1), and never less than the provider asked."""
MIN_WAIT_S = 0.05
"""Shortest wait for a target to reopen (s): a skip that gave no time left is not retried in
a tight loop."""
WAIT_MARGIN_S = 0.01
"""Added to a wait for a target to reopen (s), so that the admission lands after the break."""


# --------------------------------------------------------------------------- the steps


@dataclass(frozen=True, slots=True)
class _Admit:
    target: Target


@dataclass(frozen=True, slots=True)
class _Invoke:
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class _Finish:
    target: Target
    permit: Permit
    c: Classification | None
    latency_s: float
    endpoint: str | None
    applied: tuple[CompatHint, ...] = ()


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Relay:
    """Hand the opened stream's chunks to the caller; send None when it ended,
    ``CLOSED_EARLY`` when the caller closed it, throw what it failed with."""

    opened: Opened


_NOT_CALLED = Classification(ErrorKind.CANCELLED, message="not called: unsuitable")
"""The outcome of a target skipped for what the request needs (gives a probe lease back)."""

CLOSED_EARLY = object()
"""Sent for a ``_Relay`` step when the caller closed the stream (a generator's
``GeneratorExit`` cannot be thrown through ``yield from``: it closes the sub-generator)."""


_Step = _Admit | _Invoke | _Finish | _Sleep | _Relay
_Route = Generator[_Step, Any, Any]


# What one target's attempt came to (the route's sub-generator returns one of these).
@dataclass(frozen=True, slots=True)
class _Done:
    value: Any


@dataclass(frozen=True, slots=True)
class _Skipped:
    retry_after_s: float
    error: BaseException | None = None


def _with_learned(
    hints: tuple[CompatHint, ...], learned: tuple[CompatHint, ...]
) -> tuple[CompatHint, ...]:
    """The hints of an admission with those a refusal just taught (which replace what they
    replace, as the store does), whether or not the store kept them."""
    if not learned:
        return hints
    prefixes = tuple(h.replaces() for h in learned)
    kept = tuple(h for h in hints if h not in learned and not h.encode().startswith(prefixes))
    return kept + learned


@dataclass(frozen=True, slots=True)
class _Unsuitable:
    """The target is known not to serve what the request needs: not called, not charged."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Failed:
    c: Classification
    error: BaseException
    reopens_in: float | None = None  # s, when the provider asked to wait or the target is open


_Result = _Done | _Skipped | _Unsuitable | _Failed


class _RouterBase:
    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
        fallbacks: Mapping[ErrorKind, Sequence[Target]] | None = None,
        retry_within: float = 0.0,
        max_retries: int = 1,
        wait_up_to: float = 0.0,
        adapt: bool = False,
    ) -> None:
        targets = list(targets)
        if not targets:
            raise ValueError("Router needs at least one target")
        _check_targets("Router targets", targets)
        self.breaker = breaker
        self.targets = targets
        self.fall_over_on_caller_errors = fall_over_on_caller_errors
        self.retry_endpoint_hint = retry_endpoint_hint
        self.classifier = classifier
        self.fallbacks = _check_fallbacks(fallbacks)
        self.retry_within = _seconds("retry_within", retry_within)
        self.wait_up_to = _seconds("wait_up_to", wait_up_to)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"Router max_retries must be an int >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        self.adapt = bool(adapt)

    # ---- rules (pure)
    def _classify(self, exc: BaseException, provider: str) -> Classification:
        """The router's own classifier first, else the breaker's classification."""
        if self.classifier is not None:
            return classify_exception(exc, provider, self.classifier)
        return self.breaker.classify(exc, provider)

    def _log_skip(self, target: Target, reason: str, retry_after_s: float) -> None:
        role = "Primary" if target == self.targets[0] else "Fallback"
        log.info(
            '[LLMRouter] %s provider "%s" is blacklisted (model %s, %s, %.1fs left); skipping',
            role,
            target.provider,
            target.model,
            reason or "open",
            retry_after_s,
        )

    def _stop_on(self, c: Classification) -> bool:
        """True when the failure must be re-raised instead of falling over. A compatibility
        error (the model refuses a parameter or lacks a feature) falls over: another model
        may well accept the same request. A context window alone does not: a request too
        long for one model goes only to larger ones (``context_window`` of the targets and
        ``fallbacks``), as any ``context_length`` failure."""
        if c.kind is ErrorKind.CANCELLED:
            return True
        if any(h.kind != "context_window" for h in c.compat):
            return False
        return not policy_of(c.kind).falls_over and not self.fall_over_on_caller_errors

    def _retry_compat(self, c: Classification, attempt: Attempt) -> bool:
        """Retry the same target once with the hints a compatibility error taught, when this
        router adapts requests and the error taught something the call can apply."""
        if not self.adapt:
            return False
        adaptable = ("param_renamed", "param_unsupported", "max_output")
        return any(h.kind in adaptable and h not in attempt.applied for h in c.compat)

    def _retry_endpoint(self, c: Classification, endpoint: str | None) -> str | None:
        if not self.retry_endpoint_hint or c.kind is not ErrorKind.ENDPOINT_MISMATCH:
            return None
        hint = c.endpoint_hint
        if hint and hint != endpoint and not hint.startswith(CAPABILITY_PREFIX):
            return hint
        return None

    def _retry_delay(self, c: Classification, retries: int) -> float | None:
        """How long to wait before retrying the same target after failure ``c`` (the
        ``retries``-th retry so far), or None for no retry."""
        wait = c.retry_after_s
        if retries >= self.max_retries or wait is None or not policy_of(c.kind).falls_over:
            return None
        base = max(wait, RETRY_BASE_S * 2.0**retries)
        if base > self.retry_within:
            return None
        return base * (1 + random.uniform(0, self._jitter()))

    def _jitter(self) -> float:
        return float(self.breaker.settings.jitter)

    def _fallbacks_for(self, c: Classification, failed: Target, seen: set[Target]) -> list[Target]:
        """The targets a failure of ``failed`` goes on with by the per-kind policies (empty:
        none apply; the usual rules decide)."""
        listed = self.fallbacks.get(c.kind)
        window = failed.context_window
        if c.kind is ErrorKind.CONTEXT_LENGTH and window is not None:
            if listed is None:  # declared windows: the router's targets with a larger one
                listed = [t for t in self.targets if t.context_window and t.context_window > window]
            else:  # a named list: drop the ones known to be no larger
                listed = [
                    t for t in listed if t.context_window is None or t.context_window > window
                ]
        return [t for t in listed or () if t not in seen]

    def _reopened(
        self, reopening: dict[Target, float], deadline: float
    ) -> tuple[float, list[Target]] | None:
        """(wait, targets): the soonest skipped targets to reopen within the deadline
        (monotonic s), or None when none does."""
        if not reopening:
            return None
        soonest = min(reopening.values())
        if soonest > deadline:
            return None
        now = time.monotonic()
        wait = max(MIN_WAIT_S, soonest - now)
        wait += WAIT_MARGIN_S + random.uniform(0, self._jitter()) * min(wait, 1.0)
        due = [t for t, at in reopening.items() if at <= soonest + MIN_WAIT_S]
        return wait, due

    # ---- the route, written once
    def _route(self, streaming: bool = False, needs: Needs | None = None) -> _Route:
        """The whole router call as steps; returns ``fn``'s result or raises."""
        outcomes: list[AttemptOutcome] = []
        last: BaseException | None = None
        deadline = time.monotonic() + self.wait_up_to
        queue = deque(self.targets)
        seen: set[Target] = set()
        reopening: dict[Target, float] = {}  # skipped target -> when it reopens (monotonic s)
        while True:
            while queue:
                target = queue.popleft()
                seen.add(target)
                result = yield from self._attempt(target, outcomes, streaming, needs)
                if isinstance(result, _Done):
                    return result.value
                if isinstance(result, _Unsuitable):
                    continue
                if isinstance(result, _Skipped):
                    reopening[target] = time.monotonic() + result.retry_after_s
                    last = result.error or last
                    continue
                last = result.error
                if result.reopens_in is not None:
                    reopening[target] = time.monotonic() + result.reopens_in
                more = self._fallbacks_for(result.c, target, seen)
                stop = self._stop_on(result.c)
                if more:
                    rest = [] if stop else [t for t in queue if t not in more]
                    queue = deque([*more, *rest])
                elif stop:
                    raise result.error
            due = self._reopened(reopening, deadline)
            if due is None:
                raise AllTargetsFailedError(outcomes) from last
            wait, targets = due
            log.info(
                "[LLMRouter] every target failed or is open; waiting %.2fs for %s to reopen",
                wait,
                ", ".join(map(str, targets)),
            )
            yield _Sleep(wait)
            for t in targets:
                del reopening[t]
            queue = deque(targets)

    def _attempt(
        self,
        target: Target,
        outcomes: list[AttemptOutcome],
        streaming: bool,
        needs: Needs | None = None,
    ) -> Generator[_Step, Any, _Result]:
        """One target: admit, call (retrying on a new endpoint, with newly learned
        compatibility hints, or after a short wait), record; for a stream, relay it once its
        first chunk arrived."""
        admission = yield _Admit(target)
        if isinstance(admission, Denial):
            return self._skip(target, admission, outcomes)
        permit, endpoint = admission, admission.endpoint
        waits = 0
        compat_retried = False
        learned: tuple[CompatHint, ...] = ()  # taught by this call's own refusal
        endpoints = {endpoint}  # each endpoint once: two hints naming each other end here
        while True:
            reason = unmet(needs, permit.hints)
            if reason is not None:
                # Known not to serve this request: not called, not charged (a probe it was
                # handed goes back at once).
                yield _Finish(target, permit, _NOT_CALLED, 0.0, endpoint)
                log.info(
                    '[LLMRouter] "%s" cannot serve this request (%s); skipping', target, reason
                )
                outcomes.append(AttemptOutcome(target, endpoint, True, reason=reason))
                return _Unsuitable(reason)
            start = time.monotonic()
            hints = _with_learned(permit.hints, learned)
            attempt = Attempt(target, endpoint, len(outcomes), permit.probe, hints)
            try:
                value = yield _Invoke(attempt)
            except BaseException as exc:
                c = self._classify(exc, target.provider)
                took = time.monotonic() - start
                yield _Finish(target, permit, c, took, endpoint, attempt.applied)
                if isinstance(exc, CircuitOpenError):
                    # A nested guarded call found its own target open: a skip.
                    self._log_skip(target, exc.reason, exc.retry_after_s)
                    outcomes.append(
                        AttemptOutcome(target, endpoint, True, None, exc, exc.retry_after_s)
                    )
                    return _Skipped(exc.retry_after_s, exc)
                outcomes.append(AttemptOutcome(target, endpoint, False, c.kind, exc))
                failed = _Failed(c, exc, c.retry_after_s)
                retry = self._retry_endpoint(c, endpoint)
                if retry in endpoints:
                    retry = None
                endpoints.add(retry)
                if retry is None and not compat_retried and self._retry_compat(c, attempt):
                    compat_retried = True  # once, with what the refusal taught (also when the
                    learned = c.compat  # store could not keep it: kill switch, an outage)
                    log.info(
                        '[LLMRouter] "%s" refused the request (%s); retrying it adapted',
                        target,
                        ", ".join(map(str, c.compat)),
                    )
                elif retry is None and not self._stop_on(c):
                    delay = self._retry_delay(c, waits)
                    if delay is None:
                        return failed
                    waits += 1
                    log.info(
                        "[LLMRouter] %s asked to wait %.2fs (%s); retrying it in %.2fs",
                        target,
                        c.retry_after_s or 0.0,
                        c.kind.value,
                        delay,
                    )
                    yield _Sleep(delay)
                elif retry is None:
                    return failed
                again = yield _Admit(target)
                if isinstance(again, Denial):  # e.g. another worker took the probe meanwhile
                    self._skip(target, again, outcomes)
                    return _Failed(c, exc, again.retry_after_s)
                permit, endpoint = again, retry or again.endpoint
                continue
            if streaming:
                yield from self._relay(target, permit, value, start, endpoint)
                return _Done(None)
            yield _Finish(target, permit, None, time.monotonic() - start, endpoint, attempt.applied)
            return _Done(value)

    def _skip(self, target: Target, denial: Denial, outcomes: list[AttemptOutcome]) -> _Skipped:
        self._log_skip(target, denial.reason, denial.retry_after_s)
        outcomes.append(AttemptOutcome(target, skipped=True, retry_after_s=denial.retry_after_s))
        return _Skipped(denial.retry_after_s)

    def _relay(
        self, target: Target, permit: Permit, opened: Opened, start: float, endpoint: str | None
    ) -> Generator[_Step, Any, None]:
        """A stream whose first chunk arrived: from here on there is no fall-over."""
        try:
            ended = yield _Relay(opened)
        except BaseException as exc:
            failed = self._classify(exc, target.provider)
            yield _Finish(target, permit, failed, time.monotonic() - start, endpoint)
            raise
        closed = early_close(True) if ended is CLOSED_EARLY else None  # a chunk was delivered
        yield _Finish(target, permit, closed, time.monotonic() - start, endpoint)


# --------------------------------------------------------------------------- checks


def _check_targets(what: str, targets: Sequence[object]) -> None:
    for t in targets:
        if not isinstance(t, Target):
            raise TypeError(f"{what} must be Target objects, got {type(t).__name__}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"{what} must not repeat")


def _check_fallbacks(
    fallbacks: Mapping[ErrorKind, Sequence[Target]] | None,
) -> dict[ErrorKind, list[Target]]:
    if fallbacks is None:
        return {}
    if not isinstance(fallbacks, Mapping):
        raise TypeError(
            "Router fallbacks must be a mapping {ErrorKind: [Target, ...]}, got "
            f"{type(fallbacks).__name__}"
        )
    checked: dict[ErrorKind, list[Target]] = {}
    for kind, targets in fallbacks.items():
        if not isinstance(kind, ErrorKind):
            raise TypeError(f"Router fallbacks keys must be ErrorKind members, got {kind!r}")
        if kind is ErrorKind.CANCELLED:
            raise ValueError("Router fallbacks: a cancellation never falls over")
        if isinstance(targets, Target) or not isinstance(targets, Sequence):
            raise TypeError(f"Router fallbacks[{kind.value}] must be a list of Target objects")
        _check_targets(f"Router fallbacks[{kind.value}]", targets)
        checked[kind] = list(targets)
    return checked


def _seconds(name: str, value: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0 <= value <= 3600:
        raise ValueError(f"Router {name} must be a number of seconds in [0, 3600], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- the drivers


def _drive(
    route: _Route,
    gate: SyncGate,
    invoke: Callable[[Attempt], Any],
    throw: BaseException | None = None,
    send: object = None,
) -> _Relay | _Done:
    """Runs the route's steps (blocking) until it asks to relay a stream or returns; starts
    by sending ``send`` (or throwing ``throw``) into it."""
    try:
        step = route.send(send) if throw is None else route.throw(throw)
        while True:
            if isinstance(step, _Relay):
                return step
            if isinstance(step, _Invoke):
                try:
                    value: Any = invoke(step.attempt)
                except BaseException as exc:
                    step = route.throw(exc)
                    continue
            elif isinstance(step, _Admit):
                value = gate.admit(step.target)
            elif isinstance(step, _Sleep):
                time.sleep(step.seconds)
                value = None
            else:
                gate.finish(
                    step.target, step.permit, step.c, step.latency_s, step.endpoint, step.applied
                )
                value = None
            step = route.send(value)
    except StopIteration as stop:
        return _Done(stop.value)


async def _adrive(
    route: _Route,
    gate: AsyncGate,
    invoke: Callable[[Attempt], Awaitable[Any]],
    throw: BaseException | None = None,
    send: object = None,
) -> _Relay | _Done:
    """:func:`_drive` for asyncio (sleeps with ``asyncio.sleep``)."""
    try:
        step = route.send(send) if throw is None else route.throw(throw)
        while True:
            if isinstance(step, _Relay):
                return step
            if isinstance(step, _Invoke):
                try:
                    value: Any = await invoke(step.attempt)
                except BaseException as exc:
                    step = route.throw(exc)
                    continue
            elif isinstance(step, _Admit):
                value = await gate.admit(step.target)
            elif isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                value = None
            else:
                await gate.finish(
                    step.target, step.permit, step.c, step.latency_s, step.endpoint, step.applied
                )
                value = None
            step = route.send(value)
    except StopIteration as stop:
        return _Done(stop.value)


_ARGS_DOC = """
    Args:
        breaker: the shared breaker.
        targets: the targets, most preferred first (at least one, no repeats).
        fall_over_on_caller_errors: also fall over on context_length, content_policy and
            bad_request (default: re-raise them at once).
        retry_endpoint_hint: retry a target once on the endpoint an endpoint_mismatch names.
        classifier: ``fn(error, provider) -> Classification | None`` tried first for this
            router's calls (default: the breaker's classifier, then
            :func:`resilience.classify`).
        fallbacks: per-kind fall-over lists, ``{ErrorKind.CONTENT_POLICY: [Target(...)],
            ...}``: a failure of that kind goes on with those targets (not tried yet in this
            call), then, for a kind that falls over anyway, the rest of ``targets``; a caller
            error whose list is used up is re-raised. ``context_length`` needs no list when
            targets declare ``context_window``: it goes to the targets with a larger one.
        retry_within: retry a provider failure on the same target when the provider asked to
            wait at most this long (seconds; Retry-After or a wait in the body), after that
            wait (plus up to ``settings.jitter`` of it; the n-th retry waits at least
            0.1 x 2^(n-1) s). 0 (default): never.
        max_retries: at most this many such retries per target per call (default 1).
        wait_up_to: when every target failed or was skipped, and one that was skipped as
            open, or failed asking to wait, may be tried again within this many seconds of
            the call's start, wait for it and try it again instead of raising
            :class:`AllTargetsFailedError` (default 0: never).

        adapt: after a compatibility error (the model renamed or refused a parameter,
            or lowered an output cap), retry the same target once: its next admission brings
            the learned hint in ``attempt.hints``, and ``fn`` applies it with
            ``attempt.adapt(params)`` (default False: ``fn`` must use ``adapt`` for the retry
            to help). Without it, such an error falls over to the next target.

        ``retry_within`` and ``wait_up_to`` are at most 3600 s.
"""


class Router(_RouterBase):
    __doc__ = (
        """Tries ``targets`` in order through a :class:`Breaker`.
"""
        + _ARGS_DOC
        + """
    Raises:
        ValueError, TypeError: an argument is not valid (named in the message).

    A router holds no state of its own besides its settings: share one across threads.
    """
    )

    def __init__(
        self,
        breaker: Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
        fallbacks: Mapping[ErrorKind, Sequence[Target]] | None = None,
        retry_within: float = 0.0,
        max_retries: int = 1,
        wait_up_to: float = 0.0,
        adapt: bool = False,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
            classifier=classifier,
            fallbacks=fallbacks,
            retry_within=retry_within,
            max_retries=max_retries,
            wait_up_to=wait_up_to,
            adapt=adapt,
        )

    def call(self, fn: Callable[[Attempt], T], *, needs: Needs | None = None) -> T:
        """Calls ``fn(attempt)`` on the first target that works and returns its result.

        Args:
            fn: the provider call; ``attempt`` names the target, the endpoint, the learned
                compatibility hints (``attempt.adapt(params)`` applies them).
            needs: what the request uses (tools, streaming, images, a JSON schema, about
                how many tokens); targets known not to serve it (a feature they lack, a
                window too small) are skipped without being called or charged.

        Raises:
            AllTargetsFailedError: every target failed or was skipped (``.attempts``; a
                target skipped for ``needs`` says why).
            Exception: a caller error or cancellation from ``fn``, unchanged.
        """
        done = _drive(self._route(needs=needs), sync_gate(self.breaker), fn)
        assert isinstance(done, _Done)  # a call relays no stream
        result: T = done.value
        return result

    def stream(
        self, fn: Callable[[Attempt], Iterable[T]], *, needs: Needs | None = None
    ) -> Iterator[T]:
        """Streams the chunks of ``fn(attempt)`` (an iterable: a generator, an
        ``openai.Stream``, ...) from the first target that works.

        ``fn`` is called and the stream's first chunk read for each target in turn, by the
        same rules as :meth:`call`: a failure before the first chunk falls over. Once a
        chunk was delivered, the answer stays with that target: a failure is recorded and
        raised, the end is a success, closing the iterator early is a success (the stream is
        closed too). Nothing is called before the first ``next()``.

        Raises:
            AllTargetsFailedError: every target failed or was skipped before a first chunk.
            Exception: a caller error or cancellation, or a failure after the first chunk.
            TypeError: ``fn`` returned something that is not an iterable of chunks.
        """
        gate = sync_gate(self.breaker)
        route = self._route(streaming=True, needs=needs)

        def invoke(attempt: Attempt) -> Opened:
            return open_stream(fn(attempt))

        step = _drive(route, gate, invoke)
        if isinstance(step, _Relay):
            opened = step.opened
            try:
                if not opened.empty:
                    yield opened.first
                    yield from opened.chunks
            except GeneratorExit:  # the caller closed the stream early
                close_quietly(opened.source)
                _drive(route, gate, invoke, send=CLOSED_EARLY)
                raise
            except BaseException as exc:
                close_quietly(opened.source)
                _drive(route, gate, invoke, exc)  # records it, then re-raises it
                raise
            close_quietly(opened.source)
            _drive(route, gate, invoke)


class AsyncRouter(_RouterBase):
    __doc__ = (
        """The :class:`Router` for asyncio: ``await router.call(fn)`` awaits ``fn(attempt)``,
    ``async for chunk in router.stream(fn)`` streams.

    Takes an :class:`AsyncBreaker` (a :class:`Breaker` works too: its guarded coroutines use
    its asyncio connections). Recording an outcome is shielded from cancellation, so a
    cancelled call still gives its probe lease back. Waits use ``asyncio.sleep``.
"""
        + _ARGS_DOC
    )

    def __init__(
        self,
        breaker: AsyncBreaker | Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
        fallbacks: Mapping[ErrorKind, Sequence[Target]] | None = None,
        retry_within: float = 0.0,
        max_retries: int = 1,
        wait_up_to: float = 0.0,
        adapt: bool = False,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
            classifier=classifier,
            fallbacks=fallbacks,
            retry_within=retry_within,
            max_retries=max_retries,
            wait_up_to=wait_up_to,
            adapt=adapt,
        )
        # Its first failure is classified on the event loop: have the rules ready by then.
        load_rules_in_background()

    async def call(self, fn: Callable[[Attempt], Awaitable[T]], *, needs: Needs | None = None) -> T:
        """Awaits ``fn(attempt)`` on the first target that works; see :meth:`Router.call`."""
        done = await _adrive(self._route(needs=needs), async_gate(self.breaker), fn)
        assert isinstance(done, _Done)
        result: T = done.value
        return result

    async def stream(
        self,
        fn: Callable[[Attempt], AsyncIterable[T] | Awaitable[AsyncIterable[T]]],
        *,
        needs: Needs | None = None,
    ) -> AsyncIterator[T]:
        """Streams the chunks of ``fn(attempt)``: an async iterable (an async generator), or
        an awaitable of one (``await client.chat.completions.create(..., stream=True)``);
        see :meth:`Router.stream`. Cancellation is recorded as nothing."""
        gate = async_gate(self.breaker)
        route = self._route(streaming=True, needs=needs)

        async def invoke(attempt: Attempt) -> Opened:
            return await aopen_stream(fn(attempt))

        step = await _adrive(route, gate, invoke)
        if isinstance(step, _Relay):
            opened = step.opened
            try:
                if not opened.empty:
                    yield opened.first
                    async for chunk in opened.chunks:
                        yield chunk
            except GeneratorExit:
                await aclose_quietly(opened.source)
                await _adrive(route, gate, invoke, send=CLOSED_EARLY)
                raise
            except BaseException as exc:
                await aclose_quietly(opened.source)
                await _adrive(route, gate, invoke, exc)
                raise
            await aclose_quietly(opened.source)
            await _adrive(route, gate, invoke)
