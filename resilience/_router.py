"""``Router`` and ``AsyncRouter``: try targets in order, skipping the ones the fleet knows
are failing.

For each target in order: skip it when it (or its provider) is open; otherwise call
``fn(attempt)`` with the learned endpoint hint. On success, record it and return the result.
On a provider failure, record it and fall over to the next target; an ``endpoint_mismatch``
that names a new endpoint is retried once on that endpoint first. A caller error
(context_length, content_policy, bad_request) is re-raised at once: another model would
refuse the same request (``fall_over_on_caller_errors=True`` changes that). Cancellation is
re-raised and never recorded. When nothing succeeded, :class:`AllTargetsFailedError` lists
every attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ._breaker import AsyncBreaker, Breaker, classify_exception
from ._core import Denial, Permit
from ._exceptions import AllTargetsFailedError, AttemptOutcome
from ._types import Attempt, Classification, ErrorKind, Target

__all__ = ["AsyncRouter", "Router"]

log = logging.getLogger("resilience")
T = TypeVar("T")


class _RouterBase:
    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
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

    def _log_skip(self, index: int, denial: Denial) -> None:
        t = denial.target
        role = "Primary" if index == 0 else "Fallback"
        log.info(
            '[LLMRouter] %s provider "%s" is blacklisted (model %s, %s, %.1fs left); skipping',
            role,
            t.provider,
            t.model,
            denial.reason or "open",
            denial.retry_after_s,
        )

    def _stop_on(self, c: Classification) -> bool:
        """True when the failure must be re-raised instead of falling over."""
        if c.kind is ErrorKind.CANCELLED:
            return True
        return c.kind.is_caller_error and not self.fall_over_on_caller_errors

    def _retry_endpoint(self, c: Classification, endpoint: str | None) -> str | None:
        if not self.retry_endpoint_hint or c.kind is not ErrorKind.ENDPOINT_MISMATCH:
            return None
        if c.endpoint_hint and c.endpoint_hint != endpoint:
            return c.endpoint_hint
        return None


class Router(_RouterBase):
    """Tries ``targets`` in order through a :class:`Breaker`.

    Args:
        breaker: the shared breaker.
        targets: the targets, most preferred first (at least one, no repeats).
        fall_over_on_caller_errors: also fall over on context_length, content_policy and
            bad_request (default: re-raise them at once).
        retry_endpoint_hint: retry a target once on the endpoint an endpoint_mismatch names.
    """

    def __init__(
        self,
        breaker: Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
        )
        self._breaker = breaker

    def call(self, fn: Callable[[Attempt], T]) -> T:
        """Calls ``fn(attempt)`` on the first target that works and returns its result.

        Raises:
            AllTargetsFailedError: every target failed or was skipped (``.attempts``).
            Exception: a caller error or cancellation from ``fn``, unchanged.
        """
        b = self._breaker
        outcomes: list[AttemptOutcome] = []
        last: BaseException | None = None
        for index, target in enumerate(self.targets):
            admission = b._admit_sync(target)
            if isinstance(admission, Denial):
                self._log_skip(index, admission)
                outcomes.append(
                    AttemptOutcome(target, skipped=True, retry_after_s=admission.retry_after_s)
                )
                continue
            endpoint = admission.endpoint
            while True:
                start = time.monotonic()
                try:
                    result = fn(Attempt(target, endpoint, len(outcomes), admission.probe))
                except BaseException as exc:
                    c = classify_exception(exc)
                    b._finish_sync(target, admission, c, time.monotonic() - start, endpoint)
                    if self._stop_on(c):
                        raise
                    outcomes.append(AttemptOutcome(target, endpoint, False, c.kind, exc))
                    last = exc
                    retry = self._retry_endpoint(c, endpoint)
                    if retry is None:
                        break
                    again = b._admit_sync(target)
                    if isinstance(again, Denial):
                        break
                    admission, endpoint = again, retry
                    continue
                b._finish_sync(target, admission, None, time.monotonic() - start, endpoint)
                return result
        raise AllTargetsFailedError(outcomes) from last


class AsyncRouter(_RouterBase):
    """The :class:`Router` for asyncio: ``await router.call(fn)`` awaits ``fn(attempt)``.

    Takes an :class:`AsyncBreaker` (a :class:`Breaker` works too: its guarded coroutines use
    its asyncio connections).
    """

    def __init__(
        self,
        breaker: AsyncBreaker | Breaker,
        targets: Sequence[Target],
        *,
        fall_over_on_caller_errors: bool = False,
        retry_endpoint_hint: bool = True,
    ) -> None:
        super().__init__(
            breaker,
            targets,
            fall_over_on_caller_errors=fall_over_on_caller_errors,
            retry_endpoint_hint=retry_endpoint_hint,
        )

    async def call(self, fn: Callable[[Attempt], Awaitable[T]]) -> T:
        """Awaits ``fn(attempt)`` on the first target that works; see :meth:`Router.call`."""
        b = self.breaker
        outcomes: list[AttemptOutcome] = []
        last: BaseException | None = None
        for index, target in enumerate(self.targets):
            admission = await b._admit_async(target)
            if isinstance(admission, Denial):
                self._log_skip(index, admission)
                outcomes.append(
                    AttemptOutcome(target, skipped=True, retry_after_s=admission.retry_after_s)
                )
                continue
            permit: Permit = admission
            endpoint = permit.endpoint
            while True:
                start = time.monotonic()
                try:
                    result = await fn(Attempt(target, endpoint, len(outcomes), permit.probe))
                except BaseException as exc:
                    c = classify_exception(exc)
                    await b._finish_async(target, permit, c, time.monotonic() - start, endpoint)
                    if self._stop_on(c):
                        raise
                    outcomes.append(AttemptOutcome(target, endpoint, False, c.kind, exc))
                    last = exc
                    retry = self._retry_endpoint(c, endpoint)
                    if retry is None:
                        break
                    again = await b._admit_async(target)
                    if isinstance(again, Denial):
                        break
                    permit, endpoint = again, retry
                    continue
                await b._finish_async(target, permit, None, time.monotonic() - start, endpoint)
                return result
        raise AllTargetsFailedError(outcomes) from last
