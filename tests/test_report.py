"""Reports from known rows inserted straight into PostgreSQL: figures, every format, the
plot, and prune keeping the current state."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from resilience import Settings
from resilience._db import MigrationRequiredError, upgrade
from resilience._report import (
    PlotUnavailableError,
    _Change,
    build_report,
    build_review,
    check_plot_path,
    csv_sections,
    format_report,
    format_review,
    model_family,
    open_periods,
    plot_report,
    plot_span,
)
from resilience._snapshot import prune
from tests.conftest import make_settings

NOW = datetime(2026, 1, 8, tzinfo=timezone.utc)
D = timedelta(days=1)
H = timedelta(hours=1)
M = timedelta(minutes=1)


APP = "app"
"""The key prefix of the reported application (rows of others are added where tested)."""


@pytest.fixture
def rep_settings(redis_url: str, pg_schema: str) -> Settings:
    s = make_settings(redis_url, APP, database_schema=pg_schema)
    upgrade(s)
    return s


@pytest.fixture
def pg(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield c


def snapshot(
    pg: psycopg.Connection[Any],
    at: datetime,
    rows: list[tuple[str, str, int, int]],
    key_prefix: str = APP,
) -> None:
    """One snapshot at ``at`` with (provider, model, error_delta, success_delta) rows."""
    row = pg.execute(
        "INSERT INTO resilience_snapshots (key_prefix, taken_at, targets, transitions)"
        " VALUES (%s, %s, %s, 0) RETURNING id",
        (key_prefix, at, len(rows)),
    ).fetchone()
    assert row is not None
    for p, m, e, s in rows:
        pg.execute(
            "INSERT INTO model_compatibility_history (snapshot_id, key_prefix, taken_at,"
            " provider_id, model_id, state, is_blacklisted, error_delta, success_delta,"
            " error_count, success_count, raw_error_count, raw_success_count,"
            " consecutive_errors, trips)"
            " VALUES (%s, %s, %s, %s, %s, 'closed', false, %s, %s, 0, 0, 0, 0, 0, 0)",
            (row[0], key_prefix, at, p, m, e, s),
        )


_SEQ = iter(range(1, 10_000))


def transition(
    pg: psycopg.Connection[Any],
    at: datetime,
    provider: str,
    model: str | None,
    change: str,
    kind: str,
    reason: str = "",
    open_until: datetime | None = None,
    key_prefix: str = APP,
) -> None:
    from_state, to_state = change.split(">")
    pg.execute(
        "INSERT INTO model_compatibility_transitions (key_prefix, provider_id, event_ms,"
        " event_seq, model_id, from_state, to_state, kind, reason, occurred_at, open_until)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            key_prefix,
            provider,
            int(at.timestamp() * 1000),
            next(_SEQ),
            model,
            from_state,
            to_state,
            kind,
            reason,
            at,
            open_until,
        ),
    )


def hint(pg: psycopg.Connection[Any], provider: str, model: str, **cols: Any) -> None:
    cols.setdefault("key_prefix", APP)
    names = ["provider_id", "model_id", *cols]
    pg.execute(
        sql.SQL("INSERT INTO model_compatibility_hints ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        ),
        (provider, model, *cols.values()),
    )


@pytest.fixture
def known(pg: psycopg.Connection[Any]) -> None:
    """A week of known history (period: NOW - 7d .. NOW)."""
    snapshot(pg, NOW - 8 * D, [("openai", "gpt-4o", 100, 0)])  # before the period
    for at, e in ((NOW - 6 * D, 5), (NOW - 3 * D, 10), (NOW - 1 * D, 5)):
        snapshot(
            pg,
            at,
            [
                ("openai", "gpt-4o", e, 5 if e == 5 else 0),
                ("openai", "gpt-4o-mini", 0, 100),
                ("anthropic", "claude", 1, 99),
            ],
        )
    t0 = NOW - 5 * D
    # gpt-4o: open 30 min (to its open_until), half-open, open again, closed after 28 min
    transition(pg, t0, "openai", "gpt-4o", "closed>open", "server_error", "", t0 + 30 * M)
    transition(pg, t0 + 31 * M, "openai", "gpt-4o", "open>half_open", "probe")
    transition(pg, t0 + 32 * M, "openai", "gpt-4o", "half_open>open", "server_error", "", t0 + H)
    transition(pg, t0 + 60 * M, "openai", "gpt-4o", "open>closed", "probe")
    # claude: manual block for 2 h, unblocked after 1 h (not a trip)
    t1 = NOW - 2 * D
    transition(pg, t1, "anthropic", "claude", "closed>open", "manual", "INC-42", t1 + 2 * H)
    transition(pg, t1 + H, "anthropic", "claude", "open>closed", "manual")
    # gpt-4o-mini: tripped before the period, still open 30 min into it
    t2 = NOW - 7 * D - H
    transition(pg, t2, "openai", "gpt-4o-mini", "closed>open", "timeout", "", t2 + 90 * M)
    # anthropic provider-wide auth block yesterday
    transition(pg, NOW - D, "anthropic", None, "closed>open", "auth", "bad key", NOW + D)
    hint(
        pg,
        "openai",
        "gpt-4o",
        state="open",
        is_blacklisted=True,
        blacklisted_until=NOW + H,
        error_count=120,
        last_error_kind="server_error",
        reason="server_error",
    )
    hint(pg, "openai", "gpt-4o-mini", endpoint_hint="/v1/responses", updated_at=NOW - D)
    hint(pg, "anthropic", "claude", error_count=3, success_count=297)
    hint(pg, "groq", "old", state="open", is_blacklisted=True, blacklisted_until=NOW - H)


def test_open_periods_clip_to_open_until_and_period() -> None:
    start, end = NOW - D, NOW
    key = ("p", "m")
    periods = open_periods(
        {key: [_Change(start + H, "closed", None), _Change(start + 2 * H, "open", start + 3 * H)]},
        {key: _Change(start - H, "open", start + 30 * M)},
        start,
        end,
    )
    assert periods == {key: [(start, start + 30 * M), (start + 2 * H, start + 3 * H)]}
    # open without an end: up to the end of the period
    assert open_periods({key: [_Change(end - H, "open", None)]}, {}, start, end) == {
        key: [(end - H, end)]
    }
    assert open_periods({}, {key: _Change(start - D, "open", start - H)}, start, end) == {}


def test_report_figures(rep_settings: Settings, known: None) -> None:
    r = build_report(rep_settings, timedelta(days=7), now=NOW)
    assert (r.since, r.until, r.snapshots) == (NOW - 7 * D, NOW, 3)
    assert r.last_snapshot_at == NOW - D
    rows = {(m.provider, m.model): m for m in r.problematic_models}
    assert [(m.provider, m.model) for m in r.problematic_models] == [
        ("openai", "gpt-4o"),
        ("anthropic", "claude"),
        ("openai", "gpt-4o-mini"),
    ]
    g = rows[("openai", "gpt-4o")]
    assert (g.errors, g.successes, g.trips, g.minutes_open) == (20, 10, 2, 58.0)
    assert g.error_rate == pytest.approx(20 / 30)
    assert (g.state, g.blacklisted_until, g.last_error_kind) == ("open", NOW + H, "server_error")
    c = rows[("anthropic", "claude")]
    assert (c.errors, c.successes, c.trips, c.minutes_open) == (3, 297, 0, 60.0)
    mini = rows[("openai", "gpt-4o-mini")]
    assert (mini.errors, mini.trips, mini.minutes_open) == (0, 0, 30.0)

    providers = [
        (p.provider, p.errors, p.successes, p.trips, p.provider_blocks)
        for p in r.provider_success_rates
    ]
    assert providers == [("openai", 20, 310, 2, 0), ("anthropic", 3, 297, 0, 1)]
    assert r.provider_success_rates[0].success_rate == pytest.approx(310 / 330)

    assert [(b.provider, b.model, b.until) for b in r.blacklisted] == [
        ("openai", "gpt-4o", NOW + H)
    ]  # groq/old's blacklist ended an hour ago
    assert [(h.provider, h.model, h.endpoint_hint) for h in r.endpoint_hints] == [
        ("openai", "gpt-4o-mini", "/v1/responses")
    ]
    assert len(r.recent_transitions) == 7  # the one before the period is left out
    assert r.recent_transitions[0].model is None  # newest first: the provider-wide block
    assert r.recent_transitions[0].kind == "auth"


def test_shorter_period_and_limits(rep_settings: Settings, known: None) -> None:
    r = build_report(rep_settings, timedelta(days=2), now=NOW, limit=1, transitions_limit=2)
    assert [m.model for m in r.problematic_models] == ["gpt-4o"]
    assert r.problematic_models[0].errors == 5
    assert r.problematic_models[0].trips == 0
    assert len(r.recent_transitions) == 2


def test_table_format_is_aligned(rep_settings: Settings, known: None) -> None:
    text = format_report(build_report(rep_settings, timedelta(days=7), now=NOW), "table")
    lines = text.splitlines()
    assert lines[0].startswith("resilience report: 2026-01-01 00:00:00 .. 2026-01-08 00:00:00")
    start = lines.index("Problematic models (3)")
    header, rule, *body = lines[start + 1 : start + 6]
    assert header.split()[:4] == ["provider", "model", "errors", "successes"]
    assert set(rule.replace(" ", "")) == {"-"}
    # numbers are right-aligned: every "errors" cell ends where the header does
    end = header.index("errors") + len("errors")
    assert [row[:end].split()[-1] for row in body] == ["20", "3", "0"]
    assert all(row[end] == " " for row in body)
    assert "66.7%" in body[0]
    for title in (
        "Provider success rates (lowest first) (2)",
        "Blacklisted now (1)",
        "Learned endpoint hints (1)",
        "Recent transitions (newest first) (7)",
    ):
        assert title in lines
    assert "closed -> open" in text


def test_json_format(rep_settings: Settings, known: None) -> None:
    doc = json.loads(format_report(build_report(rep_settings, timedelta(days=7), now=NOW), "json"))
    assert doc["period"] == {
        "since": "2026-01-01T00:00:00+00:00",
        "until": "2026-01-08T00:00:00+00:00",
        "key_prefix": APP,
        "snapshots": 3,
        "last_snapshot_at": "2026-01-07T00:00:00+00:00",
    }
    first = doc["problematic_models"][0]
    assert first == {
        "provider": "openai",
        "model": "gpt-4o",
        "errors": 20,
        "successes": 10,
        "error_rate": 0.6667,
        "trips": 2,
        "minutes_open": 58.0,
        "state": "open",
        "blacklisted_until": "2026-01-08T01:00:00+00:00",
        "last_error_kind": "server_error",
        "key_prefix": APP,
    }
    assert [p["provider"] for p in doc["provider_success_rates"]] == ["openai", "anthropic"]
    assert doc["blacklisted"][0]["until"] == "2026-01-08T01:00:00+00:00"
    assert doc["endpoint_hints"][0]["endpoint_hint"] == "/v1/responses"
    assert doc["recent_transitions"][0]["model"] is None


def test_csv_has_one_table_per_section(rep_settings: Settings, known: None) -> None:
    report = build_report(rep_settings, timedelta(days=7), now=NOW)
    texts = csv_sections(report)
    assert list(texts) == [
        "problematic_models",
        "provider_success_rates",
        "blacklisted",
        "endpoint_hints",
        "compat_hints",
        "recent_transitions",
    ]
    tables = {name: list(csv.reader(io.StringIO(text))) for name, text in texts.items()}
    for name, rows in tables.items():
        assert rows[0][:2] in (["provider", "model"], ["provider", "models"], ["time", "provider"])
        assert all(len(r) == len(rows[0]) for r in rows), name  # one header, one shape
        assert "" not in {line for line in texts[name].splitlines()}  # one block, no gaps
    assert tables["provider_success_rates"][0][-3:] == ["trips", "provider_blocks", "key_prefix"]
    assert format_report(report, "csv", section="blacklisted") == texts["blacklisted"]
    with pytest.raises(ValueError, match="one table per section"):
        format_report(report, "csv")
    header, first = tables["problematic_models"][0], tables["problematic_models"][1]
    rec = dict(zip(header, first, strict=True))
    assert rec["model"] == "gpt-4o"
    assert (rec["errors"], rec["successes"], rec["trips"], rec["minutes_open"]) == (
        "20",
        "10",
        "2",
        "58.0",
    )
    assert rec["error_rate"] == "0.6667"


def test_empty_report(rep_settings: Settings) -> None:
    r = build_report(rep_settings, timedelta(days=7))
    assert r.snapshots == 0 and r.problematic_models == []
    text = format_report(r, "table")
    assert "(none)" in text
    assert json.loads(format_report(r, "json"))["problematic_models"] == []
    with pytest.raises(ValueError, match="format"):
        format_report(r, "xml")  # type: ignore[arg-type]


def test_report_needs_the_migrations(redis_url: str, prefix: str, pg_schema: str) -> None:
    bare = make_settings(redis_url, prefix, database_schema=pg_schema)
    with pytest.raises(MigrationRequiredError, match="resilience db upgrade"):
        build_report(bare)


def test_plot_writes_a_png(rep_settings: Settings, known: None, tmp_path: Any) -> None:
    path = tmp_path / "report.png"
    plot_report(rep_settings, str(path), timedelta(days=7), now=NOW)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_plot_without_matplotlib_says_what_to_install(
    rep_settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlotUnavailableError, match=r"resilience\[plot\]"):
        plot_report(rep_settings, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_prune_keeps_current_state(rep_settings: Settings, pg: psycopg.Connection[Any]) -> None:
    now_db = pg.execute("SELECT now()").fetchone()
    assert now_db is not None
    hint(pg, "openai", "gpt-4o", error_count=7, is_blacklisted=True, updated_at=now_db[0] - 100 * D)
    hint(pg, "groq", "llama", success_count=3, updated_at=now_db[0] - 200 * D)
    snapshot(pg, now_db[0] - 100 * D, [("openai", "gpt-4o", 1, 1)])
    snapshot(pg, now_db[0] - 10 * D, [("openai", "gpt-4o", 1, 1)])
    transition(pg, now_db[0] - 100 * D, "openai", "gpt-4o", "closed>open", "timeout")
    transition(pg, now_db[0] - 10 * D, "openai", "gpt-4o", "open>closed", "probe")
    hints_before = pg.execute("SELECT * FROM model_compatibility_hints ORDER BY 1, 2").fetchall()

    result = prune(rep_settings, timedelta(days=90))
    assert (result.snapshots, result.history, result.transitions) == (1, 1, 1)
    assert pg.execute("SELECT count(*) FROM resilience_snapshots").fetchone() == (1,)
    assert pg.execute("SELECT count(*) FROM model_compatibility_history").fetchone() == (1,)
    assert pg.execute("SELECT count(*) FROM model_compatibility_transitions").fetchone() == (1,)
    hints_after = pg.execute("SELECT * FROM model_compatibility_hints ORDER BY 1, 2").fetchall()
    assert len(hints_after) == 2
    assert hints_after == hints_before
    with pytest.raises(ValueError, match="positive"):
        prune(rep_settings, timedelta(0))


# --------------------------------------------------------------------------- key prefixes


def test_each_key_prefix_reports_alone_unless_asked_for_all(
    rep_settings: Settings, known: None, pg: psycopg.Connection[Any]
) -> None:
    other = "other-app"
    snapshot(pg, NOW - D, [("openai", "gpt-4o", 1000, 0)], key_prefix=other)
    transition(pg, NOW - D, "openai", "gpt-4o", "closed>open", "timeout", key_prefix=other)
    hint(pg, "openai", "gpt-4o", key_prefix=other, is_blacklisted=True, state="open")

    mine = build_report(rep_settings, timedelta(days=7), now=NOW)
    assert mine.key_prefix == APP
    assert {m.key_prefix for m in mine.problematic_models} == {APP}
    assert mine.problematic_models[0].errors == 20  # not 1020
    assert mine.snapshots == 3
    assert len(mine.recent_transitions) == 7

    both = build_report(rep_settings, timedelta(days=7), now=NOW, all_prefixes=True)
    assert both.key_prefix is None
    rows = {(m.key_prefix, m.model): m for m in both.problematic_models}
    assert rows[(other, "gpt-4o")].errors == 1000
    assert rows[(APP, "gpt-4o")].errors == 20
    assert both.snapshots == 4
    assert {(b.key_prefix, b.model) for b in both.blacklisted} == {
        (APP, "gpt-4o"),
        (other, "gpt-4o"),
    }
    table = format_report(both, "table")
    assert "every key prefix" in table
    assert table.splitlines()[3].split()[:3] == ["key", "prefix", "provider"]


def test_trips_are_openings_after_counted_failures_only(
    rep_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    t = NOW - H
    snapshot(pg, t, [("p", "m", 9, 1)])
    for i, kind in enumerate(
        (
            "server_error",
            "rate_limited",
            "quota_exhausted",
            "auth",
            "permission",
            "manual",
            "model_not_found",
            "endpoint_mismatch",
        )
    ):
        at = t + i * M
        transition(pg, at, "p", "m", "closed>open", kind, "", at + 10 * M)
        transition(pg, at + 30 * timedelta(seconds=1), "p", "m", "open>closed", "probe")
    transition(pg, t + 20 * M, "p", None, "closed>open", "quota_exhausted", "", NOW + H)
    r = build_report(rep_settings, timedelta(days=1), now=NOW)
    assert r.problematic_models[0].trips == 3  # server_error, model_not_found, endpoint
    assert r.provider_success_rates[0].trips == 3
    assert r.provider_success_rates[0].provider_blocks == 1


# --------------------------------------------------------------------------- review


def test_model_family() -> None:
    same = {
        "gpt-4o": ["gpt-4o", "gpt-4o-2024-08-06", "openai/gpt-4o", "GPT-4o:free"],
        "claude-3-5-sonnet": [
            "claude-3-5-sonnet-20241022",
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "claude-3-5-sonnet@20240620",
            "claude-3-5-sonnet-latest",
        ],
        "gemini-1.5-pro": ["gemini-1.5-pro-002", "models/gemini-1.5-pro"],
        "llama-3.1-70b-instruct": ["meta-llama/Llama-3.1-70B-Instruct"],
    }
    for family, names in same.items():
        assert {model_family(n) for n in names} == {family}, names
    assert model_family("gpt-4o-mini") != model_family("gpt-4o")


def test_quarterly_review_ranks_and_orders(
    rep_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    t = NOW - 30 * D
    snapshot(
        pg,
        t,
        [
            ("openai", "gpt-4o-2024-08-06", 300, 700),  # 70 %, most calls
            ("azure", "gpt-4o", 5, 495),  # 99 %
            ("groq", "llama-3.1-70b", 0, 10),  # 100 %, few calls, alone in its family
        ],
    )
    snapshot(pg, NOW - 100 * D, [("azure", "gpt-4o", 1000, 0)])  # before the quarter
    transition(pg, t, "openai", "gpt-4o-2024-08-06", "closed>open", "server_error", "", t + H)
    transition(pg, t, "azure", None, "closed>open", "auth", "", t + H)
    review = build_review(rep_settings, timedelta(days=90), now=NOW)

    assert [(p.provider, p.verdict) for p in review.providers] == [
        ("openai", "replace or move down"),
        ("azure", "keep"),
        ("groq", "keep"),
    ]
    openai = review.providers[0]
    assert (openai.calls, openai.errors, openai.trips, openai.minutes_open) == (1000, 300, 1, 60.0)
    assert openai.success_rate == pytest.approx(0.7)
    assert review.providers[1].provider_blocks == 1
    assert [m.model for m in review.models] == ["gpt-4o-2024-08-06", "gpt-4o", "llama-3.1-70b"]
    orders = {o.family: o for o in review.target_order}
    assert orders["gpt-4o"].order == ("azure/gpt-4o", "openai/gpt-4o-2024-08-06")
    assert "most calls went to openai/gpt-4o-2024-08-06; put azure/gpt-4o first" in (
        orders["gpt-4o"].note
    )
    assert "one target only" in orders["llama-3.1-70b"].note
    assert "few calls" in orders["llama-3.1-70b"].note

    table = format_review(review, "table")
    assert "Suggested target order per model family (best first) (2)" in table
    assert "azure/gpt-4o > openai/gpt-4o-2024-08-06" in table
    doc = json.loads(format_review(review, "json"))
    assert doc["target_order"][0]["order"] == ["azure/gpt-4o", "openai/gpt-4o-2024-08-06"]
    rows = list(csv.reader(io.StringIO(format_review(review, "csv", section="target_order"))))
    assert rows[0] == ["family", "order", "note", "key_prefix"]
    assert rows[1][1] == "azure/gpt-4o > openai/gpt-4o-2024-08-06"


# --------------------------------------------------------------------------- plot


def test_plot_axis_spans_the_data_not_the_period() -> None:
    start, end = NOW - 7 * D, NOW
    lo, hi = plot_span([NOW - 2 * H, NOW - 2 * H + M], start, end)
    assert lo >= NOW - 2 * H - 2 * M and hi <= NOW - 2 * H + 3 * M
    assert plot_span([], start, end) == (start, end)
    lo, hi = plot_span([start, end], start, end)  # never beyond the period
    assert (lo, hi) == (start, end)


def test_plot_path_is_checked_before_anything_runs(tmp_path: Any) -> None:
    check_plot_path(str(tmp_path / "ok.png"))
    check_plot_path(str(tmp_path / "ok.svg"))
    for bad, needle in (
        (tmp_path / "x.txt", "unknown image format"),
        (tmp_path / "x", "unknown image format"),
        (tmp_path / "missing" / "x.png", "does not exist"),
    ):
        with pytest.raises(ValueError, match=needle):
            check_plot_path(str(bad))
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        check_plot_path(str(tmp_path / "d.png"))


def test_plot_of_a_minute_of_data_in_a_week(
    rep_settings: Settings, pg: psycopg.Connection[Any], tmp_path: Any
) -> None:
    snapshot(pg, NOW - 2 * H, [("p", "m", 1, 1)])
    snapshot(pg, NOW - 2 * H + M, [("p", "m", 2, 0)])
    transition(pg, NOW - 2 * H, "p", "m", "closed>open", "rate_limited", "", NOW - 2 * H + M)
    path = tmp_path / "minute.png"
    plot_report(rep_settings, str(path), timedelta(days=7), now=NOW)
    assert path.read_bytes()[:4] == b"\x89PNG"
