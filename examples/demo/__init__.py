"""The demo: fake OpenAI-compatible providers over real HTTP, several worker processes
routing through :class:`resilience.AsyncRouter`, a live view, a snapshot and a report.

``resilience demo`` (or ``scripts/demo``) runs it all; :func:`run_demo` returns a
:class:`DemoSummary` whose figures the tests assert.

Modules:

* :mod:`.provider`: the fake provider (stdlib HTTP server on loopback, deterministic from a seed).
* :mod:`.worker`: one worker process (AsyncBreaker + AsyncRouter + httpx.AsyncClient).
* :mod:`.run`: orchestration, live view, summary.
* :mod:`.cli`: the ``demo`` subcommand.
"""

from __future__ import annotations

from .provider import DEMO_MODELS, FakeProvider, ModelSpec, ProviderRequest
from .run import DemoOptions, DemoSummary, ModelSummary, demo_settings, run_demo

__all__ = [
    "DEMO_MODELS",
    "DemoOptions",
    "DemoSummary",
    "FakeProvider",
    "ModelSpec",
    "ModelSummary",
    "ProviderRequest",
    "demo_settings",
    "run_demo",
]
