"""The demo end to end (real HTTP, 4 worker processes, Redis, Postgres): its summary figures.

One short run (module-scoped, ~8 s) is asserted from several angles; the bounds are exact:
each worker has at most one call in flight, so after the N-th failure commits a trip at most
``workers - 1`` more calls can reach the provider.
"""

from __future__ import annotations

import argparse
import io
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from psycopg import sql

from examples.demo import DemoOptions, DemoSummary, HintSummary, run_demo
from examples.demo.cli import add_parser
from examples.demo.run import DEMO_OVERRIDES
from examples.demo.worker import endpoint_path, is_endpoint
from resilience import CompatHint
from tests.conftest import DATABASE_URL, REDIS_URL, make_settings

WORKERS = 4
MNF_THRESHOLD = DEMO_OVERRIDES["model_not_found_threshold"]
FAILURE_THRESHOLD = DEMO_OVERRIDES["failure_threshold"]
RENAMED = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")
NO_TOOLS = CompatHint("feature_unsupported", feature="tools")


def hint_of(s: DemoSummary, provider: str, model: str) -> HintSummary:
    [h] = [h for h in s.compat if (h.provider, h.model) == (provider, model)]
    return h


def _drop(prefix: str, schema: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[DemoSummary, str, str]]:
    prefix = f"rt-demo-{uuid.uuid4().hex[:10]}"
    schema = f"rt_demo_{uuid.uuid4().hex[:10]}"
    settings = make_settings(REDIS_URL, prefix, database_schema=schema)
    out = io.StringIO()
    try:
        summary = run_demo(
            settings, DemoOptions(duration_s=7.0, workers=WORKERS, seed=7, live=False), out
        )
        yield summary, out.getvalue(), schema
    finally:
        _drop(prefix, schema)


def test_the_run_finished_and_answered_everything(run: tuple[DemoSummary, str, str]) -> None:
    s, _, _ = run
    assert s.ok, s.worker_errors
    assert s.workers == WORKERS
    assert 6.5 <= s.duration_s <= 40  # ran for its --duration and stopped on its own
    assert s.requests > 100
    # Every route ends with the healthy model: no user request goes unanswered.
    assert (s.answered, s.unanswered) == (s.requests, 0)
    assert s.calls == sum(m.calls for m in s.models)
    assert s.failures == sum(m.failures for m in s.models)
    assert s.skipped == sum(m.skips for m in s.models) > 0
    healthy = s.model("openai", "gpt-4o-mini")
    assert healthy.failures == 0
    assert healthy.success_count == healthy.calls  # every success recorded, none lost


def test_retired_model_blocked_after_the_threshold_across_all_workers(
    run: tuple[DemoSummary, str, str],
) -> None:
    m = run[0].model("openai", "gpt-4-0314")
    # The fleet together paid the threshold, plus at most one in-flight call per other worker.
    assert MNF_THRESHOLD <= m.calls <= MNF_THRESHOLD + WORKERS - 1
    assert m.failures == m.calls
    assert m.first_trip_kind == "model_not_found"
    assert MNF_THRESHOLD <= (m.calls_to_first_trip or 0) <= m.calls
    assert m.opens == 1
    assert (m.state, m.blacklisted) == ("open", True)
    assert m.error_count == m.calls  # every failure recorded in Redis, none lost
    assert m.skips > 20  # and every later request skipped it


def test_hinted_endpoint_is_used_after_it_is_learned(run: tuple[DemoSummary, str, str]) -> None:
    s = run[0]
    m = s.model("openai", "o3-pro")
    chat = m.calls_by_path.get("/v1/chat/completions", 0)
    responses = m.calls_by_path.get("/v1/responses", 0)
    # Each worker may pay one wrong-endpoint call before the hint reaches it, never more.
    assert 1 <= chat <= WORKERS
    assert m.retry_calls == chat  # each mismatch retried at once on the endpoint it named
    assert responses == chat + m.hint_calls  # every other call went straight to the hint
    assert m.hint_calls > 20
    assert m.ok_by_path.get("/v1/responses") == responses
    assert m.endpoint_hint == "/v1/responses"
    assert m.opens == 0  # an endpoint mismatch never trips
    assert s.hints_learned == {"openai/o3-pro": "/v1/responses"}
    assert s.hint_calls == m.hint_calls


def test_renamed_parameter_learned_once_and_every_later_call_adapted(
    run: tuple[DemoSummary, str, str],
) -> None:
    s = run[0]
    m = s.model("openai", "o1")
    assert m.compat == (RENAMED,)  # TargetState.compat at the end
    h = hint_of(s, "openai", "o1")
    assert h.hint == RENAMED
    # Refused only while the hint was on its way: at most one call in flight per worker.
    assert 1 <= h.refused <= WORKERS
    assert m.failures == m.refused_calls == h.refused  # the provider's log agrees
    # Every other call was sent adapted (the provider answers 200 only to
    # max_completion_tokens): each refused request retried at once, the rest from the start.
    assert m.calls - m.failures == m.adapted_calls == h.adapted + h.retried
    assert m.ok_by_path == {"/v1/chat/completions": m.adapted_calls}
    assert 0 <= h.retried <= h.refused
    assert h.adapted > 20
    assert h.used == m.adapted_calls
    assert (m.error_count, m.opens, m.state) == (0, 0, "closed")  # never a failure


def test_missing_feature_learned_once_and_tool_requests_routed_away(
    run: tuple[DemoSummary, str, str],
) -> None:
    s = run[0]
    m = s.model("ollama", "deepseek-r1:14b")
    assert m.compat == (NO_TOOLS,)
    h = hint_of(s, "ollama", "deepseek-r1:14b")
    assert 1 <= h.refused <= WORKERS
    assert m.refused_calls == h.refused
    # The model was called with tools only before the fleet knew: every tool request since
    # passed it by without a call (needs=Needs(tools=True)), and was answered elsewhere.
    assert 1 <= s.tool_requests - h.routed_away <= h.refused
    assert h.routed_away == m.needs_skips > 10
    assert (h.adapted, h.retried, h.used) == (0, 0, h.routed_away)
    # It still answers every request without tools, and never trips (its refusal is an
    # endpoint_mismatch: a capability, recorded, never counted toward a trip).
    assert m.failures == h.refused
    assert m.ok_by_path.get("/v1/chat/completions") == m.calls - m.failures > 10
    assert (m.opens, m.state, m.blacklisted, m.skips) == (0, "closed", False, 0)
    assert m.endpoint_hint == "capability:tools-unsupported"  # what it lacks, not a path
    assert "ollama/deepseek-r1:14b" not in s.hints_learned


def test_overloaded_model_recovers_through_a_single_probe(
    run: tuple[DemoSummary, str, str],
) -> None:
    s = run[0]
    m = s.model("anthropic", "claude-sonnet-4")
    assert m.first_trip_kind == "overloaded"
    assert FAILURE_THRESHOLD <= (m.calls_to_first_trip or 0) <= FAILURE_THRESHOLD + WORKERS - 1
    assert m.in_flight_at_trip <= WORKERS - 1
    assert m.recovered_at is not None
    assert m.first_trip_at is not None
    # Closed by the first probe after the break (2.5 s), not by a later one (+5 s).
    assert (
        DEMO_OVERRIDES["open_seconds"] - 0.05
        <= m.recovered_at - m.first_trip_at
        <= DEMO_OVERRIDES["open_seconds"] + 2.0
    )
    assert m.probe_calls == 1  # the provider saw exactly one call between the trip and close
    assert m.probes == 1  # and exactly one worker of the fleet was handed the probe
    assert m.opens == 1
    assert m.state == "closed"
    changes = [
        (e.from_state, e.to_state)
        for e in s.events
        if (e.provider, e.model) == ("anthropic", "claude-sonnet-4")
    ]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_quota_provider_blocked_provider_wide(run: tuple[DemoSummary, str, str]) -> None:
    s = run[0]
    llama = s.model("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")
    qwen = s.model("together", "Qwen/Qwen2.5-72B-Instruct")
    assert llama.first_trip_provider_wide
    assert llama.first_trip_kind == "quota_exhausted"
    # One quota error anywhere blocks the provider: at most one call in flight per worker.
    assert 1 <= llama.calls + qwen.calls <= WORKERS
    assert llama.blacklisted
    assert qwen.blacklisted
    assert qwen.skips > 20  # the second model was skipped without ever being the one that failed
    wide = [e for e in s.events if e.provider == "together" and e.model is None]
    assert [e.to_state for e in wide] == ["open"]


def test_rate_limited_and_flaky_models_open_and_close(run: tuple[DemoSummary, str, str]) -> None:
    s = run[0]
    groq = s.model("groq", "llama-3.3-70b-versatile")
    assert groq.first_trip_kind == "rate_limited"
    assert groq.failures >= 1
    assert groq.calls_by_path == {"/v1/chat/completions": groq.calls}
    assert groq.skips > 0
    flaky = s.model("openai", "gpt-4o")
    assert 0 < flaky.failures < flaky.calls


def test_summary_paragraph_states_the_figures(run: tuple[DemoSummary, str, str]) -> None:
    s, out, _ = run
    text = s.text
    retired = s.model("openai", "gpt-4-0314")
    assert f"made {s.requests} requests" in text
    assert f"sent {s.calls} provider calls, {s.failures} of which failed" in text
    assert f"skipped {s.skipped} calls" in text
    assert f"openai/gpt-4-0314 after {retired.calls_to_first_trip} calls" in text
    assert "provider together (every model) after" in text
    assert "anthropic/claude-sonnet-4 closed again through 1 probe call" in text
    assert "openai/o3-pro -> /v1/responses" in text
    o1, tools = hint_of(s, "openai", "o1"), hint_of(s, "ollama", "deepseek-r1:14b")
    assert "Compatibility hints learned: 2." in text
    assert (
        f"openai/o1 (max_tokens -> max_completion_tokens): {o1.refused} call"
        f"{'' if o1.refused == 1 else 's'} refused before the fleet adapted, then "
        f"{o1.adapted + o1.retried} calls sent adapted"
    ) in text
    assert (
        f"ollama/deepseek-r1:14b (no tools): {tools.refused} call"
        f"{'' if tools.refused == 1 else 's'} refused before the fleet adapted, then "
        f"{tools.routed_away} requests needing tools routed to another model without a call"
    ) in text
    assert text in out
    assert "openai/gpt-4-0314" in out  # the final table
    assert "[CompatibilityHint] Blacklisted openai/gpt-4-0314" in out  # the workers' log lines


def test_snapshot_and_report_in_postgres(run: tuple[DemoSummary, str, str]) -> None:
    s, out, schema = run
    assert s.snapshot is not None
    assert s.snapshot.startswith("Postgres: snapshot ")
    assert s.report is not None
    assert "Learned endpoint hints" in s.report
    assert s.report.strip() in out
    retired = s.model("openai", "gpt-4-0314")
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        rows = conn.execute(
            "SELECT provider_id, model_id, error_count, success_count, is_blacklisted "
            "FROM model_compatibility_hints WHERE error_count > 0 ORDER BY error_count DESC"
        ).fetchall()
    by_target = {(r[0], r[1]): r for r in rows}
    assert by_target[("openai", "gpt-4-0314")][2:] == (retired.calls, 0, True)
    hinted = conn_hint(schema)
    assert hinted == "/v1/responses"


def conn_hint(schema: str) -> str | None:
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        row = conn.execute(
            "SELECT endpoint_hint FROM model_compatibility_hints "
            "WHERE provider_id = 'openai' AND model_id = 'o3-pro'"
        ).fetchone()
    return None if row is None else row[0]


def test_endpoint_path_of_hints() -> None:
    assert (is_endpoint("/v1/responses"), is_endpoint("capability:tools-unsupported")) == (
        True,
        False,
    )
    assert endpoint_path(None) == "/v1/chat/completions"
    assert endpoint_path("/v1/responses") == "/v1/responses"
    assert endpoint_path("v1/responses") == "/v1/responses"
    assert endpoint_path("capability:tools-unsupported") == "/v1/chat/completions"
    assert endpoint_path("/openai/deployments/x/responses") == "/v1/chat/completions"


def test_cli_runs_a_short_demo_and_exits_0(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="resilience")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["demo", "--duration", "2", "--workers", "2", "--seed", "3", "--no-live", "--no-snapshot"]
    )
    settings = make_settings(REDIS_URL, prefix)
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert "2 workers ran for" in out
    assert "(seed 3)" in out
    assert "resilience report" not in out  # --no-snapshot


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="duration"):
        DemoOptions(duration_s=0)
    with pytest.raises(ValueError, match="workers"):
        DemoOptions(workers=0)


def test_summarize_counts_from_the_provider_log() -> None:
    from datetime import datetime, timezone

    from examples.demo.provider import ModelSpec, ProviderRequest
    from examples.demo.run import summarize
    from examples.demo.worker import TargetCounters, WorkerStats
    from resilience import TargetState, TransitionEvent

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=timezone.utc)

    def ev(i: int, provider: str, model: str | None, a: str, b: str, t: float) -> TransitionEvent:
        return TransitionEvent(f"{i}-0", provider, model, a, b, "k", "", i, at(t))  # type: ignore[arg-type]

    specs = [
        ModelSpec("p", "m", "retired", "x"),
        ModelSpec("q", "a", "quota", "x"),
        ModelSpec("q", "b", "quota", "x"),
    ]
    log = [
        ProviderRequest(100.0, "p", "m", "/v1/chat/completions", 404, "0"),
        ProviderRequest(100.1, "p", "m", "/v1/chat/completions", 404, "1"),
        ProviderRequest(100.3, "p", "m", "/v1/chat/completions", 404, "2"),  # in flight
        ProviderRequest(102.9, "p", "m", "/v1/responses", 200, "0"),  # the probe
        ProviderRequest(103.5, "p", "m", "/v1/responses", 200, "1"),  # after the close
        ProviderRequest(49.9, "q", "a", "/v1/chat/completions", 429, "0"),
        ProviderRequest(50.2, "q", "b", "/v1/chat/completions", 429, "1"),  # in flight
        ProviderRequest(10.0, "q", "", "/v1/chat/completions", 400, "1"),  # no model: not a call
    ]
    events = [
        ev(3, "p", "m", "half_open", "closed", 103.0),
        ev(1, "p", "m", "closed", "open", 100.2),
        ev(2, "p", "m", "open", "half_open", 102.8),
        ev(4, "q", None, "closed", "open", 50.0),
    ]
    w0 = WorkerStats(0, requests=7, answered=6, unanswered=1)
    w0.targets["p/m"] = TargetCounters(calls=3, skips=4, probes=1, hint_calls=2)
    w1 = WorkerStats(1, requests=3, answered=3)
    w1.targets["p/m"] = TargetCounters(skips=1)
    w1.targets["q/b"] = TargetCounters(skips=5)
    states = [TargetState("p", "m", "closed", endpoint_hint="/v1/responses")]
    s = summarize(
        specs=specs, log=log, stats=[w0, w1], events=events, states=states, duration_s=4, seed=1
    )
    m = s.model("p", "m")
    assert (m.calls, m.failures) == (5, 3)
    assert (m.calls_to_first_trip, m.in_flight_at_trip) == (2, 1)
    assert (m.recovered_at, m.probe_calls) == (103.0, 1)
    assert (m.opens, m.skips, m.probes, m.hint_calls) == (1, 5, 1, 2)
    assert m.calls_by_path == {"/v1/chat/completions": 3, "/v1/responses": 2}
    a, b = s.model("q", "a"), s.model("q", "b")
    assert a.first_trip_provider_wide and b.first_trip_provider_wide
    # A provider-wide trip counts the calls to every model of the provider.
    assert (a.calls_to_first_trip, b.calls_to_first_trip) == (1, 1)
    assert (a.in_flight_at_trip, b.in_flight_at_trip) == (1, 1)
    assert (s.calls, s.failures, s.skipped, s.probes) == (7, 5, 10, 1)
    assert (s.requests, s.answered, s.unanswered, s.workers) == (10, 9, 1, 2)
    assert s.hints_learned == {"p/m": "/v1/responses"}
    assert "provider q (every model) after 1 call + 1 in flight (k)" in s.text
    assert "p/m after 2 calls + 1 in flight (k)" in s.text
    assert "p/m closed again through 1 probe call 2.8s after it opened" in s.text


def test_summarize_counts_a_request_within_the_transitions_millisecond_before_it() -> None:
    """Transition times are the Redis server's milliseconds; the provider log keeps
    microseconds. A request received within the trip's (or the close's) millisecond came
    before it: its answer is what the transition counted."""
    from datetime import datetime, timezone

    from examples.demo.provider import ModelSpec, ProviderRequest
    from examples.demo.run import summarize
    from resilience import TransitionEvent

    def ev(i: int, a: str, b: str, t: float) -> TransitionEvent:
        at = datetime.fromtimestamp(t, tz=timezone.utc)
        return TransitionEvent(f"{i}-0", "p", "m", a, b, "k", "", i, at)  # type: ignore[arg-type]

    log = [
        ProviderRequest(100.0, "p", "m", "/v1/chat/completions", 529, "0"),
        ProviderRequest(100.1, "p", "m", "/v1/chat/completions", 529, "1"),
        ProviderRequest(100.2004, "p", "m", "/v1/chat/completions", 529, "2"),  # the trip's ms
        ProviderRequest(100.2011, "p", "m", "/v1/chat/completions", 529, "3"),  # next ms: in flight
        ProviderRequest(103.0007, "p", "m", "/v1/chat/completions", 200, "0"),  # the close's ms
        ProviderRequest(103.0010, "p", "m", "/v1/chat/completions", 200, "1"),  # after the close
    ]
    events = [
        ev(1, "closed", "open", 100.2),
        ev(2, "open", "half_open", 102.9),
        ev(3, "half_open", "closed", 103.0),
    ]
    s = summarize(
        specs=[ModelSpec("p", "m", "overloaded", "x")],
        log=log,
        stats=[],
        events=events,
        states=[],
        duration_s=4,
        seed=1,
    )
    m = s.model("p", "m")
    assert (m.calls_to_first_trip, m.in_flight_at_trip, m.probe_calls) == (3, 1, 1)


def test_summarize_counts_per_compatibility_hint() -> None:
    from examples.demo.provider import ModelSpec, ProviderRequest
    from examples.demo.run import summarize
    from examples.demo.worker import TargetCounters, WorkerStats
    from resilience import TargetState

    no_temperature = CompatHint("param_unsupported", param="temperature")
    specs = [ModelSpec("p", "r", "param_renamed", "x"), ModelSpec("p", "t", "no_tools", "x")]
    log = [
        ProviderRequest(1.0, "p", "r", "/v1/chat/completions", 400, "0"),
        ProviderRequest(1.1, "p", "r", "/v1/chat/completions", 200, "0"),
        ProviderRequest(1.2, "p", "t", "/v1/chat/completions", 400, "1"),
    ]
    w0 = WorkerStats(0, requests=5, answered=5, tool_requests=2)
    w0.targets["p/r"] = TargetCounters(
        calls=2,
        failures=1,
        refused_calls=1,
        adapted_calls=1,
        refused={RENAMED.encode(): 1, no_temperature.encode(): 1},
        adapted_retries={RENAMED.encode(): 1, no_temperature.encode(): 1},
    )
    w1 = WorkerStats(1, requests=4, answered=4, tool_requests=3)
    w1.targets["p/r"] = TargetCounters(adapted_calls=3, adapted={RENAMED.encode(): 3})
    w1.targets["p/t"] = TargetCounters(
        calls=1, failures=1, refused_calls=1, refused={NO_TOOLS.encode(): 1}, needs_skips=4
    )
    states = [
        TargetState("p", "r", "closed", compat=(RENAMED, no_temperature)),
        TargetState(
            "p", "t", "closed", endpoint_hint="capability:tools-unsupported", compat=(NO_TOOLS,)
        ),
    ]
    s = summarize(
        specs=specs, log=log, stats=[w0, w1], events=[], states=states, duration_s=1, seed=1
    )
    assert s.hints_learned == {}  # a capability is no endpoint
    assert s.tool_requests == 5
    assert [
        (h.model, h.hint, h.refused, h.adapted, h.retried, h.routed_away) for h in s.compat
    ] == [
        ("r", RENAMED, 1, 3, 1, 0),
        ("r", no_temperature, 1, 0, 1, 0),
        ("t", NO_TOOLS, 1, 0, 0, 4),
    ]
    r = s.model("p", "r")
    assert (r.compat, r.refused_calls, r.adapted_calls) == ((RENAMED, no_temperature), 1, 4)
    assert s.model("p", "t").needs_skips == 4
    assert (
        "Compatibility hints learned: 3. p/r (max_tokens -> max_completion_tokens): 1 call "
        "refused before the fleet adapted, then 4 calls sent adapted (1 of them the retry of "
        "the refused call); p/r (no temperature): 1 call refused before the fleet adapted, then "
        "1 call sent adapted (the retry of the refused call); p/t (no tools): 1 call "
        "refused before the fleet adapted, then 4 requests needing tools routed to another "
        "model without a call."
    ) in s.text
    empty = summarize(specs=specs, log=[], stats=[], events=[], states=[], duration_s=1, seed=1)
    assert "No compatibility hint was learned." in empty.text
