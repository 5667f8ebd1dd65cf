"""LiteLLM integration (extra ``litellm``: ``pip install 'llm-resilience[litellm]'``).

:class:`LiteLLMCallback` is one LiteLLM ``CustomLogger`` doing two jobs:

* **Records every deployment call's outcome** in the breaker: LiteLLM calls its success and
  failure callbacks once per deployment attempt (retries and fallbacks included), streams
  when they end or fail. The failure is the exception LiteLLM raised, classified like any
  other (status, body, provider message).
* **Filters deployments whose target is open** before the Router picks one
  (``async_filter_deployments``), and checks the picked one right before the call
  (``pre_call_check`` / ``async_pre_call_check``, which also covers the sync
  ``router.completion`` path). A refused deployment is skipped; when a whole model group is
  open, LiteLLM's own fallbacks take over. A pre-call refusal raises
  :class:`~resilience.CircuitOpenError` inside LiteLLM, which records it as that attempt's
  failure and moves on.

The state is the breaker's: shared by every process of the fleet through Redis, changed
atomically, with one half-open probe for the whole fleet. The admission handed out before a
call (its generation, its probe lease) goes with the call to its outcome, matched by
LiteLLM's call id.

Targets: a deployment ``{"litellm_params": {"model": "azure/gpt-4o", "api_base":
"https://eastus.example.com"}}`` is ``Target("azure@eastus.example.com", "gpt-4o")``: the
provider LiteLLM resolves for the model, plus the host of ``api_base`` when the deployment
sets one (two regions of one model fail independently and have their own keys and quotas).
Pass ``target=`` to map deployments your own way. Calls made without a Router
(``litellm.completion``) are recorded under ``(provider, model)`` but cannot be refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import litellm
from litellm.integrations.custom_logger import CustomLogger

from .._breaker import AsyncBreaker, Breaker
from .._exceptions import CircuitOpenError
from .._types import Target

if TYPE_CHECKING:
    from .._types import Permit

__all__ = ["LiteLLMCallback"]

log = logging.getLogger("resilience")

TargetOf = Callable[[Mapping[str, Any]], Target]

# The admission of the deployment picked last in this thread or task: pre_call_check hands it
# to log_pre_api_call, which LiteLLM calls next in the same thread (sync) or task (async),
# and which knows the call id the outcome callbacks will carry.
_ADMITTED: contextvars.ContextVar[tuple[Target, Permit] | None] = contextvars.ContextVar(
    "resilience_litellm_admitted", default=None
)


def _split_model(model: str, provider: str | None) -> tuple[str, str]:
    """(provider, model name) of a LiteLLM model string such as ``"azure/gpt-4o"``."""
    if provider:
        prefix = provider + "/"
        return provider, model[len(prefix) :] if model.startswith(prefix) else model
    try:
        name, found, _, _ = litellm.get_llm_provider(model=model)
    except Exception:  # a model LiteLLM cannot place: its prefix, if any, names the provider
        head, sep, rest = model.partition("/")
        return (head, rest) if sep and rest else ("litellm", model)
    return str(found), str(name)


def deployment_target(deployment: Mapping[str, Any]) -> Target:
    """The default target of a LiteLLM deployment (see the module docstring)."""
    params = deployment.get("litellm_params") or {}
    model = params.get("model") or deployment.get("model_name")
    if not isinstance(model, str) or not model:
        raise ValueError(f"LiteLLM deployment without a model: {dict(deployment)!r}")
    provider, name = _split_model(model, params.get("custom_llm_provider"))
    api_base = params.get("api_base")
    host = urlsplit(api_base).netloc.rpartition("@")[2] if isinstance(api_base, str) else ""
    return Target(f"{provider}@{host}" if host else provider, name or model)


def _deployment_id(deployment: Mapping[str, Any]) -> str | None:
    info = deployment.get("model_info") or {}
    found = info.get("id") if isinstance(info, Mapping) else None
    return str(found) if found is not None else None


def _call_id(kwargs: Mapping[str, Any]) -> str | None:
    found = kwargs.get("litellm_call_id")
    return str(found) if found is not None else None


def _latency(start_time: Any, end_time: Any) -> float | None:
    if isinstance(start_time, datetime) and isinstance(end_time, datetime):
        return max(0.0, (end_time - start_time).total_seconds())
    return None


class LiteLLMCallback(CustomLogger):  # type: ignore[misc]
    """A LiteLLM callback sharing the breaker's fleet-wide state with LiteLLM's Router.

    Args:
        breaker: a :class:`~resilience.Breaker` (serves the sync paths, and the async ones
            through a worker thread) or an :class:`~resilience.AsyncBreaker` (serves the
            async paths only).
        async_breaker: an :class:`~resilience.AsyncBreaker` for the async paths when
            ``breaker`` is a sync one.
        target: ``callable(deployment) -> Target`` mapping a deployment dict
            (``{"model_name", "litellm_params", "model_info"}``) to its target.
        max_inflight: most calls whose admission is kept waiting for an outcome (a stream
            the caller abandons never reports one); the oldest are forgotten first.

    Raises:
        TypeError: no breaker of either kind was given.

    LiteLLM keeps one callback per class and key prefix (a second instance for the same key
    prefix is ignored): make one per process. Register it where LiteLLM looks for callbacks::

        litellm.callbacks = [LiteLLMCallback(breaker)]
        router = litellm.Router(model_list=[...], fallbacks=[...])
    """

    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        *,
        async_breaker: AsyncBreaker | None = None,
        target: TargetOf | None = None,
        max_inflight: int = 10_000,
    ) -> None:
        super().__init__()
        sync = breaker if isinstance(breaker, Breaker) else None
        if isinstance(breaker, AsyncBreaker):
            async_breaker = async_breaker or breaker
        if sync is None and async_breaker is None:
            raise TypeError(
                f"LiteLLMCallback needs a resilience.Breaker or AsyncBreaker, got "
                f"{type(breaker).__name__}"
            )
        if async_breaker is not None and not isinstance(async_breaker, AsyncBreaker):
            raise TypeError("LiteLLMCallback: async_breaker must be a resilience.AsyncBreaker")
        self.breaker = sync
        self.async_breaker = async_breaker
        # LiteLLM keeps one callback per class and public str/int/bool attributes: callbacks
        # of one key prefix (one shared state) are one, those of different prefixes are not.
        self.key_prefix = (sync or async_breaker).settings.key_prefix  # type: ignore[union-attr]
        self._target_of = target or deployment_target
        self._max_inflight = max(1, int(max_inflight))
        self._lock = threading.Lock()
        self._targets: dict[str, Target] = {}
        self._probes: dict[Target, Permit] = {}
        self._inflight: OrderedDict[str, tuple[Target, Permit]] = OrderedDict()
        self._warned = False

    # ---- targets and admissions (no I/O)
    def target_of(self, deployment: Mapping[str, Any]) -> Target:
        """The target of a deployment dict (cached by the deployment's id)."""
        found = _deployment_id(deployment)
        if found is not None:
            cached = self._targets.get(found)
            if cached is not None:
                return cached
        made = self._target_of(deployment)
        if found is not None:
            with self._lock:
                self._targets[found] = made
        return made

    def _stash_probe(self, permit: Permit) -> None:
        with self._lock:
            self._probes[permit.target] = permit

    def _stashed_probe(self, target: Target, take: bool) -> Permit | None:
        with self._lock:
            return self._probes.pop(target, None) if take else self._probes.get(target)

    def _admitted(self, target: Target, permit: Permit) -> None:
        _ADMITTED.set((target, permit))

    def _pop_inflight(self, kwargs: Mapping[str, Any]) -> tuple[Target, Permit | None] | None:
        call = _call_id(kwargs)
        with self._lock:
            found = self._inflight.pop(call, None) if call is not None else None
        if found is not None:
            return found
        target = self._target_from_call(kwargs)
        return (target, None) if target is not None else None

    def _target_from_call(self, kwargs: Mapping[str, Any]) -> Target | None:
        """The target of a call that was not admitted here (no Router, or a lost entry)."""
        params = kwargs.get("litellm_params") or {}
        info = params.get("model_info") or {}
        found = info.get("id") if isinstance(info, Mapping) else None
        if found is not None and str(found) in self._targets:
            return self._targets[str(found)]
        model = kwargs.get("model")
        if not isinstance(model, str) or not model:
            return None
        try:
            provider, name = _split_model(model, params.get("custom_llm_provider"))
            return Target(provider, name or model)
        except (TypeError, ValueError):
            return None

    def _no_sync_breaker(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "LiteLLMCallback has no sync Breaker: sync LiteLLM calls are not guarded "
                "(pass a Breaker, and an AsyncBreaker as async_breaker=)"
            )

    # ---- LiteLLM: before the call
    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[Any]:
        """Drops the deployments whose target (or provider) is open. A deployment whose
        half-open probe this process just took stays in, holding the probe for its call."""
        kept: list[Any] = []
        for deployment in healthy_deployments:
            if not isinstance(deployment, Mapping):
                kept.append(deployment)
                continue
            target = self.target_of(deployment)
            if self._stashed_probe(target, take=False) is not None:
                kept.append(deployment)
                continue
            try:
                permit = await self._acquire_async(target)
            except CircuitOpenError:
                continue
            if permit.probe:
                self._stash_probe(permit)
            kept.append(deployment)
        return kept

    async def async_pre_call_check(
        self, deployment: dict[str, Any], parent_otel_span: Any = None
    ) -> dict[str, Any] | None:
        """Admits the picked deployment's call (raises CircuitOpenError when it is open)."""
        target = self.target_of(deployment)
        permit = self._stashed_probe(target, take=True) or await self._acquire_async(target)
        self._admitted(target, permit)
        return None

    def pre_call_check(self, deployment: dict[str, Any]) -> dict[str, Any] | None:
        """The sync twin of :meth:`async_pre_call_check` (``router.completion``)."""
        if self.breaker is None:
            self._no_sync_breaker()
            return None
        target = self.target_of(deployment)
        permit = self._stashed_probe(target, take=True) or self.breaker.acquire(target)
        self._admitted(target, permit)
        return None

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        """Ties the admission made for this call to LiteLLM's call id."""
        admitted = _ADMITTED.get()
        call = _call_id(kwargs)
        if admitted is None or call is None:
            return
        _ADMITTED.set(None)
        with self._lock:
            self._inflight[call] = admitted
            while len(self._inflight) > self._max_inflight:
                self._inflight.popitem(last=False)

    async def _acquire_async(self, target: Target) -> Permit:
        if self.async_breaker is not None:
            return await self.async_breaker.acquire(target)
        assert self.breaker is not None
        return await asyncio.to_thread(self.breaker.acquire, target)

    # ---- LiteLLM: after the call
    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Records a deployment call's success (a stream's, when it ended)."""
        if self.breaker is None:
            self._no_sync_breaker()
            return
        found = self._pop_inflight(kwargs)
        if found is not None:
            target, permit = found
            self.breaker.record_success(
                target, _latency(start_time, end_time), permit=permit, endpoint=None
            )

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Records a deployment call's failure (the exception LiteLLM raised)."""
        if self.breaker is None:
            self._no_sync_breaker()
            return
        found = self._pop_inflight(kwargs)
        error = kwargs.get("exception")
        if found is not None and isinstance(error, BaseException):
            target, permit = found
            self.breaker.record_failure(
                target,
                error,
                permit=permit,
                latency_s=_latency(start_time, end_time),
            )

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """The async twin of :meth:`log_success_event`."""
        found = self._pop_inflight(kwargs)
        if found is None:
            return
        target, permit = found
        latency = _latency(start_time, end_time)
        if self.async_breaker is not None:
            await self.async_breaker.record_success(target, latency, permit=permit)
        elif self.breaker is not None:
            await asyncio.to_thread(self.breaker.record_success, target, latency, permit=permit)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """The async twin of :meth:`log_failure_event`."""
        found = self._pop_inflight(kwargs)
        error = kwargs.get("exception")
        if found is None or not isinstance(error, BaseException):
            return
        target, permit = found
        breaker = self.async_breaker or self.breaker
        c = breaker.classify(error, target.provider) if breaker is not None else error
        latency = _latency(start_time, end_time)
        if self.async_breaker is not None:
            await self.async_breaker.record_failure(target, c, permit=permit, latency_s=latency)
        elif self.breaker is not None:
            await asyncio.to_thread(
                self.breaker.record_failure, target, c, permit=permit, latency_s=latency
            )
