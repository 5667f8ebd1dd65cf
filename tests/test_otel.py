"""OpenTelemetryHook with the OpenTelemetry SDK's in-memory readers: span events for refusals,
probes and transitions, and metrics with the Prometheus hook's names and labels."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from resilience import Breaker, CircuitOpenError, OpenTelemetryHook, PrometheusHook, Target
from tests.conftest import make_settings
from tests.test_metrics import samples

T = Target("openai", "gpt-4o")


def _traffic(breaker: Breaker) -> None:
    """Two failures trip the target, two calls are refused, the probe closes it again."""

    @breaker.guard("openai", "gpt-4o")
    def call(fail: bool) -> str:
        if fail:
            raise httpx.ConnectError("connection refused")
        return "ok"

    call(False)
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            call(True)
    for _ in range(2):
        with pytest.raises(CircuitOpenError):
            call(False)
    time.sleep(0.45)
    call(False)  # the probe


def _otel_series(
    reader: InMemoryMetricReader,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(point.attributes.items())))
                    out[key] = point
    return out


def test_span_events_for_refusals_probes_and_transitions(redis_url: str, prefix: str) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracer_provider.get_tracer("test")
    settings = make_settings(redis_url, prefix, failure_threshold=2, open_seconds=0.3)
    hook = OpenTelemetryHook(metrics=False)
    with Breaker(settings, hooks=[hook]) as breaker, tracer.start_as_current_span("request"):
        _traffic(breaker)
    (span,) = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    names = [name for name, _ in events]
    # (An open -> half_open transition may also be reported to the worker taking the probe.)
    steps = [
        (name, a.get("resilience.to_state"))
        for name, a in events
        if not (name == "resilience.transition" and a["resilience.to_state"] == "half_open")
    ]
    assert steps == [
        ("resilience.transition", "open"),
        ("resilience.rejected", None),
        ("resilience.rejected", None),
        ("resilience.probe", None),
        ("resilience.transition", "closed"),
    ]
    assert names[0] == "resilience.transition" and names[-1] == "resilience.transition"
    opened, rejected = events[0][1], events[1][1]
    assert opened["resilience.provider"] == "openai"
    assert opened["resilience.model"] == "gpt-4o"
    assert (opened["resilience.from_state"], opened["resilience.to_state"]) == ("closed", "open")
    assert opened["resilience.kind"] == "connection"
    assert "resilience.open_until" in opened
    assert rejected["resilience.reason"] == "connection"
    assert 0 < rejected["resilience.retry_after_s"] <= 0.3
    assert rejected["resilience.shadow"] is False
    assert events[-1][1]["resilience.from_state"] == "half_open"


def test_no_events_without_a_recording_span(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings, hooks=[OpenTelemetryHook(metrics=False)]) as breaker:
        breaker.record_failure(T, httpx.ConnectError("x"))
        assert breaker.allow(T) is False  # no current span: nothing to record, nothing raised


def test_metrics_have_the_prometheus_names_and_labels(redis_url: str, prefix: str) -> None:
    reader = InMemoryMetricReader()
    otel = OpenTelemetryHook(MeterProvider(metric_readers=[reader]), span_events=False)
    registry = CollectorRegistry()
    settings = make_settings(redis_url, prefix, failure_threshold=2, open_seconds=0.3)
    with Breaker(settings, hooks=[otel, PrometheusHook(registry)]) as breaker:
        _traffic(breaker)
    got = _otel_series(reader)
    t = (("model", "gpt-4o"), ("provider", "openai"))
    assert got[("resilience_allowed", t)].value == 4
    assert got[("resilience_rejected", (*t, ("shadow", "false")))].value == 2
    assert got[("resilience_probes", t)].value == 1
    assert got[("resilience_target_state", t)].value == 0  # closed again
    duration = got[
        (
            "resilience_call_duration_seconds",
            (("model", "gpt-4o"), ("outcome", "success"), ("provider", "openai")),
        )
    ]
    assert duration.count == 2
    assert list(duration.explicit_bounds)[:3] == [0.05, 0.1, 0.25]

    # Same series as the Prometheus hook: counters gain _total there, histograms _count etc.
    prom = samples(registry)
    prom_series = set()
    for name, labels in prom:
        if name.endswith("_created"):
            continue
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        prom_series.add((name, tuple((k, v) for k, v in labels if k != "le")))
    assert set(got) == prom_series


def test_max_targets_caps_attributes() -> None:
    from resilience import AllowedEvent

    reader = InMemoryMetricReader()
    hook = OpenTelemetryHook(MeterProvider(metric_readers=[reader]), max_targets=1)
    hook.on_allowed(AllowedEvent(Target("openai", "a"), False, "local"))
    hook.on_allowed(AllowedEvent(Target("openai", "b"), False, "local"))
    got = _otel_series(reader)
    assert set(got) == {
        ("resilience_allowed", (("model", "a"), ("provider", "openai"))),
        ("resilience_allowed", (("model", "__other__"), ("provider", "openai"))),
    }
