"""Reports from the PostgreSQL history: what failed, how often, for how long.

Figures for a period (``since`` .. ``until``), for one key prefix (application) or for all:

- calls: the sum of the per-snapshot increments in ``model_compatibility_history``
  (``error_delta``, ``success_delta``; computed at snapshot time with counter resets handled,
  so never negative), over the snapshots taken after ``since``. The history holds a row only
  when a target changed (and one per target in a daily keyframe, migration 0006); the
  targets a period covers are those in Redis at one of its snapshots, as one row per target
  per snapshot would show them (``_DELTAS``);
- trips: transitions of a target into ``open`` caused by failures that count toward a trip
  (:func:`opening_is_trip`: not rate-limit breaks, provider-scope blocks or manual blocks),
  the same events that grow the ``trips`` count ``resilience status`` shows;
- provider blocks: transitions of a whole provider into ``open`` (auth, quota, manual);
- minutes open: time spent in ``open``, from the transitions: each open stretch ends at the
  next transition or at its ``open_until`` (after which the target only waits for a probe),
  whichever comes first, clipped to the period. ``half_open`` time is not counted;
- current state, blacklist and endpoint hints: ``model_compatibility_hints`` as of the
  latest snapshot (a blacklist whose end has passed is left out).

Formats: ``table`` (aligned columns for a terminal), ``json`` (one object) and ``csv``: one
table per section, each with its own header (:func:`csv_sections`; ``format_report(...,
"csv", section=...)`` gives one).

The quarterly review (:func:`build_review`) ranks providers and models by success rate and
time open and suggests a target order per model family (:func:`model_family`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from ._classification import CompatHint
from ._db import Connection, connect, require_schema, translate_errors
from ._exceptions import ResilienceError
from ._policy import POLICY
from ._sections import REVIEW_SECTIONS, SECTIONS
from ._settings import Settings
from ._tables import render_table
from ._types import ErrorKind

__all__ = [
    "REVIEW_SECTIONS",
    "SECTIONS",
    "BlacklistRow",
    "FamilyOrderRow",
    "HintRow",
    "ModelRow",
    "PlotUnavailableError",
    "ProviderRow",
    "Report",
    "Review",
    "ReviewModelRow",
    "ReviewProviderRow",
    "TransitionRow",
    "build_report",
    "build_review",
    "check_plot_path",
    "csv_sections",
    "format_report",
    "format_review",
    "model_family",
    "open_periods",
    "opening_is_trip",
    "plot_report",
    "plot_span",
]

Format = Literal["table", "json", "csv"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")

Key = tuple[str, str, str | None]
"""(key prefix, provider, model or None for the provider as a whole)."""


class PlotUnavailableError(ResilienceError):
    """``--plot`` needs matplotlib, which is not installed
    (``pip install 'llm-resilience[plot]'``)."""


def opening_is_trip(kind: str) -> bool:
    """True when a target's transition into ``open`` with this kind is a trip.

    A trip is an opening caused by failures that count toward a trip (consecutive failures,
    the failure rate, a retired model, a failed probe, an endpoint mismatch with no endpoint
    left): the kinds whose policy row counts (:data:`resilience._policy.POLICY`), the same
    events that grow the Redis ``trips`` count. A rate-limit break
    (Retry-After), a block for auth, permission or quota, and a manual block open the target
    without being trips."""
    try:
        return POLICY[ErrorKind(kind)].counts != "no"
    except ValueError:  # "manual", or a kind this version does not know
        return False


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One problematic model over the period (error_rate is 0-1, None without calls)."""

    provider: str
    model: str
    errors: int
    successes: int
    error_rate: float | None
    trips: int
    minutes_open: float
    state: str
    blacklisted_until: datetime | None
    last_error_kind: str | None
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """Calls of one provider over the period (success_rate is 0-1, None without calls)."""

    provider: str
    models: int
    errors: int
    successes: int
    success_rate: float | None
    trips: int
    provider_blocks: int
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class BlacklistRow:
    """A target blocked as of the latest snapshot, and until when (None: until a probe)."""

    provider: str
    model: str
    state: str
    until: datetime | None
    reason: str | None
    manual: bool
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class HintRow:
    """A learned endpoint or capability hint."""

    provider: str
    model: str
    endpoint_hint: str
    updated_at: datetime | None
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class CompatRow:
    """The compatibility hints a target learned: what it accepts, when and from what."""

    provider: str
    model: str
    hints: tuple[str, ...]
    learned_at: datetime | None
    message: str | None
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One state change (model is None for a provider-wide block or unblock)."""

    time: datetime
    provider: str
    model: str | None
    from_state: str
    to_state: str
    kind: str
    reason: str
    open_until: datetime | None
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``resilience report`` shows, for the period ``since`` .. ``until``.

    ``key_prefix`` is the application reported on, or None when the report covers every
    key prefix in the schema (each row then says whose it is)."""

    since: datetime
    until: datetime
    snapshots: int
    last_snapshot_at: datetime | None
    problematic_models: list[ModelRow]
    provider_success_rates: list[ProviderRow]
    blacklisted: list[BlacklistRow]
    endpoint_hints: list[HintRow]
    recent_transitions: list[TransitionRow]
    key_prefix: str | None = None
    compat_hints: list[CompatRow] = field(default_factory=list)


# --------------------------------------------------------------------------- open periods


@dataclass(frozen=True, slots=True)
class _Change:
    time: datetime
    to_state: str
    open_until: datetime | None
    kind: str = ""


def _stretches(
    changes: Mapping[Any, Sequence[_Change]],
    initial: Mapping[Any, _Change],
    start: datetime,
    end: datetime,
) -> dict[Any, list[tuple[datetime, datetime, str]]]:
    """Like :func:`open_periods`, each stretch with the kind of the transition that opened
    it (the reason the target was open)."""
    out: dict[Any, list[tuple[datetime, datetime, str]]] = {}
    for key in set(changes) | set(initial):
        first = initial.get(key)
        stretches = [
            (first.time if first is not None else start, first or _Change(start, "closed", None))
        ]
        stretches += [(c.time, c) for c in changes.get(key, ())]
        periods: list[tuple[datetime, datetime, str]] = []
        for i, (begin, change) in enumerate(stretches):
            if change.to_state != "open":
                continue
            stop = stretches[i + 1][0] if i + 1 < len(stretches) else end
            a = max(begin, start)
            b = min(stop, end)
            if change.open_until is not None:
                b = min(b, change.open_until)
            if b > a:
                periods.append((a, b, change.kind))
        if periods:
            out[key] = periods
    return out


def open_periods(
    changes: Mapping[Any, Sequence[_Change]],
    initial: Mapping[Any, _Change],
    start: datetime,
    end: datetime,
) -> dict[Any, list[tuple[datetime, datetime]]]:
    """Stretches each target spent ``open`` within ``start`` .. ``end``.

    Args:
        changes: per target, its transitions inside the period, oldest first.
        initial: per target, its last transition at or before ``start`` (its state then).
        start, end: the period (aware datetimes).

    A stretch starts at a transition into ``open`` (or at ``start`` when the target was
    open then) and ends at the next transition, its ``open_until``, or ``end``, whichever
    is first.
    """
    return {
        key: [(a, b) for a, b, _kind in periods]
        for key, periods in _stretches(changes, initial, start, end).items()
    }


def _minutes(periods: Iterable[tuple[datetime, ...] | tuple[datetime, datetime, str]]) -> float:
    return sum((p[1] - p[0]).total_seconds() for p in periods) / 60.0


# --------------------------------------------------------------------------- queries

_MINE = "(%(all)s OR key_prefix = %(prefix)s)"
"""SQL condition selecting the rows of the reported key prefix (or every row)."""


def _as_since(since: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(since, timedelta):
        if since <= timedelta(0):
            raise ValueError("report period must be positive")
        return now - since
    if since.tzinfo is None:
        raise ValueError("report since must be an aware datetime")
    return since


def _scope(settings: Settings, all_prefixes: bool) -> dict[str, Any]:
    return {"all": all_prefixes, "prefix": settings.key_prefix}


def _load_changes(
    conn: Connection, since: datetime, until: datetime, scope: Mapping[str, Any]
) -> tuple[list[TransitionRow], dict[Key, list[_Change]], dict[Key, _Change]]:
    rows = conn.execute(
        "SELECT occurred_at, provider_id, model_id, from_state, to_state, kind, reason,"
        " open_until, key_prefix FROM model_compatibility_transitions"
        f" WHERE {_MINE} AND occurred_at > %(since)s AND occurred_at <= %(until)s"
        " ORDER BY occurred_at, event_ms, event_seq",
        {**scope, "since": since, "until": until},
    ).fetchall()
    period = [TransitionRow(*r) for r in rows]
    changes: dict[Key, list[_Change]] = defaultdict(list)
    for t in period:
        changes[(t.key_prefix, t.provider, t.model)].append(
            _Change(t.time, t.to_state, t.open_until, t.kind)
        )
    initial = {
        (str(r[0]), str(r[1]), r[2]): _Change(r[3], str(r[4]), r[5], str(r[6]))
        for r in conn.execute(
            "SELECT DISTINCT ON (key_prefix, provider_id, model_id) key_prefix, provider_id,"
            " model_id, occurred_at, to_state, open_until, kind"
            f" FROM model_compatibility_transitions WHERE {_MINE} AND occurred_at <= %(since)s"
            " ORDER BY key_prefix, provider_id, model_id, occurred_at DESC, event_ms DESC,"
            " event_seq DESC",
            {**scope, "since": since},
        )
    }
    return period, dict(changes), initial


# Per target, the sums of its increments over the period, for every target in Redis at some
# snapshot of the period: one with a row there (not only a row saying it vanished), or one
# present at the period's start (model_compatibility_history_at, migration 0006) that no row
# of the period removes before its first snapshot. The history records changes only; these
# are the targets a history of one row per target per snapshot would hold in the period.
_DELTAS = f"""
WITH w AS (
  SELECT key_prefix, provider_id, model_id, sum(error_delta) AS e, sum(success_delta) AS s,
         bool_or(in_redis) AS present, min(taken_at) AS first_at
  FROM model_compatibility_history
  WHERE {_MINE} AND taken_at > %(since)s AND taken_at <= %(until)s
  GROUP BY key_prefix, provider_id, model_id),
first AS (
  SELECT key_prefix, min(taken_at) AS first_at FROM resilience_snapshots
  WHERE {_MINE} AND taken_at > %(since)s AND taken_at <= %(until)s
  GROUP BY key_prefix),
start AS (
  SELECT key_prefix, provider_id, model_id FROM model_compatibility_history_at(%(since)s)
  WHERE {_MINE})
SELECT coalesce(w.key_prefix, start.key_prefix), coalesce(w.provider_id, start.provider_id),
       coalesce(w.model_id, start.model_id), coalesce(w.e, 0), coalesce(w.s, 0)
FROM w
FULL JOIN start ON start.key_prefix = w.key_prefix AND start.provider_id = w.provider_id
                AND start.model_id = w.model_id
LEFT JOIN first ON first.key_prefix = coalesce(w.key_prefix, start.key_prefix)
WHERE coalesce(w.present, false)
   OR (start.provider_id IS NOT NULL AND first.first_at IS NOT NULL
       AND (w.first_at IS NULL OR first.first_at < w.first_at))
"""


def _report_period(
    conn: Connection, since: datetime | timedelta, now: datetime | None
) -> tuple[datetime, datetime]:
    """The report period: from ``since`` (a time, or a length before now) to ``now``
    (default: the database's now, so every replica reports the same period)."""
    if now is None:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now = row[0]
    assert now is not None
    return _as_since(since, now), now


def _rate(part: int, other: int) -> float | None:
    total = part + other
    return part / total if total > 0 else None


@dataclass(slots=True)
class _Figures:
    """What the report and the review compute alike, per target and provider."""

    snapshots: int
    last_snapshot_at: datetime | None
    deltas: dict[Key, tuple[int, int]]
    trips: dict[Key, int]
    provider_blocks: dict[tuple[str, str], int]
    opened: dict[Key, list[tuple[datetime, datetime, str]]]
    period: list[TransitionRow]
    hints: dict[Key, tuple[Any, ...]]


def _figures(
    conn: Connection, since: datetime, until: datetime, scope: Mapping[str, Any]
) -> _Figures:
    window = {**scope, "since": since, "until": until}
    snap = conn.execute(
        "SELECT count(*), max(taken_at) FROM resilience_snapshots"
        f" WHERE {_MINE} AND taken_at > %(since)s AND taken_at <= %(until)s",
        window,
    ).fetchone()
    assert snap is not None
    deltas: dict[Key, tuple[int, int]] = {
        (str(r[0]), str(r[1]), str(r[2])): (int(r[3]), int(r[4]))
        for r in conn.execute(_DELTAS, window)
    }
    hints: dict[Key, tuple[Any, ...]] = {
        (str(r[0]), str(r[1]), str(r[2])): r[3:]
        for r in conn.execute(
            "SELECT key_prefix, provider_id, model_id, state, is_blacklisted, blacklisted_until,"
            " last_error_kind, reason, manual, endpoint_hint, updated_at, compat_hints,"
            " compat_learned_at, compat_message"
            f" FROM model_compatibility_hints WHERE {_MINE}",
            scope,
        )
    }
    period, changes, initial = _load_changes(conn, since, until, scope)
    trips: dict[Key, int] = defaultdict(int)
    blocks: dict[tuple[str, str], int] = defaultdict(int)
    for t in period:
        if t.to_state != "open":
            continue
        if t.model is None:
            blocks[(t.key_prefix, t.provider)] += 1
        elif opening_is_trip(t.kind):
            trips[(t.key_prefix, t.provider, t.model)] += 1
    return _Figures(
        snapshots=int(snap[0]),
        last_snapshot_at=snap[1],
        deltas=deltas,
        trips=dict(trips),
        provider_blocks=dict(blocks),
        opened=_stretches(changes, initial, since, until),
        period=period,
        hints=hints,
    )


def _query(
    settings: Settings,
    since: datetime | timedelta,
    now: datetime | None,
    all_prefixes: bool,
    action: str,
) -> tuple[_Figures, datetime, datetime]:
    with connect(settings, autocommit=True, application_name="resilience-report") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, action), conn.transaction():
            start, now = _report_period(conn, since, now)
            return _figures(conn, start, now, _scope(settings, all_prefixes)), start, now


def build_report(
    settings: Settings,
    since: datetime | timedelta = timedelta(days=7),
    *,
    now: datetime | None = None,
    limit: int = 50,
    transitions_limit: int = 30,
    all_prefixes: bool = False,
) -> Report:
    """Reads the report for the period ``since`` .. ``now`` from PostgreSQL.

    Args:
        since: start of the period: an aware datetime, or a duration before ``now``.
        now: end of the period (default: the PostgreSQL server time).
        limit: most problematic models listed (most errors first).
        transitions_limit: most recent transitions listed.
        all_prefixes: report on every key prefix in the schema, not only
            ``settings.key_prefix``.

    Raises:
        MigrationRequiredError: the schema lacks the tables.
        DatabaseError: PostgreSQL is unreachable or a query failed.
    """
    f, since_at, until = _query(settings, since, now, all_prefixes, "report")
    return _build(f, since_at, until, limit, transitions_limit, _prefix(settings, all_prefixes))


def _prefix(settings: Settings, all_prefixes: bool) -> str | None:
    return None if all_prefixes else settings.key_prefix


def _hint_texts(encoded: Sequence[str] | None) -> tuple[str, ...]:
    """Stored hint encodings (``compat_hints``) as operators read them
    (``max_tokens -> max_completion_tokens``); an encoding that does not decode as it is."""
    out = []
    for text in encoded or ():
        hint = CompatHint.decode(text)
        out.append(str(hint) if hint is not None else text)
    return tuple(out)


def _is_blocked(h: Sequence[Any], until: datetime) -> bool:
    return bool(h[1]) and (h[2] is None or h[2] > until)


def _build(
    f: _Figures,
    since: datetime,
    until: datetime,
    limit: int,
    transitions_limit: int,
    prefix: str | None,
) -> Report:
    models: list[ModelRow] = []
    keys = set(f.deltas) | {k for k in set(f.trips) | set(f.opened) if k[2] is not None}
    keys |= {k for k, h in f.hints.items() if _is_blocked(h, until)}
    for key in keys:
        pre, p, m = key
        assert m is not None
        errors, successes = f.deltas.get(key, (0, 0))
        h = f.hints.get(key)
        minutes = _minutes(f.opened.get(key, ()))
        n_trips = f.trips.get(key, 0)
        blocked = h is not None and _is_blocked(h, until)
        if not (errors or n_trips or minutes or blocked):
            continue
        models.append(
            ModelRow(
                provider=p,
                model=m,
                errors=errors,
                successes=successes,
                error_rate=_rate(errors, successes),
                trips=n_trips,
                minutes_open=round(minutes, 1),
                state=str(h[0]) if h is not None else "closed",
                blacklisted_until=h[2] if h is not None and blocked else None,
                last_error_kind=h[3] if h is not None else None,
                key_prefix=pre,
            )
        )
    models.sort(
        key=lambda r: (
            -r.errors,
            -(r.error_rate or 0.0),
            -r.minutes_open,
            r.provider,
            r.model,
            r.key_prefix,
        )
    )

    per_provider: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for (pre, p, _m), (e, s) in f.deltas.items():
        agg = per_provider[(pre, p)]
        agg[0] += 1
        agg[1] += e
        agg[2] += s
    for (pre, p, _m), n in f.trips.items():
        per_provider[(pre, p)][3] += n
    for pp, n in f.provider_blocks.items():
        per_provider[pp][4] += n
    providers = [
        ProviderRow(p, a[0], a[1], a[2], _rate(a[2], a[1]), a[3], a[4], key_prefix=pre)
        for (pre, p), a in per_provider.items()
    ]
    providers.sort(
        key=lambda r: (
            r.success_rate is None,
            r.success_rate if r.success_rate is not None else 0.0,
            -(r.errors + r.successes),
            r.provider,
            r.key_prefix,
        )
    )

    blacklisted = sorted(
        (
            BlacklistRow(p, str(m), str(h[0]), h[2], h[4], bool(h[5]), key_prefix=pre)
            for (pre, p, m), h in f.hints.items()
            if _is_blocked(h, until)
        ),
        key=lambda r: (r.key_prefix, r.provider, r.model),
    )
    endpoint_hints = sorted(
        (
            HintRow(p, str(m), str(h[6]), h[7], key_prefix=pre)
            for (pre, p, m), h in f.hints.items()
            if h[6]
        ),
        key=lambda r: (r.key_prefix, r.provider, r.model),
    )
    compat_hints = sorted(
        (
            CompatRow(p, str(m), _hint_texts(h[8]), h[9], h[10], key_prefix=pre)
            for (pre, p, m), h in f.hints.items()
            if h[8]
        ),
        key=lambda r: (r.key_prefix, r.provider, r.model),
    )
    recent = list(reversed(f.period[-transitions_limit:])) if transitions_limit > 0 else []
    return Report(
        since=since,
        until=until,
        snapshots=f.snapshots,
        last_snapshot_at=f.last_snapshot_at,
        problematic_models=models[: max(0, limit)],
        provider_success_rates=providers,
        blacklisted=blacklisted,
        endpoint_hints=endpoint_hints,
        recent_transitions=recent,
        key_prefix=prefix,
        compat_hints=compat_hints,
    )


# --------------------------------------------------------------------------- quarterly review

_VENDOR_RE = re.compile(
    r"^(?:(?:us|eu|apac|global)\.)?(?:anthropic|meta|amazon|cohere|mistral|ai21)\."
)
_VERSION_RES = (
    re.compile(r"[-@](?:20\d{2}-?\d{2}-?\d{2})$"),  # -20241022, -2024-08-06, @20240620
    re.compile(r"-v\d+(?:\.\d+)?$"),  # -v2, -v1.0
    re.compile(r"-(?:\d{3}|latest)$"),  # gemini-1.5-pro-002, -latest
)


def model_family(model: str) -> str:
    """The family a model belongs to, for suggesting a fall-over order: the same model
    offered by several providers, or several dated versions of it.

    The last path segment, lower case, without a ``:tag`` (``:free``, ``:0``), a Bedrock
    vendor prefix (``us.anthropic.``) or a trailing date or version (``-20241022``,
    ``-2024-08-06``, ``@20240620``, ``-v2``, ``-002``, ``-latest``). So
    ``gpt-4o-2024-08-06`` and ``openai/gpt-4o`` are both ``gpt-4o``, and
    ``anthropic.claude-3-5-sonnet-20241022-v2:0`` is ``claude-3-5-sonnet``. A heuristic:
    names that differ otherwise are different families.
    """
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = name.split(":", 1)[0] or name
    name = _VENDOR_RE.sub("", name)
    changed = True
    while changed:
        changed = False
        for pattern in _VERSION_RES:
            shorter = pattern.sub("", name)
            if shorter and shorter != name:
                name, changed = shorter, True
    return name


@dataclass(frozen=True, slots=True)
class ReviewProviderRow:
    """One provider over the review period.

    Attributes:
        success_rate: successes / calls (0-1), None without calls.
        minutes_open: minutes its models spent open, summed over models.
        verdict: ``"replace or move down"`` below the minimum success rate, ``"keep"``
            otherwise, ``"no calls"`` without calls.
    """

    provider: str
    models: int
    calls: int
    errors: int
    success_rate: float | None
    trips: int
    minutes_open: float
    provider_blocks: int
    verdict: str
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class ReviewModelRow:
    """One target over the review period (success_rate 0-1, None without calls)."""

    provider: str
    model: str
    family: str
    calls: int
    errors: int
    success_rate: float | None
    trips: int
    minutes_open: float
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class FamilyOrderRow:
    """The suggested fall-over order of one model family: best target first (highest
    success rate, then least time open, then most calls).

    Attributes:
        order: ``provider/model`` names, best first.
        note: what to change: e.g. the most-called target (most likely today's first
            choice) is not the best one, or a family has a single target (no fall-over).
    """

    family: str
    order: tuple[str, ...]
    note: str
    key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class Review:
    """The quarterly review: providers and models ranked, and a target order per family."""

    since: datetime
    until: datetime
    min_success_rate: float
    providers: list[ReviewProviderRow]
    models: list[ReviewModelRow]
    target_order: list[FamilyOrderRow]
    key_prefix: str | None = None


MIN_REVIEW_CALLS = 20
"""Calls below which a target's success rate is marked as resting on few calls."""


def build_review(
    settings: Settings,
    since: datetime | timedelta = timedelta(days=90),
    *,
    now: datetime | None = None,
    all_prefixes: bool = False,
    min_success_rate: float = 0.95,
) -> Review:
    """Reads the quarterly review for ``since`` .. ``now`` (default the last 90 days).

    Providers and models are ranked lowest success rate first (then most minutes open), the
    providers under ``min_success_rate`` (0-1) marked for replacement; each model family
    (:func:`model_family`) gets a suggested target order from the learned figures.

    Raises:
        ValueError: ``min_success_rate`` is not within 0-1.
        MigrationRequiredError, DatabaseError: as :func:`build_report`.
    """
    if not 0 <= min_success_rate <= 1:
        raise ValueError(f"min_success_rate must be within 0-1, got {min_success_rate}")
    f, since_at, until = _query(settings, since, now, all_prefixes, "review")

    def worst_first(rate: float | None, minutes: float, calls: int) -> tuple[Any, ...]:
        return (rate is None, rate if rate is not None else 0.0, -minutes, -calls)

    models: list[ReviewModelRow] = []
    for key in set(f.deltas) | {k for k in set(f.trips) | set(f.opened) if k[2] is not None}:
        pre, p, m = key
        assert m is not None
        errors, successes = f.deltas.get(key, (0, 0))
        models.append(
            ReviewModelRow(
                provider=p,
                model=m,
                family=model_family(m),
                calls=errors + successes,
                errors=errors,
                success_rate=_rate(successes, errors),
                trips=f.trips.get(key, 0),
                minutes_open=round(_minutes(f.opened.get(key, ())), 1),
                key_prefix=pre,
            )
        )
    models.sort(
        key=lambda r: (*worst_first(r.success_rate, r.minutes_open, r.calls), r.provider, r.model)
    )

    agg: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for r in models:
        a = agg[(r.key_prefix, r.provider)]
        a[0] += 1
        a[1] += r.calls
        a[2] += r.errors
        a[3] += r.trips
        a[4] += r.minutes_open
    for pp in f.provider_blocks:  # a provider blocked as a whole, with no model figures
        agg.setdefault(pp, [0, 0, 0, 0, 0.0])
    providers = []
    for (pre, p), (n, calls, failed, tripped, minutes) in agg.items():
        rate = _rate(int(calls - failed), int(failed))
        if rate is None:
            verdict = "no calls"
        elif rate < min_success_rate:
            verdict = "replace or move down"
        else:
            verdict = "keep"
        providers.append(
            ReviewProviderRow(
                provider=p,
                models=int(n),
                calls=int(calls),
                errors=int(failed),
                success_rate=rate,
                trips=int(tripped),
                minutes_open=round(minutes, 1),
                provider_blocks=f.provider_blocks.get((pre, p), 0),
                verdict=verdict,
                key_prefix=pre,
            )
        )
    providers.sort(
        key=lambda r: (*worst_first(r.success_rate, r.minutes_open, r.calls), r.provider)
    )

    families: dict[tuple[str, str], list[ReviewModelRow]] = defaultdict(list)
    for r in models:
        families[(r.key_prefix, r.family)].append(r)
    order = []
    for (pre, family), members in sorted(families.items()):
        members.sort(
            key=lambda r: (
                r.success_rate is None,
                -(r.success_rate or 0.0),
                r.minutes_open,
                -r.calls,
                r.provider,
                r.model,
            )
        )
        names = tuple(f"{r.provider}/{r.model}" for r in members)
        notes = []
        if len(members) == 1:
            notes.append("one target only: no fall-over in the data")
        else:
            busiest = max(members, key=lambda r: r.calls)
            if busiest is not members[0] and busiest.calls > 0:
                notes.append(
                    f"most calls went to {busiest.provider}/{busiest.model}; put {names[0]} first"
                )
        few = [f"{r.provider}/{r.model}" for r in members if r.calls < MIN_REVIEW_CALLS]
        if few:
            notes.append(f"few calls (< {MIN_REVIEW_CALLS}): {', '.join(few)}")
        order.append(FamilyOrderRow(family, names, "; ".join(notes), key_prefix=pre))
    return Review(
        since=since_at,
        until=until,
        min_success_rate=min_success_rate,
        providers=providers,
        models=models,
        target_order=order,
        key_prefix=_prefix(settings, all_prefixes),
    )


# --------------------------------------------------------------------------- formats


def _utc(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat() if dt is not None else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, tuple):
        return list(value)
    return value


Doc = Report | Review


def _sections(doc: Doc) -> tuple[tuple[str, str], ...]:
    return REVIEW_SECTIONS if isinstance(doc, Review) else SECTIONS


def _rows(doc: Doc, section: str) -> list[Any]:
    rows: list[Any] = getattr(doc, section)
    return rows


def _records(doc: Doc, section: str) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in asdict(r).items()} for r in _rows(doc, section)]


_ROW_TYPES: dict[str, type] = {
    "problematic_models": ModelRow,
    "provider_success_rates": ProviderRow,
    "blacklisted": BlacklistRow,
    "endpoint_hints": HintRow,
    "compat_hints": CompatRow,
    "recent_transitions": TransitionRow,
    "providers": ReviewProviderRow,
    "models": ReviewModelRow,
    "target_order": FamilyOrderRow,
}


def _check_section(doc: Doc, section: str | None) -> None:
    names = [n for n, _ in _sections(doc)]
    if section is not None and section not in names:
        raise ValueError(f"no section {section!r}; choose from {', '.join(names)}")


def _to_json(doc: Doc, section: str | None) -> str:
    period: dict[str, Any] = {
        "since": _iso(doc.since),
        "until": _iso(doc.until),
        "key_prefix": doc.key_prefix,
    }
    if isinstance(doc, Report):
        period["snapshots"] = doc.snapshots
        period["last_snapshot_at"] = _iso(doc.last_snapshot_at)
    else:
        period["min_success_rate"] = doc.min_success_rate
    out: dict[str, Any] = {"period": period}
    for name, _title in _sections(doc):
        if section is None or name == section:
            out[name] = _records(doc, name)
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def _csv_text(doc: Doc, section: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f.name for f in fields(_ROW_TYPES[section])])
    joiner = "; " if section == "compat_hints" else " > "  # hints; else an order
    for rec in _records(doc, section):
        writer.writerow(
            "" if v is None else joiner.join(v) if isinstance(v, list) else v for v in rec.values()
        )
    return buf.getvalue()


def csv_sections(doc: Report | Review) -> dict[str, str]:
    """One CSV text per section (name -> text), each with its own header row, in the
    sections' order. Empty values are empty fields; times are ISO 8601 UTC."""
    return {name: _csv_text(doc, name) for name, _title in _sections(doc)}


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


class _Tables:
    """Text tables of a report or review; a key-prefix column when it spans several."""

    def __init__(self, doc: Doc, section: str | None) -> None:
        self.doc = doc
        self.only = section
        self.lines: list[str] = []
        self.all = doc.key_prefix is None

    def add(
        self,
        name: str,
        title: str,
        headers: Sequence[str],
        rows: Sequence[tuple[str, list[str]]],
        right: set[int],
    ) -> None:
        """``rows``: (key prefix, cells) pairs."""
        if self.only is not None and name != self.only:
            return
        if self.all:
            headers = ["key prefix", *headers]
            right = {i + 1 for i in right}
            cells = [[_cut(pre, 20), *row] for pre, row in rows]
        else:
            cells = [row for _pre, row in rows]
        self.lines.append("")
        self.lines.append(f"{title} ({len(cells)})")
        self.lines.append(render_table(headers, cells, right) if cells else "  (none)")

    def text(self, head: str) -> str:
        return "\n".join([head, *self.lines]) + "\n"


def _whose(doc: Doc) -> str:
    return "every key prefix" if doc.key_prefix is None else f"key prefix {doc.key_prefix!r}"


def _to_table(report: Report, section: str | None) -> str:
    days = (report.until - report.since).total_seconds() / 86400
    last = _utc(report.last_snapshot_at) or "none"
    head = (
        f"resilience report: {_utc(report.since)} .. {_utc(report.until)} UTC "
        f"({days:.1f} days), {report.snapshots} snapshots, latest {last}; {_whose(report)}"
    )
    t = _Tables(report, section)
    t.add(
        "problematic_models",
        "Problematic models",
        [
            "provider",
            "model",
            "errors",
            "successes",
            "error rate",
            "trips",
            "min open",
            "state",
            "blacklisted until",
            "last error",
        ],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    _cut(r.model, 40),
                    str(r.errors),
                    str(r.successes),
                    _pct(r.error_rate),
                    str(r.trips),
                    f"{r.minutes_open:.1f}",
                    r.state,
                    _utc(r.blacklisted_until),
                    r.last_error_kind or "",
                ],
            )
            for r in report.problematic_models
        ],
        {2, 3, 4, 5, 6},
    )
    t.add(
        "provider_success_rates",
        "Provider success rates (lowest first)",
        ["provider", "models", "errors", "successes", "success rate", "trips", "provider blocks"],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    str(r.models),
                    str(r.errors),
                    str(r.successes),
                    _pct(r.success_rate),
                    str(r.trips),
                    str(r.provider_blocks),
                ],
            )
            for r in report.provider_success_rates
        ],
        {1, 2, 3, 4, 5, 6},
    )
    t.add(
        "blacklisted",
        "Blacklisted now",
        ["provider", "model", "state", "until", "reason", "manual"],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    _cut(r.model, 40),
                    r.state,
                    _utc(r.until) or "probe",
                    _cut(r.reason or "", 50),
                    "yes" if r.manual else "",
                ],
            )
            for r in report.blacklisted
        ],
        set(),
    )
    t.add(
        "endpoint_hints",
        "Learned endpoint hints",
        ["provider", "model", "endpoint hint", "updated"],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    _cut(r.model, 40),
                    _cut(r.endpoint_hint, 60),
                    _utc(r.updated_at),
                ],
            )
            for r in report.endpoint_hints
        ],
        set(),
    )
    t.add(
        "compat_hints",
        "Learned compatibility hints",
        ["provider", "model", "hints", "learned", "from"],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    _cut(r.model, 40),
                    _cut("; ".join(r.hints), 60),
                    _utc(r.learned_at),
                    _cut(r.message or "", 60),
                ],
            )
            for r in report.compat_hints
        ],
        set(),
    )
    t.add(
        "recent_transitions",
        "Recent transitions (newest first)",
        ["time", "provider", "model", "change", "kind", "reason"],
        [
            (
                r.key_prefix,
                [
                    _utc(r.time),
                    _cut(r.provider, 24),
                    _cut(r.model or "(provider)", 40),
                    f"{r.from_state} -> {r.to_state}",
                    r.kind,
                    _cut(r.reason, 50),
                ],
            )
            for r in report.recent_transitions
        ],
        set(),
    )
    return t.text(head)


def _review_table(review: Review, section: str | None) -> str:
    days = (review.until - review.since).total_seconds() / 86400
    head = (
        f"resilience review: {_utc(review.since)} .. {_utc(review.until)} UTC "
        f"({days:.1f} days); {_whose(review)}; providers under "
        f"{_pct(review.min_success_rate)} success are marked for replacement"
    )
    t = _Tables(review, section)
    t.add(
        "providers",
        "Providers, lowest success rate first",
        [
            "provider",
            "models",
            "calls",
            "success rate",
            "trips",
            "min open",
            "provider blocks",
            "verdict",
        ],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    str(r.models),
                    str(r.calls),
                    _pct(r.success_rate),
                    str(r.trips),
                    f"{r.minutes_open:.1f}",
                    str(r.provider_blocks),
                    r.verdict,
                ],
            )
            for r in review.providers
        ],
        {1, 2, 3, 4, 5, 6},
    )
    t.add(
        "models",
        "Models, lowest success rate first",
        ["provider", "model", "family", "calls", "success rate", "trips", "min open"],
        [
            (
                r.key_prefix,
                [
                    _cut(r.provider, 24),
                    _cut(r.model, 40),
                    _cut(r.family, 30),
                    str(r.calls),
                    _pct(r.success_rate),
                    str(r.trips),
                    f"{r.minutes_open:.1f}",
                ],
            )
            for r in review.models
        ],
        {3, 4, 5, 6},
    )
    t.add(
        "target_order",
        "Suggested target order per model family (best first)",
        ["family", "order", "note"],
        [
            (r.key_prefix, [_cut(r.family, 30), " > ".join(r.order), r.note])
            for r in review.target_order
        ],
        set(),
    )
    return t.text(head)


def _format(doc: Doc, fmt: Format, section: str | None) -> str:
    _check_section(doc, section)
    if fmt == "table":
        return _to_table(doc, section) if isinstance(doc, Report) else _review_table(doc, section)
    if fmt == "json":
        return _to_json(doc, section)
    if fmt == "csv":
        if section is None:
            raise ValueError("CSV has one table per section: pass section= (or use csv_sections())")
        return _csv_text(doc, section)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def format_report(report: Report, fmt: Format = "table", *, section: str | None = None) -> str:
    """The report as text (ends with a newline): ``"table"`` or ``"json"`` (every section, or
    only ``section``), or ``"csv"`` (one section's table with its header; ``section`` is
    required, :func:`csv_sections` gives them all).

    Raises:
        ValueError: an unknown format or section, or CSV without a section.
    """
    return _format(report, fmt, section)


def format_review(review: Review, fmt: Format = "table", *, section: str | None = None) -> str:
    """The quarterly review as text, like :func:`format_report` (sections
    :data:`REVIEW_SECTIONS`)."""
    return _format(review, fmt, section)


# --------------------------------------------------------------------------- plot

PLOT_MAX_MODELS = 25
"""Models shown in the open-periods chart (most minutes open first)."""

_REASON_COLOURS = {
    "server_error": "tab:red",
    "overloaded": "tab:orange",
    "timeout": "tab:purple",
    "connection": "tab:brown",
    "unknown": "tab:pink",
    "rate_limited": "gold",
    "model_not_found": "black",
    "endpoint_mismatch": "tab:green",
    "quota_exhausted": "tab:blue",
    "auth": "navy",
    "permission": "tab:cyan",
    "manual": "tab:gray",
}


def _matplotlib_figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            "plotting needs matplotlib, which is not installed: pip install 'llm-resilience[plot]'"
        ) from exc
    return Figure


def check_plot_path(path: str) -> None:
    """Checks, before any query, that a plot can be written to ``path``: matplotlib is
    installed, the suffix names a format it writes (``.png``, ``.svg``, ``.pdf``, ...), and
    the file's directory exists and is writable.

    Raises:
        PlotUnavailableError: matplotlib is not installed.
        ValueError: the path is unusable (the message says why).
    """
    figure = _matplotlib_figure()
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    supported = figure().canvas.get_supported_filetypes()
    if suffix not in supported:
        some = ", ".join(f".{s}" for s in ("png", "svg", "pdf") if s in supported)
        raise ValueError(f"{path}: unknown image format {target.suffix or '(none)'!r}; use {some}")
    if target.is_dir():
        raise ValueError(f"{path} is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"{path}: not writable")


def plot_span(
    times: Sequence[datetime], start: datetime, end: datetime
) -> tuple[datetime, datetime]:
    """The time axis of the plot: the data's span with a margin of 3 % (at least a minute),
    within the period ``start`` .. ``end``; the whole period when there is no data."""
    if not times:
        return start, end
    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.03, timedelta(minutes=1))
    return max(start, lo - pad), min(end, hi + pad)


def plot_report(
    settings: Settings,
    path: str,
    since: datetime | timedelta = timedelta(days=7),
    *,
    now: datetime | None = None,
    all_prefixes: bool = False,
) -> None:
    """Writes a PNG (or any format matplotlib infers from ``path``) with two charts: the
    error rate per provider over time (from the history, in about 120 time buckets) and
    the open periods per model (from the transitions, the 25 models open longest), coloured
    by the reason they opened, with a legend. The time axis spans the data, not the whole
    period, when the data covers less.

    Raises:
        PlotUnavailableError: matplotlib is not installed.
        ValueError: ``path`` is unusable (:func:`check_plot_path`); checked first.
        MigrationRequiredError, DatabaseError: as :func:`build_report`.
    """
    check_plot_path(path)
    figure = _matplotlib_figure()
    scope = _scope(settings, all_prefixes)
    with connect(settings, autocommit=True, application_name="resilience-report") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, "report plot"), conn.transaction():
            start, now = _report_period(conn, since, now)
            bucket = max(timedelta(minutes=1), (now - start) / 120)
            series: dict[str, tuple[list[datetime], list[float]]] = {}
            for t, provider, errors, successes in conn.execute(
                "SELECT date_bin(%(bucket)s, taken_at, %(start)s) AS t,"
                " CASE WHEN %(all)s THEN key_prefix || ':' ELSE '' END || provider_id,"
                " sum(error_delta), sum(success_delta) FROM model_compatibility_history"
                f" WHERE {_MINE} AND taken_at > %(start)s AND taken_at <= %(now)s"
                " GROUP BY 1, 2 ORDER BY 1",
                {**scope, "bucket": bucket, "start": start, "now": now},
            ):
                rate = _rate(int(errors), int(successes))
                if rate is not None:
                    xs, ys = series.setdefault(str(provider), ([], []))
                    xs.append(t)
                    ys.append(rate * 100)
            _period, changes, initial = _load_changes(conn, start, now, scope)
    opened = {k: v for k, v in _stretches(changes, initial, start, now).items() if k[2]}
    top = sorted(opened, key=lambda k: -_minutes(opened[k]))[:PLOT_MAX_MODELS]

    times = [t for xs, _ys in series.values() for t in xs]
    times += [t for k in top for a, b, _kind in opened[k] for t in (a, b)]
    lo, hi = plot_span(times, start, now)

    def label(k: Key) -> str:
        return f"{k[0]}:{k[1]}/{k[2]}" if all_prefixes else f"{k[1]}/{k[2]}"

    fig = figure(figsize=(12, 4 + 0.3 * max(len(top), 4)), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, height_ratios=[1, max(1.0, len(top) / 8)])
    for provider, (xs, ys) in sorted(series.items()):
        ax1.plot(xs, ys, marker=".", label=provider)
    ax1.set_title("Error rate per provider")
    ax1.set_ylabel("errors, % of calls")
    ax1.set_xlim(lo, hi)
    ax1.set_ylim(0, 100)
    if series:
        ax1.legend(loc="upper left", fontsize="small", ncols=min(4, len(series)))
    else:
        ax1.text(0.5, 0.5, "no calls in the period", ha="center", transform=ax1.transAxes)
    extra = iter(f"C{i}" for i in range(100))
    colours: dict[str, str] = {}
    for i, key in enumerate(reversed(top)):
        for a, b, kind in opened[key]:
            reason = kind or "unknown"
            if reason not in colours:
                colours[reason] = _REASON_COLOURS.get(reason) or next(extra)
            ax2.broken_barh([(a, b - a)], (i - 0.4, 0.8), facecolors=colours[reason])
    ax2.set_yticks(range(len(top)), [label(k) for k in reversed(top)], fontsize="small")
    ax2.set_xlim(lo, hi)
    ax2.set_title("Open periods per model, by reason")
    if colours:
        from matplotlib.patches import Patch

        ax2.legend(
            handles=[Patch(facecolor=c, label=r) for r, c in sorted(colours.items())],
            loc="upper left",
            fontsize="small",
            ncols=min(6, len(colours)),
        )
    else:
        ax2.text(0.5, 0.5, "no model was open", ha="center", transform=ax2.transAxes)
    fig.savefig(path)
