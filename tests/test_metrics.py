"""Prometheus metrics: the hook's series after real traffic, the fleet collector reading
Redis, snapshot duration, the HTTP server, ``serve-metrics`` and the missing-extra message."""

from __future__ import annotations

import argparse
import io
import socket
import time
import wsgiref.util
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import Breaker, CircuitOpenError, ErrorKind, Target
from resilience import _metrics as metrics
from resilience._metrics import (
    FleetCollector,
    MetricsUnavailableError,
    PrometheusHook,
    observe_snapshot,
    start_metrics_server,
)
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed back: (name, sorted labels) -> value."""
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_hook_series_after_traffic(
    redis_url: str, prefix: str, registry: CollectorRegistry
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=2, open_seconds=0.3)
    with Breaker(settings, hooks=[PrometheusHook(registry)]) as breaker:

        @breaker.guard("openai", "gpt-4o")
        def call(fail: bool) -> str:
            if fail:
                raise httpx.ConnectError("connection refused")
            return "ok"

        assert call(False) == "ok"
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                call(True)
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                call(False)
        time.sleep(0.45)
        assert call(False) == "ok"  # the probe closes it
        assert call(False) == "ok"

    got = samples(registry)
    t = {"provider": "openai", "model": "gpt-4o"}
    assert got[("resilience_allowed_total", labels(**t))] == 5.0
    assert got[("resilience_rejected_total", labels(**t, shadow="false"))] == 3.0
    assert got[("resilience_probes_total", labels(**t))] == 1.0
    assert got[("resilience_outcomes_total", labels(**t, kind="success"))] == 3.0
    assert got[("resilience_outcomes_total", labels(**t, kind="connection"))] == 2.0
    assert got[("resilience_transitions_total", labels(**t, to_state="open"))] == 1.0
    assert got[("resilience_transitions_total", labels(**t, to_state="closed"))] == 1.0
    assert got[("resilience_target_state", labels(**t))] == 0.0  # closed again
    assert not any(name == "resilience_store_errors_total" for name, _ in got)
    # The latency histogram: the guard timed the 3 successes.
    success = labels(**t, outcome="success")
    assert got[("resilience_call_duration_seconds_count", success)] == 3.0
    assert got[("resilience_call_duration_seconds_sum", success)] > 0.0


def test_state_gauge_shows_open_and_provider_wide(
    redis_url: str, prefix: str, registry: CollectorRegistry
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings, hooks=[PrometheusHook(registry)]) as breaker:
        breaker.record_failure(T, ErrorKind.SERVER_ERROR)
        quota = Target("together", "qwen")
        breaker.record_failure(quota, _quota_error())
    got = samples(registry)
    assert got[("resilience_target_state", labels(provider="openai", model="gpt-4o"))] == 2.0
    assert got[("resilience_provider_blocked", labels(provider="together"))] == 1.0
    assert (
        got[
            (
                "resilience_outcomes_total",
                labels(provider="together", model="qwen", kind="quota_exhausted"),
            )
        ]
        == 1.0
    )


def _quota_error() -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(
        429,
        json={
            "error": {
                "message": "You exceeded your current quota, please check your plan and "
                "billing details.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
        request=request,
    )
    return httpx.HTTPStatusError("429", request=request, response=response)


def test_latency_histogram_buckets_and_outcomes(registry: CollectorRegistry) -> None:
    from resilience import OutcomeEvent

    hook = PrometheusHook(registry)
    hook.on_outcome(OutcomeEvent(T, None, 0.7))
    hook.on_outcome(OutcomeEvent(T, ErrorKind.TIMEOUT, 30.0))
    hook.on_outcome(OutcomeEvent(T, ErrorKind.SERVER_ERROR, None))  # no latency: counted only
    got = samples(registry)
    bucket = "resilience_call_duration_seconds_bucket"
    assert (
        got[(bucket, labels(provider="openai", model="gpt-4o", outcome="success", le="1.0"))] == 1
    )
    assert (
        got[(bucket, labels(provider="openai", model="gpt-4o", outcome="success", le="0.5"))] == 0
    )
    assert got[(bucket, labels(provider="openai", model="gpt-4o", outcome="error", le="20.0"))] == 0
    assert got[(bucket, labels(provider="openai", model="gpt-4o", outcome="error", le="40.0"))] == 1
    assert (
        got[
            (
                "resilience_outcomes_total",
                labels(provider="openai", model="gpt-4o", kind="server_error"),
            )
        ]
        == 1
    )


def test_model_label_is_capped(registry: CollectorRegistry) -> None:
    from resilience import AllowedEvent, TransitionInfo

    hook = PrometheusHook(registry, max_targets=3)
    for n in range(50):  # e.g. model names taken from user input
        hook.on_allowed(AllowedEvent(Target("openai", f"user-model-{n}"), False, "local"))
    hook.on_allowed(AllowedEvent(Target("evil", "x" * 400), False, "local"))
    hook.on_transition(
        TransitionInfo(Target("other", "*"), True, "closed", "open", "auth", 1, None)
    )
    got = samples(registry)
    allowed = {lb: v for (name, lb), v in got.items() if name == "resilience_allowed_total"}
    assert allowed == {
        labels(provider="openai", model="user-model-0"): 1.0,
        labels(provider="openai", model="user-model-1"): 1.0,
        labels(provider="openai", model="user-model-2"): 1.0,
        labels(provider="openai", model="__other__"): 47.0,
        labels(provider="__other__", model="__other__"): 1.0,
    }
    assert got[("resilience_provider_blocked", labels(provider="__other__"))] == 1.0
    with pytest.raises(ValueError, match="max_targets"):
        PrometheusHook(registry, max_targets=0)


def test_hook_and_fleet_exporter_share_names(
    redis_url: str, prefix: str, registry: CollectorRegistry
) -> None:
    """The series both sources export have the same names and labels."""
    from resilience._metric_scheme import PROVIDER_BLOCKED, TARGET_STATE

    settings = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings, hooks=[PrometheusHook(registry)]) as breaker:
        breaker.record_failure(T, ErrorKind.SERVER_ERROR)
        breaker.record_failure(Target("together", "qwen"), _quota_error())
        fleet = CollectorRegistry()
        fleet.register(FleetCollector(breaker))
        hook_series = {
            k for k in samples(registry) if k[0] in (TARGET_STATE.name, PROVIDER_BLOCKED.name)
        }
        fleet_series = samples(fleet)
    assert hook_series == {
        (TARGET_STATE.name, labels(provider="openai", model="gpt-4o")),
        (PROVIDER_BLOCKED.name, labels(provider="together")),
    }
    assert hook_series <= set(fleet_series)
    for key in hook_series:
        assert fleet_series[key] == samples(registry)[key]


def test_fleet_collector_caps_targets(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings) as breaker:
        for n in range(5):
            breaker.record_success(Target("openai", f"m{n}"))
        breaker.record_failure(Target("openai", "z-broken"), ErrorKind.SERVER_ERROR)
        registry = CollectorRegistry()
        registry.register(FleetCollector(breaker, max_targets=2))
        got = samples(registry)
    states = {lb for name, lb in got if name == "resilience_target_state"}
    assert len(states) == 2
    assert labels(provider="openai", model="z-broken") in states  # open targets first
    assert got[("resilience_targets", ())] == 6.0


def test_store_errors_are_counted(prefix: str, registry: CollectorRegistry) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(
        down, prefix, redis_connect_timeout=0.2, redis_socket_timeout=0.2, local_view=False
    )
    with Breaker(settings, hooks=[PrometheusHook(registry)]) as breaker:
        assert breaker.allow(T) is True  # fail-open
    got = samples(registry)
    assert (
        got[("resilience_store_errors_total", labels(operation="allow", kind="unavailable"))] >= 1.0
    )


def test_hooks_on_one_registry_share_series(registry: CollectorRegistry) -> None:
    a, b = PrometheusHook(registry), PrometheusHook(registry)  # no duplicate-series error
    from resilience import AllowedEvent

    a.on_allowed(AllowedEvent(T, True, "redis"))
    b.on_allowed(AllowedEvent(T, False, "local"))
    got = samples(registry)
    assert got[("resilience_allowed_total", labels(provider="openai", model="gpt-4o"))] == 2.0
    assert got[("resilience_probes_total", labels(provider="openai", model="gpt-4o"))] == 1.0


def test_observe_snapshot(registry: CollectorRegistry) -> None:
    before = time.time()
    observe_snapshot(0.42, registry)
    observe_snapshot(3.0, registry)
    got = samples(registry)
    assert got[("resilience_snapshot_duration_seconds_count", ())] == 2.0
    assert got[("resilience_snapshot_duration_seconds_sum", ())] == pytest.approx(3.42)
    assert got[("resilience_snapshot_duration_seconds_bucket", labels(le="0.5"))] == 1.0
    assert got[("resilience_snapshot_last_success_timestamp_seconds", ())] >= before


def test_fleet_collector_reads_redis_each_scrape(
    redis_url: str, prefix: str, registry: CollectorRegistry
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=2)
    with Breaker(settings) as breaker:
        registry.register(FleetCollector(breaker))
        breaker.record_success(T)
        first = samples(registry)
        assert first[("resilience_target_state", labels(provider="openai", model="gpt-4o"))] == 0
        assert first[("resilience_store_up", ())] == 1.0
        breaker.record_failure(T, ErrorKind.SERVER_ERROR)
        breaker.record_failure(T, ErrorKind.SERVER_ERROR)
        breaker.record_failure(Target("together", "qwen"), _quota_error())
        got = samples(registry)
    t = labels(provider="openai", model="gpt-4o")
    assert got[("resilience_target_state", t)] == 2.0
    assert got[("resilience_target_blacklisted", t)] == 1.0
    assert 0 < got[("resilience_target_open_seconds", t)] <= settings.open_seconds
    assert got[("resilience_target_errors_total", t)] == 2.0
    assert got[("resilience_target_successes_total", t)] == 1.0
    assert got[("resilience_target_consecutive_errors", t)] == 2.0
    assert got[("resilience_target_trips", t)] == 1.0
    assert got[("resilience_provider_blocked", labels(provider="together"))] == 1.0
    assert got[("resilience_provider_blocked", labels(provider="openai"))] == 0.0


def test_fleet_collector_with_redis_down(prefix: str, registry: CollectorRegistry) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(down, prefix, redis_connect_timeout=0.2, local_view=False)
    with Breaker(settings) as breaker:
        registry.register(FleetCollector(breaker))
        got = samples(registry)
    assert got[("resilience_store_up", ())] == 0.0
    assert not any(name.startswith("resilience_target_") for name, _ in got)


def test_metrics_server_over_http(registry: CollectorRegistry) -> None:
    PrometheusHook(registry).on_rejected(_rejected())
    server = start_metrics_server(0, registry=registry)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        with httpx.Client(trust_env=False) as client:
            r = client.get(f"http://127.0.0.1:{server.port}/metrics")
            health = client.get(f"http://127.0.0.1:{server.port}/healthz")
            missing = client.get(f"http://127.0.0.1:{server.port}/nothing")
        assert r.status_code == 200
        assert (
            'resilience_rejected_total{model="gpt-4o",provider="openai",shadow="true"} 1.0'
            in r.text
        )
        assert (health.status_code, health.text) == (200, "ok\n")  # health, not metrics
        assert missing.status_code == 404
    finally:
        server.shutdown()


def _rejected() -> Any:
    from resilience import RejectedEvent

    return RejectedEvent(T, 1.0, "server_error", "redis", shadow=True)


def test_wsgi_app_serves_the_registry(registry: CollectorRegistry) -> None:
    observe_snapshot(0.1, registry)
    app = metrics.metrics_wsgi_app(registry)
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h: status.append(s)))
    assert status == ["200 OK"]
    assert b"resilience_snapshot_duration_seconds_count 1.0" in body


@pytest.fixture
def cli_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resilience")
    metrics.register(parser.add_subparsers(dest="command"))
    return parser


def test_serve_metrics_once(redis_url: str, prefix: str, cli_args: argparse.ArgumentParser) -> None:
    settings = make_settings(redis_url, prefix)
    with Breaker(settings) as breaker:
        breaker.record_failure(T, ErrorKind.MODEL_NOT_FOUND)
    args = cli_args.parse_args(["serve-metrics", "--once"])
    out = io.StringIO()
    assert args.func(args, settings, out=out) == 0
    text = out.getvalue()
    assert 'resilience_target_errors_total{model="gpt-4o",provider="openai"} 1.0' in text
    assert "resilience_store_up 1.0" in text


def test_serve_metrics_once_with_redis_down(prefix: str, cli_args: argparse.ArgumentParser) -> None:
    settings = make_settings(
        f"redis://127.0.0.1:{free_port()}/0", prefix, redis_connect_timeout=0.2
    )
    args = cli_args.parse_args(["serve-metrics", "--once"])
    out = io.StringIO()
    assert args.func(args, settings, out=out) == 1
    assert "resilience_store_up 0.0" in out.getvalue()


def test_serve_metrics_serves_until_stopped(
    redis_url: str, prefix: str, cli_args: argparse.ArgumentParser
) -> None:
    import threading

    settings = make_settings(redis_url, prefix)
    with Breaker(settings) as breaker:
        breaker.record_success(T)
    port = free_port()
    args = cli_args.parse_args(["serve-metrics", "--port", str(port)])
    assert args.addr == "127.0.0.1"
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(args.func(args, settings, stop=stop)))
    thread.start()
    try:
        text = ""
        deadline = time.monotonic() + 5
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                try:
                    text = client.get(f"http://127.0.0.1:{port}/metrics").text
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
        assert 'resilience_target_successes_total{model="gpt-4o",provider="openai"} 1.0' in text
    finally:
        stop.set()
        thread.join(timeout=5)
    assert codes == [0]


def test_clear_message_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, cli_args: argparse.ArgumentParser, settings: Any
) -> None:
    monkeypatch.setattr(metrics, "_prom", None)
    assert metrics.available() is False
    with pytest.raises(MetricsUnavailableError, match=r"pip install 'llm-resilience\[metrics\]'"):
        PrometheusHook()
    with pytest.raises(ImportError):
        start_metrics_server(0)
    observe_snapshot(1.0)  # a no-op, never an error: the snapshot job calls it always
    args = cli_args.parse_args(["serve-metrics", "--once"])
    assert args.func(args, settings) == 2
