"""Reports from the PostgreSQL history: what failed, how often, for how long.

Figures for a period (``since`` .. ``until``):

- calls: the sum of the per-snapshot increments in ``model_compatibility_history``
  (``error_delta``, ``success_delta``; computed at snapshot time with counter resets handled,
  so never negative), over the snapshots taken after ``since``;
- trips: transitions into ``open`` caused by failures (manual blocks excluded);
- minutes open: time spent in ``open``, from the transitions: each open stretch ends at the
  next transition or at its ``open_until`` (after which the target only waits for a probe),
  whichever comes first, clipped to the period. ``half_open`` time is not counted;
- current state, blacklist and endpoint hints: ``model_compatibility_hints`` as of the
  latest snapshot (a blacklist whose end has passed is left out).

Formats: ``table`` (aligned columns for a terminal), ``json`` (one object) and ``csv``
(one block per section separated by a blank line; each block has a header row and every row
starts with the section name, so ``grep ^problematic_models`` works).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from ._db import Connection, connect, require_schema, translate_errors
from ._exceptions import ResilienceError
from ._settings import Settings

__all__ = [
    "BlacklistRow",
    "HintRow",
    "ModelRow",
    "PlotUnavailableError",
    "ProviderRow",
    "Report",
    "TransitionRow",
    "build_report",
    "format_report",
    "open_periods",
    "plot_report",
    "render_table",
]

Format = Literal["table", "json", "csv"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")

Key = tuple[str, str | None]


class PlotUnavailableError(ResilienceError):
    """``--plot`` needs matplotlib, which is not installed
    (``pip install 'llm-resilience[plot]'``)."""


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


@dataclass(frozen=True, slots=True)
class BlacklistRow:
    """A target blocked as of the latest snapshot, and until when (None: until a probe)."""

    provider: str
    model: str
    state: str
    until: datetime | None
    reason: str | None
    manual: bool


@dataclass(frozen=True, slots=True)
class HintRow:
    """A learned endpoint or capability hint."""

    provider: str
    model: str
    endpoint_hint: str
    updated_at: datetime | None


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


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``resilience report`` shows, for the period ``since`` .. ``until``."""

    since: datetime
    until: datetime
    snapshots: int
    last_snapshot_at: datetime | None
    problematic_models: list[ModelRow]
    provider_success_rates: list[ProviderRow]
    blacklisted: list[BlacklistRow]
    endpoint_hints: list[HintRow]
    recent_transitions: list[TransitionRow]


SECTIONS: tuple[tuple[str, str], ...] = (
    ("problematic_models", "Problematic models"),
    ("provider_success_rates", "Provider success rates (lowest first)"),
    ("blacklisted", "Blacklisted now"),
    ("endpoint_hints", "Learned endpoint hints"),
    ("recent_transitions", "Recent transitions (newest first)"),
)


# --------------------------------------------------------------------------- open periods


@dataclass(frozen=True, slots=True)
class _Change:
    time: datetime
    to_state: str
    open_until: datetime | None


def open_periods(
    changes: Mapping[Key, Sequence[_Change]],
    initial: Mapping[Key, _Change],
    start: datetime,
    end: datetime,
) -> dict[Key, list[tuple[datetime, datetime]]]:
    """Stretches each target spent ``open`` within ``start`` .. ``end``.

    Args:
        changes: per target, its transitions inside the period, oldest first.
        initial: per target, its last transition at or before ``start`` (its state then).
        start, end: the period (aware datetimes).

    A stretch starts at a transition into ``open`` (or at ``start`` when the target was
    open then) and ends at the next transition, its ``open_until``, or ``end``, whichever
    is first.
    """
    out: dict[Key, list[tuple[datetime, datetime]]] = {}
    for key in set(changes) | set(initial):
        first = initial.get(key)
        stretches = [
            (first.time if first is not None else start, first or _Change(start, "closed", None))
        ]
        stretches += [(c.time, c) for c in changes.get(key, ())]
        periods: list[tuple[datetime, datetime]] = []
        for i, (begin, change) in enumerate(stretches):
            if change.to_state != "open":
                continue
            stop = stretches[i + 1][0] if i + 1 < len(stretches) else end
            a = max(begin, start)
            b = min(stop, end)
            if change.open_until is not None:
                b = min(b, change.open_until)
            if b > a:
                periods.append((a, b))
        if periods:
            out[key] = periods
    return out


def _minutes(periods: Iterable[tuple[datetime, datetime]]) -> float:
    return sum((b - a).total_seconds() for a, b in periods) / 60.0


# --------------------------------------------------------------------------- queries


def _as_since(since: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(since, timedelta):
        if since <= timedelta(0):
            raise ValueError("report period must be positive")
        return now - since
    if since.tzinfo is None:
        raise ValueError("report since must be an aware datetime")
    return since


def _load_changes(
    conn: Connection, since: datetime, until: datetime
) -> tuple[list[TransitionRow], dict[Key, list[_Change]], dict[Key, _Change]]:
    rows = conn.execute(
        "SELECT occurred_at, provider_id, model_id, from_state, to_state, kind, reason,"
        " open_until FROM model_compatibility_transitions"
        " WHERE occurred_at > %s AND occurred_at <= %s"
        " ORDER BY occurred_at, event_ms, event_seq",
        (since, until),
    ).fetchall()
    period = [TransitionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]
    changes: dict[Key, list[_Change]] = defaultdict(list)
    for t in period:
        changes[(t.provider, t.model)].append(_Change(t.time, t.to_state, t.open_until))
    initial = {
        (str(r[0]), r[1]): _Change(r[2], str(r[3]), r[4])
        for r in conn.execute(
            "SELECT DISTINCT ON (provider_id, model_id) provider_id, model_id, occurred_at,"
            " to_state, open_until FROM model_compatibility_transitions"
            " WHERE occurred_at <= %s"
            " ORDER BY provider_id, model_id, occurred_at DESC, event_ms DESC, event_seq DESC",
            (since,),
        )
    }
    return period, dict(changes), initial


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


def build_report(
    settings: Settings,
    since: datetime | timedelta = timedelta(days=7),
    *,
    now: datetime | None = None,
    limit: int = 50,
    transitions_limit: int = 30,
) -> Report:
    """Reads the report for the period ``since`` .. ``now`` from PostgreSQL.

    Args:
        since: start of the period: an aware datetime, or a duration before ``now``.
        now: end of the period (default: the PostgreSQL server time).
        limit: most problematic models listed (most errors first).
        transitions_limit: most recent transitions listed.

    Raises:
        MigrationRequiredError: the schema lacks the tables.
        DatabaseError: PostgreSQL is unreachable or a query failed.
    """
    with connect(settings, autocommit=True, application_name="resilience-report") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, "report"), conn.transaction():
            start, now = _report_period(conn, since, now)
            return _build(conn, start, now, limit, transitions_limit)


def _build(
    conn: Connection, since: datetime, until: datetime, limit: int, transitions_limit: int
) -> Report:
    snap = conn.execute(
        "SELECT count(*), max(taken_at) FROM resilience_snapshots"
        " WHERE taken_at > %s AND taken_at <= %s",
        (since, until),
    ).fetchone()
    assert snap is not None
    deltas = {
        (str(r[0]), str(r[1])): (int(r[2]), int(r[3]))
        for r in conn.execute(
            "SELECT provider_id, model_id, sum(error_delta), sum(success_delta)"
            " FROM model_compatibility_history WHERE taken_at > %s AND taken_at <= %s"
            " GROUP BY provider_id, model_id",
            (since, until),
        )
    }
    hints = {
        (str(r[0]), str(r[1])): r[2:]
        for r in conn.execute(
            "SELECT provider_id, model_id, state, is_blacklisted, blacklisted_until,"
            " last_error_kind, reason, manual, endpoint_hint, updated_at"
            " FROM model_compatibility_hints"
        )
    }
    period, changes, initial = _load_changes(conn, since, until)
    opened = open_periods(changes, initial, since, until)

    trips: dict[Key, int] = defaultdict(int)
    for t in period:
        if t.to_state == "open" and t.kind != "manual":
            trips[(t.provider, t.model)] += 1

    def is_blocked(h: Sequence[Any]) -> bool:
        return bool(h[1]) and (h[2] is None or h[2] > until)

    models: list[ModelRow] = []
    keys = {k for k in deltas} | {(p, m) for (p, m) in (set(trips) | set(opened)) if m is not None}
    keys |= {k for k, h in hints.items() if is_blocked(h)}
    for p, m in keys:
        assert m is not None
        errors, successes = deltas.get((p, m), (0, 0))
        h = hints.get((p, m))
        minutes = _minutes(opened.get((p, m), ()))
        n_trips = trips.get((p, m), 0)
        blocked = h is not None and is_blocked(h)
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
            )
        )
    models.sort(
        key=lambda r: (-r.errors, -(r.error_rate or 0.0), -r.minutes_open, r.provider, r.model)
    )

    per_provider: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for (p, _m), (e, s) in deltas.items():
        agg = per_provider[p]
        agg[0] += 1
        agg[1] += e
        agg[2] += s
    for (prov, model), n in trips.items():
        per_provider[prov][3 if model is not None else 4] += n
    for t in period:
        if t.model is None and t.to_state == "open" and t.kind == "manual":
            per_provider[t.provider][4] += 1
    providers = [
        ProviderRow(p, a[0], a[1], a[2], _rate(a[2], a[1]), a[3], a[4])
        for p, a in per_provider.items()
    ]
    providers.sort(
        key=lambda r: (
            r.success_rate is None,
            r.success_rate if r.success_rate is not None else 0.0,
            -(r.errors + r.successes),
            r.provider,
        )
    )

    blacklisted = sorted(
        (
            BlacklistRow(p, m, str(h[0]), h[2], h[4], bool(h[5]))
            for (p, m), h in hints.items()
            if is_blocked(h)
        ),
        key=lambda r: (r.provider, r.model),
    )
    endpoint_hints = sorted(
        (HintRow(p, m, str(h[6]), h[7]) for (p, m), h in hints.items() if h[6]),
        key=lambda r: (r.provider, r.model),
    )
    recent = list(reversed(period[-transitions_limit:])) if transitions_limit > 0 else []
    return Report(
        since=since,
        until=until,
        snapshots=int(snap[0]),
        last_snapshot_at=snap[1],
        problematic_models=models[: max(0, limit)],
        provider_success_rates=providers,
        blacklisted=blacklisted,
        endpoint_hints=endpoint_hints,
        recent_transitions=recent,
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
    return value


def _records(report: Report, section: str) -> list[dict[str, Any]]:
    rows: list[Any] = getattr(report, section)
    return [{k: _plain(v) for k, v in asdict(r).items()} for r in rows]


_ROW_TYPES: dict[str, type] = {
    "problematic_models": ModelRow,
    "provider_success_rates": ProviderRow,
    "blacklisted": BlacklistRow,
    "endpoint_hints": HintRow,
    "recent_transitions": TransitionRow,
}


def _to_json(report: Report) -> str:
    doc: dict[str, Any] = {
        "period": {
            "since": _iso(report.since),
            "until": _iso(report.until),
            "snapshots": report.snapshots,
            "last_snapshot_at": _iso(report.last_snapshot_at),
        }
    }
    for name, _title in SECTIONS:
        doc[name] = _records(report, name)
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, (name, _title) in enumerate(SECTIONS):
        if i:
            buf.write("\n")
        writer.writerow(["section", *(f.name for f in fields(_ROW_TYPES[name]))])
        for rec in _records(report, name):
            writer.writerow([name, *("" if v is None else v for v in rec.values())])
    return buf.getvalue()


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Aligned columns separated by two spaces; columns in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _to_table(report: Report) -> str:
    days = (report.until - report.since).total_seconds() / 86400
    last = _utc(report.last_snapshot_at) or "none"
    out = [
        f"resilience report: {_utc(report.since)} .. {_utc(report.until)} UTC "
        f"({days:.1f} days), {report.snapshots} snapshots, latest {last}",
    ]

    def section(title: str, headers: Sequence[str], rows: list[list[str]], right: set[int]) -> None:
        out.append("")
        out.append(f"{title} ({len(rows)})")
        out.append(render_table(headers, rows, right) if rows else "  (none)")

    section(
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
            ]
            for r in report.problematic_models
        ],
        {2, 3, 4, 5, 6},
    )
    section(
        "Provider success rates (lowest first)",
        ["provider", "models", "errors", "successes", "success rate", "trips", "provider blocks"],
        [
            [
                _cut(r.provider, 24),
                str(r.models),
                str(r.errors),
                str(r.successes),
                _pct(r.success_rate),
                str(r.trips),
                str(r.provider_blocks),
            ]
            for r in report.provider_success_rates
        ],
        {1, 2, 3, 4, 5, 6},
    )
    section(
        "Blacklisted now",
        ["provider", "model", "state", "until", "reason", "manual"],
        [
            [
                _cut(r.provider, 24),
                _cut(r.model, 40),
                r.state,
                _utc(r.until) or "probe",
                _cut(r.reason or "", 50),
                "yes" if r.manual else "",
            ]
            for r in report.blacklisted
        ],
        set(),
    )
    section(
        "Learned endpoint hints",
        ["provider", "model", "endpoint hint", "updated"],
        [
            [_cut(r.provider, 24), _cut(r.model, 40), _cut(r.endpoint_hint, 60), _utc(r.updated_at)]
            for r in report.endpoint_hints
        ],
        set(),
    )
    section(
        "Recent transitions (newest first)",
        ["time", "provider", "model", "change", "kind", "reason"],
        [
            [
                _utc(r.time),
                _cut(r.provider, 24),
                _cut(r.model or "(provider)", 40),
                f"{r.from_state} -> {r.to_state}",
                r.kind,
                _cut(r.reason, 50),
            ]
            for r in report.recent_transitions
        ],
        set(),
    )
    return "\n".join(out) + "\n"


def format_report(report: Report, fmt: Format = "table") -> str:
    """The report as text: ``"table"``, ``"json"`` or ``"csv"`` (ends with a newline)."""
    if fmt == "table":
        return _to_table(report)
    if fmt == "json":
        return _to_json(report)
    if fmt == "csv":
        return _to_csv(report)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- plot

PLOT_MAX_MODELS = 25
"""Models shown in the open-periods chart (most minutes open first)."""


def plot_report(
    settings: Settings,
    path: str,
    since: datetime | timedelta = timedelta(days=7),
    *,
    now: datetime | None = None,
) -> None:
    """Writes a PNG (or any format matplotlib infers from ``path``) with two charts: the
    error rate per provider over time (from the history, in about 120 time buckets) and
    the open periods per model (from the transitions, the 25 models open longest).

    Raises:
        PlotUnavailableError: matplotlib is not installed.
        MigrationRequiredError, DatabaseError: as :func:`build_report`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            "plotting needs matplotlib, which is not installed: pip install 'llm-resilience[plot]'"
        ) from exc
    with connect(settings, autocommit=True, application_name="resilience-report") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, "report plot"), conn.transaction():
            start, now = _report_period(conn, since, now)
            bucket = max(timedelta(minutes=1), (now - start) / 120)
            series: dict[str, tuple[list[datetime], list[float]]] = {}
            for t, provider, errors, successes in conn.execute(
                "SELECT date_bin(%s, taken_at, %s) AS t, provider_id,"
                " sum(error_delta), sum(success_delta) FROM model_compatibility_history"
                " WHERE taken_at > %s AND taken_at <= %s"
                " GROUP BY 1, 2 ORDER BY 1",
                (bucket, start, start, now),
            ):
                rate = _rate(int(errors), int(successes))
                if rate is not None:
                    xs, ys = series.setdefault(str(provider), ([], []))
                    xs.append(t)
                    ys.append(rate * 100)
            _period, changes, initial = _load_changes(conn, start, now)
    opened = {k: v for k, v in open_periods(changes, initial, start, now).items() if k[1]}
    top = sorted(opened, key=lambda k: -_minutes(opened[k]))[:PLOT_MAX_MODELS]

    fig = Figure(figsize=(12, 4 + 0.3 * max(len(top), 4)), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, height_ratios=[1, max(1.0, len(top) / 8)])
    for provider, (xs, ys) in sorted(series.items()):
        ax1.plot(xs, ys, marker=".", label=provider)
    ax1.set_title("Error rate per provider")
    ax1.set_ylabel("errors, % of calls")
    ax1.set_xlim(start, now)
    ax1.set_ylim(0, 100)
    if series:
        ax1.legend(loc="upper left", fontsize="small", ncols=min(4, len(series)))
    else:
        ax1.text(0.5, 0.5, "no calls in the period", ha="center", transform=ax1.transAxes)
    for i, key in enumerate(reversed(top)):
        ax2.broken_barh([(a, b - a) for a, b in opened[key]], (i - 0.4, 0.8), facecolors="tab:red")
    ax2.set_yticks(range(len(top)), [f"{p}/{m}" for p, m in reversed(top)], fontsize="small")
    ax2.set_xlim(start, now)
    ax2.set_title("Open periods per model")
    if not top:
        ax2.text(0.5, 0.5, "no model was open", ha="center", transform=ax2.transAxes)
    fig.savefig(path)
