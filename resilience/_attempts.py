"""What the router hands its call function and reports when every target failed.

Loaded with the router (or when one of these names is first used), not by ``import
resilience``: a process that only guards calls never builds these classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._classification import CompatHint
from ._exceptions import ResilienceError
from ._types import ErrorKind, Target

__all__ = ["AllTargetsFailedError", "Attempt", "AttemptOutcome"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one target, handed to the router's call function.

    Attributes:
        target: the target to call.
        endpoint: the learned endpoint hint for this target (e.g. ``"/v1/responses"``) or None
            when the default endpoint should be used.
        index: 0-based position of this attempt in the router call.
        probe: True when this call is the half-open probe that decides whether the target
            closes again.
        hints: what the fleet has learned the target accepts (parameters renamed or refused,
            features it lacks, token limits); apply them with :meth:`adapt`.
    """

    target: Target
    endpoint: str | None = None
    index: int = 0
    probe: bool = False
    hints: tuple[CompatHint, ...] = ()
    _applied: list[CompatHint] = field(default_factory=list, init=False, repr=False, compare=False)

    def adapt(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` (OpenAI-style request parameters) with this target's hints applied:
        renamed parameters renamed (``max_tokens`` -> ``max_completion_tokens``), refused
        parameters or values dropped (``temperature``; ``response_format`` of type
        ``json_schema``), output caps lowered to the model's limit. Returns a new dict. The
        router learns which hints were applied: one that fails the same way is dropped."""
        from ._compat import adapt

        out, applied = adapt(params, self.hints)
        self._applied.extend(h for h in applied if h not in self._applied)
        return out

    @property
    def applied(self) -> tuple[CompatHint, ...]:
        """The hints :meth:`adapt` applied so far."""
        return tuple(self._applied)


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What happened to one target during a router call.

    Attributes:
        target: the target.
        endpoint: the endpoint hint the call used, or None for the default endpoint.
        skipped: True when the target was not called: it is open, or known not to serve the
            request (``reason``).
        kind: the classified error kind (None when skipped or when the call succeeded).
        error: the exception the call raised, or None.
        retry_after_s: for a skipped target, seconds until it may be tried again.
        reason: for a target skipped for what the request needs, why (``"no tools"``,
            ``"context window 8192 < 12000 tokens"``), else None.
    """

    target: Target
    endpoint: str | None = None
    skipped: bool = False
    kind: ErrorKind | None = None
    error: BaseException | None = None
    retry_after_s: float | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One short line for error messages and logs."""
        if self.skipped and self.reason:
            return f"{self.target}: skipped ({self.reason})"
        if self.skipped:
            wait = f", retry after {self.retry_after_s:.1f}s" if self.retry_after_s else ""
            return f"{self.target}: skipped (open{wait})"
        at = f" via {self.endpoint}" if self.endpoint else ""
        name = type(self.error).__name__ if self.error is not None else "error"
        return f"{self.target}{at}: {self.kind or 'failed'} ({name})"


class AllTargetsFailedError(ResilienceError):
    """Every target of a router call failed or was skipped.

    Attributes:
        attempts: one :class:`AttemptOutcome` per target tried or skipped, in order.
        retry_after_s: the soonest any skipped target may be tried again, or None.
    """

    def __init__(self, attempts: Sequence[AttemptOutcome]) -> None:
        self.attempts = list(attempts)
        waits = [a.retry_after_s for a in self.attempts if a.skipped and a.retry_after_s]
        self.retry_after_s = min(waits) if waits else None
        lines = "; ".join(a.describe() for a in self.attempts) or "no targets"
        super().__init__(f"all {len(self.attempts)} targets failed: {lines}")
