"""The pure core shared by the sync and async breakers: no I/O here.

It builds script arguments, parses script replies, keeps the per-process local view and the
in-memory fallback breaker, and turns replies into logs and hook events. ``Breaker`` and
``AsyncBreaker`` only add the Redis calls around it.

Local view and its staleness bound
----------------------------------
``allow`` is answered without Redis when the process's view of the target is trusted:

* the pub/sub subscription to ``<prefix>:transitions`` is up (a ping answered within
  ``SUBSCRIPTION_GRACE_S``), and
* the entry was refreshed (by this process's own script reply or by a pub/sub message)
  within ``local_view_max_age_seconds``, and
* the target is closed with no consecutive errors (healthy), or open with time left.

Any other case (unknown, failing, probe due, subscription down) asks Redis. So a transition
made anywhere reaches this process as fast as pub/sub delivers it (milliseconds); if a
message is lost, the entry is trusted at most ``local_view_max_age_seconds``. A failing
target is always decided by Redis, which is why no call is admitted after a trip commits.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Literal

from ._hooks import AllowedEvent, OutcomeEvent, RejectedEvent, StoreErrorEvent, TransitionInfo, fire
from ._keys import KeySpace, decode_name, encode_name
from ._redact import redact, redact_url
from ._settings import Settings
from ._types import (
    Classification,
    ErrorKind,
    StateName,
    Target,
    TargetState,
    TransitionEvent,
)

log = logging.getLogger("resilience")

SUBSCRIPTION_GRACE_S = 3.0
"""A subscription whose last ping answer is older than this is treated as down (s)."""

PING_INTERVAL_S = 1.0
"""How often the subscriber pings Redis to notice a dead connection (s)."""

PROVIDER_WIDE = "*"
"""Model name used in events and hooks for a provider-wide change."""

Source = Literal["local", "redis", "memory", "strict", "disabled"]


# --------------------------------------------------------------------------- scripts


def load_script(name: str) -> str:
    """The text of one script: the shared prelude ``common.lua`` followed by ``name``."""
    base = resources.files("resilience") / "lua"
    return (base / "common.lua").read_text("utf-8") + "\n" + (base / name).read_text("utf-8")


SCRIPT_NAMES = ("allow.lua", "record.lua", "admin.lua")


def config_argv(settings: Settings, keys: KeySpace) -> list[str]:
    """ARGV[1..18] of every script (see common.lua), built once per breaker."""

    def ms(seconds: float) -> str:
        return str(max(1, round(seconds * 1000)))

    return [
        str(settings.failure_threshold),
        ms(settings.window_seconds),
        repr(settings.failure_rate_threshold),
        str(settings.min_calls),
        str(settings.model_not_found_threshold),
        ms(settings.open_seconds),
        repr(settings.backoff_factor),
        ms(settings.max_open_seconds),
        repr(settings.jitter),
        ms(settings.model_not_found_open_seconds),
        ms(settings.provider_block_seconds),
        ms(settings.rate_limit_default_seconds),
        ms(settings.max_retry_after_seconds),
        str(settings.half_open_successes),
        ms(settings.probe_lease_seconds),
        ms(settings.state_ttl_seconds),
        str(settings.events_max_len),
        keys.channel,
    ]


def names_argv(target: Target) -> list[str]:
    """ARGV[19..20]: the encoded provider and model."""
    return [encode_name(target.provider), encode_name(target.model)]


def _clean(text: str | None) -> str:
    """Script arguments and pub/sub fields are tab-separated: no control characters."""
    if not text:
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in text)


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class View:
    """A parsed script reply (field order documented in common.lua)."""

    code: int
    state: StateName
    generation: int
    open_until_ms: int
    now_ms: int
    hot: bool
    provider_state: StateName
    provider_until_ms: int
    hint: str | None
    token: str
    transition: str
    provider_transition: str
    first_success: bool
    error_count: int
    consecutive_errors: int
    reason: str
    provider_generation: int
    provider_reason: str

    @property
    def retry_after_s(self) -> float:
        """Seconds until the later of the target's and the provider's break ends."""
        until = max(self.open_until_ms, self.provider_until_ms)
        return max(0.0, (until - self.now_ms) / 1000.0)


def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _state(value: Any) -> StateName:
    text = _s(value)
    if text == "open":
        return "open"
    if text == "half_open":
        return "half_open"
    return "closed"


def parse_view(reply: Sequence[Any]) -> View:
    """Turns a script reply into a :class:`View`; raises ValueError on a malformed reply."""
    if len(reply) < 18:
        raise ValueError(f"unexpected script reply of {len(reply)} fields")
    return View(
        code=int(reply[0]),
        state=_state(reply[1]),
        generation=int(reply[2]),
        open_until_ms=int(reply[3]),
        now_ms=int(reply[4]),
        hot=bool(int(reply[5])),
        provider_state=_state(reply[6]),
        provider_until_ms=int(reply[7]),
        hint=_s(reply[8]) or None,
        token=_s(reply[9]),
        transition=_s(reply[10]),
        provider_transition=_s(reply[11]),
        first_success=bool(int(reply[12])),
        error_count=int(reply[13]),
        consecutive_errors=int(reply[14]),
        reason=_s(reply[15]),
        provider_generation=int(reply[16]),
        provider_reason=_s(reply[17]),
    )


def ms_to_dt(value: Any) -> datetime | None:
    """Milliseconds since the epoch (or a falsy value) to an aware UTC datetime (or None)."""
    try:
        ms = int(float(_s(value) or 0))
    except ValueError:
        return None
    if ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


def _int(h: Mapping[str, Any], key: str) -> int:
    try:
        return int(float(_s(h.get(key)) or 0))
    except ValueError:
        return 0


def parse_state(
    target: Target, h: Mapping[str, Any], p: Mapping[str, Any], now_ms: int
) -> TargetState:
    """Builds a :class:`TargetState` from the raw target and provider hashes."""
    state = _state(h.get("state"))
    open_until = _int(h, "open_until") if state != "closed" else 0
    p_state = _state(p.get("state"))
    p_until = _int(p, "open_until") if p_state != "closed" else 0
    provider_blocked = p_state == "open" or (
        p_state == "half_open" and _int(p, "lease_until") > now_ms
    )
    target_blocked = (state == "open" and open_until > now_ms) or (
        state == "half_open" and _int(h, "lease_until") > now_ms
    )
    effective_until = max(open_until, p_until if provider_blocked else 0)
    reason = _s(h.get("reason")) or None
    if provider_blocked and state == "closed":
        # The whole provider is blocked: report the target as open for that reason.
        state = "open"
        reason = f"provider: {_s(p.get('reason')) or 'blocked'}"
    return TargetState(
        provider=target.provider,
        model=target.model,
        state=state,
        error_count=_int(h, "error_count"),
        success_count=_int(h, "success_count"),
        consecutive_errors=_int(h, "consecutive_errors"),
        trips=_int(h, "trips"),
        blacklisted=target_blocked or provider_blocked,
        open_until=ms_to_dt(effective_until),
        last_error_kind=_s(h.get("last_error_kind")) or None,
        last_error_message=_s(h.get("last_error_message")) or None,
        last_error_time=ms_to_dt(h.get("last_error_time")),
        last_success_time=ms_to_dt(h.get("last_success_time")),
        endpoint_hint=_s(h.get("endpoint_hint")) or None,
        generation=_int(h, "gen"),
        reason=reason,
        manual=_int(h, "manual") == 1,
        provider_blocked_until=ms_to_dt(p_until) if provider_blocked else None,
        since=ms_to_dt(h.get("since")),
    )


def parse_event(provider: str, entry_id: Any, fields: Mapping[str, Any]) -> TransitionEvent:
    """Builds a :class:`TransitionEvent` from one stream entry."""
    model = _s(fields.get("m"))
    ident = _s(entry_id)
    ts = ms_to_dt(fields.get("ts")) or ms_to_dt(ident.split("-", 1)[0])
    return TransitionEvent(
        id=ident,
        provider=provider,
        model=decode_name(model) if model else None,
        from_state=_state(fields.get("f")),
        to_state=_state(fields.get("t")),
        kind=_s(fields.get("k")),
        reason=_s(fields.get("r")),
        generation=_int(fields, "g"),
        time=ts or datetime.now(tz=timezone.utc),
        open_until=ms_to_dt(fields.get("ou")),
        sequence=_int(fields, "n") or None,
    )


# --------------------------------------------------------------------------- permits


@dataclass(slots=True)
class Permit:
    """Admission of one call: what ``record_*`` needs to attribute the outcome.

    Attributes:
        target: the target.
        generation: the generation the call was admitted under (None = unknown).
        token: the probe lease token when this call is the half-open probe, else "".
        endpoint: the learned endpoint hint at admission, or None.
        source: where the answer came from: ``"local"`` view, ``"redis"``, ``"memory"``
            (Redis unreachable), ``"disabled"`` (kill switch), or a denial's source when
            shadow mode let a call through.
        admitted_at_ms: Redis server time of the admission (ms since the epoch) when Redis
            answered, else None.
    """

    target: Target
    generation: int | None = None
    token: str = ""
    endpoint: str | None = None
    source: Source = "redis"
    admitted_at_ms: int | None = None

    @property
    def probe(self) -> bool:
        return bool(self.token)


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused admission."""

    target: Target
    retry_after_s: float
    reason: str
    source: Literal["local", "redis", "memory", "strict"]


Admission = Permit | Denial


# --------------------------------------------------------------------------- local view


@dataclass(slots=True)
class _Entry:
    state: StateName
    generation: int
    deadline: float  # monotonic seconds; 0.0 when closed
    hot: bool
    hint: str | None
    reason: str
    refreshed: float


@dataclass(slots=True)
class _ProviderEntry:
    state: StateName
    generation: int
    deadline: float
    refreshed: float


class LocalView:
    """Per-process cache of target states, kept current by replies and pub/sub messages.

    Thread-safe: sync breakers update it from the subscriber thread and from callers.
    """

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._targets: dict[Target, _Entry] = {}
        self._providers: dict[str, _ProviderEntry] = {}
        self._lock = threading.Lock()
        self.last_pong = 0.0  # monotonic time of the subscription's last sign of life

    @property
    def subscribed(self) -> bool:
        return time.monotonic() - self.last_pong < SUBSCRIPTION_GRACE_S

    def clear(self) -> None:
        with self._lock:
            self._targets.clear()
            self._providers.clear()

    def decide(self, target: Target) -> Admission | None:
        """A local answer, or None when Redis must be asked."""
        now = time.monotonic()
        if now - self.last_pong >= SUBSCRIPTION_GRACE_S:
            return None
        with self._lock:
            entry = self._targets.get(target)
            prov = self._providers.get(target.provider)
        if entry is None or now - entry.refreshed > self.max_age_s:
            return None
        if prov is not None and now - prov.refreshed <= self.max_age_s:
            if prov.state == "open" and now < prov.deadline:
                return Denial(target, prov.deadline - now, "provider blocked", "local")
            if prov.state != "closed":
                return None
        elif prov is not None:
            return None
        if entry.state == "closed" and not entry.hot:
            return Permit(target, entry.generation, "", entry.hint, "local")
        if entry.state == "open" and now < entry.deadline:
            return Denial(target, entry.deadline - now, entry.reason, "local")
        return None

    def apply_view(self, target: Target, view: View) -> None:
        """Applies this process's own script reply (newest information it has)."""
        now = time.monotonic()
        with self._lock:
            old = self._targets.get(target)
            if old is None or view.generation >= old.generation:
                self._targets[target] = _Entry(
                    view.state,
                    view.generation,
                    _deadline(now, view.open_until_ms, view.now_ms),
                    view.hot,
                    view.hint,
                    view.reason,
                    now,
                )
            pold = self._providers.get(target.provider)
            if pold is None or view.provider_generation >= pold.generation:
                self._providers[target.provider] = _ProviderEntry(
                    view.provider_state,
                    view.provider_generation,
                    _deadline(now, view.provider_until_ms, view.now_ms),
                    now,
                )

    def apply_message(self, data: str) -> None:
        """Applies one pub/sub announcement (format in common.lua ``announce``)."""
        parts = data.split("\t")
        if len(parts) < 9:
            return
        scope, provider, model, state, gen, until, server_now, hot, hint = parts[:9]
        try:
            generation, until_ms, now_ms = int(gen), int(until), int(server_now)
        except ValueError:
            return
        now = time.monotonic()
        pname = decode_name(provider)
        with self._lock:
            if scope == "p":
                pold = self._providers.get(pname)
                if pold is None or generation >= pold.generation:
                    self._providers[pname] = _ProviderEntry(
                        _state(state), generation, _deadline(now, until_ms, now_ms), now
                    )
                return
            target = Target(pname, decode_name(model))
            old = self._targets.get(target)
            if old is None or generation >= old.generation:
                self._targets[target] = _Entry(
                    _state(state),
                    generation,
                    _deadline(now, until_ms, now_ms),
                    hot == "1",
                    hint or None,
                    old.reason if old is not None and old.generation == generation else "",
                    now,
                )


def _deadline(now_mono: float, until_ms: int, server_now_ms: int) -> float:
    if until_ms <= 0:
        return 0.0
    return now_mono + max(0.0, (until_ms - server_now_ms) / 1000.0)


# --------------------------------------------------------------------------- memory breaker


@dataclass(slots=True)
class _MemEntry:
    consecutive: int = 0
    trips: int = 0
    deadline: float = 0.0
    reason: str = ""
    probing: bool = False


class MemoryBreaker:
    """The per-process breaker that protects a worker while Redis is unreachable.

    It applies the same trip rules as the scripts in a simpler form (consecutive failures,
    exponential break, Retry-After, long blocks for auth/permission/quota, one probe per
    process) with ``time.monotonic()`` for deadlines. It forgets everything when Redis
    comes back.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: dict[Target, _MemEntry] = {}
        self._providers: dict[str, float] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._providers.clear()

    def admit(self, target: Target) -> Admission:
        now = time.monotonic()
        with self._lock:
            until = self._providers.get(target.provider, 0.0)
            if now < until:
                return Denial(target, until - now, "provider blocked", "memory")
            e = self._entries.get(target)
            if e is None or e.deadline == 0.0:
                return Permit(target, None, "", None, "memory")
            if now < e.deadline:
                return Denial(target, e.deadline - now, e.reason, "memory")
            if e.probing:
                return Denial(target, 0.0, e.reason, "memory")
            e.probing = True
            return Permit(target, None, "memory-probe", None, "memory")

    def release(self, target: Target) -> None:
        """A probe ended without an answer (cancelled, caller error): let another try."""
        with self._lock:
            e = self._entries.get(target)
            if e is not None:
                e.probing = False

    def record(self, target: Target, c: Classification | None, probe: bool) -> None:
        s = self.settings
        now = time.monotonic()
        with self._lock:
            e = self._entries.setdefault(target, _MemEntry())
            if probe:
                e.probing = False
            if c is None:
                if probe or e.deadline == 0.0:
                    e.consecutive, e.deadline, e.reason = 0, 0.0, ""
                else:
                    e.consecutive = 0
                return
            kind = c.kind
            if not kind.is_recorded or kind is ErrorKind.ENDPOINT_MISMATCH:
                return
            retry = min(c.retry_after_s or 0.0, s.max_retry_after_seconds)
            if kind in (ErrorKind.AUTH, ErrorKind.PERMISSION, ErrorKind.QUOTA_EXHAUSTED):
                until = now + max(s.provider_block_seconds, retry)
                if c.scope == "provider":
                    self._providers[target.provider] = max(
                        until, self._providers.get(target.provider, 0.0)
                    )
                else:
                    e.deadline, e.reason = max(until, e.deadline), kind.value
                return
            if kind is ErrorKind.RATE_LIMITED:
                until = now + (retry or s.rate_limit_default_seconds)
                e.deadline, e.reason = max(until, e.deadline), kind.value
                return
            e.consecutive += 1
            threshold = (
                s.model_not_found_threshold
                if kind is ErrorKind.MODEL_NOT_FOUND
                else s.failure_threshold
            )
            if probe or (e.deadline == 0.0 and e.consecutive >= threshold):
                e.trips += 1
                e.deadline = now + backoff_seconds(s, e.trips, random.uniform(-1, 1))
                e.reason = kind.value


def backoff_seconds(settings: Settings, trips: int, r: float) -> float:
    """The break after the ``trips``-th trip, in seconds (same formula as common.lua)."""
    d = settings.open_seconds * settings.backoff_factor ** (max(trips, 1) - 1)
    d = min(d, settings.max_open_seconds)
    d = d * (1 + settings.jitter * r)
    return max(0.001, min(d, settings.max_open_seconds))


# --------------------------------------------------------------------------- shared base


@dataclass(slots=True)
class RecordArgs:
    """Per-call ARGV[21..30] of record.lua."""

    outcome: str
    generation: str = ""
    token: str = ""
    retry_ms: str = ""
    hint: str = ""
    used: str = ""
    message: str = ""
    latency_ms: str = ""
    scope: str = "t"
    jitter: str = "0"

    def argv(self) -> list[str]:
        return [
            self.outcome,
            self.generation,
            self.token,
            self.retry_ms,
            self.hint,
            self.used,
            self.message,
            self.latency_ms,
            self.scope,
            self.jitter,
        ]


class BreakerCore:
    """Everything the sync and async breakers share that is not I/O."""

    def __init__(self, settings: Settings | None, hooks: Sequence[object] = ()) -> None:
        self.settings = settings if settings is not None else Settings()
        self.keys = KeySpace(self.settings.key_prefix)
        self.hooks = list(hooks)
        self.cfg = config_argv(self.settings, self.keys)
        self.view = LocalView(self.settings.local_view_max_age_seconds)
        self.memory = MemoryBreaker(self.settings)
        self._store_down_until = 0.0
        self._store_down_since: float | None = None
        self._held: dict[Target, Permit] = {}
        self._held_lock = threading.Lock()

    def forked(self) -> None:
        """In a forked child: nothing learned through the parent's subscription or held by
        the parent's callers is trusted."""
        # New objects, not cleared ones: a lock held by a parent thread at the fork would
        # never be released in the child.
        self.view = LocalView(self.settings.local_view_max_age_seconds)
        self.memory = MemoryBreaker(self.settings)
        self._held_lock = threading.Lock()
        self._held = {}

    # ---- store health
    def store_usable(self) -> bool:
        return time.monotonic() >= self._store_down_until

    def store_failed(self, operation: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._store_down_until = now + self.settings.store_retry_seconds
        self.view.clear()
        text = f"{type(exc).__name__}: {redact(str(exc), 200)}"
        if self._store_down_since is None:
            self._store_down_since = now
            log.warning(
                "resilience: Redis at %s unavailable during %s (%s); calls go on with the "
                "in-process breaker (fail_mode=%s)",
                redact_url(self.settings.redis_url),
                operation,
                text,
                self.settings.fail_mode,
            )
        fire(self.hooks, "on_store_error", StoreErrorEvent(operation, text))

    def store_ok(self) -> None:
        if self._store_down_since is not None:
            log.warning(
                "resilience: Redis at %s reachable again after %.1fs",
                redact_url(self.settings.redis_url),
                time.monotonic() - self._store_down_since,
            )
            self._store_down_since = None
            self.memory.clear()

    def log_internal_error(self, operation: str) -> None:
        log.exception("resilience: internal error during %s; the call was not affected", operation)

    # ---- arguments
    def argv(self, target: Target, extra: Sequence[str]) -> list[str]:
        return [*self.cfg, *names_argv(target), *extra]

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(8)

    def record_args(
        self,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None,
    ) -> RecordArgs:
        args = RecordArgs(outcome="s" if c is None else c.kind.value)
        if permit is not None:
            if permit.generation is not None and permit.source in ("redis", "local"):
                args.generation = str(permit.generation)
            args.token = permit.token if permit.source == "redis" else ""
        # Only the caller knows whether it used the hint: None means the default endpoint.
        args.used = _clean(endpoint)
        if latency_s is not None and math.isfinite(latency_s):
            args.latency_ms = str(max(0, round(latency_s * 1000)))
        if c is not None:
            if c.retry_after_s is not None and math.isfinite(c.retry_after_s):
                args.retry_ms = str(max(1, math.ceil(c.retry_after_s * 1000)))
            args.hint = _clean(c.endpoint_hint)
            args.message = _clean(redact(c.message, self.settings.max_message_chars))
            args.scope = "p" if c.scope == "provider" else "t"
            args.jitter = repr(random.uniform(-1.0, 1.0))
        return args

    # ---- admission
    def admission_from_view(self, target: Target, view: View) -> Admission:
        self.view.apply_view(target, view)
        self.after_script(target, view)
        if view.code == 0:
            reason = view.reason or ("provider blocked" if view.provider_state != "closed" else "")
            return Denial(target, view.retry_after_s, reason or view.state, "redis")
        return Permit(target, view.generation, view.token, view.hint, "redis", view.now_ms)

    def store_down_admission(self, target: Target) -> Admission:
        if self.settings.fail_mode == "closed":
            return Denial(target, self.settings.store_retry_seconds, "store unavailable", "strict")
        return self.memory.admit(target)

    def finish_admission(self, admission: Admission) -> Admission:
        """Applies shadow mode and fires the admission hooks."""
        if isinstance(admission, Permit):
            if self.hooks:
                fire(
                    self.hooks,
                    "on_allowed",
                    AllowedEvent(admission.target, admission.probe, admission.source),
                )
            return admission
        if isinstance(admission, Denial):
            shadow = self.settings.shadow
            fire(
                self.hooks,
                "on_rejected",
                RejectedEvent(
                    admission.target,
                    admission.retry_after_s,
                    admission.reason,
                    admission.source,
                    shadow,
                ),
            )
            if shadow:
                log.info(
                    "[CompatibilityHint] Shadow mode: would skip %s (%s, %.1fs left)",
                    admission.target,
                    admission.reason,
                    admission.retry_after_s,
                )
                return Permit(admission.target, None, "", None, admission.source)
        return admission

    # ---- held probe tokens for the plain allow()/record_*() API
    def hold(self, permit: Permit) -> None:
        if permit.token:
            with self._held_lock:
                self._held[permit.target] = permit

    def take_held(self, target: Target) -> Permit | None:
        with self._held_lock:
            return self._held.pop(target, None)

    # ---- after a script ran
    def after_script(self, target: Target, view: View) -> None:
        """Logs and fires hooks for a transition this process's script run made."""
        if view.transition:
            self._announce(target, False, view.transition, view)
        if view.provider_transition:
            self._announce(target, True, view.provider_transition, view)
        if view.first_success:
            log.info("[CompatibilityHint] First success for %s/%s", target.provider, target.model)

    def _announce(self, target: Target, provider_wide: bool, transition: str, v: View) -> None:
        from_s, _, to_s = transition.partition(">")
        until_ms = v.provider_until_ms if provider_wide else v.open_until_ms
        until = ms_to_dt(until_ms) if _state(to_s) == "open" else None
        gen = v.provider_generation if provider_wide else v.generation
        reason = v.provider_reason if provider_wide else v.reason
        who = f"provider {target.provider}" if provider_wide else f"{target}"
        if _state(to_s) == "open":
            left = max(0.0, (until_ms - v.now_ms) / 1000.0)
            log.warning(
                "[CompatibilityHint] Blacklisted %s (%s, %d errors, %d consecutive) for %.1fs%s",
                who,
                reason or "error",
                v.error_count,
                v.consecutive_errors,
                left,
                " [shadow mode: not enforced]" if self.settings.shadow else "",
            )
        elif _state(to_s) == "closed":
            log.warning("[CompatibilityHint] %s recovered (%s)", who, transition)
        else:
            log.info("[CompatibilityHint] Probing %s (%s)", who, transition)
        fire(
            self.hooks,
            "on_transition",
            TransitionInfo(
                Target(target.provider, PROVIDER_WIDE) if provider_wide else target,
                provider_wide,
                _state(from_s),
                _state(to_s),
                reason or ("probe" if _state(to_s) != "open" else "error"),
                gen,
                until,
                self.settings.shadow,
            ),
        )

    def log_recorded(self, target: Target, c: Classification, view: View | None) -> None:
        count = f", {view.error_count} errors" if view is not None else ""
        log.info(
            "[CompatibilityHint] Recorded error for %s/%s: %s%s%s",
            target.provider,
            target.model,
            c.kind.value,
            count,
            f" (endpoint hint {c.endpoint_hint})" if c.endpoint_hint else "",
        )

    def fire_outcome(
        self, target: Target, c: Classification | None, latency_s: float | None, probe: bool
    ) -> None:
        if self.hooks:  # no event object on the hot path when nobody listens
            fire(
                self.hooks,
                "on_outcome",
                OutcomeEvent(target, None if c is None else c.kind, latency_s, probe),
            )

    # ---- outcomes
    def plan_outcome(
        self,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None,
    ) -> RecordArgs | None:
        """The record.lua arguments for one outcome, or None when Redis is not told."""
        if not self.settings.enabled:
            return None
        if c is not None and not c.kind.is_recorded:
            # Caller errors and cancellations say nothing about the provider; a probe that
            # ended so only gives its lease back.
            if permit is not None and permit.token and permit.source == "redis":
                return RecordArgs(outcome="r", token=permit.token)
            return None
        if permit is not None and permit.source == "memory":
            return None
        return self.record_args(permit, c, latency_s, endpoint)

    def after_outcome(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        view: View | None,
    ) -> None:
        """Bookkeeping after an outcome was (or could not be) recorded in Redis."""
        if not self.settings.enabled:
            return
        probe = permit is not None and bool(permit.token)
        if c is None or c.kind.is_recorded:
            if view is None:
                memory_probe = permit is not None and permit.source == "memory" and probe
                self.memory.record(target, c, memory_probe)
            if c is not None:
                self.log_recorded(target, c, view)
        elif permit is not None and permit.source == "memory" and permit.token:
            self.memory.release(target)
        self.fire_outcome(target, c, latency_s, probe)
