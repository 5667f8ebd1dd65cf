"""resilience: fleet-wide, atomic circuit breaking for LLM provider calls.

Per (provider, model) state lives in Redis and changes only through atomic Lua scripts;
every worker learns of a failing model from the first failures anywhere, skips it, and one
worker probes it later. See the README for the policy and the configuration.

What a guarded call needs (breakers, settings, targets, classifications, the exceptions it
raises) is imported at once. Everything else is imported the first time one of its names is
used: routers and their attempts, hook events, request needs, target and provider states and
transition events, classification (at the first failure), the operator's part (PostgreSQL
history, reports, the snapshot job) and the integrations (httpx transports, Prometheus,
LiteLLM, OpenTelemetry). So ``import resilience`` in a worker loads neither psycopg nor
httpx, and a process that only guards calls builds none of those classes (a short-lived
process pays for what it uses; see the README's "Short-lived processes").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._breaker import AsyncBreaker, Breaker
from ._exceptions import (
    CircuitOpenError,
    ResilienceError,
    SettingsError,
    StoreUnavailableError,
)
from ._redact import redact
from ._settings import Settings, SettingsWarning
from ._types import Classifier, ErrorKind, Permit, Target

if TYPE_CHECKING:
    from ._attempts import AllTargetsFailedError, Attempt, AttemptOutcome
    from ._classification import Classification, CompatHint
    from ._classify import classify, classify_response
    from ._compat import Needs
    from ._db import DatabaseError, DatabaseUnavailableError, MigrationError, MigrationRequiredError
    from ._hooks import (
        AllowedEvent,
        Hook,
        OutcomeEvent,
        RejectedEvent,
        StoreErrorEvent,
        TransitionInfo,
    )
    from ._metrics import PrometheusHook
    from ._report import PlotUnavailableError, Report, build_report, format_report
    from ._router import AsyncRouter, Router
    from ._snapshot import SnapshotError, SnapshotResult, take_snapshot
    from ._states import ProviderState, TargetState, TransitionEvent
    from .integrations._litellm import LiteLLMCallback
    from .integrations._otel import OpenTelemetryHook
    from .integrations._transport import AsyncGuardedTransport, GuardedTransport

__version__ = "0.1.0"

# Names whose modules import psycopg, httpx or an optional package (prometheus-client,
# litellm, opentelemetry), compile many patterns (classification), serve only some
# processes (the router, hooks, states and events) or cost a class built at import for
# nothing a guarded call needs: imported on first use so ``import resilience`` stays light.
_LAZY = {
    "AllTargetsFailedError": "._attempts",
    "Attempt": "._attempts",
    "AttemptOutcome": "._attempts",
    "Needs": "._compat",
    "Classification": "._classification",
    "CompatHint": "._classification",
    "AllowedEvent": "._hooks",
    "Hook": "._hooks",
    "OutcomeEvent": "._hooks",
    "RejectedEvent": "._hooks",
    "StoreErrorEvent": "._hooks",
    "TransitionInfo": "._hooks",
    "ProviderState": "._states",
    "TargetState": "._states",
    "TransitionEvent": "._states",
    "AsyncGuardedTransport": ".integrations._transport",
    "GuardedTransport": ".integrations._transport",
    "classify": "._classify",
    "classify_response": "._classify",
    "DatabaseError": "._db",
    "DatabaseUnavailableError": "._db",
    "MigrationError": "._db",
    "MigrationRequiredError": "._db",
    "PlotUnavailableError": "._report",
    "PrometheusHook": "._metrics",
    "AsyncRouter": "._router",
    "Router": "._router",
    "Report": "._report",
    "SnapshotError": "._snapshot",
    "SnapshotResult": "._snapshot",
    "build_report": "._report",
    "format_report": "._report",
    "take_snapshot": "._snapshot",
    "LiteLLMCallback": ".integrations._litellm",
    "OpenTelemetryHook": ".integrations._otel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resilience' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AllTargetsFailedError",
    "AllowedEvent",
    "AsyncBreaker",
    "AsyncGuardedTransport",
    "AsyncRouter",
    "Attempt",
    "AttemptOutcome",
    "Breaker",
    "CircuitOpenError",
    "Classification",
    "Classifier",
    "CompatHint",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ErrorKind",
    "GuardedTransport",
    "Hook",
    "LiteLLMCallback",
    "MigrationError",
    "MigrationRequiredError",
    "Needs",
    "OpenTelemetryHook",
    "OutcomeEvent",
    "Permit",
    "PlotUnavailableError",
    "PrometheusHook",
    "ProviderState",
    "RejectedEvent",
    "Report",
    "ResilienceError",
    "Router",
    "Settings",
    "SettingsError",
    "SettingsWarning",
    "SnapshotError",
    "SnapshotResult",
    "StoreErrorEvent",
    "StoreUnavailableError",
    "Target",
    "TargetState",
    "TransitionEvent",
    "TransitionInfo",
    "__version__",
    "build_report",
    "classify",
    "classify_response",
    "format_report",
    "redact",
    "take_snapshot",
]
