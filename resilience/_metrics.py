"""Prometheus metrics (optional extra: ``pip install 'llm-resilience[metrics]'``).

Every name and label comes from the one scheme in :mod:`resilience._metric_scheme` (shared
with the OpenTelemetry hook). Two sources, two sets of series:

* :class:`PrometheusHook`, a hook passed to a breaker, counts what **this process** does::

    resilience_allowed_total{provider,model}
    resilience_rejected_total{provider,model,shadow}
    resilience_probes_total{provider,model}
    resilience_outcomes_total{provider,model,kind}
    resilience_call_duration_seconds{provider,model,outcome}    (histogram)
    resilience_transitions_total{provider,model,to_state}
    resilience_store_errors_total{operation,kind}
    resilience_target_state{provider,model}        after the last transition this process made
    resilience_provider_blocked{provider}          after the last provider-wide one

* :class:`FleetCollector` (``resilience serve-metrics``) reads the **shared state** from
  Redis at every scrape (``breaker.states()``: pipelined, 1000 targets per round trip)::

    resilience_target_state{provider,model}             0 closed, 1 half_open, 2 open
    resilience_provider_blocked{provider}               1 while a provider-wide block holds
    resilience_target_blacklisted{provider,model}       1 while calls are skipped
    resilience_target_open_seconds{provider,model}      seconds left of the break (0 if none)
    resilience_target_errors_total{provider,model}      Redis counters (restart from 0 when an
    resilience_target_successes_total{provider,model}   entry expires: rate() handles it)
    resilience_target_consecutive_errors{provider,model}
    resilience_target_trips{provider,model}
    resilience_targets                                  targets stored (all of them, also those
                                                        past ``max_targets``)
    resilience_store_up                                 1 when the last read of Redis worked
    resilience_scrape_duration_seconds                  time the read took

* :func:`observe_snapshot` feeds ``resilience_snapshot_duration_seconds`` (histogram) and
  ``resilience_snapshot_last_success_timestamp_seconds``; a no-op without prometheus-client.

Label cardinality: a hook labels at most ``max_targets`` (provider, model) pairs (later ones
count under ``model="__other__"``, see :class:`~resilience._metric_scheme.LabelCap`); the
collector exports at most ``max_targets`` targets per scrape (open and failing ones first).
No label carries an error message or reason.

Serving: :func:`start_metrics_server` (a daemon thread on ``127.0.0.1`` by default; ``/metrics``
and ``/healthz``), :func:`metrics_wsgi_app` / :func:`metrics_asgi_app` to mount ``/metrics``
on your own app, or ``resilience serve-metrics`` beside the fleet.
"""

from __future__ import annotations

import argparse
import signal
import socketserver
import sys
import threading
import time
import weakref
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._exceptions import ResilienceError, StoreUnavailableError
from ._metric_scheme import (
    DURATION_BUCKETS_S,
    HOOK_METRICS,
    PROVIDER_BLOCKED,
    STATE_VALUES,
    TARGET_STATE,
    MetricsHookBase,
    MetricSpec,
)
from ._settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from ._breaker import Breaker

_UNLOADED: Any = object()
# prometheus_client, None when it is not installed, or _UNLOADED until first needed: the
# package (which also loads OpenTelemetry when present) stays out of ``import resilience``.
_prom: Any = _UNLOADED

__all__ = [
    "MISSING_MESSAGE",
    "STATE_VALUES",
    "FleetCollector",
    "MetricsUnavailableError",
    "PrometheusHook",
    "available",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "observe_snapshot",
    "register",
    "serve_fleet_metrics",
    "start_metrics_server",
]

MISSING_MESSAGE = (
    "Prometheus metrics need the prometheus-client package: "
    "pip install 'llm-resilience[metrics]' (or pip install prometheus-client)"
)


class MetricsUnavailableError(ImportError):
    """prometheus-client is not installed (the ``metrics`` extra)."""

    def __init__(self) -> None:
        super().__init__(MISSING_MESSAGE)


def _module() -> Any:
    """prometheus_client, imported on first use; None when it is not installed."""
    global _prom
    if _prom is _UNLOADED:
        try:
            import prometheus_client
        except ImportError:  # pragma: no cover - exercised when the extra is not installed
            _prom = None
        else:
            _prom = prometheus_client
    return _prom


def available() -> bool:
    """True when prometheus-client is installed."""
    return _module() is not None


def _require() -> Any:
    prom = _module()
    if prom is None:
        raise MetricsUnavailableError()
    return prom


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    prom = _require()
    return registry if registry is not None else prom.REGISTRY


# --------------------------------------------------------------------------- the hook

_HOOK_METRICS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_HOOK_LOCK = threading.Lock()


def _hook_metrics(registry: CollectorRegistry) -> dict[str, Any]:
    """The hook's metrics in ``registry`` by name, made once per registry (hooks share them)."""
    prom = _require()
    with _HOOK_LOCK:
        found = _HOOK_METRICS.get(registry)
        if found is not None:
            return found
        made: dict[str, Any] = {}
        for spec in HOOK_METRICS:
            if spec.kind == "counter":
                made[spec.name] = prom.Counter(
                    spec.name, spec.description, spec.labels, registry=registry
                )
            elif spec.kind == "gauge":
                made[spec.name] = prom.Gauge(
                    spec.name, spec.description, spec.labels, registry=registry
                )
            else:
                made[spec.name] = prom.Histogram(
                    spec.name,
                    spec.description,
                    spec.labels,
                    buckets=DURATION_BUCKETS_S,
                    registry=registry,
                )
        _HOOK_METRICS[registry] = made
        return made


class PrometheusHook(MetricsHookBase):
    """A hook counting admissions, refusals, probes, outcomes (with their latency),
    transitions and Redis failures of this process (series in the module docstring).

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in (default: the
            global ``REGISTRY``). Hooks given the same registry share the same series, so
            making several (one per breaker) is fine.
        max_targets: distinct (provider, model) label pairs this hook creates; later targets
            are counted under ``model="__other__"`` so unbounded model names cannot explode
            the series count.

    Raises:
        MetricsUnavailableError: prometheus-client is not installed.
        ValueError: ``max_targets`` is not a positive integer.

    Example::

        breaker = Breaker(settings, hooks=[PrometheusHook()])
        start_metrics_server(9464)
    """

    def __init__(self, registry: CollectorRegistry | None = None, max_targets: int = 500) -> None:
        super().__init__(max_targets)
        self.registry = _registry(registry)
        self._m = _hook_metrics(self.registry)

    def _add(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        self._m[spec.name].labels(*labels).inc(value)

    def _set(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        self._m[spec.name].labels(*labels).set(value)

    def _observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        self._m[spec.name].labels(*labels).observe(value)


# --------------------------------------------------------------------------- snapshot job


@dataclass(frozen=True, slots=True)
class _SnapshotMetrics:
    duration: Any
    last_success: Any


_SNAPSHOT_METRICS: weakref.WeakKeyDictionary[Any, _SnapshotMetrics] = weakref.WeakKeyDictionary()


def observe_snapshot(duration_s: float, registry: CollectorRegistry | None = None) -> None:
    """Records one successful snapshot that took ``duration_s`` seconds.

    A no-op when prometheus-client is not installed, so the snapshot job may always call it.
    """
    prom = _module()
    if prom is None:
        return
    reg = registry if registry is not None else prom.REGISTRY
    with _HOOK_LOCK:
        m = _SNAPSHOT_METRICS.get(reg)
        if m is None:
            m = _SnapshotMetrics(
                duration=prom.Histogram(
                    "resilience_snapshot_duration_seconds",
                    "Time one snapshot from Redis to PostgreSQL took (s).",
                    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                    registry=reg,
                ),
                last_success=prom.Gauge(
                    "resilience_snapshot_last_success_timestamp_seconds",
                    "When the last snapshot succeeded (Unix time, s).",
                    registry=reg,
                ),
            )
            _SNAPSHOT_METRICS[reg] = m
    m.duration.observe(max(0.0, float(duration_s)))
    m.last_success.set(time.time())


# --------------------------------------------------------------------------- fleet collector


class FleetCollector:
    """A collector reading every target's shared state from Redis at each scrape.

    Args:
        breaker: a sync :class:`~resilience.Breaker` (only its read methods are used).
        provider: only this provider's targets (default: all under the key prefix).
        max_targets: most targets exported per scrape; past it, open and failing targets
            come first (then by name) and ``resilience_targets`` still counts them all.

    A scrape costs ``1 + targets / 1000`` pipelined round trips. When Redis is unreachable
    the scrape still answers, with ``resilience_store_up 0`` and no target series.

    Raises:
        ValueError: ``max_targets`` is not a positive integer.
    """

    def __init__(
        self, breaker: Breaker, provider: str | None = None, max_targets: int = 1000
    ) -> None:
        _require()
        if isinstance(max_targets, bool) or not isinstance(max_targets, int) or max_targets < 1:
            raise ValueError(f"max_targets must be a positive integer, got {max_targets!r}")
        self.breaker = breaker
        self.provider = provider
        self.max_targets = max_targets
        self.last_up: bool | None = None

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from running a scrape (no Redis at import).
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        start = time.monotonic()
        try:
            states = self.breaker.states(self.provider)
            up = 1.0
        except (StoreUnavailableError, ResilienceError):
            states = []
            up = 0.0
        self.last_up = up == 1.0
        elapsed = time.monotonic() - start
        target = ["provider", "model"]
        total = len(states)
        if total > self.max_targets:
            # Keep the series that matter: open or failing targets before healthy ones.
            states = sorted(
                states,
                key=lambda st: (not st.blacklisted, -st.consecutive_errors, st.provider, st.model),
            )[: self.max_targets]
        state = GaugeMetricFamily(TARGET_STATE.name, TARGET_STATE.description, labels=target)
        blacklisted = GaugeMetricFamily(
            "resilience_target_blacklisted",
            "1 while calls to the target are skipped (open, probing, or provider blocked).",
            labels=target,
        )
        open_s = GaugeMetricFamily(
            "resilience_target_open_seconds",
            "Seconds left of the target's break (0 when none).",
            labels=target,
        )
        errors = CounterMetricFamily(
            "resilience_target_errors",
            "Failures recorded in Redis (restarts from 0 when the entry expires or is reset).",
            labels=target,
        )
        successes = CounterMetricFamily(
            "resilience_target_successes",
            "Successes recorded in Redis (restarts from 0 when the entry expires or is reset).",
            labels=target,
        )
        consecutive = GaugeMetricFamily(
            "resilience_target_consecutive_errors",
            "Counted failures since the last success.",
            labels=target,
        )
        trips = GaugeMetricFamily(
            "resilience_target_trips",
            "Times the target opened after counted failures.",
            labels=target,
        )
        blocked = GaugeMetricFamily(
            PROVIDER_BLOCKED.name,
            PROVIDER_BLOCKED.description,
            labels=list(PROVIDER_BLOCKED.labels),
        )
        now = time.time()
        providers: dict[str, float] = {}
        for st in states:
            labels = [st.provider, st.model]
            state.add_metric(labels, STATE_VALUES.get(st.state, 0))
            blacklisted.add_metric(labels, 1.0 if st.blacklisted else 0.0)
            left = st.open_until.timestamp() - now if st.open_until is not None else 0.0
            open_s.add_metric(labels, max(0.0, left))
            errors.add_metric(labels, st.error_count)
            successes.add_metric(labels, st.success_count)
            consecutive.add_metric(labels, st.consecutive_errors)
            trips.add_metric(labels, st.trips)
            if st.provider_blocked_until is not None:
                providers[st.provider] = 1.0
            else:
                providers.setdefault(st.provider, 0.0)
        for name, value in sorted(providers.items()):
            blocked.add_metric([name], value)
        yield from (state, blacklisted, open_s, errors, successes, consecutive, trips, blocked)
        yield GaugeMetricFamily(
            "resilience_targets",
            "Targets stored in Redis (including those past the exporter's max_targets).",
            value=total,
        )
        yield GaugeMetricFamily(
            "resilience_store_up", "1 when the last read of Redis worked.", value=up
        )
        yield GaugeMetricFamily(
            "resilience_scrape_duration_seconds",
            "Time reading the state from Redis took (s).",
            value=elapsed,
        )


# --------------------------------------------------------------------------- serving


class _Server:
    """A running metrics server; ``shutdown()`` stops it and frees the port."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self.httpd = httpd
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not log lines
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


def _routes(metrics_app: Callable[..., Any]) -> Callable[..., Any]:
    """``/metrics`` (and ``/``) answer with the metrics; ``/healthz`` answers ``ok`` without
    reading anything (a liveness check must not cost a Redis scan); anything else is 404."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> _Server:
    """Serves ``/metrics`` of ``registry`` (default: the global one) and ``/healthz`` (``ok``,
    no metrics read) on ``addr:port`` in a daemon thread; ``port=0`` picks a free port (see
    ``.port``). Returns the server (call ``shutdown()`` to stop it).

    Raises:
        MetricsUnavailableError: prometheus-client is not installed.
        OSError: the port is taken.
    """
    prom = _require()
    app = _routes(prom.make_wsgi_app(_registry(registry)))
    httpd = wsgiref.simple_server.make_server(
        addr, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, name="resilience-metrics", daemon=True)
    thread.start()
    return _Server(httpd, thread)


def serve_fleet_metrics(
    breaker: Breaker,
    port: int,
    addr: str = "127.0.0.1",
    provider: str | None = None,
    max_targets: int = 1000,
) -> _Server:
    """Serves the fleet's state (a :class:`FleetCollector` over ``breaker`` in a registry of
    its own) on ``addr:port``: ``/metrics`` and ``/healthz``."""
    prom = _require()
    registry = prom.CollectorRegistry()
    registry.register(FleetCollector(breaker, provider, max_targets))
    return start_metrics_server(port, addr, registry)


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """A WSGI app answering with the metrics of ``registry`` (mount it at ``/metrics``)."""
    prom = _require()
    app: Callable[..., Any] = prom.make_wsgi_app(_registry(registry))
    return app


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI app answering with the metrics of ``registry`` (e.g.
    ``app.mount("/metrics", metrics_asgi_app())`` in FastAPI/Starlette)."""
    prom = _require()
    app: Callable[..., Any] = prom.make_asgi_app(_registry(registry))
    return app


# --------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    """Adds ``serve-metrics`` to the CLI's subparsers (see :mod:`resilience.cli.metrics`)."""
    from .cli.metrics import add_serve_metrics

    add_serve_metrics(subparsers)


def handle_serve_metrics(
    args: argparse.Namespace,
    settings: Settings | None = None,
    *,
    stop: threading.Event | None = None,
    out: Any = None,
) -> int:
    """Runs ``serve-metrics`` (settings: ``Settings()`` from the environment when None);
    returns the exit code (0 ok, 1 Redis down with ``--once``, 2 prometheus-client missing).
    """
    out = out if out is not None else sys.stdout
    if not available():
        print(f"resilience serve-metrics: {MISSING_MESSAGE}", file=sys.stderr)
        return 2
    from ._breaker import Breaker

    settings = settings if settings is not None else Settings()
    # Reads only: no local view, no subscriber thread.
    with Breaker(settings.model_copy(update={"local_view": False})) as breaker:
        if args.once:
            prom = _require()
            collector = FleetCollector(breaker, args.provider, args.max_targets)
            registry = prom.CollectorRegistry()
            registry.register(collector)
            text = prom.generate_latest(registry).decode("utf-8")
            out.write(text)
            out.flush()
            return 0 if collector.last_up else 1
        server = serve_fleet_metrics(breaker, args.port, args.addr, args.provider, args.max_targets)
        print(
            f"resilience serve-metrics: http://{args.addr}:{server.port}/metrics "
            f"(key prefix {settings.key_prefix!r}); Ctrl-C to stop",
            file=sys.stderr,
        )
        done = stop if stop is not None else threading.Event()
        with _stop_on_signals(done):
            try:
                while not done.wait(1.0):
                    pass
            finally:
                server.shutdown()
    return 0


class _stop_on_signals:
    """Sets an event on SIGTERM/SIGINT while active (main thread only)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self.old[s] = signal.signal(s, self._handler)

    def __exit__(self, *exc: object) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
