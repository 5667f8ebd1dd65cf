"""The one metric scheme: names, labels and units shared by every metrics backend.

The Prometheus hook (``resilience._metrics``), the fleet exporter (``resilience serve-metrics``)
and the OpenTelemetry hook (``resilience.integrations._otel``) all build their instruments from
the specs below, so a series has the same name and labels wherever it comes from. Counter
names are given without ``_total``: prometheus-client adds it, and so does OpenTelemetry's
Prometheus exporter for monotonic counters.

Per-process series (the hooks; sum them over the fleet)::

    resilience_allowed_total{provider,model}                 calls admitted
    resilience_rejected_total{provider,model,shadow}         calls refused (shadow="true":
                                                             shadow mode let them go anyway)
    resilience_probes_total{provider,model}                  half-open probes this process got
    resilience_outcomes_total{provider,model,kind}           recorded outcomes: "success" or an
                                                             ErrorKind value
    resilience_call_duration_seconds{provider,model,outcome} latency of calls whose outcome
                                                             was recorded with one (histogram;
                                                             outcome "success" or "error")
    resilience_transitions_total{provider,model,to_state}    transitions this process's calls
                                                             made (each is counted in exactly
                                                             one process: sum over the fleet)
    resilience_store_errors_total{operation,kind}            Redis failures (the call went on)

Shared-state series, with the same names and labels in the hooks (the state after the last
transition this process made) and in the fleet exporter (read from Redis at each scrape)::

    resilience_target_state{provider,model}                  0 closed, 1 half_open, 2 open
    resilience_provider_blocked{provider}                    1 while a provider-wide block holds

Label cardinality: ``kind`` has at most 16 values, ``shadow`` and ``outcome`` 2, ``to_state``
3. Model (and provider) names are not trusted to stay few: each hook labels at most
``max_targets`` distinct (provider, model) pairs; later ones are counted under
``model="__other__"`` (and ``provider="__other__"`` for a provider never seen before), and
names are cut to 100 characters. No label carries an error message.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from ._hooks import AllowedEvent, OutcomeEvent, RejectedEvent, StoreErrorEvent, TransitionInfo
from ._types import Target

__all__ = [
    "ALLOWED",
    "CALL_DURATION",
    "DURATION_BUCKETS_S",
    "HOOK_METRICS",
    "OTHER",
    "OUTCOMES",
    "PROBES",
    "PROVIDER_BLOCKED",
    "REJECTED",
    "STATE_VALUES",
    "STORE_ERRORS",
    "TARGET_STATE",
    "TRANSITIONS",
    "LabelCap",
    "MetricSpec",
    "MetricsHookBase",
]

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the scheme.

    Attributes:
        name: the Prometheus name without the ``_total`` counters get on exposition.
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        description: the help text.
        labels: label (attribute) names, in order.
        unit: the OpenTelemetry unit (``"s"`` for seconds, ``"1"`` for counts).
    """

    name: str
    kind: MetricKind
    description: str
    labels: tuple[str, ...]
    unit: str = "1"


_TARGET = ("provider", "model")

ALLOWED = MetricSpec("resilience_allowed", "counter", "Calls admitted by the breaker.", _TARGET)
REJECTED = MetricSpec(
    "resilience_rejected",
    "counter",
    'Calls refused because the target or provider is open (shadow="true": shadow mode let '
    "them go anyway).",
    (*_TARGET, "shadow"),
)
PROBES = MetricSpec(
    "resilience_probes", "counter", "Half-open probes handed to this process.", _TARGET
)
OUTCOMES = MetricSpec(
    "resilience_outcomes",
    "counter",
    'Recorded call outcomes by kind ("success" or an error kind).',
    (*_TARGET, "kind"),
)
CALL_DURATION = MetricSpec(
    "resilience_call_duration_seconds",
    "histogram",
    "Duration of guarded calls whose outcome was recorded with a latency (s); outcome is "
    '"success" or "error".',
    (*_TARGET, "outcome"),
    unit="s",
)
TRANSITIONS = MetricSpec(
    "resilience_transitions",
    "counter",
    "State transitions made by this process's calls (each counted in one process of the "
    'fleet; model="*" for provider-wide ones).',
    (*_TARGET, "to_state"),
)
STORE_ERRORS = MetricSpec(
    "resilience_store_errors",
    "counter",
    "Redis failures by operation and kind; the call went on without Redis.",
    ("operation", "kind"),
)
TARGET_STATE = MetricSpec(
    "resilience_target_state",
    "gauge",
    "State of the target: 0 closed, 1 half_open, 2 open (hooks: after the last transition "
    "this process made; fleet exporter: the shared state in Redis).",
    _TARGET,
)
PROVIDER_BLOCKED = MetricSpec(
    "resilience_provider_blocked",
    "gauge",
    "1 while a provider-wide block (auth, permission, quota) holds (hooks: after the last "
    "provider-wide transition this process made; fleet exporter: the shared state).",
    ("provider",),
)

HOOK_METRICS: tuple[MetricSpec, ...] = (
    ALLOWED,
    REJECTED,
    PROBES,
    OUTCOMES,
    CALL_DURATION,
    TRANSITIONS,
    STORE_ERRORS,
    TARGET_STATE,
    PROVIDER_BLOCKED,
)
"""Every metric the hooks (Prometheus and OpenTelemetry) export."""

DURATION_BUCKETS_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
"""Bucket bounds (s) of ``resilience_call_duration_seconds``: LLM calls take 0.1 s to minutes."""

STATE_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
"""Value of the state gauges for each state."""

OTHER = "__other__"
"""Label value standing for the targets past a hook's ``max_targets``."""

_MAX_LABEL_CHARS = 100


class LabelCap:
    """Bounds the (provider, model) label pairs a metrics backend creates.

    The first ``max_targets`` distinct pairs keep their names (cut to 100 characters); any
    later pair is labelled ``(provider, "__other__")`` when its provider was seen before,
    else ``("__other__", "__other__")``. Thread-safe.

    Args:
        max_targets: distinct (provider, model) pairs labelled by name (at least 1).

    Raises:
        ValueError: ``max_targets`` is not a positive integer.
    """

    def __init__(self, max_targets: int = 500) -> None:
        if isinstance(max_targets, bool) or not isinstance(max_targets, int) or max_targets < 1:
            raise ValueError(f"max_targets must be a positive integer, got {max_targets!r}")
        self.max_targets = max_targets
        self._known: dict[tuple[str, str], tuple[str, str]] = {}
        self._providers: set[str] = set()
        self._lock = threading.Lock()

    def target(self, target: Target) -> tuple[str, str]:
        """The (provider, model) label values for ``target``."""
        key = (target.provider, target.model)
        found = self._known.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._known.get(key)
            if found is not None:
                return found
            provider = target.provider[:_MAX_LABEL_CHARS]
            if len(self._known) < self.max_targets:
                found = (provider, target.model[:_MAX_LABEL_CHARS])
                self._providers.add(provider)
                self._known[key] = found
                return found
            # Past the cap nothing is remembered: the map stays bounded.
            return (provider, OTHER) if provider in self._providers else (OTHER, OTHER)

    def provider(self, provider: str) -> str:
        """The provider label value for a provider-wide series."""
        provider = provider[:_MAX_LABEL_CHARS]
        with self._lock:
            if provider in self._providers:
                return provider
            if len(self._known) < self.max_targets:
                self._providers.add(provider)
                return provider
        return OTHER


class MetricsHookBase(ABC):
    """A breaker hook turning events into the scheme's measurements; a backend implements
    :meth:`_add`, :meth:`_set` and :meth:`_observe` (labels arrive in the spec's order).

    Args:
        max_targets: distinct (provider, model) label pairs (see :class:`LabelCap`).
    """

    def __init__(self, max_targets: int = 500) -> None:
        self._cap = LabelCap(max_targets)

    @abstractmethod
    def _add(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Adds ``value`` to a counter."""

    @abstractmethod
    def _set(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Sets a gauge."""

    @abstractmethod
    def _observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Records one value of a histogram."""

    def on_allowed(self, event: AllowedEvent) -> None:
        """Counts an admitted call (and a probe)."""
        t = self._cap.target(event.target)
        self._add(ALLOWED, t, 1.0)
        if event.probe:
            self._add(PROBES, t, 1.0)

    def on_rejected(self, event: RejectedEvent) -> None:
        """Counts a refused call."""
        shadow = "true" if event.shadow else "false"
        self._add(REJECTED, (*self._cap.target(event.target), shadow), 1.0)

    def on_outcome(self, event: OutcomeEvent) -> None:
        """Counts an outcome by kind and records its latency when known."""
        t = self._cap.target(event.target)
        kind = "success" if event.kind is None else event.kind.value
        self._add(OUTCOMES, (*t, kind), 1.0)
        if event.latency_s is not None and event.latency_s >= 0:
            outcome = "success" if event.kind is None else "error"
            self._observe(CALL_DURATION, (*t, outcome), float(event.latency_s))

    def on_transition(self, event: TransitionInfo) -> None:
        """Counts a transition and sets the state gauge (the provider's for a provider-wide
        one)."""
        if event.provider_wide:
            provider = self._cap.provider(event.target.provider)
            self._add(TRANSITIONS, (provider, "*", event.to_state), 1.0)
            self._set(PROVIDER_BLOCKED, (provider,), 1.0 if event.to_state == "open" else 0.0)
            return
        t = self._cap.target(event.target)
        self._add(TRANSITIONS, (*t, event.to_state), 1.0)
        self._set(TARGET_STATE, t, float(STATE_VALUES.get(event.to_state, 0)))

    def on_store_error(self, event: StoreErrorEvent) -> None:
        """Counts a Redis failure by operation and kind."""
        kind = getattr(event, "kind", "unavailable")
        self._add(STORE_ERRORS, (event.operation, str(kind)), 1.0)
