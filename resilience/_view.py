"""The per-process local view: answers ``allow`` without Redis while that is safe.

``allow`` is answered locally when the process's view of the target is trusted:

* the pub/sub subscription to ``<prefix>:transitions`` is up (a sign of life within
  ``SUBSCRIPTION_GRACE_S``), and
* the entry was refreshed (by this process's own script reply, a pub/sub message or the
  revalidation after a (re)subscription) within ``local_view_max_age_seconds``, and
* the target is closed with no consecutive errors (healthy), or open with time left.

Any other case (unknown, failing, probe due, subscription down) asks Redis. A transition made
anywhere reaches this process as fast as pub/sub delivers it (milliseconds); if a message is
lost, the entry is trusted at most ``local_view_max_age_seconds``. A failing target is always
decided by Redis, which is why no call is admitted after a trip commits.

A (re)subscription does not empty the view: anything announced while the subscription was
down may have been missed, so the entries are revalidated with one pipelined read right after
the subscription is confirmed; until then they are trusted no longer than any entry. The view
holds at most ``local_view_max_entries`` targets (least recently used dropped first; about
250 bytes each).

Every update carries the Redis server time it describes; an update older than what an entry
already holds (same generation, earlier server time) is ignored, so a slow revalidation read
cannot overwrite a newer reply.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._keys import decode_name
from ._record import Record
from ._types import Admission, Denial, Permit, StateName, Target
from ._wire import View, int_field, parse_compat, state_name, text

if TYPE_CHECKING:
    from ._classification import CompatHint

__all__ = ["SUBSCRIPTION_GRACE_S", "LocalView", "OpenEntry", "view_from_hashes"]

SUBSCRIPTION_GRACE_S = 3.0
"""A subscription whose last sign of life is older than this is treated as down (s)."""


class _Entry:
    """What the view knows of one target or provider (a plain slotted class: mutable, and
    no dataclass to build at import)."""

    __slots__ = (
        "compat",
        "deadline",
        "generation",
        "hint",
        "hot",
        "reason",
        "recorded",
        "refreshed",
        "server_ms",
        "state",
    )

    def __init__(
        self,
        state: StateName,
        generation: int,
        deadline: float,  # monotonic seconds; 0.0 when closed
        hot: bool,
        hint: str | None,
        reason: str,
        refreshed: float,  # monotonic seconds
        server_ms: int,  # Redis server time the information describes
        recorded: bool = False,  # this process saw the target's entry exist in Redis
        compat: str = "",  # learned compatibility hints (encoded, space-separated)
    ) -> None:
        self.state = state
        self.generation = generation
        self.deadline = deadline
        self.hot = hot
        self.hint = hint
        self.reason = reason
        self.refreshed = refreshed
        self.server_ms = server_ms
        self.recorded = recorded
        self.compat = compat

    def __repr__(self) -> str:
        return f"_Entry({self.state}, gen={self.generation}, hot={self.hot})"


class OpenEntry(Record):
    """A target or provider the view knows to be open (what the fallback starts from).

    ``model`` is None for a provider-wide block; ``remaining_s`` is 0.0 for a half-open
    target whose probe is due.
    """

    __slots__ = ("model", "provider", "reason", "remaining_s")

    def __init__(self, provider: str, model: str | None, remaining_s: float, reason: str) -> None:
        self.provider = provider
        self.model = model
        self.remaining_s = remaining_s
        self.reason = reason


class LocalView:
    """Per-process cache of target states, kept current by replies and pub/sub messages.

    Thread-safe: a sync breaker updates it from the subscriber thread and from callers.

    Args:
        max_age_s: oldest entry trusted (s).
        max_entries: most targets kept (count); the least recently used goes first.
    """

    def __init__(self, max_age_s: float, max_entries: int = 10_000) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._targets: OrderedDict[Target, _Entry] = OrderedDict()
        self._providers: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.last_pong = 0.0  # monotonic time of the subscription's last sign of life

    @property
    def subscribed(self) -> bool:
        """True while the subscription showed a sign of life within the grace period."""
        return time.monotonic() - self.last_pong < SUBSCRIPTION_GRACE_S

    def __len__(self) -> int:
        return len(self._targets)

    def clear(self) -> None:
        with self._lock:
            self._targets.clear()
            self._providers.clear()

    def targets(self) -> list[Target]:
        """The targets held (for revalidation)."""
        with self._lock:
            return list(self._targets)

    def decide(self, target: Target) -> Admission | None:
        """A local answer, or None when Redis must be asked."""
        now = time.monotonic()
        if now - self.last_pong >= SUBSCRIPTION_GRACE_S:
            return None
        with self._lock:
            entry = self._targets.get(target)
            if entry is not None:
                self._targets.move_to_end(target)
            prov = self._providers.get(target.provider)
        if entry is None or now - entry.refreshed > self.max_age_s:
            return None
        if prov is not None:
            if now - prov.refreshed > self.max_age_s:
                return None
            if prov.state == "open" and now < prov.deadline:
                return Denial(target, prov.deadline - now, "provider blocked", "local")
            if prov.state != "closed":
                return None
        if entry.state == "closed" and not entry.hot:
            return Permit(
                target, entry.generation, "", entry.hint, "local", None, hints_of(entry.compat)
            )
        if entry.state == "open" and now < entry.deadline:
            return Denial(target, entry.deadline - now, entry.reason, "local")
        return None

    def healthy(self, target: Target) -> bool:
        """True when the view would admit ``target`` locally (trusted, closed, no
        consecutive errors) and this process has seen its entry exist in Redis: its
        successes may be summed in-process (a target's first success is written at once)."""
        if not isinstance(self.decide(target), Permit):
            return False
        with self._lock:
            entry = self._targets.get(target)
        return entry is not None and entry.recorded

    def summable(self, target: Target) -> bool:
        """For a call the view itself admitted: the entry is still closed without
        consecutive errors, its provider is not blocked, and this process saw the entry exist
        in Redis (the trust checks were made at admission)."""
        entry = self._targets.get(target)
        if entry is None or not entry.recorded or entry.hot or entry.state != "closed":
            return False
        prov = self._providers.get(target.provider)
        return prov is None or prov.state == "closed"

    def touch_healthy(self, target: Target, now_ms: int) -> None:
        """A slim success reply: the target is still closed without consecutive errors."""
        with self._lock:
            entry = self._targets.get(target)
            if entry is not None and entry.state == "closed" and now_ms >= entry.server_ms:
                entry.hot = False
                entry.refreshed = time.monotonic()
                entry.server_ms = now_ms
                entry.recorded = True

    def hot(self, target: Target) -> bool:
        """True when the view knows ``target`` has consecutive errors (or is not closed)."""
        with self._lock:
            entry = self._targets.get(target)
        return entry is not None and (entry.hot or entry.state != "closed")

    def refresh_target(
        self,
        target: Target,
        state: StateName,
        generation: int,
        until_ms: int,
        hot: bool,
        now_ms: int,
    ) -> None:
        """Applies what a merge or a slim success reply tells of ``target`` alone (its
        provider's entry is left as it is)."""
        now = time.monotonic()
        with self._lock:
            old = self._targets.get(target)
            same = old is not None and old.generation == generation
            self._put_target(
                target,
                _Entry(
                    state,
                    generation,
                    _deadline(now, until_ms, now_ms),
                    hot,
                    old.hint if old is not None else None,
                    old.reason if same and old is not None else "",
                    now,
                    now_ms,
                    True,
                    old.compat if old is not None else "",
                ),
            )

    def refresh_provider(
        self,
        provider: str,
        state: StateName,
        generation: int,
        until_ms: int,
        reason: str,
        now_ms: int,
    ) -> None:
        """Applies what a merge reply tells of ``provider``'s own (provider-wide) state, read
        in the same script as the targets it wrote: the provider's entry stays fresh while
        the process's flushes go through, with no read of its own."""
        entry = _provider_entry(state, generation, until_ms, reason, time.monotonic(), now_ms)
        with self._lock:
            self._put_provider(provider, entry)

    def apply_view(self, target: Target, view: View, *, recorded: bool = False) -> None:
        """Applies a script reply or a revalidation read about ``target`` (``recorded``:
        the reply shows the target's entry exists in Redis)."""
        now = time.monotonic()
        with self._lock:
            old = self._targets.get(target)
            recorded = recorded or (old is not None and old.recorded)
            self._put_target(
                target,
                _Entry(
                    view.state,
                    view.generation,
                    _deadline(now, view.open_until_ms, view.now_ms),
                    view.hot,
                    view.hint,
                    view.reason,
                    now,
                    view.now_ms,
                    recorded,
                    view.compat,
                ),
            )
            self._put_provider(target.provider, _provider_entry_of(view, now))

    def apply_provider_view(self, provider: str, view: View) -> None:
        """Applies the provider part of a reply about a provider-wide change."""
        with self._lock:
            self._put_provider(provider, _provider_entry_of(view, time.monotonic()))

    def apply_message(self, data: str) -> None:
        """Applies one pub/sub announcement (format in common.lua ``announce``)."""
        parts = data.split("\t")
        if len(parts) < 9:
            return
        scope, provider, model, state, gen, until, server_now, hot, hint = parts[:9]
        compat = parts[9] if len(parts) > 9 else ""
        try:
            generation, until_ms, now_ms = int(gen), int(until), int(server_now)
        except ValueError:
            return
        now = time.monotonic()
        pname = decode_name(provider)
        with self._lock:
            if scope == "p":
                entry = _provider_entry(state_name(state), generation, until_ms, "", now, now_ms)
                self._put_provider(pname, entry)
                return
            target = Target(pname, decode_name(model))
            old = self._targets.get(target)
            reason = old.reason if old is not None and old.generation == generation else ""
            self._put_target(
                target,
                _Entry(
                    state_name(state),
                    generation,
                    _deadline(now, until_ms, now_ms),
                    hot == "1",
                    hint or None,
                    reason,
                    now,
                    now_ms,
                    old is not None and old.recorded,
                    compat,
                ),
            )

    def open_entries(self) -> list[OpenEntry]:
        """Targets and providers known open or probe-due now (the fallback starts from them)."""
        now = time.monotonic()
        out: list[OpenEntry] = []
        with self._lock:
            for name, p in self._providers.items():
                if p.state == "open" and p.deadline > now:
                    out.append(OpenEntry(name, None, p.deadline - now, p.reason or "blocked"))
            for t, e in self._targets.items():
                if e.state == "open" and e.deadline > now:
                    out.append(OpenEntry(t.provider, t.model, e.deadline - now, e.reason))
                elif e.state == "half_open":
                    out.append(OpenEntry(t.provider, t.model, 0.0, e.reason))
        return out

    # ---- under the lock
    def _put_target(self, target: Target, entry: _Entry) -> None:
        old = self._targets.get(target)
        if old is not None and not _newer(entry, old):
            return
        self._targets[target] = entry
        self._targets.move_to_end(target)
        while len(self._targets) > self.max_entries:
            self._targets.popitem(last=False)

    def _put_provider(self, name: str, entry: _Entry) -> None:
        old = self._providers.get(name)
        if old is None or _newer(entry, old):
            self._providers[name] = entry


@functools.lru_cache(maxsize=1024)
def hints_of(compat: str) -> tuple[CompatHint, ...]:
    """The hints of an encoded ``compat`` field (cached: a few distinct values recur)."""
    return parse_compat(compat) if compat else ()


def _provider_entry(
    state: StateName, generation: int, until_ms: int, reason: str, now: float, now_ms: int
) -> _Entry:
    """A provider's entry (``now``: monotonic seconds; ``until_ms``, ``now_ms``: Redis
    server time, ms)."""
    return _Entry(
        state, generation, _deadline(now, until_ms, now_ms), False, None, reason, now, now_ms
    )


def _provider_entry_of(view: View, now: float) -> _Entry:
    """The provider part of a script reply or a revalidation read."""
    return _provider_entry(
        view.provider_state,
        view.provider_generation,
        view.provider_until_ms,
        view.provider_reason,
        now,
        view.now_ms,
    )


def _newer(new: _Entry, old: _Entry) -> bool:
    if new.generation != old.generation:
        return new.generation > old.generation
    return new.server_ms >= old.server_ms


def _deadline(now_mono: float, until_ms: int, server_now_ms: int) -> float:
    if until_ms <= 0:
        return 0.0
    return now_mono + max(0.0, (until_ms - server_now_ms) / 1000.0)


def view_from_hashes(h: Mapping[str, Any], p: Mapping[str, Any], now_ms: int) -> View:
    """A :class:`View` of a target read from its raw hashes (for revalidation)."""
    return View(
        code=1,
        state=state_name(h.get("state")),
        generation=int_field(h, "gen"),
        open_until_ms=int_field(h, "open_until"),
        now_ms=now_ms,
        hot=int_field(h, "consecutive_errors") > 0,
        provider_state=state_name(p.get("state")),
        provider_until_ms=int_field(p, "open_until"),
        hint=text(h.get("endpoint_hint")) or None,
        token="",
        transition="",
        provider_transition="",
        first_success=False,
        error_count=int_field(h, "error_count"),
        consecutive_errors=int_field(h, "consecutive_errors"),
        reason=text(h.get("reason")),
        provider_generation=int_field(p, "gen"),
        provider_reason=text(p.get("reason")),
        compat=text(h.get("compat")),
    )
