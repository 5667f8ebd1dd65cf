"""Integrations with the clients people already run.

- ``_transport``: :class:`~resilience.GuardedTransport` and
  :class:`~resilience.AsyncGuardedTransport`, for any httpx- or httpx2-based client (the
  OpenAI and Anthropic SDKs among them). Needs nothing beyond the core dependencies.
- ``_litellm``: :class:`~resilience.LiteLLMCallback` (extra ``litellm``).
- ``_otel``: :class:`~resilience.OpenTelemetryHook` (extra ``otel``).

Prometheus lives in ``resilience._metrics``. Every public name is exported from
``resilience``; the modules needing an optional package are imported only when their name is
first used, so ``import resilience`` stays light.
"""
