"""Value types shared by every part of the library (no I/O here)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

__all__ = [
    "Admission",
    "Attempt",
    "Classification",
    "Classifier",
    "CompatHint",
    "CompatKind",
    "Denial",
    "ErrorKind",
    "Permit",
    "ProviderState",
    "Scope",
    "StateName",
    "Target",
    "TargetState",
    "TransitionEvent",
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

_COMPAT_FIELDS = ("kind", "param", "value", "to", "feature", "tokens")


@dataclass(frozen=True, slots=True)
class CompatHint:
    """What a compatibility error teaches about what a model accepts.

    Attributes:
        kind: ``"param_renamed"`` (``param`` must be sent as ``to``: ``max_tokens`` ->
            ``max_completion_tokens``), ``"param_unsupported"`` (``param`` is refused, or
            only its ``value``: ``temperature``; ``response_format`` = ``json_schema``),
            ``"feature_unsupported"`` (the model lacks ``feature``: ``"tools"``,
            ``"images"``, ``"streaming"``, ``"system_message"``, ``"json_schema"``, ...),
            ``"context_window"`` (the model accepts at most ``tokens`` tokens of input and
            output together) or ``"max_output"`` (at most ``tokens`` output tokens).
        param: the request parameter concerned (dotted for nested ones), or None.
        value: for ``param_unsupported``, the one refused value, or None when the parameter
            is refused whatever its value.
        to: for ``param_renamed``, the new name.
        feature: for ``feature_unsupported``, what the model lacks.
        tokens: for ``context_window`` and ``max_output``, the limit (tokens).
    """

    kind: CompatKind
    param: str | None = None
    value: str | None = None
    to: str | None = None
    feature: str | None = None
    tokens: int | None = None

    def encode(self) -> str:
        """A compact, reversible text form (no spaces): what Redis and PostgreSQL store."""
        from urllib.parse import quote

        parts = []
        for name in _COMPAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={quote(str(value), safe='')}")
        return "&".join(parts)

    @classmethod
    def decode(cls, text: str) -> CompatHint | None:
        """The hint :meth:`encode` wrote, or None for text that is not one."""
        from urllib.parse import unquote

        values: dict[str, str] = {}
        for part in text.split("&"):
            name, sep, value = part.partition("=")
            if not sep or name not in _COMPAT_FIELDS:
                return None
            values[name] = unquote(value)
        kind = values.get("kind")
        if kind not in ("param_renamed", "param_unsupported", "feature_unsupported",
                        "context_window", "max_output"):  # fmt: skip
            return None
        try:
            tokens = int(values["tokens"]) if "tokens" in values else None
        except ValueError:
            return None
        return cls(
            kind,  # type: ignore[arg-type]
            values.get("param"),
            values.get("value"),
            values.get("to"),
            values.get("feature"),
            tokens,
        )

    def replaces(self) -> str:
        """The encoded prefix of the hints this one replaces (a target keeps one limit of
        each kind, and one hint per parameter)."""
        if self.kind in ("context_window", "max_output"):
            return f"kind={self.kind}&"
        return self.encode()

    def __str__(self) -> str:
        if self.kind == "param_renamed":
            return f"{self.param} -> {self.to}"
        if self.kind == "param_unsupported":
            return f"no {self.param}" + (f"={self.value}" if self.value else "")
        if self.kind == "feature_unsupported":
            return f"no {self.feature}"
        return f"{self.kind.replace('_', ' ')} {self.tokens}"


@dataclass(frozen=True, slots=True)
class Classification:
    """What :func:`resilience.classify` learned from one failure.

    Attributes:
        kind: the error kind that decides the policy.
        retry_after_s: delay the provider asked for, in seconds (header or body), or None.
        endpoint_hint: for ``endpoint_mismatch``, the endpoint or capability the model needs
            (``"/v1/responses"``, ``"capability:tools-unsupported"``,
            ``"inference-profile:us.anthropic..."``), or None.
        status: the HTTP status code when one was found, else None.
        message: a short, redacted description of the error (never holds API keys).
        scope: ``"provider"`` when the failure concerns the whole provider (bad key, quota
            gone), ``"target"`` when it concerns one model.
        compat: what the error teaches about what the model accepts (parameters renamed or
            refused, features it lacks, its token limits); empty when nothing.
    """

    kind: ErrorKind
    retry_after_s: float | None = None
    endpoint_hint: str | None = None
    status: int | None = None
    message: str = ""
    scope: Scope = "target"
    compat: tuple[CompatHint, ...] = ()


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


@dataclass(frozen=True, slots=True)
class TargetState:
    """The shared view of one target, as stored in Redis.

    Attributes:
        provider, model: the target.
        state: ``"closed"`` (calls go), ``"open"`` (calls skipped until ``open_until``) or
            ``"half_open"`` (one probe may go). A target whose provider is blocked is
            reported ``"open"`` with reason ``"provider: <kind>"``.
        error_count: failures recorded since the state was created (counted and not counted
            kinds alike; caller errors and cancellations are never recorded).
        success_count: successes recorded.
        consecutive_errors: counted failures since the last success.
        trips: how many times the target opened after counted failures (a trip or a failed
            probe).
        blacklisted: True while calls to the target are skipped: the target is open or half
            open, or its provider is blocked.
        open_until: when the current break ends (aware UTC datetime), or None when closed.
            Includes a provider-wide block when that one ends later.
        last_error_kind, last_error_message: the last failure's kind and redacted, truncated
            message.
        last_error_time, last_success_time: aware UTC datetimes or None.
        endpoint_hint: the learned endpoint or capability hint, or None.
        generation: bumped by every state transition.
        reason: why the target is open (an error kind, or the operator's text for a manual
            block), or None.
        manual: True when an operator blocked the target.
        provider_blocked_until: end of a provider-wide block (auth, permission, quota), or None.
        since: when this Redis entry was created. The counters restart from zero when the
            entry expires (idle TTL) or is reset; a different ``since`` tells the snapshot job
            that the counters were reset.
        compat: the compatibility hints learned for the target (parameters renamed or
            refused, features it lacks, token limits).
        compat_at: when those hints last changed, or None.
        compat_message: the (redacted) message of the error that last taught a hint, or None.
    """

    provider: str
    model: str
    state: StateName
    error_count: int = 0
    success_count: int = 0
    consecutive_errors: int = 0
    trips: int = 0
    blacklisted: bool = False
    open_until: datetime | None = None
    last_error_kind: str | None = None
    last_error_message: str | None = None
    last_error_time: datetime | None = None
    last_success_time: datetime | None = None
    endpoint_hint: str | None = None
    generation: int = 0
    reason: str | None = None
    manual: bool = False
    provider_blocked_until: datetime | None = None
    since: datetime | None = None
    compat: tuple[CompatHint, ...] = ()
    compat_at: datetime | None = None
    compat_message: str | None = None

    @property
    def target(self) -> Target:
        """The (provider, model) pair of this state."""
        return Target(self.provider, self.model)


class _TargetStateParts:
    """A :class:`TargetState` built from all its fields, in order, with plain slot stores;
    it becomes a TargetState before anyone sees it. The frozen dataclass's ``__init__``
    calls ``object.__setattr__`` once per field: seven times slower, and most of the client
    time of ``states()`` at 100k targets. Same slots, so the object is the same in every
    way (equality, hash, repr, pickling, ``dataclasses.replace``); values are not checked:
    only parsers that make them right call it."""

    __slots__ = TargetState.__slots__

    def __init__(
        self,
        provider: str,
        model: str,
        state: StateName,
        error_count: int,
        success_count: int,
        consecutive_errors: int,
        trips: int,
        blacklisted: bool,
        open_until: datetime | None,
        last_error_kind: str | None,
        last_error_message: str | None,
        last_error_time: datetime | None,
        last_success_time: datetime | None,
        endpoint_hint: str | None,
        generation: int,
        reason: str | None,
        manual: bool,
        provider_blocked_until: datetime | None,
        since: datetime | None,
        compat: tuple[CompatHint, ...],
        compat_at: datetime | None,
        compat_message: str | None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.state = state
        self.error_count = error_count
        self.success_count = success_count
        self.consecutive_errors = consecutive_errors
        self.trips = trips
        self.blacklisted = blacklisted
        self.open_until = open_until
        self.last_error_kind = last_error_kind
        self.last_error_message = last_error_message
        self.last_error_time = last_error_time
        self.last_success_time = last_success_time
        self.endpoint_hint = endpoint_hint
        self.generation = generation
        self.reason = reason
        self.manual = manual
        self.provider_blocked_until = provider_blocked_until
        self.since = since
        self.compat = compat
        self.compat_at = compat_at
        self.compat_message = compat_message
        self.__class__ = TargetState  # type: ignore[assignment]


fast_target_state = cast(Callable[..., TargetState], _TargetStateParts)
"""``fast_target_state(provider, model, state, ..., compat_message)``: a
:class:`TargetState` from every field, positionally (see :class:`_TargetStateParts`)."""


@dataclass(frozen=True, slots=True)
class ProviderState:
    """The shared state of a whole provider: a provider-wide block (auth, quota, an
    operator's ``block_provider``) covers every model of the provider.

    Attributes:
        provider: the provider.
        state: ``"closed"`` (no provider-wide block), ``"open"`` (every model is skipped until
            ``open_until``) or ``"half_open"`` (one call may probe the key or account).
        blocked: True while calls to the provider's models are skipped for this block.
        open_until: when the block ends (aware UTC), or None.
        reason: the error kind or the operator's reason, or None.
        manual: True when an operator blocked the provider.
        trips: how many times the provider was blocked by failures.
        generation: bumped by every provider-wide transition.
    """

    provider: str
    state: StateName
    blocked: bool = False
    open_until: datetime | None = None
    reason: str | None = None
    manual: bool = False
    trips: int = 0
    generation: int = 0


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    """One state transition, read from the capped event log in Redis.

    Attributes:
        id: the Redis stream entry id (``"<ms>-<seq>"``), unique and increasing per provider;
            the snapshot job stores it to copy each event to Postgres exactly once.
        provider: the provider.
        model: the model, or None for a provider-wide block or unblock.
        from_state, to_state: ``"closed"``, ``"open"`` or ``"half_open"``.
        kind: the error kind that caused it, ``"manual"``, ``"probe"`` or ``"reset"``.
        reason: short redacted text (the error message or the operator's reason), may be "".
        generation: the generation after the transition.
        time: when it happened (Redis server time, aware UTC).
        open_until: end of the break the transition started, or None.
        sequence: the event's number in its provider's log (1, 2, 3, ...; restarts when the
            log expires); a gap between two numbers read means the capped log dropped
            events before they were read. None for events logged without one.
    """

    id: str
    provider: str
    model: str | None
    from_state: StateName
    to_state: StateName
    kind: str
    reason: str
    generation: int
    time: datetime
    open_until: datetime | None = None
    sequence: int | None = None


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


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused admission (internal: callers see :class:`CircuitOpenError`)."""

    target: Target
    retry_after_s: float
    reason: str
    source: Literal["local", "redis", "memory", "strict"]


Admission = Permit | Denial


Classifier = Callable[[object, "str | None"], "Classification | None"]
"""A user classifier: ``fn(error, provider) -> Classification | None``, tried before the
built-in classification; None defers to :func:`resilience.classify`."""
