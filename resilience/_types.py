"""Value types shared by every part of the library (no I/O here)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._record import Record

if TYPE_CHECKING:
    from ._classification import Classification, CompatHint

__all__ = [
    "Admission",
    "Classifier",
    "CompatKind",
    "Denial",
    "ErrorKind",
    "Permit",
    "Scope",
    "StateName",
    "Target",
]

StateName = Literal["closed", "open", "half_open"]
Scope = Literal["target", "provider"]
Source = Literal["local", "redis", "memory", "strict", "disabled"]

_MAX_NAME_CHARS = 512


class ErrorKind(str, enum.Enum):
    """What a failed provider call tells about the provider.

    The kind decides the policy (see the README's policy table): whether the failure counts
    toward a trip, opens the target for a Retry-After, blocks the whole provider, stores an
    endpoint hint, or is the caller's own fault and is never recorded.
    """

    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MODEL_NOT_FOUND = "model_not_found"
    ENDPOINT_MISMATCH = "endpoint_mismatch"
    AUTH = "auth"
    PERMISSION = "permission"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    BAD_REQUEST = "bad_request"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def is_recorded(self) -> bool:
        """False for kinds that never touch the shared state (caller errors, cancellation);
        read from the policy table (``resilience._policy``)."""
        from ._policy import POLICY

        return POLICY[self].recorded


CompatKind = Literal[
    "param_renamed", "param_unsupported", "feature_unsupported", "context_window", "max_output"
]


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One (provider, model) pair: the unit the breaker tracks.

    Both names are free-form non-empty strings of at most 512 characters; colons, slashes,
    braces and any unicode are fine (``Target("together", "meta-llama/x:y{z}")``).

    Attributes:
        provider, model: the names; together they are the target's identity (equality,
            hashing, ordering, the Redis key).
        context_window: optional: how many tokens the model accepts, for the router's
            context-window fall-over (a ``context_length`` failure goes to targets declared
            with a larger window). Metadata only: ``Target("openai", "gpt-4o",
            context_window=128_000) == Target("openai", "gpt-4o")``.
    """

    provider: str
    model: str
    context_window: int | None = field(default=None, compare=False, kw_only=True)
    # Targets key every per-process table on the call path: the hash is computed once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("provider", "model"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Target.{name} must be a str, got {type(value).__name__}")
            if not value:
                raise ValueError(f"Target.{name} must not be empty")
            if len(value) > _MAX_NAME_CHARS:
                raise ValueError(
                    f"Target.{name} is {len(value)} characters; at most {_MAX_NAME_CHARS}"
                )
        window = self.context_window
        if window is not None and (
            not isinstance(window, int) or isinstance(window, bool) or window <= 0
        ):
            raise ValueError(
                f"Target.context_window must be a positive number of tokens or None, got {window!r}"
            )
        object.__setattr__(self, "_hash", hash((self.provider, self.model)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def _known(cls, provider: str, model: str) -> Target:
        """A target whose names were checked before (read back from Redis): no checks."""
        t = object.__new__(cls)
        object.__setattr__(t, "provider", provider)
        object.__setattr__(t, "model", model)
        object.__setattr__(t, "context_window", None)
        object.__setattr__(t, "_hash", hash((provider, model)))
        return t

    def __reduce__(self) -> Any:
        # str hashes differ between processes: a copy computes its own
        return (_make_target, (self.provider, self.model, self.context_window))

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"

    def __repr__(self) -> str:
        window = "" if self.context_window is None else f", context_window={self.context_window}"
        return f"Target(provider={self.provider!r}, model={self.model!r}{window})"


def _make_target(provider: str, model: str, context_window: int | None) -> Target:
    return Target(provider, model, context_window=context_window)


@dataclass(slots=True)
class Permit:
    """Admission of one call: what ``record_*`` needs to attribute the outcome.

    Attributes:
        target: the target.
        generation: the generation the call was admitted under (None = unknown).
        token: the probe lease token when this call is the half-open probe, else "".
        endpoint: the learned endpoint hint at admission, or None.
        source: where the answer came from: ``"local"`` view, ``"redis"``, ``"memory"``
            (the in-process breaker while Redis is unreachable), ``"disabled"`` (kill
            switch), or a denial's source when shadow mode let a call through.
        admitted_at_ms: Redis server time of the admission (ms since the epoch) when Redis
            answered, else None.
        hints: the compatibility hints learned for the target at admission.
    """

    target: Target
    generation: int | None = None
    token: str = ""
    endpoint: str | None = None
    source: Source = "redis"
    admitted_at_ms: int | None = None
    hints: tuple[CompatHint, ...] = ()

    @property
    def probe(self) -> bool:
        """True when this call is the half-open probe."""
        return bool(self.token)


class Denial(Record):
    """A refused admission (internal: callers see :class:`CircuitOpenError`)."""

    __slots__ = ("reason", "retry_after_s", "source", "target")

    def __init__(
        self,
        target: Target,
        retry_after_s: float,
        reason: str,
        source: Literal["local", "redis", "memory", "strict"],
    ) -> None:
        self.target = target
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.source = source


Admission = Permit | Denial


Classifier = Callable[[object, "str | None"], "Classification | None"]
"""A user classifier: ``fn(error, provider) -> Classification | None``, tried before the
built-in classification; None defers to :func:`resilience.classify`."""
