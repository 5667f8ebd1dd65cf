"""The states of targets and providers and the transition events, as read from Redis, and
their parsers.

Loaded the first time a state, a listing or an event is read (``state()``, ``states()``,
``events()``, ``status``, the snapshot job), not by ``import resilience``: a process that
only guards calls never builds these classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, cast

from ._classification import CompatHint
from ._keys import decode_name
from ._types import StateName, Target
from ._view import hints_of
from ._wire import int_field, ms_to_dt, state_name, text, time_field

__all__ = [
    "ProviderState",
    "TargetState",
    "TransitionEvent",
    "fast_target_state",
    "parse_event",
    "parse_provider",
    "parse_row",
    "parse_state",
]


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


# --------------------------------------------------------------------------- parsing reads


def parse_state(
    target: Target, h: Mapping[str, Any], p: Mapping[str, Any], now: int
) -> TargetState:
    """Builds a :class:`TargetState` from the raw target and provider hashes (the hot loop
    of ``states()``: one pass, no per-field helpers for what is usually absent)."""
    get = h.get
    state = state_name(get("state"))
    open_until = int_field(h, "open_until") if state != "closed" else 0
    p_state = state_name(p.get("state")) if p else "closed"
    p_until = int_field(p, "open_until") if p_state != "closed" else 0
    provider_blocked = p_state == "open" or (
        p_state == "half_open" and int_field(p, "lease_until") > now
    )
    target_blocked = (state == "open" and open_until > now) or (
        state == "half_open" and int_field(h, "lease_until") > now
    )
    effective_until = max(open_until, p_until if provider_blocked else 0)
    reason = get("reason") or None
    if provider_blocked and state == "closed":
        # The whole provider is blocked: report the target as open for that reason.
        state = "open"
        reason = f"provider: {text(p.get('reason')) or 'blocked'}"
    return TargetState(
        provider=target.provider,
        model=target.model,
        state=state,
        error_count=int_field(h, "error_count"),
        success_count=int_field(h, "success_count"),
        consecutive_errors=int_field(h, "consecutive_errors"),
        trips=int_field(h, "trips"),
        blacklisted=target_blocked or provider_blocked,
        open_until=ms_to_dt(effective_until) if effective_until else None,
        last_error_kind=get("last_error_kind") or None,
        last_error_message=get("last_error_message") or None,
        last_error_time=time_field(h, "last_error_time"),
        last_success_time=time_field(h, "last_success_time"),
        endpoint_hint=get("endpoint_hint") or None,
        generation=int_field(h, "gen"),
        reason=reason,
        manual=get("manual") == "1",
        provider_blocked_until=ms_to_dt(p_until) if provider_blocked else None,
        since=time_field(h, "since"),
        compat=hints_of(text(get("compat"))),
        compat_at=time_field(h, "compat_at"),
        compat_message=get("compat_message") or None,
    )


class ProviderBlock:
    """What a provider hash says about every target of a listing (computed once)."""

    __slots__ = ("blocked", "reason", "until")

    def __init__(self, p: Mapping[str, Any], now: int) -> None:
        state = state_name(p.get("state"))
        self.blocked = state == "open" or (
            state == "half_open" and int_field(p, "lease_until") > now
        )
        self.until = int_field(p, "open_until") if self.blocked else 0
        self.reason = f"provider: {text(p.get('reason')) or 'blocked'}"


_UTC = timezone.utc
_fromts = datetime.fromtimestamp


def parse_row(
    provider: str, model: str, v: Sequence[Any], block: ProviderBlock, now: int
) -> TargetState:
    """:func:`parse_state` for a row of :data:`READ_FIELDS` values, unrolled: the listing
    of many targets spends its time here. Raises on values the scripts never write."""
    (state, open_until, lease_until, errors, successes, consecutive, trips, reason, kind,
     message, error_at, success_at, hint, gen, manual, compat, compat_at, compat_message,
     since) = v  # fmt: skip
    if not state or state == "closed":
        name: StateName = "closed"
        until = 0
        blocked = False
    else:
        name = "open" if state == "open" else "half_open"
        until = int(open_until or 0)
        blocked = (name == "open" and until > now) or (
            name == "half_open" and int(lease_until or 0) > now
        )
    if block.blocked:
        until = max(until, block.until)
        if name == "closed":
            name, reason = "open", block.reason
        blocked = True
    return fast_target_state(
        provider,
        model,
        name,
        int(errors or 0),
        int(successes or 0),
        int(consecutive or 0),
        int(trips or 0),
        blocked,
        _fromts(until / 1000, _UTC) if until else None,
        kind or None,
        message or None,
        _fromts(int(error_at) / 1000, _UTC) if error_at else None,
        _fromts(int(success_at) / 1000, _UTC) if success_at else None,
        hint or None,
        int(gen or 0),
        reason or None,
        manual == "1",
        _fromts(block.until / 1000, _UTC) if block.blocked and block.until else None,
        _fromts(int(since) / 1000, _UTC) if since else None,
        hints_of(compat) if compat else (),
        _fromts(int(compat_at) / 1000, _UTC) if compat_at else None,
        compat_message or None,
    )


def parse_provider(provider: str, p: Mapping[str, Any], now: int) -> ProviderState:
    """Builds a :class:`ProviderState` from the raw provider hash."""
    state = state_name(p.get("state"))
    until = int_field(p, "open_until") if state != "closed" else 0
    blocked = state == "open" or (state == "half_open" and int_field(p, "lease_until") > now)
    return ProviderState(
        provider=provider,
        state=state,
        blocked=blocked,
        open_until=ms_to_dt(until),
        reason=text(p.get("reason")) or None,
        manual=int_field(p, "manual") == 1,
        trips=int_field(p, "trips"),
        generation=int_field(p, "gen"),
    )


def parse_event(provider: str, entry_id: Any, fields: Mapping[str, Any]) -> TransitionEvent:
    """Builds a :class:`TransitionEvent` from one stream entry."""
    model = text(fields.get("m"))
    ident = text(entry_id)
    ts = ms_to_dt(fields.get("ts")) or ms_to_dt(ident.split("-", 1)[0])
    return TransitionEvent(
        id=ident,
        provider=provider,
        model=decode_name(model) if model else None,
        from_state=state_name(fields.get("f")),
        to_state=state_name(fields.get("t")),
        kind=text(fields.get("k")),
        reason=text(fields.get("r")),
        generation=int_field(fields, "g"),
        time=ts or datetime.now(tz=timezone.utc),
        open_until=ms_to_dt(fields.get("ou")),
        sequence=int_field(fields, "n") or None,
    )


def with_successes(st: TargetState, success_count: int) -> TargetState:
    """``st`` with another success count (this process's summed successes added)."""
    return replace(st, success_count=success_count)
