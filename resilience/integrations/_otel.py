"""OpenTelemetry hook (extra ``otel``: ``pip install 'llm-resilience[otel]'``).

Two things, both optional:

* **Span events** on the span current when the breaker decides (the caller's span, since
  hooks run in the calling thread or task): ``resilience.rejected`` when a call is refused,
  ``resilience.probe`` when a call is the half-open probe, ``resilience.transition`` when this
  process's call changed a target's state. Attributes are prefixed ``resilience.``
  (``provider``, ``model``, ``retry_after_s``, ``reason``, ``source``, ``shadow``,
  ``from_state``, ``to_state``, ``kind``, ``generation``, ``provider_wide``,
  ``open_until``). Nothing is recorded on a span that is not recording.
* **Metrics** with the names, labels (as attributes) and units of the Prometheus hook, from the
  one scheme in :mod:`resilience._metric_scheme` (counters, the call-duration histogram with
  the same bucket bounds, and the state gauges). With OpenTelemetry's Prometheus exporter they
  come out under the same series names as :class:`~resilience.PrometheusHook`'s.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from .._hooks import AllowedEvent, RejectedEvent, TransitionInfo
from .._metric_scheme import DURATION_BUCKETS_S, HOOK_METRICS, MetricsHookBase, MetricSpec

__all__ = ["OpenTelemetryHook"]


class OpenTelemetryHook(MetricsHookBase):
    """A breaker hook adding span events and recording OpenTelemetry metrics.

    Args:
        meter_provider: where the metrics go (default: the global meter provider).
        max_targets: distinct (provider, model) attribute pairs of the metrics; later
            targets are recorded under ``model="__other__"``.
        span_events: add ``resilience.*`` events to the current span.
        metrics: record the metrics.

    Raises:
        ValueError: ``max_targets`` is not a positive integer.

    Example::

        breaker = Breaker(settings, hooks=[OpenTelemetryHook()])
    """

    def __init__(
        self,
        meter_provider: otel_metrics.MeterProvider | None = None,
        *,
        max_targets: int = 500,
        span_events: bool = True,
        metrics: bool = True,
    ) -> None:
        super().__init__(max_targets)
        from .. import __version__

        self.span_events = span_events
        self._instruments: dict[str, Any] = {}
        if not metrics:
            return
        provider = (
            meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
        )
        meter = provider.get_meter("resilience", __version__)
        for spec in HOOK_METRICS:
            if spec.kind == "counter":
                made: Any = meter.create_counter(
                    spec.name, unit=spec.unit, description=spec.description
                )
            elif spec.kind == "gauge":
                made = meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)
            else:
                made = meter.create_histogram(
                    spec.name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
                )
            self._instruments[spec.name] = made

    # ---- metrics (the scheme's measurements, from MetricsHookBase)
    def _attributes(self, spec: MetricSpec, labels: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(spec.labels, labels, strict=True))

    def _add(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        instrument = self._instruments.get(spec.name)
        if instrument is not None:
            instrument.add(value, self._attributes(spec, labels))

    def _set(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        instrument = self._instruments.get(spec.name)
        if instrument is not None:
            instrument.set(value, self._attributes(spec, labels))

    def _observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        instrument = self._instruments.get(spec.name)
        if instrument is not None:
            instrument.record(value, self._attributes(spec, labels))

    # ---- span events
    def _event(self, name: str, attributes: dict[str, Any]) -> None:
        if not self.span_events:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes={f"resilience.{k}": v for k, v in attributes.items()})

    def on_allowed(self, event: AllowedEvent) -> None:
        """Counts an admitted call; a probe also gets a ``resilience.probe`` span event."""
        super().on_allowed(event)
        if event.probe:
            t = event.target
            self._event(
                "resilience.probe",
                {"provider": t.provider, "model": t.model, "source": event.source},
            )

    def on_rejected(self, event: RejectedEvent) -> None:
        """Counts a refusal and adds a ``resilience.rejected`` span event."""
        super().on_rejected(event)
        t = event.target
        self._event(
            "resilience.rejected",
            {
                "provider": t.provider,
                "model": t.model,
                "retry_after_s": float(event.retry_after_s),
                "reason": event.reason,
                "source": event.source,
                "shadow": event.shadow,
            },
        )

    def on_transition(self, event: TransitionInfo) -> None:
        """Counts a transition, sets the state gauge, adds a ``resilience.transition`` span
        event."""
        super().on_transition(event)
        attributes: dict[str, Any] = {
            "provider": event.target.provider,
            "model": event.target.model,
            "provider_wide": event.provider_wide,
            "from_state": event.from_state,
            "to_state": event.to_state,
            "kind": event.kind,
            "generation": event.generation,
            "shadow": event.shadow,
        }
        if event.open_until is not None:
            attributes["open_until"] = event.open_until.isoformat()
        self._event("resilience.transition", attributes)
