"""The per-kind rules, written once, as data.

Every path reads this table: the Lua scripts receive the row of the kind they record (they
never compare kind names of their own), the in-process fallback runs the same state machine
with the same row, the router asks it whether to fall over, and the README's policy table is
generated from it (``policy_table_markdown``; a test keeps the README equal to it).

A row says:

* ``counts``: whether the failure adds to the consecutive-failure and failure-rate counters
  (``"yes"``, ``"no"``, or ``"without_hint"``: only when no endpoint is left to try);
* ``effect``: what a failure of this kind does to the target:

  - ``"trip"``: opens after ``failure_threshold`` consecutive counted failures or a failure
    rate over the window, for ``open_seconds`` x ``backoff_factor``^(failed probes in a row)
    x ``flap_factor``^(flaps in a row), capped at ``max_open_seconds``, +-``jitter`` (see
    docs/state-machine.md, "Breaks");
  - ``"blacklist"``: like trip, with ``model_not_found_threshold`` and a fixed long break of
    ``model_not_found_open_seconds``;
  - ``"retry_after"``: opens at once for the provider's Retry-After (``rate_limit_default_seconds``
    when it gave none); a floor: a later failure may only extend the break;
  - ``"block"``: opens at once for ``provider_block_seconds`` (or a longer Retry-After), the
    whole provider when the failure's scope is ``"provider"``;
  - ``"hint"``: stores the endpoint hint the error names; counts like ``"trip"`` only when no
    endpoint is left to try;
  - ``"none"``: never recorded (the caller's own fault, or a cancellation);

* ``scope``: the usual scope of the kind (``classify`` may say ``"provider"`` for account-wide
  failures of a ``"target"`` kind, e.g. a region block);
* ``falls_over``: whether the router tries the next target (caller errors are re-raised at
  once unless the router is told otherwise; a cancellation is always re-raised);
* ``proves_reachable``: whether such an answer to a provider-wide probe shows that the key
  and account work again (a timeout or a dropped connection proves nothing);
* ``follows_retry_after``: for a ``"trip"`` kind, whether a Retry-After on the failure that
  trips (or on a failed probe) sets the break in place of the computed one, within
  ``retry_after_floor_seconds`` and ``max_open_seconds``: a 503 or 529 saying when the
  service is back is the provider's own word on recovery. (``"retry_after"`` and
  ``"block"`` always read the Retry-After.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ._record import Record
from ._types import ErrorKind, Scope

__all__ = ["POLICY", "Effect", "KindPolicy", "policy_of", "policy_table_markdown"]

Effect = Literal["trip", "blacklist", "retry_after", "block", "hint", "none"]
Counts = Literal["yes", "no", "without_hint"]


class KindPolicy(Record):
    """The rule for one :class:`ErrorKind` (see the module docstring)."""

    __slots__ = (
        "counts",
        "effect",
        "falls_over",
        "follows_retry_after",
        "kind",
        "proves_reachable",
        "scope",
    )

    def __init__(
        self,
        kind: ErrorKind,
        counts: Counts,
        effect: Effect,
        scope: Scope,
        falls_over: bool,
        proves_reachable: bool,
        follows_retry_after: bool = False,
    ) -> None:
        self.kind = kind
        self.counts = counts
        self.effect = effect
        self.scope = scope
        self.falls_over = falls_over
        self.proves_reachable = proves_reachable
        self.follows_retry_after = follows_retry_after

    @property
    def recorded(self) -> bool:
        """False for kinds that never touch the shared state."""
        return self.effect != "none"


K = ErrorKind


def _row(
    kind: ErrorKind,
    counts: Counts,
    effect: Effect,
    scope: Scope = "target",
    *,
    falls_over: bool = True,
    proves_reachable: bool = True,
    follows_retry_after: bool = False,
) -> KindPolicy:
    return KindPolicy(
        kind, counts, effect, scope, falls_over, proves_reachable, follows_retry_after
    )


POLICY: Mapping[ErrorKind, KindPolicy] = {
    p.kind: p
    for p in (
        _row(K.SERVER_ERROR, "yes", "trip", follows_retry_after=True),
        _row(K.OVERLOADED, "yes", "trip", follows_retry_after=True),
        _row(K.TIMEOUT, "yes", "trip", proves_reachable=False),
        _row(K.CONNECTION, "yes", "trip", proves_reachable=False),
        _row(K.UNKNOWN, "yes", "trip", proves_reachable=False),
        _row(K.RATE_LIMITED, "no", "retry_after"),
        _row(K.QUOTA_EXHAUSTED, "no", "block", "provider"),
        _row(K.AUTH, "no", "block", "provider"),
        _row(K.PERMISSION, "no", "block"),
        _row(K.MODEL_NOT_FOUND, "yes", "blacklist"),
        _row(K.ENDPOINT_MISMATCH, "without_hint", "hint"),
        _row(K.CONTEXT_LENGTH, "no", "none", falls_over=False),
        _row(K.CONTENT_POLICY, "no", "none", falls_over=False),
        _row(K.BAD_REQUEST, "no", "none", falls_over=False),
        _row(K.CANCELLED, "no", "none", falls_over=False),
    )
}

if set(POLICY) != set(ErrorKind):  # pragma: no cover - a new kind needs a row
    raise RuntimeError(f"policy rows missing for {set(ErrorKind) - set(POLICY)}")


def policy_of(kind: ErrorKind) -> KindPolicy:
    """The rule for ``kind``."""
    return POLICY[kind]


_KIND_TEXT: Mapping[ErrorKind, str] = {
    K.CANCELLED: "cancelled (CancelledError, Ctrl-C, the caller's own timeout)",
}
_EFFECT_TEXT: Mapping[Effect, str] = {
    "trip": "open after `failure_threshold` consecutive counted failures or a failure rate over "
    "the window, for `open_seconds` × `backoff_factor`^(failed probes in a row) × "
    "`flap_factor`^(flaps in a row), capped at `max_open_seconds`, ±`jitter`",
    "blacklist": "open after `model_not_found_threshold` consecutive counted failures (or the "
    "failure rate); blacklisted for `model_not_found_open_seconds`",
    "retry_after": "open for the Retry-After (header or body; `rate_limit_default_seconds` when "
    "none is usable); a floor: a later one may only extend",
    "block": "block for `provider_block_seconds` (or a longer Retry-After)",
    "hint": "store the endpoint hint; the router retries once on it; a hint that then fails the "
    "same way is dropped for good",
    "none": "the caller's fault: never recorded; re-raised, no fall-over by default",
}


def _counts_text(p: KindPolicy) -> str:
    if p.counts == "without_hint":
        return "only when no endpoint is left to try"
    return "yes" if p.counts == "yes" else ("no" if p.recorded else "never")


def _effect_text(p: KindPolicy) -> str:
    if p.kind is K.CANCELLED:
        return "never recorded; re-raised"
    text = _EFFECT_TEXT[p.effect]
    if p.effect == "block":
        scope = "the whole provider" if p.scope == "provider" else "the model"
        text = f"{text}: {scope}" + (
            "" if p.scope == "provider" else " (or the provider when the error says so)"
        )
    if p.follows_retry_after:
        text += (
            "; a Retry-After sets the break instead (at least `retry_after_floor_seconds`, "
            "at most `max_open_seconds`)"
        )
    return text


def policy_table_markdown() -> str:
    """The README's policy table, generated from :data:`POLICY` (kinds with the same rule
    share a row)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in POLICY.values():
        groups.setdefault((_counts_text(p), _effect_text(p)), []).append(
            _KIND_TEXT.get(p.kind, p.kind.value)
        )
    lines = ["| kind | counts toward a trip | effect |", "|---|---|---|"]
    for (counts, effect), kinds in groups.items():
        lines.append(f"| {', '.join(kinds)} | {counts} | {effect} |")
    return "\n".join(lines)
