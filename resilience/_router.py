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

The route is written once, as a generator (``_RouterBase._route``) yielding what it needs
(admit a target, invoke ``fn``, record an outcome); ``Router`` and ``AsyncRouter`` are its
blocking and asyncio drivers. They reach the breaker through its gate (``resilience._breaker``),
not its private methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._breaker import AsyncBreaker, Breaker, async_gate, classify_exception, sync_gate
from ._classify import Classifier
from ._exceptions import AllTargetsFailedError, AttemptOutcome, CircuitOpenError
from ._policy import policy_of
from ._types import Attempt, Classification, Denial, ErrorKind, Permit, Target

__all__ = ["AsyncRouter", "Router"]

log = logging.getLogger("resilience")
T = TypeVar("T")


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


_Step = _Admit | _Invoke | _Finish
_Route = Generator[_Step, Any, Any]


class _RouterBase:
    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
    ) -> None:
        targets = list(targets)
        if not targets:
            raise ValueError("Router needs at least one target")
        for t in targets:
            if not isinstance(t, Target):
                raise TypeError(f"Router targets must be Target objects, got {type(t).__name__}")
        if len(set(targets)) != len(targets):
            raise ValueError("Router targets must not repeat")
        self.breaker = breaker
        self.targets = targets
        self.fall_over_on_caller_errors = fall_over_on_caller_errors
        self.retry_endpoint_hint = retry_endpoint_hint
        self.classifier = classifier

    def _classify(self, exc: BaseException, provider: str) -> Classification:
        """The router's own classifier first, else the breaker's classification."""
        if self.classifier is not None:
            return classify_exception(exc, provider, self.classifier)
        return self.breaker.classify(exc, provider)

    def _log_skip(self, index: int, target: Target, reason: str, retry_after_s: float) -> None:
        role = "Primary" if index == 0 else "Fallback"
        log.info(
            '[LLMRouter] %s provider "%s" is blacklisted (model %s, %s, %.1fs left); skipping',
            role,
            target.provider,
            target.model,
            reason or "open",
            retry_after_s,
        )

    def _stop_on(self, c: Classification) -> bool:
        """True when the failure must be re-raised instead of falling over."""
        if c.kind is ErrorKind.CANCELLED:
            return True
        return not policy_of(c.kind).falls_over and not self.fall_over_on_caller_errors

    def _retry_endpoint(self, c: Classification, endpoint: str | None) -> str | None:
        if not self.retry_endpoint_hint or c.kind is not ErrorKind.ENDPOINT_MISMATCH:
            return None
        if c.endpoint_hint and c.endpoint_hint != endpoint:
            return c.endpoint_hint
        return None

    def _route(self) -> _Route:
        """The whole router call as steps; returns ``fn``'s result or raises."""
        outcomes: list[AttemptOutcome] = []
        last: BaseException | None = None
        for index, target in enumerate(self.targets):
            admission = yield _Admit(target)
            if isinstance(admission, Denial):
                self._log_skip(index, target, admission.reason, admission.retry_after_s)
                outcomes.append(
                    AttemptOutcome(target, skipped=True, retry_after_s=admission.retry_after_s)
                )
                continue
            permit, endpoint = admission, admission.endpoint
            while True:
                start = time.monotonic()
                try:
                    result = yield _Invoke(Attempt(target, endpoint, len(outcomes), permit.probe))
                except BaseException as exc:
                    latency = time.monotonic() - start
                    c = self._classify(exc, target.provider)
                    yield _Finish(target, permit, c, latency, endpoint)
                    if isinstance(exc, CircuitOpenError):
                        # A nested guarded call found its own target open: a skip.
                        self._log_skip(index, target, exc.reason, exc.retry_after_s)
                        outcomes.append(
                            AttemptOutcome(target, endpoint, True, None, exc, exc.retry_after_s)
                        )
                        last = exc
                        break
                    if self._stop_on(c):
                        raise
                    outcomes.append(AttemptOutcome(target, endpoint, False, c.kind, exc))
                    last = exc
                    retry = self._retry_endpoint(c, endpoint)
                    if retry is None:
                        break
                    again = yield _Admit(target)
                    if isinstance(again, Denial):
                        break
                    permit, endpoint = again, retry
                    continue
                yield _Finish(target, permit, None, time.monotonic() - start, endpoint)
                return result
        raise AllTargetsFailedError(outcomes) from last


class Router(_RouterBase):
    """Tries ``targets`` in order through a :class:`Breaker`.

    Args:
        breaker: the shared breaker.
        targets: the targets, most preferred first (at least one, no repeats).
        fall_over_on_caller_errors: also fall over on context_length, content_policy and
            bad_request (default: re-raise them at once).
        retry_endpoint_hint: retry a target once on the endpoint an endpoint_mismatch names.
        classifier: ``fn(error, provider) -> Classification | None`` tried first for this
            router's calls (default: the breaker's classifier, then
            :func:`resilience.classify`).

    A router holds no state of its own besides its settings: share one across threads.
    """

    def __init__(
        self,
        breaker: Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
            classifier=classifier,
        )

    def call(self, fn: Callable[[Attempt], T]) -> T:
        """Calls ``fn(attempt)`` on the first target that works and returns its result.

        Raises:
            AllTargetsFailedError: every target failed or was skipped (``.attempts``).
            Exception: a caller error or cancellation from ``fn``, unchanged.
        """
        gate = sync_gate(self.breaker)
        route = self._route()
        try:
            step = next(route)
            while True:
                if isinstance(step, _Invoke):
                    try:
                        value: Any = fn(step.attempt)
                    except BaseException as exc:
                        step = route.throw(exc)
                        continue
                elif isinstance(step, _Admit):
                    value = gate.admit(step.target)
                else:
                    gate.finish(step.target, step.permit, step.c, step.latency_s, step.endpoint)
                    value = None
                step = route.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result


class AsyncRouter(_RouterBase):
    """The :class:`Router` for asyncio: ``await router.call(fn)`` awaits ``fn(attempt)``.

    Takes an :class:`AsyncBreaker` (a :class:`Breaker` works too: its guarded coroutines use
    its asyncio connections). Recording an outcome is shielded from cancellation, so a
    cancelled call still gives its probe lease back.
    """

    def __init__(
        self,
        breaker: AsyncBreaker | Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
            classifier=classifier,
        )

    async def call(self, fn: Callable[[Attempt], Awaitable[T]]) -> T:
        """Awaits ``fn(attempt)`` on the first target that works; see :meth:`Router.call`."""
        gate = async_gate(self.breaker)
        route = self._route()
        try:
            step = next(route)
            while True:
                if isinstance(step, _Invoke):
                    try:
                        value: Any = await fn(step.attempt)
                    except BaseException as exc:
                        step = route.throw(exc)
                        continue
                elif isinstance(step, _Admit):
                    value = await gate.admit(step.target)
                else:
                    await gate.finish(
                        step.target, step.permit, step.c, step.latency_s, step.endpoint
                    )
                    value = None
                step = route.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
