"""The breaker's flow, written once: sans-IO generators driven by a sync and an async driver.

Each operation (admit a call, record an outcome, an operator change, a read, the pub/sub
subscriber) is a generator that *yields* the I/O it needs (:class:`Script`, :class:`Read`,
:class:`Scan`, or a subscriber step) and receives the reply, or has the I/O error thrown in at
the ``yield``. ``resilience._io`` has the two drivers (blocking redis-py and redis.asyncio)
that run them, as psycopg's generators and waiting functions do. Every decision (fail-open,
the fallback, what a store error means, logs and hooks) lives here, once.

Store errors
------------
A Redis error on the call path never reaches the caller; what it means is decided by
:func:`store_error_kind`:

* ``unavailable`` / ``timeout``: Redis is down or slow. Calls use the in-process fallback
  (``_machine``, seeded from the local view, so targets known open stay refused until their
  known deadline) for ``store_retry_seconds``, then Redis is tried again.
* ``write_refused``: Redis answers but refuses writes (a replica after a failover,
  ``READONLY``, ``OOM command not allowed``, ``MISCONF``). Like ``unavailable``, except that
  only a successful write ends it (a read answered by a read-only replica proves nothing), so
  the breaker does not flap between "reachable" and "unavailable".
* ``script_error``: a Lua runtime error from a healthy Redis (or a malformed reply). That is
  a bug in this library, not an outage: it is logged at ERROR with the script name and line,
  the store-error hook fires with this kind, and Redis is *not* treated as down; the one call
  concerned goes on with the fallback.
* ``busy``: this process had no free connection within the socket timeout (every one of
  ``redis_max_connections`` busy). Not an outage either: the one call goes on with the
  fallback, the hook fires, a warning is logged at most every ``STILL_DOWN_LOG_S``.

While Redis stays unavailable the condition is logged again every ``STILL_DOWN_LOG_S``.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import redis
from redis.exceptions import RedisClusterException

from ._keys import KeySpace, decode_name, encode_name
from ._machine import MemoryStore, ScriptError
from ._pending import Item, Pending
from ._record import Record
from ._redact import redact, redact_url
from ._settings import Settings
from ._types import Admission, Denial, Permit, Target
from ._view import SUBSCRIPTION_GRACE_S, LocalView, hints_of, view_from_hashes
from ._wire import (
    MERGE_FIELDS,
    MERGE_PROVIDER_REPLY_FIELDS,
    MERGE_REPLY_FIELDS,
    READ_FIELDS,
    View,
    config_arg,
    config_values,
    ms,
    ms_to_dt,
    names_argv,
    parse_view,
    prelude_lines,
    record_argv,
    script_argv,
    state_name,
    text,
)

if TYPE_CHECKING:
    from ._classification import Classification, CompatHint
    from ._states import ProviderState, TargetState, TransitionEvent

log = logging.getLogger("resilience")

T = TypeVar("T")

PING_INTERVAL_S = 1.0
"""How often the subscriber pings Redis to notice a dead connection (s)."""

SUBSCRIBE_AFTER_CALLS = 3
"""The subscriber starts at this admission of the process (or after SUBSCRIBE_AFTER_S)."""

SUBSCRIBE_AFTER_S = 1.0
"""... or at the first admission once the breaker has lived this long (s). Until then every
admission asks Redis: a process that makes a call or two starts no thread at all."""

POLL_S = 0.2
"""Longest wait for one pub/sub message before the subscriber checks its stop flag (s)."""

STILL_DOWN_LOG_S = 60.0
"""While Redis stays unavailable, the condition is logged again this often (s)."""

PROVIDER_WIDE = "*"
"""Model name used in hook events for a provider-wide change."""

STATES_BATCH = 1000
"""Targets read per round trip by ``states()`` (HMGET each, the next batch sent before the
replies of the previous one are parsed)."""

DROPPED_LOG_INTERVAL_S = 60.0
"""Dropped sums are logged at most this often (s)."""

EVENTS_BATCH = 1000
"""Stream entries read per XRANGE by ``events()``."""

MERGE_BATCH = 200
"""Targets merged per ``merge.lua`` call by ``flush()``."""

_MERGE_HEAD = 1 + len(MERGE_PROVIDER_REPLY_FIELDS)  # now_ms, then the provider's fields
_MERGE_ROW = len(MERGE_REPLY_FIELDS)

STORE_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisClusterException,
    OSError,
    ValueError,
)
"""What a store call may raise that means "no usable answer from Redis"."""

StoreErrorKind = Literal["unavailable", "timeout", "write_refused", "script_error", "busy"]

SCRIPT_ERRORS: list[str] = []
"""Every Lua error seen in this process (the test suite fails on any)."""

# --------------------------------------------------------------------------- operations
# Records (resilience._record) rather than dataclasses or named tuples: nothing is compiled
# when the classes are made, a fraction of the import time.


class Script(Record):
    """Run one Lua script (``name`` from ``resilience/lua``); the reply is its list."""

    __slots__ = ("args", "keys", "name")

    def __init__(self, name: str, keys: Sequence[str], args: Sequence[str]) -> None:
        self.name = name
        self.keys = keys
        self.args = args


class Read(Record):
    """Run plain commands in one non-transactional pipeline; the reply is their list, plus
    the server time (``TIME``) last when ``with_time``."""

    __slots__ = ("commands", "with_time")

    def __init__(self, commands: Sequence[tuple[Any, ...]], with_time: bool = True) -> None:
        self.commands = commands
        self.with_time = with_time


class Fields(Record):
    """Read the ``fields`` of many hashes (HMGET), ``batches`` of keys at a time, each batch
    in one round trip with the server time. Each batch's reply goes to ``sink(i, rows,
    now_ms)`` as it arrives (``i`` the batch's position, each row the values in ``fields``
    order, None where missing), while the next batch is already on its way: the caller's
    work on one batch overlaps Redis's work on the next. The reply is None."""

    __slots__ = ("batches", "fields", "sink")

    def __init__(
        self,
        batches: Sequence[Sequence[str]],
        fields: Sequence[str],
        sink: Callable[[int, list[Any], int], None],
    ) -> None:
        self.batches = batches
        self.fields = fields
        self.sink = sink


class Scan(Record):
    """Every key matching ``pattern`` (SCAN over every node); the reply is a list."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern


class Listen(Record):
    """Open a pub/sub connection subscribed to ``channel`` (the subscriber's first step)."""

    __slots__ = ("channel",)

    def __init__(self, channel: str) -> None:
        self.channel = channel


class Poll(Record):
    """Ping the subscription when ``ping``, then wait up to ``timeout_s`` for one message;
    the reply is the message (a mapping) or None."""

    __slots__ = ("ping", "timeout_s")

    def __init__(self, ping: bool, timeout_s: float) -> None:
        self.ping = ping
        self.timeout_s = timeout_s


class Pause(Record):
    """Close the pub/sub connection and wait ``seconds`` (or until stopped)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Op = Script | Read | Fields | Scan | Listen | Poll | Pause
Flow = Generator[Op, Any, T]


def store_error_kind(exc: BaseException) -> StoreErrorKind:
    """What a store error means (see the module docstring)."""
    if isinstance(exc, ValueError) and not isinstance(exc, redis.RedisError):
        return "script_error"  # a malformed reply
    if isinstance(exc, redis.ReadOnlyError | redis.exceptions.OutOfMemoryError):
        return "write_refused"
    if isinstance(exc, redis.ResponseError):
        message = str(exc)
        if message.startswith(("READONLY", "OOM", "MISCONF", "NOREPLICAS", "MASTERDOWN")):
            return "write_refused"
        if "user_script" in message or "Error running script" in message:
            return "script_error"
        if "Error compiling script" in message:
            return "script_error"
        return "unavailable"
    if isinstance(exc, redis.exceptions.MaxConnectionsError) or "No connection available" in str(
        exc
    ):
        return "busy"  # this process ran out of connections: Redis itself is fine
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout"
    return "unavailable"


# "script: <sha>, on @user_script:105." names no secret, only noise (and looks like one).
# Patterns compiled at first use (by ``re``'s cache): only a store error needs them.
_SCRIPT_SHA = r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?"
_LUA_LINE = r"user_script:(\d+):\s*(.*?)(?:\s+script:\s*\w+.*)?$"


def describe_script_error(name: str, exc: BaseException) -> str:
    """``record.lua:270: attempt to compare number with nil`` from a Lua error reply."""
    message = str(exc)
    m = re.search(_LUA_LINE, message, re.S)
    if m is None:
        return f"{name}: {type(exc).__name__}: {message[:300]}"
    line = int(m.group(1))
    prelude = prelude_lines()
    where = f"common.lua:{line}" if line <= prelude else f"{name}:{line - prelude}"
    return f"{where}: {m.group(2).strip()[:300]}"


class StoreHealth:
    """Whether Redis is used, and the bookkeeping of an outage (thread-safe enough: plain
    attribute writes; a race only changes which call tries Redis first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.down_until = 0.0
        self.down_since: float | None = None
        self.down_kind: StoreErrorKind | None = None
        self.last_log = 0.0
        self.last_busy_log = 0.0
        self.fallback_calls = 0

    def usable(self, *, write: bool) -> bool:
        """True when Redis should be asked now. After a write refusal only a write may try."""
        if self.down_since is None:
            return True
        if self.down_kind == "write_refused" and not write:
            return False
        return time.monotonic() >= self.down_until


# --------------------------------------------------------------------------- the engine


class Engine:
    """Everything the sync and async breakers share: settings, keys, the local view, the
    in-process fallback, store health, held probe permits, and the flows.

    Args:
        settings: the configuration.
        hooks: objects with any of the :class:`resilience.Hook` methods.
    """

    def __init__(self, settings: Settings, hooks: Sequence[object] = ()) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.hooks = list(hooks)
        self.cfg = config_arg(settings, self.keys)
        self.born = time.monotonic()
        self.admissions = 0
        values = config_values(settings, self.keys)
        self.success_config = [values["window_ms"]]
        self.policy_checked = False
        self._fresh()

    def _fresh(self) -> None:
        s = self.settings
        self.view = LocalView(s.local_view_max_age_seconds, s.local_view_max_entries)
        self.memory = MemoryStore(s.fallback_max_entries)
        self.health = StoreHealth(s)
        self.pending = Pending(s.fallback_max_entries)
        self._dropped_told = 0  # pending.dropped when last logged
        self._dropped_told_at = 0.0
        self._held: dict[Target, Permit] = {}
        self._held_lock = threading.Lock()
        self._memory_lock = threading.Lock()

    def forked(self) -> None:
        """In a forked child: nothing learned through the parent's subscription or held by
        the parent's callers is trusted. New objects, not cleared ones: a lock held by a
        parent thread at the fork would never be released in the child."""
        self._fresh()

    # ---- script calls
    def argv(self, target: Target | None, own: Sequence[str], provider: str = "") -> list[str]:
        return script_argv(self.cfg, names_argv(target, provider), own)

    def script(self, name: str, target: Target, own: Sequence[str]) -> Script:
        return Script(name, self.keys.script_keys(target), self.argv(target, own))

    def _memory(self, name: str, target: Target, own: Sequence[str]) -> View:
        with self._memory_lock:
            reply = self.memory.run(name, self.keys.script_keys(target), self.argv(target, own))
        return parse_view(reply)

    # ---- store health
    def store_failed(self, operation: str, exc: BaseException, script: str = "") -> None:
        kind = store_error_kind(exc)
        if kind == "script_error":
            detail = describe_script_error(script or operation, exc)
            SCRIPT_ERRORS.append(detail)
            log.error(
                "resilience: Lua error in %s during %s; this is a bug in resilience, not an "
                "outage (the call went on without the shared state)",
                detail,
                operation,
            )
            self._store_error_event(operation, detail, kind)
            return
        h = self.health
        if kind == "busy":
            now = time.monotonic()
            if now - h.last_busy_log >= STILL_DOWN_LOG_S:
                h.last_busy_log = now
                log.warning(
                    "resilience: every Redis connection of this process was busy during %s "
                    "for %.2fs; that call went on with the in-process breaker (raise "
                    "redis_max_connections if this repeats)",
                    operation,
                    self.settings.redis_socket_timeout,
                )
            self._store_error_event(operation, str(exc), kind)
            return
        now = time.monotonic()
        first = h.down_since is None
        if first:
            h.down_since = now
            self._seed_fallback()
        h.down_kind = kind
        h.down_until = now + self.settings.store_retry_seconds
        detail = f"{type(exc).__name__}: {redact(re.sub(_SCRIPT_SHA, '', str(exc)), 200)}"
        what = "refuses writes" if kind == "write_refused" else "unavailable"
        if first or now - h.last_log >= STILL_DOWN_LOG_S:
            h.last_log = now
            log.warning(
                "resilience: Redis at %s %s during %s (%s); calls go on with the in-process "
                "breaker (fail_mode=%s)%s",
                redact_url(self.settings.redis_url),
                "still " + what if not first else what,
                operation,
                detail,
                self.settings.fail_mode,
                "" if first else f", {h.fallback_calls} calls decided in-process so far",
            )
        self._store_error_event(operation, detail, kind)

    def _store_error_event(self, operation: str, detail: str, kind: str) -> None:
        if self.hooks:
            events = _events()
            events.fire(
                self.hooks, "on_store_error", events.StoreErrorEvent(operation, detail, kind)
            )

    def store_ok(self, *, write: bool) -> None:
        h = self.health
        if h.down_since is None:
            return
        if h.down_kind == "write_refused" and not write:
            return
        log.warning(
            "resilience: Redis at %s reachable again after %.1fs (%d calls decided in-process)",
            redact_url(self.settings.redis_url),
            time.monotonic() - h.down_since,
            h.fallback_calls,
        )
        self.health = StoreHealth(self.settings)
        with self._memory_lock:
            self.memory.clear()

    def _seed_fallback(self) -> None:
        """The fallback starts from what this process knew: targets and providers the local
        view holds open stay refused until their known deadline."""
        with self._memory_lock:
            self.memory.clear()
            for e in self.view.open_entries():
                if e.model is None:
                    target, op = Target(e.provider, PROVIDER_WIDE), "block_provider"
                    keys = self.keys.provider_script_keys(e.provider)
                    argv = self.argv(None, [op, str(ms(e.remaining_s)), e.reason], e.provider)
                else:
                    target, op = Target(e.provider, e.model), "block"
                    keys = self.keys.script_keys(target)
                    argv = self.argv(target, [op, str(ms(max(e.remaining_s, 0.001))), e.reason])
                try:
                    self.memory.run("admin.lua", keys, argv)
                except ScriptError:  # pragma: no cover - the arguments are built right here
                    log.exception("resilience: could not seed the fallback with %s", target)

    def log_internal_error(self, operation: str) -> None:
        log.exception("resilience: internal error during %s; the call was not affected", operation)

    def memory_state(self, target: Target) -> TargetState:
        """The in-process fallback's state of ``target`` (what it decides by while Redis is
        unavailable); a closed, empty state when it holds none."""
        from ._machine import clock_ms
        from ._states import parse_state

        now = clock_ms()
        with self._memory_lock:
            h = self.memory.load(self.keys.target(target), now)
            p = self.memory.load(self.keys.provider(target.provider), now)
        return parse_state(target, h, p, now)

    def wants_subscriber(self) -> bool:
        """Counts an admission; True once the local view is worth a subscriber (see
        :data:`SUBSCRIBE_AFTER_CALLS`)."""
        if not self.settings.local_view:
            return False
        self.admissions += 1
        return (
            self.admissions >= SUBSCRIBE_AFTER_CALLS
            or time.monotonic() - self.born >= SUBSCRIBE_AFTER_S
        )

    def release_held(self) -> Flow[None]:
        """Gives back the probe leases this process holds through ``allow()`` without an
        outcome yet (at close: the next caller in the fleet probes at once)."""
        with self._held_lock:
            held, self._held = list(self._held.values()), {}
        for permit in held:
            yield from self._record(permit.target, permit, None, None, None, release=True)

    # ---- the call path without I/O
    def admit_local(self, target: Target) -> Admission | None:
        """The admission when it needs no I/O (kill switch, local view), else None."""
        if not self.settings.enabled:
            return Permit(target, None, "", None, "disabled")
        if self.settings.local_view:
            local = self.view.decide(target)
            if local is not None:
                return self._admitted(local)
        return None

    def record_local(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
    ) -> bool:
        """Handles an outcome that needs no I/O (kill switch, a success summed in-process);
        False when :meth:`record` must run."""
        if not self.settings.enabled:
            return True
        if c is not None or (permit is not None and permit.probe):
            return False
        if self.settings.success_flush_seconds <= 0:
            return False
        if permit is not None and permit.source == "local":
            summable = self.view.summable(target)  # checked for trust when admitted
        else:
            summable = self._may_sum(target, permit)
        if not summable:
            return False
        self.pending.add_success(target, latency_s)
        self._note_dropped()
        self._fire_outcome(target, None, latency_s, False)
        return True

    def _note_dropped(self) -> None:
        """Says (at most once a minute) that sums held for Redis were dropped to stay within
        ``fallback_max_entries``: those outcomes will never reach Redis or the history."""
        dropped = self.pending.dropped
        if dropped <= self._dropped_told:
            return
        now = time.monotonic()
        if now - self._dropped_told_at < DROPPED_LOG_INTERVAL_S and self._dropped_told:
            return
        log.warning(
            "[CompatibilityHint] Dropped %d outcomes held for Redis so far (more than "
            "fallback_max_entries=%d targets waiting); they will not reach Redis",
            dropped,
            self.settings.fallback_max_entries,
        )
        self._dropped_told, self._dropped_told_at = dropped, now

    # ---- admission
    def admit(self, target: Target) -> Flow[Admission]:
        """May a call to ``target`` go now? Never raises on a store problem."""
        if not self.settings.enabled:
            return Permit(target, None, "", None, "disabled")
        if self.settings.local_view:
            local = self.view.decide(target)
            if local is not None:
                return self._admitted(local)
        if self.health.usable(write=False):
            yield from self._check_policy()
            try:
                reply = yield self.script("allow.lua", target, [os.urandom(8).hex()])
                view = parse_view(reply)
            except STORE_ERRORS as exc:
                self.store_failed("allow", exc, "allow.lua")
            else:
                self.store_ok(write=False)
                self.view.apply_view(target, view)
                self._after_script(target, view, "redis")
                if view.code == 0:
                    return self._admitted(_denial(target, view, "redis"))
                return self._admitted(
                    Permit(
                        target,
                        view.generation,
                        view.token,
                        view.hint,
                        "redis",
                        view.now_ms,
                        hints_of(view.compat),
                    )
                )
        return self._admitted(self._fallback_admit(target))

    def _fallback_admit(self, target: Target) -> Admission:
        if self.settings.fail_mode == "closed":
            return Denial(target, self.settings.store_retry_seconds, "store unavailable", "strict")
        self.health.fallback_calls += 1
        view = self._memory("allow.lua", target, [os.urandom(8).hex()])
        self._after_script(target, view, "memory")
        if view.code == 0:
            return _denial(target, view, "memory")
        return Permit(
            target, view.generation, view.token, view.hint, "memory", None, hints_of(view.compat)
        )

    def _admitted(self, admission: Admission) -> Admission:
        """Applies shadow mode and fires the admission hooks."""
        if isinstance(admission, Permit):
            if self.hooks:
                events = _events()
                events.fire(
                    self.hooks,
                    "on_allowed",
                    events.AllowedEvent(admission.target, admission.probe, admission.source),
                )
            return admission
        shadow = self.settings.shadow
        if self.hooks:
            events = _events()
            events.fire(
                self.hooks,
                "on_rejected",
                events.RejectedEvent(
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

    def _check_policy(self) -> Flow[None]:
        """Warns once when Redis may evict keys: eviction silently erases open targets."""
        if self.policy_checked:
            return
        self.policy_checked = True
        try:
            reply = yield Read([("CONFIG", "GET", "maxmemory-policy")], with_time=False)
        except STORE_ERRORS:
            return  # CONFIG is often not allowed (managed Redis, ACL): nothing to say
        policy = _config_value(reply[0] if reply else None)
        if policy and policy != "noeviction":
            log.warning(
                "resilience: Redis at %s has maxmemory-policy %s; under memory pressure it "
                "may evict open targets without a trace. Use noeviction (see the runbook).",
                redact_url(self.settings.redis_url),
                policy,
            )

    # ---- outcomes
    def record(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None = None,
        applied: Sequence[CompatHint] = (),
    ) -> Flow[None]:
        """Records one outcome (``c`` None for a success) in Redis, or in the fallback while
        Redis is unavailable; a caller first tries :meth:`record_local`. Never raises on a
        store problem."""
        if not self.settings.enabled:
            return
        probe = permit is not None and permit.probe
        if c is not None and not c.kind.is_recorded:
            # Caller errors and cancellations say nothing about the provider; a probe that
            # ended so only gives its lease back. What a compatibility error teaches about
            # the model is learned (outcome 'c': no counter moves).
            if c.compat or applied:
                yield from self._record(target, permit, c, None, None, applied=applied)
            elif probe:
                yield from self._record(target, permit, None, None, None, release=True)
            self._fire_outcome(target, c, latency_s, probe)
            return
        view = yield from self._record(target, permit, c, latency_s, endpoint, applied=applied)
        if c is not None and view is not None:
            log.info(
                "[CompatibilityHint] Recorded error for %s/%s: %s, %d errors%s",
                target.provider,
                target.model,
                c.kind.value,
                view.error_count,
                f" (endpoint hint {c.endpoint_hint})" if c.endpoint_hint else "",
            )
        self._fire_outcome(target, c, latency_s, probe)

    def _may_sum(self, target: Target, permit: Permit | None) -> bool:
        """A success may be summed in-process when batching is on and the local view says the
        target is healthy (closed, no consecutive errors, subscription up)."""
        if self.settings.success_flush_seconds <= 0:
            return False
        if permit is not None and permit.source not in ("local", "redis"):
            return False
        return self.view.healthy(target)

    def _record(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None,
        *,
        release: bool = False,
        applied: Sequence[CompatHint] = (),
    ) -> Flow[View | None]:
        in_memory = permit is not None and permit.source == "memory"
        plain = c is None and not release and not (permit is not None and permit.probe)
        if plain and not in_memory and not endpoint and not self.view.hot(target):
            done = yield from self._slim_success(target)
            if done:
                return None
        if not in_memory and self.health.usable(write=True):
            args = self._record_args(
                permit, c, latency_s, endpoint, release, own=True, applied=applied
            )
            try:
                view = parse_view((yield self.script("record.lua", target, args)))
            except STORE_ERRORS as exc:
                self.store_failed("record", exc, "record.lua")
            else:
                self.store_ok(write=True)
                self.view.apply_view(target, view, recorded=True)
                self._after_script(target, view, "redis")
                return view
        args = self._record_args(
            permit, c, latency_s, endpoint, release, own=in_memory, applied=applied
        )
        view = self._memory("record.lua", target, args)
        self._after_script(target, view, "memory")
        if not release and (c is None or c.kind.is_recorded):
            self.pending.add_outage(target, c is None)  # merged as counts when Redis answers
            self._note_dropped()
        return view

    def _slim_success(self, target: Target) -> Flow[bool]:
        """One success of a plainly healthy target through ``success.lua``; False when the
        target needs the full record (or Redis did not answer)."""
        if not self.health.usable(write=True):
            return False
        try:
            now = int(
                (yield Script("success.lua", [self.keys.target(target)], self.success_config))
            )
        except STORE_ERRORS as exc:
            self.store_failed("record", exc, "success.lua")
            return False
        if not now:
            return False
        self.store_ok(write=True)
        self.view.touch_healthy(target, now)
        return True

    # ---- summed outcomes
    def flush(self) -> Flow[int]:
        """Writes the summed outcomes (``pending``) to Redis, one ``merge.lua`` call per
        provider (up to :data:`MERGE_BATCH` targets each); returns the targets written. What
        cannot be written is kept for the next try."""
        items = self.pending.take()
        if not items:
            return 0
        if not self.health.usable(write=True):
            self.pending.put_back(items)
            return 0
        by_provider: dict[str, list[Item]] = {}
        for item in items:
            by_provider.setdefault(item.target.provider, []).append(item)
        chunks = [
            group[i : i + MERGE_BATCH]
            for group in by_provider.values()
            for i in range(0, len(group), MERGE_BATCH)
        ]
        done = 0
        for n, chunk in enumerate(chunks):
            provider = chunk[0].target.provider
            keys = [*self.keys.provider_script_keys(provider)]
            keys += [self.keys.target(item.target) for item in chunk]
            own = [value for item in chunk for value in _merge_values(item)]
            try:
                reply = yield Script("merge.lua", keys, self.argv(None, own, provider))
                now = int(reply[0])
                p_state, p_generation, p_until, p_reason = reply[1:_MERGE_HEAD]
                rows = [
                    reply[_MERGE_HEAD + _MERGE_ROW * i : _MERGE_HEAD + _MERGE_ROW * (i + 1)]
                    for i in range(len(chunk))
                ]
            except STORE_ERRORS as exc:
                self.store_failed("flush", exc, "merge.lua")
                self.pending.put_back([item for rest in chunks[n:] for item in rest])
                return done
            self.store_ok(write=True)
            self.view.refresh_provider(
                provider,
                state_name(p_state),
                int(p_generation),
                int(p_until),
                text(p_reason),
                now,
            )
            for item, (state, generation, until, hot) in zip(chunk, rows, strict=True):
                self.view.refresh_target(
                    item.target, state_name(state), int(generation), int(until), hot == 1, now
                )
            done += len(chunk)
        return done

    def _record_args(
        self,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None,
        release: bool,
        *,
        own: bool,
        applied: Sequence[CompatHint] = (),
    ) -> list[str]:
        """``own``: the permit came from the store the outcome goes to, so its generation
        and probe token mean something there."""
        generation, token = None, ""
        if permit is not None and own and permit.source in ("redis", "local", "memory"):
            generation, token = permit.generation, permit.token
        message = ""
        if c is not None:
            message = redact(c.message, self.settings.max_message_chars)
        return record_argv(
            self.settings,
            c=c,
            generation=generation,
            token=token,
            used=endpoint,
            message=message,
            latency_s=latency_s,
            jitter=random.uniform(-1.0, 1.0),
            release=release,
            applied=applied,
        )

    def _fire_outcome(
        self, target: Target, c: Classification | None, latency_s: float | None, probe: bool
    ) -> None:
        if self.hooks:  # no event object on the hot path when nobody listens
            kind = None if c is None else c.kind
            events = _events()
            events.fire(
                self.hooks, "on_outcome", events.OutcomeEvent(target, kind, latency_s, probe)
            )

    # ---- held probe permits for the plain allow()/record_*() API
    def hold(self, permit: Permit) -> None:
        if permit.token:
            with self._held_lock:
                self._held[permit.target] = permit

    def take_held(self, target: Target) -> Permit | None:
        with self._held_lock:
            return self._held.pop(target, None)

    # ---- operator changes and reads (raise StoreUnavailableError)
    def admin(
        self, target: Target | None, provider: str, op: str, seconds: float, reason: str
    ) -> Flow[View]:
        """An operator's change (``admin.lua``); ``target`` None for provider-wide ones."""
        own = [op, str(ms(seconds)) if seconds > 0 else "", reason]
        if target is None:
            keys = self.keys.provider_script_keys(provider)
            call = Script("admin.lua", keys, self.argv(None, own, provider))
        else:
            call = self.script("admin.lua", target, own)
        try:
            view = parse_view((yield call))
        except STORE_ERRORS as exc:
            raise self._read_error("admin", exc, "admin.lua") from exc
        shown = target if target is not None else Target(provider, PROVIDER_WIDE)
        if target is not None:
            self.view.apply_view(target, view)
        else:
            self.view.apply_provider_view(provider, view)
        self._after_script(shown, view, "redis")
        return view

    def _read_error(self, operation: str, exc: BaseException, script: str = "") -> Exception:
        from ._exceptions import StoreUnavailableError

        if store_error_kind(exc) == "script_error":
            self.store_failed(operation, exc, script)
            return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        return StoreUnavailableError(operation, exc)

    def read(self, commands: Sequence[tuple[Any, ...]], with_time: bool = True) -> Flow[list[Any]]:
        try:
            return list((yield Read(commands, with_time)))
        except STORE_ERRORS as exc:
            raise self._read_error("read", exc) from exc

    def state(self, target: Target) -> Flow[TargetState]:
        from ._states import parse_state

        k = self.keys
        h, p, now = yield from self.read(
            [("HGETALL", k.target(target)), ("HGETALL", k.provider(target.provider))]
        )
        return self._with_pending(target, parse_state(target, h, p, now_ms(now)))

    def _with_pending(self, target: Target, st: TargetState) -> TargetState:
        """A process reads its own writes: successes summed here and not yet written count."""
        from ._states import with_successes

        if not len(self.pending):
            return st
        held = self.pending.successes_of(target)
        if not held:
            return st
        return with_successes(st, st.success_count + held)

    def provider_state(self, provider: str) -> Flow[ProviderState]:
        from ._states import parse_provider

        p, now = yield from self.read([("HGETALL", self.keys.provider(provider))])
        return parse_provider(provider, p, now_ms(now))

    def providers(self) -> Flow[list[str]]:
        try:
            found = yield Scan(self.keys.provider_pattern)
        except STORE_ERRORS as exc:
            raise self._read_error("read", exc) from exc
        names = {name for key in found if (name := self.keys.provider_of_key(text(key)))}
        return sorted(names)

    def provider_states(self) -> Flow[list[ProviderState]]:
        from ._states import parse_provider

        names = yield from self.providers()
        if not names:
            return []
        replies = yield from self.read([("HGETALL", self.keys.provider(n)) for n in names])
        now = now_ms(replies[-1])
        return [parse_provider(n, p, now) for n, p in zip(names, replies[:-1], strict=True) if p]

    def states(self, provider: str | None = None) -> Flow[list[TargetState]]:
        from ._states import TargetState

        providers = [provider] if provider is not None else (yield from self.providers())
        if not providers:
            return []
        k = self.keys
        indexes = yield from self.read([("ZRANGE", k.index(n), 0, -1) for n in providers], False)
        # One stream of batches over every provider, keys straight from the index members
        # (encoded names); the provider hash first in each batch: its block applies to
        # every target.
        batches: list[list[str]] = []
        owners: list[tuple[str, list[str]]] = []  # provider and members of each batch
        for name, index in zip(providers, indexes, strict=True):
            members = list(map(text, index))
            tag, pkey = f"{k.tag(name)}:t:", k.provider(name)
            for i in range(0, len(members), STATES_BATCH):
                batch = members[i : i + STATES_BATCH]
                owners.append((name, batch))
                batches.append([pkey, *(tag + m for m in batch)])
        out: list[TargetState] = []

        def sink(i: int, rows: list[Any], now: int) -> None:
            name, batch = owners[i]
            self._rows(name, batch, rows, now, out)

        if batches:
            try:
                yield Fields(batches, READ_FIELDS, sink)
            except STORE_ERRORS as exc:
                raise self._read_error("read", exc) from exc
        if len(self.pending):
            listed = {(s.provider, s.model) for s in out}
            for target in self.pending.targets():  # written by this process, not yet in Redis
                if (target.provider, target.model) not in listed and (
                    provider is None or target.provider == provider
                ):
                    st = TargetState(target.provider, target.model, "closed")
                    out.append(self._with_pending(target, st))
        return out

    def _rows(
        self,
        provider: str,
        members: Sequence[str],
        rows: Sequence[Sequence[Any]],
        now: int,
        out: list[TargetState],
    ) -> None:
        """Appends the states of one batch (the provider hash's :data:`READ_FIELDS`
        values, then one row per member) to ``out``."""
        p = dict(zip(READ_FIELDS, rows[0], strict=True))
        from ._states import ProviderBlock, parse_row, parse_state

        block = ProviderBlock(p, now)
        held = len(self.pending) > 0
        append = out.append
        for member, values in zip(members, rows[1:], strict=True):
            if not values[-1]:  # no 'since': the hash expired
                continue
            model = member if "%" not in member else decode_name(member)
            try:
                st = parse_row(provider, model, values, block, now)
            except (TypeError, ValueError, OverflowError, OSError):  # odd values
                t = Target(provider, model)
                st = parse_state(t, dict(zip(READ_FIELDS, values, strict=True)), p, now)
            if held:
                st = self._with_pending(Target._known(provider, model), st)
            append(st)

    def events(
        self, cursors: Mapping[str, str], providers: Sequence[str] | None = None
    ) -> Flow[list[TransitionEvent]]:
        from ._states import parse_event

        names = list(providers) if providers is not None else (yield from self.providers())
        out: list[TransitionEvent] = []
        for name in names:
            start = cursors.get(name, "0-0")
            while True:
                key = self.keys.events(name)
                (entries,) = yield from self.read(
                    [("XRANGE", key, f"({start}", "+", "COUNT", EVENTS_BATCH)], False
                )
                entries = entries or []
                out.extend(parse_event(name, eid, fields) for eid, fields in entries)
                if len(entries) < EVENTS_BATCH:
                    break
                start = text(entries[-1][0])
        return out

    # ---- the pub/sub subscriber
    def subscribe(self, stopped: Callable[[], bool]) -> Flow[None]:
        """Keeps the local view current until ``stopped()``: subscribes, pings every
        ``PING_INTERVAL_S``, applies announcements, revalidates the view after each
        (re)subscription, and reconnects with backoff (0.1 s doubling to 2 s)."""
        view = self.view
        delay = 0.1
        while not stopped():
            try:
                yield Listen(self.keys.channel)
                last_ping = 0.0
                while not stopped():
                    now = time.monotonic()
                    ping = now - last_ping >= PING_INTERVAL_S
                    if ping:
                        last_ping = now
                    if view.last_pong and now - view.last_pong > SUBSCRIPTION_GRACE_S + 1:
                        raise redis.ConnectionError("pub/sub ping unanswered")
                    msg = yield Poll(ping, POLL_S)
                    if msg is None:
                        continue
                    kind = msg.get("type")
                    if kind == "message":
                        view.apply_message(text(msg.get("data")))
                    # Anything received (a message, the confirmation, a ping's answer in
                    # RESP2 or RESP3 shape) proves the connection is alive.
                    view.last_pong = time.monotonic()
                    if kind == "subscribe":
                        yield from self._revalidate()
                delay = 0.1
            except STORE_ERRORS as exc:
                view.last_pong = 0.0
                log.debug("resilience: subscriber reconnecting after %s", type(exc).__name__)
                yield Pause(delay)
                delay = min(delay * 2, 2.0)

    def _revalidate(self) -> Flow[None]:
        """Re-reads every target the view holds: announcements made while the subscription
        was down may have been missed."""
        targets = self.view.targets()
        k = self.keys
        for start in range(0, len(targets), STATES_BATCH):
            batch = targets[start : start + STATES_BATCH]
            names = sorted({t.provider for t in batch})
            commands = [("HGETALL", k.target(t)) for t in batch]
            commands += [("HGETALL", k.provider(n)) for n in names]
            replies = list((yield Read(commands)))
            now = now_ms(replies[-1])
            phashes = dict(zip(names, replies[len(batch) : len(batch) + len(names)], strict=True))
            for t, h in zip(batch, replies[: len(batch)], strict=True):
                view = view_from_hashes(h, phashes[t.provider], now)
                self.view.apply_view(t, view, recorded=bool(h))

    # ---- logs and hooks after a script ran
    def _after_script(self, target: Target, view: View, source: str) -> None:
        """Logs and fires hooks for a transition this script run made."""
        if view.transition:
            self._transition(target, False, view.transition, view, source)
        if view.provider_transition:
            self._transition(target, True, view.provider_transition, view, source)
        if view.first_success and source == "redis":
            log.info("[CompatibilityHint] First success for %s/%s", target.provider, target.model)

    def _transition(
        self, target: Target, provider_wide: bool, transition: str, v: View, source: str
    ) -> None:
        from_s, _, to_s = transition.partition(">")
        to_state = state_name(to_s)
        until_ms = v.provider_until_ms if provider_wide else v.open_until_ms
        gen = v.provider_generation if provider_wide else v.generation
        reason = v.provider_reason if provider_wide else v.reason
        who = f"provider {target.provider}" if provider_wide else str(target)
        where = " [in-process: Redis unavailable]" if source == "memory" else ""
        if to_state == "open":
            log.warning(
                "[CompatibilityHint] Blacklisted %s (%s, %d errors, %d consecutive) for %.1fs%s%s",
                who,
                reason or "error",
                v.error_count,
                v.consecutive_errors,
                max(0.0, (until_ms - v.now_ms) / 1000.0),
                " [shadow mode: not enforced]" if self.settings.shadow else "",
                where,
            )
        elif to_state == "closed":
            log.warning("[CompatibilityHint] %s recovered (%s)%s", who, transition, where)
        else:
            log.info("[CompatibilityHint] Probing %s (%s)%s", who, transition, where)
        if source != "redis":
            return  # hooks hear of fleet transitions only (each exactly once)
        if not self.hooks:
            return
        events = _events()
        events.fire(
            self.hooks,
            "on_transition",
            events.TransitionInfo(
                Target(target.provider, PROVIDER_WIDE) if provider_wide else target,
                provider_wide,
                state_name(from_s),
                to_state,
                reason or ("probe" if to_state != "open" else "error"),
                gen,
                ms_to_dt(until_ms) if to_state == "open" else None,
                self.settings.shadow,
            ),
        )


def _merge_values(item: Item) -> list[str]:
    """One item's :data:`MERGE_FIELDS` values for merge.lua."""
    latency = item.latency_ms
    values = {
        "model": encode_name(item.target.model),
        "successes": str(item.successes),
        "failures": str(item.failures),
        "latency_ms": "" if latency is None else str(round(latency)),
        "recent": "1" if item.recent else "0",
    }
    return [values[name] for name in MERGE_FIELDS]


def _denial(target: Target, view: View, source: Literal["redis", "memory"]) -> Denial:
    provider = "provider blocked" if view.provider_state != "closed" else ""
    return Denial(target, view.retry_after_s, view.reason or provider or view.state, source)


def _config_value(reply: Any) -> str:
    """The value of a ``CONFIG GET`` reply (a dict, a flat list, or per-node dicts)."""
    if isinstance(reply, Mapping):
        if "maxmemory-policy" in reply:
            return text(reply["maxmemory-policy"])
        for value in reply.values():  # a cluster client answers per node
            found = _config_value(value)
            if found:
                return found
        return ""
    if isinstance(reply, list | tuple) and len(reply) >= 2:
        return text(reply[1])
    return ""


def now_ms(reply: Any) -> int:
    """A ``TIME`` reply as milliseconds since the epoch."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _events() -> ModuleType:
    """``resilience._hooks`` (the hook events and ``fire``), imported when a hook first
    listens; looked up in ``sys.modules`` after that, since outcome and admission hooks
    fire on every call (an import statement there costs about 2 µs)."""
    module = sys.modules.get(_HOOKS_MODULE)
    return module if module is not None else importlib.import_module(_HOOKS_MODULE)


_HOOKS_MODULE = f"{__package__}._hooks"
