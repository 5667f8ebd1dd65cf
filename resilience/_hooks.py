"""Instrumentation hooks: Protocols fed frozen events.

A hook is any object with some of the methods of :class:`Hook`; missing methods are skipped.
Hooks run in the calling thread (or task) right after the event; one that raises is logged
and never propagates into the provider call. Keep them fast: they sit on the call path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from ._types import ErrorKind, StateName, Target

__all__ = [
    "AllowedEvent",
    "Hook",
    "OutcomeEvent",
    "RejectedEvent",
    "StoreErrorEvent",
    "TransitionInfo",
]

log = logging.getLogger("resilience")


@dataclass(frozen=True, slots=True)
class TransitionInfo:
    """A state change made by this process's call (each change is reported exactly once
    across the fleet: to the worker whose script run made it).

    Attributes:
        target: the target; for a provider-wide change, ``model`` is ``"*"``.
        provider_wide: True for a provider-wide block or unblock.
        from_state, to_state: the states.
        kind: the error kind or ``"probe"`` / ``"manual"`` / ``"reset"``.
        generation: the generation after the change.
        open_until: when the new break ends (aware UTC), or None.
        shadow: True when shadow mode is on (the change is recorded but nothing is blocked).
    """

    target: Target
    provider_wide: bool
    from_state: StateName
    to_state: StateName
    kind: str
    generation: int
    open_until: datetime | None
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class AllowedEvent:
    """A call was admitted.

    Attributes:
        target: the target.
        probe: True when the call is the half-open probe.
        source: where the answer came from: ``"local"`` view, ``"redis"`` or ``"memory"``
            (Redis unreachable). With the kill switch (``enabled=False``) no hook fires.
    """

    target: Target
    probe: bool
    source: str


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A call was not allowed (or, in shadow mode, would not have been).

    Attributes:
        target: the target.
        retry_after_s: seconds until it may be tried again (0.0 when unknown).
        reason: why (error kind, operator reason, ``"store unavailable"``).
        source: where the answer came from: ``"local"`` view, ``"redis"``, ``"memory"``
            (the in-process breaker while Redis is unreachable) or ``"strict"``.
        shadow: True when the call went ahead anyway because shadow mode is on.
    """

    target: Target
    retry_after_s: float
    reason: str
    source: Literal["local", "redis", "memory", "strict"]
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """The outcome of one call, after it was recorded.

    Attributes:
        target: the target.
        kind: None for a success, else the error kind.
        latency_s: duration of the call in seconds, when known.
        probe: True when the call was the half-open probe.
    """

    target: Target
    kind: ErrorKind | None
    latency_s: float | None
    probe: bool = False


@dataclass(frozen=True, slots=True)
class StoreErrorEvent:
    """Redis failed or timed out; the call went on without it.

    Attributes:
        operation: ``"allow"``, ``"record"``, ``"admin"`` or ``"read"``.
        error: the exception type name and a redacted message (for a script error: the
            script, line and Lua message).
        kind: ``"unavailable"`` or ``"timeout"`` (Redis down or slow), ``"write_refused"``
            (Redis answers but refuses writes: a replica, OOM, MISCONF) or
            ``"script_error"`` (a Lua error from a healthy Redis: a bug in resilience, not
            an outage; Redis is not treated as down) or ``"busy"`` (every connection of
            this process was busy for the socket timeout; not an outage either).
    """

    operation: str
    error: str
    kind: str = "unavailable"


@runtime_checkable
class Hook(Protocol):
    """What a hook may implement; every method is optional."""

    def on_transition(self, event: TransitionInfo) -> None:
        """A transition this process's script run made (exactly one worker hears of each)."""

    def on_allowed(self, event: AllowedEvent) -> None:
        """A call was admitted (runs on every admitted call: keep it cheap)."""

    def on_rejected(self, event: RejectedEvent) -> None:
        """A call was refused (or, in shadow mode, would have been)."""

    def on_outcome(self, event: OutcomeEvent) -> None:
        """A call's outcome was recorded."""

    def on_store_error(self, event: StoreErrorEvent) -> None:
        """Redis failed; the call went on without it."""


def fire(hooks: Sequence[object], method: str, event: object) -> None:
    """Calls ``method`` on every hook that has it; a hook that raises is logged only."""
    for hook in hooks:
        fn = getattr(hook, method, None)
        if fn is None:
            continue
        try:
            fn(event)
        except Exception:
            log.exception("resilience hook %r.%s raised; ignored", hook, method)
