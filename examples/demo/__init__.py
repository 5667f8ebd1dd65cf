"""The demo: fake OpenAI-compatible providers over real HTTP, several worker processes
routing through :class:`resilience.AsyncRouter`, a live view, a snapshot and a report.

The fleet learns what fails (trips, provider-wide blocks, recoveries through one probe) and
what each model accepts (an endpoint hint; compatibility hints: a parameter renamed, a
feature the model lacks), and the summary counts what that saved.

``resilience demo`` (or ``scripts/demo``) runs it all; :func:`run_demo` returns a
:class:`DemoSummary` whose figures the tests assert.

Modules:

* :mod:`.provider`: the fake provider (stdlib HTTP server on loopback, deterministic from a seed).
* :mod:`.worker`: one worker process (AsyncBreaker + AsyncRouter + httpx.AsyncClient).
* :mod:`.run`: orchestration, live view, summary.
* :mod:`.cli`: the ``demo`` subcommand.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "DEMO_MODELS": ".provider",
    "FakeProvider": ".provider",
    "ModelSpec": ".provider",
    "ProviderRequest": ".provider",
    "DemoOptions": ".run",
    "DemoSummary": ".run",
    "HintSummary": ".run",
    "ModelSummary": ".run",
    "demo_settings": ".run",
    "run_demo": ".run",
}


def __getattr__(name: str) -> Any:  # the CLI imports .cli alone: the rest on first use
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "DEMO_MODELS",
    "DemoOptions",
    "DemoSummary",
    "FakeProvider",
    "HintSummary",
    "ModelSpec",
    "ModelSummary",
    "ProviderRequest",
    "demo_settings",
    "run_demo",
]
