"""The script protocol, defined once: argument and reply layouts, building and parsing.

The Lua scripts (``resilience/lua``) declare the same tuples (``CONFIG_FIELDS``,
``RECORD_FIELDS``, ``ALLOW_FIELDS``, ``ADMIN_FIELDS``, ``REPLY_FIELDS``); a test keeps the
two sides equal. The in-process twin of the scripts (``_machine``) reads and writes the
same layouts, so the fallback and Redis answer in one format. No I/O here.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._durations import MAX_DURATION_S
from ._keys import KeySpace, encode_name
from ._policy import policy_of
from ._record import Record
from ._settings import Settings
from ._types import StateName, Target

if TYPE_CHECKING:
    from ._classification import Classification, CompatHint

SCRIPT_NAMES = (
    "allow.lua",
    "record.lua",
    "admin.lua",
    "merge.lua",
    "success.lua",
)

CONFIG_FIELDS = (
    "window_ms",
    "failure_rate_threshold",
    "min_calls",
    "open_ms",
    "backoff_factor",
    "max_open_ms",
    "jitter",
    "half_open_successes",
    "probe_lease_ms",
    "state_ttl_ms",
    "max_retry_ms",
    "events_max_len",
    "flap_window_ms",
    "flap_factor",
    "retry_floor_ms",
    "channel",
)
"""The configuration block every script receives first (common.lua)."""

RECORD_FIELDS = (
    "outcome",
    "kind",
    "counts",
    "effect",
    "threshold",
    "break_ms",
    "reachable",
    "generation",
    "token",
    "retry_ms",
    "hint",
    "used",
    "message",
    "latency_ms",
    "scope",
    "jitter",
    "compat",
    "replaces",
    "applied",
)
"""record.lua's own arguments (after the configuration block, provider and model)."""

ALLOW_FIELDS = ("candidate",)
"""allow.lua's own arguments."""

ADMIN_FIELDS = ("operation", "duration_ms", "reason")
"""admin.lua's own arguments."""

MERGE_FIELDS = ("model", "successes", "failures", "latency_ms", "recent")
"""merge.lua's arguments, once per item."""

MERGE_PROVIDER_REPLY_FIELDS = (
    "provider_state",
    "provider_generation",
    "provider_until_ms",
    "provider_reason",
)
"""merge.lua's reply about the provider (after the leading now_ms)."""

MERGE_REPLY_FIELDS = ("state", "generation", "open_until_ms", "hot")
"""merge.lua's reply per item (after the provider's :data:`MERGE_PROVIDER_REPLY_FIELDS`)."""

READ_FIELDS = (
    "state",
    "open_until",
    "lease_until",
    "error_count",
    "success_count",
    "consecutive_errors",
    "trips",
    "reason",
    "last_error_kind",
    "last_error_message",
    "last_error_time",
    "last_success_time",
    "endpoint_hint",
    "gen",
    "manual",
    "compat",
    "compat_at",
    "compat_message",
    "since",
)
"""The hash fields ``states()`` reads (a listing needs no more); ``since``
last (a row whose last value is empty is a hash that expired)."""

SUCCESS_FIELDS = ("window_ms",)
"""success.lua's arguments (a standalone script: no configuration block)."""

STANDALONE = frozenset({"success.lua"})
"""Scripts loaded without the common.lua prelude."""

REPLY_FIELDS = (
    "code",
    "state",
    "generation",
    "open_until_ms",
    "now_ms",
    "hot",
    "provider_state",
    "provider_until_ms",
    "hint",
    "token",
    "transition",
    "provider_transition",
    "first_success",
    "error_count",
    "consecutive_errors",
    "reason",
    "provider_generation",
    "provider_reason",
    "compat",
)
"""The reply of every state-changing script (common.lua ``reply``)."""

MAX_DURATION_MS = int(MAX_DURATION_S * 1000)
"""Longest duration any script argument may carry (ms; :data:`MAX_DURATION_S`)."""


@functools.cache
def _lua(name: str) -> str:
    """A file of ``resilience/lua`` (package data; read from disk when it is there, which
    spares importing importlib.resources and pathlib)."""
    path = os.path.join(os.path.dirname(__file__), "lua", name)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    from importlib import resources

    text: str = (resources.files("resilience") / "lua" / name).read_text("utf-8")
    return text


def load_script(name: str) -> str:
    """The text of one script: the shared prelude ``common.lua`` followed by ``name``
    (standalone scripts, :data:`STANDALONE`, without the prelude)."""
    if name in STANDALONE:
        return _lua(name)
    return _lua("common.lua") + "\n" + _lua(name)


def prelude_lines() -> int:
    """Lines of the prelude before a script's own first line (to map Lua error lines)."""
    return _lua("common.lua").count("\n") + 1


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds, at least 1, at most :data:`MAX_DURATION_MS`."""
    if not math.isfinite(seconds):
        return MAX_DURATION_MS
    return min(MAX_DURATION_MS, max(1, round(seconds * 1000)))


def config_values(settings: Settings, keys: KeySpace) -> dict[str, str]:
    """The configuration block by field name."""
    s = settings
    return {
        "window_ms": str(ms(s.window_seconds)),
        "failure_rate_threshold": repr(s.failure_rate_threshold),
        "min_calls": str(s.min_calls),
        "open_ms": str(ms(s.open_seconds)),
        "backoff_factor": repr(s.backoff_factor),
        "max_open_ms": str(ms(s.max_open_seconds)),
        "jitter": repr(s.jitter),
        "half_open_successes": str(s.half_open_successes),
        "probe_lease_ms": str(ms(s.probe_lease_seconds)),
        "state_ttl_ms": str(ms(s.state_ttl_seconds)),
        "max_retry_ms": str(ms(s.max_retry_after_seconds)),
        "events_max_len": str(s.events_max_len),
        "flap_window_ms": str(ms(s.flap_window_seconds)) if s.flap_window_seconds else "0",
        "flap_factor": repr(s.flap_factor),
        "retry_floor_ms": str(ms(s.retry_after_floor_seconds)),
        "channel": keys.channel,
    }


CONFIG_SEP = "\t"
"""Separates the fields of the configuration block (ARGV[1])."""

ARGS_SEP = "\x1f"
"""Separates a script's own arguments (ARGV[4]); free text is cleaned of it by :func:`clean`."""


def config_arg(settings: Settings, keys: KeySpace) -> str:
    """The configuration block (ARGV[1]): :data:`CONFIG_FIELDS` joined by tabs, built once
    per breaker."""
    values = config_values(settings, keys)
    return CONFIG_SEP.join(values[name] for name in CONFIG_FIELDS)


def script_argv(config: str, names: Sequence[str], own: Sequence[str]) -> list[str]:
    """The four ARGV strings of a script call (layout in common.lua)."""
    return [config, *names, ARGS_SEP.join(own)]


def names_argv(target: Target | None, provider: str | None = None) -> list[str]:
    """The encoded provider and model ('' as the model of a provider-wide operation)."""
    if target is None:
        assert provider is not None
        return [encode_name(provider), ""]
    return [encode_name(target.provider), encode_name(target.model)]


def clean(text: str | None) -> str:
    """Script arguments and pub/sub fields are tab-separated: no control characters."""
    if not text:
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def retry_ms(seconds: float | None, cap_s: float) -> str:
    """A Retry-After in ms for record.lua ('' when missing, negative, NaN or infinite)."""
    if seconds is None or not isinstance(seconds, int | float):
        return ""
    if not math.isfinite(seconds) or seconds <= 0:
        return ""
    return str(max(1, math.ceil(min(seconds, cap_s) * 1000)))


def latency_arg(latency_s: float | None) -> str:
    """A latency in whole ms for a script ('' when unknown or not finite)."""
    if latency_s is None or not math.isfinite(latency_s):
        return ""
    return str(max(0, round(min(latency_s, 1e9) * 1000)))


def record_argv(
    settings: Settings,
    *,
    c: Classification | None,
    generation: int | None,
    token: str,
    used: str | None,
    message: str,
    latency_s: float | None,
    jitter: float,
    release: bool = False,
    applied: Sequence[CompatHint] = (),
) -> list[str]:
    """record.lua's own arguments for one outcome, with the policy row of its kind. A
    classification whose kind is never recorded but that carries compatibility hints is
    sent as outcome 'c': only its hints are learned."""
    s = settings
    values: dict[str, str] = dict.fromkeys(RECORD_FIELDS, "")
    values["generation"] = "" if generation is None else str(generation)
    values["token"] = token
    values["used"] = clean(used)
    values["token"] = clean(token)
    values["latency_ms"] = latency_arg(latency_s)
    values["applied"] = " ".join(h.encode() for h in applied)
    if c is not None and c.compat:
        values["compat"] = " ".join(h.encode() for h in c.compat)
        values["replaces"] = " ".join(h.replaces() for h in c.compat)
        values["message"] = clean(message)  # what taught the hints
    if release:
        values["outcome"] = "r"
    elif c is not None and not policy_of(c.kind).recorded:
        values["outcome"] = "c" if c.compat else "r"
    elif c is None:
        values["outcome"] = "s"
    else:
        row = policy_of(c.kind)
        values["outcome"] = "f"
        values["kind"] = c.kind.value
        values["counts"] = {"yes": "1", "no": "0", "without_hint": "h"}[row.counts]
        values["effect"] = row.effect
        values["threshold"] = str(
            s.model_not_found_threshold if row.effect == "blacklist" else s.failure_threshold
        )
        fixed = {
            "blacklist": s.model_not_found_open_seconds,
            "block": s.provider_block_seconds,
            "retry_after": s.rate_limit_default_seconds,
        }.get(row.effect, s.open_seconds)
        values["break_ms"] = str(ms(fixed))
        values["reachable"] = "1" if row.proves_reachable else "0"
        # A trip reads a Retry-After only when the kind's row follows it (a 503 or 529 saying
        # when the service is back); the other effects, and provider-wide blocks, always do.
        trip_like = row.effect in ("trip", "blacklist", "hint") and c.scope != "provider"
        if not trip_like or row.follows_retry_after:
            values["retry_ms"] = retry_ms(c.retry_after_s, s.max_retry_after_seconds)
        values["hint"] = clean(c.endpoint_hint)
        values["message"] = clean(message)
        values["scope"] = "p" if c.scope == "provider" else "t"
        values["jitter"] = repr(max(-1.0, min(1.0, jitter)))
    return [values[name] for name in RECORD_FIELDS]


# --------------------------------------------------------------------------- replies


class View(Record):
    """A parsed script reply (fields in :data:`REPLY_FIELDS` order)."""

    __slots__ = (
        "code",
        "compat",
        "consecutive_errors",
        "error_count",
        "first_success",
        "generation",
        "hint",
        "hot",
        "now_ms",
        "open_until_ms",
        "provider_generation",
        "provider_reason",
        "provider_state",
        "provider_transition",
        "provider_until_ms",
        "reason",
        "state",
        "token",
        "transition",
    )

    def __init__(
        self,
        code: int,
        state: StateName,
        generation: int,
        open_until_ms: int,
        now_ms: int,
        hot: bool,
        provider_state: StateName,
        provider_until_ms: int,
        hint: str | None,
        token: str,
        transition: str,
        provider_transition: str,
        first_success: bool,
        error_count: int,
        consecutive_errors: int,
        reason: str,
        provider_generation: int,
        provider_reason: str,
        compat: str = "",
    ) -> None:
        self.code = code
        self.state = state
        self.generation = generation
        self.open_until_ms = open_until_ms
        self.now_ms = now_ms
        self.hot = hot
        self.provider_state = provider_state
        self.provider_until_ms = provider_until_ms
        self.hint = hint
        self.token = token
        self.transition = transition
        self.provider_transition = provider_transition
        self.first_success = first_success
        self.error_count = error_count
        self.consecutive_errors = consecutive_errors
        self.reason = reason
        self.provider_generation = provider_generation
        self.provider_reason = provider_reason
        self.compat = compat

    @property
    def retry_after_s(self) -> float:
        """Seconds until the later of the target's and the provider's break ends."""
        until = max(self.open_until_ms, self.provider_until_ms)
        return max(0.0, (until - self.now_ms) / 1000.0)


def text(value: Any) -> str:
    """A reply or hash field as str (bytes decoded, None as '')."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def state_name(value: Any) -> StateName:
    """A stored state as one of the three names ('closed' for anything unknown)."""
    t = value if isinstance(value, str) else text(value)
    if t == "open":
        return "open"
    if t == "half_open":
        return "half_open"
    return "closed"


def parse_compat(text_: Any) -> tuple[CompatHint, ...]:
    """The hints of a stored ``compat`` field (space-separated encodings)."""
    from ._classification import CompatHint  # loaded at the first hint read

    out = []
    for word in text(text_).split():
        hint = CompatHint.decode(word)
        if hint is not None:
            out.append(hint)
    return tuple(out)


def parse_view(reply: Sequence[Any]) -> View:
    """Turns a script reply into a :class:`View`; raises ValueError on a malformed reply."""
    if len(reply) != len(REPLY_FIELDS):
        raise ValueError(f"unexpected script reply of {len(reply)} fields")
    r = dict(zip(REPLY_FIELDS, reply, strict=True))
    return View(
        code=int(r["code"]),
        state=state_name(r["state"]),
        generation=int(r["generation"]),
        open_until_ms=int(r["open_until_ms"]),
        now_ms=int(r["now_ms"]),
        hot=bool(int(r["hot"])),
        provider_state=state_name(r["provider_state"]),
        provider_until_ms=int(r["provider_until_ms"]),
        hint=text(r["hint"]) or None,
        token=text(r["token"]),
        transition=text(r["transition"]),
        provider_transition=text(r["provider_transition"]),
        first_success=bool(int(r["first_success"])),
        error_count=int(r["error_count"]),
        consecutive_errors=int(r["consecutive_errors"]),
        reason=text(r["reason"]),
        provider_generation=int(r["provider_generation"]),
        provider_reason=text(r["provider_reason"]),
        compat=text(r["compat"]),
    )


def ms_to_dt(value: Any) -> datetime | None:
    """Milliseconds since the epoch (or a falsy value) to an aware UTC datetime (or None)."""
    try:
        n = int(float(text(value) or 0))
    except (ValueError, OverflowError):
        return None
    if n <= 0:
        return None
    try:
        return datetime.fromtimestamp(n / 1000.0, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def to_int(value: Any) -> int:
    """A stored integer (hash field, reply element) as int: 0 when missing or malformed, a
    decimal truncated toward zero."""
    if not value:
        return 0
    try:
        return int(value)  # what the scripts write
    except (TypeError, ValueError):
        pass
    try:
        return int(float(text(value)))
    except (ValueError, OverflowError):
        return 0


def int_field(h: Mapping[str, Any], key: str) -> int:
    """An integer hash field (0 when missing or malformed)."""
    return to_int(h.get(key))


def time_field(h: Mapping[str, Any], key: str) -> datetime | None:
    """A time hash field (ms since the epoch) as an aware UTC datetime, or None."""
    ms = int_field(h, key)
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def provider_block(state: Any, open_until: Any, lease_until: Any, now: int) -> int | None:
    """The end (ms) of the provider-wide block in force at ``now`` (server ms), from the raw
    ``state``, ``open_until`` and ``lease_until`` fields of the provider hash; None when the
    provider does not block its models. A provider blocks while it is open (also after its
    break ended, until a probe is handed out) and while half open with its probe lease held.
    """
    s = state_name(state)
    if s == "open" or (s == "half_open" and to_int(lease_until) > now):
        return to_int(open_until)
    return None


def shown_state(
    state: Any,
    open_until: Any,
    lease_until: Any,
    reason: Any,
    provider_until: int | None,
    provider_reason: Any,
    now: int,
) -> tuple[StateName, bool, int, str | None]:
    """How a target is shown, from the raw fields of its hash and :func:`provider_block` of
    its provider: ``(state, blacklisted, until_ms, reason)``.

    The target is blacklisted while open before its ``open_until``, half open with its
    probe lease held, or while its provider blocks. A closed target of a blocking provider
    is shown ``open`` with reason ``provider: <the provider's reason>``. ``until_ms`` is the
    later end of the target's break and the provider's block (0: none).
    """
    why = (reason if isinstance(reason, str) else text(reason)) or None
    if provider_until is None and (state is None or state == "closed"):
        return "closed", False, 0, why  # the common case, without the conversions below
    s = state_name(state)
    until = to_int(open_until) if s != "closed" else 0
    if provider_until is not None:
        if s == "closed":
            s = "open"
            why = f"provider: {text(provider_reason) or 'blocked'}"
        return s, True, max(until, provider_until), why
    blocked = (s == "open" and until > now) or (s == "half_open" and to_int(lease_until) > now)
    return s, blocked, until, why
