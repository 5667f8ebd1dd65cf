"""``Breaker`` and ``AsyncBreaker``: the public faces of the shared breaker.

Both hold one :class:`~resilience._flow.Engine` (settings, local view, in-process fallback,
hooks, and the flows) and run it with a driver from ``resilience._io``: ``Breaker`` with
blocking methods, ``AsyncBreaker`` with coroutine methods of the same names and signatures (a
test checks the parity). Either one's ``guard`` wraps sync functions, coroutine functions and
(async) generators: a coroutine never blocks on Redis (it uses the asyncio client) and a sync
function never needs an event loop (it uses the blocking one).

The guard and the routers reach a breaker through a small internal protocol,
:class:`SyncGate` / :class:`AsyncGate` (``sync_gate(breaker)`` / ``async_gate(breaker)``):
admit a call, finish it with its outcome, classify an error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import inspect
import logging
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import redis
import redis.asyncio as aioredis

from ._durations import MAX_DURATION_S
from ._exceptions import CircuitOpenError, ResilienceError
from ._flow import Engine, Flow
from ._io import AsyncIO, SyncIO, track_engine
from ._redact import redact
from ._settings import Settings
from ._shapes import early_close, is_stream
from ._types import Admission, Classifier, Denial, ErrorKind, Permit, Target

if TYPE_CHECKING:
    from ._classification import Classification, CompatHint
    from ._states import ProviderState, TargetState, TransitionEvent

__all__ = ["AsyncBreaker", "AsyncGate", "Breaker", "SyncGate", "async_gate", "sync_gate"]

log = logging.getLogger("resilience")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
ModelSpec = str | Callable[..., str]
TargetOf = Callable[[tuple[Any, ...], dict[str, Any]], Target | None]


def denied(admission: Denial) -> CircuitOpenError:
    """The error a caller sees for a refused admission."""
    return CircuitOpenError(admission.target, admission.retry_after_s, admission.reason)


def classify_exception(
    error: object, provider: str | None = None, classifier: Classifier | None = None
) -> Classification:
    """Classification of what a call failed with (the user's ``classifier`` first).

    Anything that is not an ``Exception`` (cancellation, Ctrl-C, generator exit) and the
    library's own errors (a nested guard's ``CircuitOpenError``) are ``cancelled``: they say
    nothing about the provider and are never recorded as its failure.
    """
    if isinstance(error, BaseException) and (
        not isinstance(error, Exception) or isinstance(error, ResilienceError)
    ):
        from ._classification import Classification

        return Classification(ErrorKind.CANCELLED)
    # Imported at the first failure: a process whose calls succeed never compiles the rules.
    from ._classify import classify_with

    return classify_with(classifier, error, provider)


RULES_MODULE = "resilience._classify._core"
"""The module whose import compiles the classification rules (at the first failure)."""


def rules_loaded() -> bool:
    """True once this process has loaded the classification rules."""
    return RULES_MODULE in sys.modules


def load_rules_in_background() -> None:
    """Starts loading the classification rules in a daemon thread, unless loaded or being
    loaded: an asyncio process that routes calls classifies its first failure on the event
    loop, and compiling the rules takes tens to hundreds of milliseconds."""
    global _rules_loading
    with _rules_lock:
        if _rules_loading or rules_loaded():
            return
        _rules_loading = True
    threading.Thread(
        target=importlib.import_module,
        args=(RULES_MODULE,),
        name="resilience-rules",
        daemon=True,
    ).start()


_rules_lock = threading.Lock()
_rules_loading = False


class SyncGate:
    """What the guard and the sync router need from a breaker (blocking)."""

    def __init__(self, owner: _Base) -> None:
        self._owner = owner

    def admit(self, target: Target) -> Admission:
        owner = self._owner
        io = owner._sync_io()
        if io.subscriber_missing() and owner._engine.wants_subscriber():
            io.ensure_subscriber()
        local = owner._engine.admit_local(target)
        if local is not None:
            return local
        return io.run(owner._engine.admit(target))

    def enter(self, target: Target) -> Permit:
        """Admits a call or raises :class:`CircuitOpenError`."""
        admission = self.admit(target)
        if isinstance(admission, Denial):
            raise denied(admission)
        return admission

    def finish(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None = None,
        applied: Sequence[CompatHint] = (),
    ) -> None:
        """Records the outcome (``c`` None for a success; ``applied``: the compatibility
        hints the call applied); never raises."""
        owner = self._owner
        try:
            io = owner._sync_io()
            if applied or not owner._engine.record_local(target, permit, c, latency_s):
                io.run(owner._engine.record(target, permit, c, latency_s, endpoint, applied))
            io.after_record()
        except Exception:  # never let bookkeeping replace the call's own result
            owner._engine.log_internal_error("record")

    def fail(
        self,
        target: Target,
        permit: Permit | None,
        exc: BaseException,
        latency_s: float | None,
        endpoint: str | None = None,
        applied: Sequence[CompatHint] = (),
    ) -> Classification:
        """Records a call that raised ``exc``; returns its classification."""
        c = self._owner.classify(exc, target.provider)
        self.finish(target, permit, c, latency_s, endpoint, applied)
        return c


class AsyncGate:
    """What the guard and the asyncio router need from a breaker (coroutines)."""

    def __init__(self, owner: _Base) -> None:
        self._owner = owner

    async def admit(self, target: Target) -> Admission:
        owner = self._owner
        io = owner._async_io()
        if io.subscriber_missing() and owner._engine.wants_subscriber():
            io.ensure_subscriber()
        local = owner._engine.admit_local(target)
        if local is not None:
            return local
        return await io.run(owner._engine.admit(target))

    async def enter(self, target: Target) -> Permit:
        """Admits a call or raises :class:`CircuitOpenError`."""
        admission = await self.admit(target)
        if isinstance(admission, Denial):
            raise denied(admission)
        return admission

    async def finish(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None = None,
        applied: Sequence[CompatHint] = (),
    ) -> None:
        """Records the outcome; never raises, and completes even when the awaiting task is
        cancelled meanwhile (the recording is shielded; the cancellation still propagates)."""
        owner = self._owner
        try:
            if not applied and owner._engine.record_local(target, permit, c, latency_s):
                owner._async_io().after_record()
                return
        except Exception:
            owner._engine.log_internal_error("record")
            return
        await _shielded(self._finish(owner, target, permit, c, latency_s, endpoint, applied))

    @staticmethod
    async def _finish(
        owner: _Base,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None,
        applied: Sequence[CompatHint] = (),
    ) -> None:
        try:
            io = owner._async_io()
            await io.run(owner._engine.record(target, permit, c, latency_s, endpoint, applied))
            io.after_record()
        except Exception:
            owner._engine.log_internal_error("record")

    async def fail(
        self,
        target: Target,
        permit: Permit | None,
        exc: BaseException,
        latency_s: float | None,
        endpoint: str | None = None,
        applied: Sequence[CompatHint] = (),
    ) -> Classification:
        """Records a call that raised ``exc``; returns its classification.

        The process's first failure loads and compiles the classification rules (tens of
        milliseconds): that one is classified in a worker thread, so the event loop keeps
        running meanwhile, and recorded even if the task is cancelled meanwhile."""
        if rules_loaded():
            c = self._owner.classify(exc, target.provider)
            await self.finish(target, permit, c, latency_s, endpoint, applied)
            return c

        async def classify_and_finish() -> Classification:
            c = await asyncio.to_thread(self._owner.classify, exc, target.provider)
            await self.finish(target, permit, c, latency_s, endpoint, applied)
            return c

        return await _shielded(classify_and_finish())

    def finish_later(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
    ) -> None:
        """Records in the background of the running loop (for an async generator closed
        by its consumer, which may not await any more)."""
        _background(self._finish(self._owner, target, permit, c, latency_s, None))


def sync_gate(breaker: Breaker | AsyncBreaker) -> SyncGate:
    """The blocking gate of a breaker (either kind)."""
    return breaker._gate_sync


def async_gate(breaker: Breaker | AsyncBreaker) -> AsyncGate:
    """The asyncio gate of a breaker (either kind)."""
    return breaker._gate_async


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    """Runs ``coro`` on the running loop without waiting (kept referenced until done)."""
    try:
        task = asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        coro.close()
        return
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _shielded(coro: Coroutine[Any, Any, R]) -> R:
    """Runs ``coro`` to its end even when the surrounding task is being cancelled; returns
    its result."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        raise


_LIVE_BREAKERS: weakref.WeakSet[_Base] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """At interpreter exit, writes what live breakers still hold summed (blocking, with the
    usual short timeouts), so a short-lived process loses no outcome it made."""
    for breaker in list(_LIVE_BREAKERS):
        if len(breaker._engine.pending):
            with contextlib.suppress(Exception):
                breaker._sync_io().flush()


class _Base:
    """What both breakers share: the engine, lazily made drivers of both kinds, the guard."""

    def __init__(
        self,
        settings: Settings | None,
        hooks: Sequence[object],
        client: redis.Redis | None,
        async_client: aioredis.Redis | None,
        classifier: Classifier | None,
    ) -> None:
        self._engine = Engine(settings if settings is not None else Settings(), hooks)
        self.classifier = classifier
        track_engine(self._engine)
        self.settings = self._engine.settings
        self._client = client
        self._async_client = async_client
        self._sync: SyncIO | None = None
        # redis.asyncio connections belong to one event loop: each loop gets its own.
        self._async_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIO] = (
            weakref.WeakKeyDictionary()
        )
        self._io_lock = threading.Lock()
        self._gate_sync = SyncGate(self)
        self._gate_async = AsyncGate(self)
        _LIVE_BREAKERS.add(self)

    def _sync_io(self) -> SyncIO:
        if self._sync is None:
            with self._io_lock:
                if self._sync is None:
                    self._sync = SyncIO(self._engine, self._client)
        return self._sync

    def _async_io(self) -> AsyncIO:
        loop = asyncio.get_running_loop()
        io = self._async_by_loop.get(loop)
        if io is None:
            io = AsyncIO(self._engine, self._async_client)
            self._async_by_loop[loop] = io
        return io

    def _run(self, flow: Flow[T]) -> T:
        return self._sync_io().run(flow)

    async def _arun(self, flow: Flow[T]) -> T:
        return await self._async_io().run(flow)

    @property
    def hooks(self) -> list[object]:
        """The hooks this breaker fires (append to add one)."""
        return self._engine.hooks

    def classify(self, error: object, provider: str | None = None) -> Classification:
        """How this breaker classifies ``error`` for ``provider``: its ``classifier`` first,
        then :func:`resilience.classify` with the provider's own rules. Pure; never raises.
        A cancellation, Ctrl-C or the library's own error is ``cancelled``."""
        return classify_exception(error, provider, self.classifier)

    def _guarded_stream(self, result: R, target: Target, permit: Permit, start: float) -> R:
        """``result``, a stream a guarded call returned, behind the proxy that records the
        call's outcome when the stream ends (the stream module loads at the first one)."""
        from ._stream import StreamCall, guarded_stream

        call = StreamCall(self._gate_sync, self._gate_async, self.classify, target, permit, start)
        return guarded_stream(result, call)

    def _permit_for(self, target: Target, permit: Permit | None) -> Permit | None:
        return permit if permit is not None else self._engine.take_held(target)

    # ---- guard
    def guard(
        self,
        provider: str,
        model: ModelSpec | None = None,
        *,
        model_arg: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator recording every call of a provider call function.

        Args:
            provider: the provider name.
            model: the model name, or a callable receiving the call's arguments and returning
                the model name (e.g. ``lambda *a, **kw: kw["model"]``).
            model_arg: instead of ``model``: the name of the function's parameter holding
                the model (passed positionally or by keyword), e.g. ``model_arg="model"``.

        Works on sync functions, coroutine functions, async generators and sync generators
        (the kind is decided once, here). Before the call: raises
        :class:`CircuitOpenError` when the target or provider is open. After it: records
        success (with the latency) or the classified failure, then returns the result or
        re-raises the provider's own exception unchanged. A stream is recorded when it ends
        or fails: a generator function's, and a stream the function returns (an iterator such
        as ``openai.Stream``, an async iterable, or a stream manager such as
        ``client.messages.stream(...)``), which comes back behind a proxy that keeps its
        attributes, ``with`` and ``close()`` (see ``resilience._stream``). Cancellation and
        Ctrl-C are never recorded as failures. A Redis problem
        never changes the call's result or exception, and neither does a model name that
        cannot be found or used: that call goes ahead unrecorded (warned once per guard).

        Raises:
            ValueError: ``provider`` is empty, or neither (or both) of ``model`` and
                ``model_arg`` is given, or ``model_arg`` is not a parameter of the function.
        """
        if not isinstance(provider, str) or not provider:
            raise ValueError("guard(provider, model): provider must be a non-empty str")
        if (model is None) == (model_arg is None):
            raise ValueError("guard(provider, ...): give exactly one of model and model_arg")
        if model is not None and not (isinstance(model, str) and model) and not callable(model):
            raise ValueError("guard(provider, model): model must be a non-empty str or callable")
        Target(provider, model if isinstance(model, str) else "-")  # checks the provider

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            target_of = _target_finder(fn, provider, model, model_arg)
            if inspect.isasyncgenfunction(fn):
                return cast(Callable[P, R], self._wrap_async_gen(fn, target_of))
            if inspect.iscoroutinefunction(fn):
                return cast(Callable[P, R], self._wrap_async(fn, target_of))
            if inspect.isgeneratorfunction(fn):
                return cast(Callable[P, R], self._wrap_gen(fn, target_of))
            return self._wrap_sync(fn, target_of)

        return decorate

    def _wrap_sync(self, fn: Callable[P, R], target_of: TargetOf) -> Callable[P, R]:
        gate = self._gate_sync

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            target = target_of(args, kwargs)
            if target is None:
                return fn(*args, **kwargs)
            permit = gate.enter(target)
            start = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                gate.fail(target, permit, exc, time.monotonic() - start)
                raise
            if is_stream(result):  # the answer is still arriving: recorded when it ends
                return self._guarded_stream(result, target, permit, start)
            gate.finish(target, permit, None, time.monotonic() - start)
            return result

        return wrapper

    def _wrap_gen(
        self, fn: Callable[..., Iterator[Any]], target_of: TargetOf
    ) -> Callable[..., Iterator[Any]]:
        gate = self._gate_sync

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            target = target_of(args, kwargs)
            if target is None:
                yield from fn(*args, **kwargs)
                return
            permit = gate.enter(target)
            start = time.monotonic()
            got_any = False
            try:
                for item in fn(*args, **kwargs):
                    got_any = True
                    yield item
            except GeneratorExit:
                # The consumer stopped early: a stream that delivered is a success.
                gate.finish(target, permit, early_close(got_any), time.monotonic() - start)
                raise
            except BaseException as exc:
                gate.fail(target, permit, exc, time.monotonic() - start)
                raise
            gate.finish(target, permit, None, time.monotonic() - start)

        return wrapper

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], target_of: TargetOf
    ) -> Callable[..., Awaitable[Any]]:
        gate = self._gate_async

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = target_of(args, kwargs)
            if target is None:
                return await fn(*args, **kwargs)
            permit = await gate.enter(target)
            start = time.monotonic()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await gate.fail(target, permit, exc, time.monotonic() - start)
                raise
            if is_stream(result):
                return self._guarded_stream(result, target, permit, start)
            await gate.finish(target, permit, None, time.monotonic() - start)
            return result

        return wrapper

    def _wrap_async_gen(
        self, fn: Callable[..., AsyncIterator[Any]], target_of: TargetOf
    ) -> Callable[..., AsyncIterator[Any]]:
        gate = self._gate_async

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            target = target_of(args, kwargs)
            if target is None:
                async for item in fn(*args, **kwargs):
                    yield item
                return
            permit = await gate.enter(target)
            start = time.monotonic()
            got_any = False
            try:
                async for item in fn(*args, **kwargs):
                    got_any = True
                    yield item
            except GeneratorExit:
                # An async generator closed by its consumer may not await any more.
                gate.finish_later(target, permit, early_close(got_any), time.monotonic() - start)
                raise
            except BaseException as exc:
                await gate.fail(target, permit, exc, time.monotonic() - start)
                raise
            await gate.finish(target, permit, None, time.monotonic() - start)

        return wrapper


def _target_finder(
    fn: Callable[..., Any], provider: str, model: ModelSpec | None, model_arg: str | None
) -> TargetOf:
    """How a guarded call finds its target. A model that cannot be found or used makes the
    call go ahead unrecorded (warned once for this guard), never fail."""
    if isinstance(model, str):
        fixed = Target(provider, model)
        return lambda args, kwargs: fixed

    if model_arg is not None:
        signature = inspect.signature(fn)
        if model_arg not in signature.parameters:
            raise ValueError(
                f"guard(model_arg={model_arg!r}): {fn.__qualname__} has no parameter of that name"
            )

        def name_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            bound = signature.bind_partial(*args, **kwargs)
            return bound.arguments.get(model_arg)

    else:
        assert model is not None
        model_fn = model

        def name_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return model_fn(*args, **kwargs)

    warned = threading.Event()

    def target_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target | None:
        try:
            return Target(provider, name_of(args, kwargs))
        except Exception as exc:
            if not warned.is_set():
                warned.set()
                log.warning(
                    "resilience: guard(%r) of %s could not find a usable model name (%s: %s); "
                    "such calls go ahead unrecorded",
                    provider,
                    getattr(fn, "__qualname__", fn),
                    type(exc).__name__,
                    redact(str(exc), 200),
                )
            return None

    return target_of


class Breaker(_Base):
    """The shared breaker, with blocking methods.

    Args:
        settings: the configuration; ``Settings()`` (environment) when None.
        hooks: objects with any of the :class:`resilience.Hook` methods.
        client: an existing ``redis.Redis`` to use instead of one made from
            ``settings.redis_url`` (it should have short timeouts and
            ``decode_responses=True``).
        async_client: likewise for guarded coroutines (``redis.asyncio.Redis``).
        classifier: ``fn(error, provider) -> Classification | None``, tried before the
            built-in classification for every failure this breaker records (None defers to
            :func:`resilience.classify`); see docs/classification.md.

    A breaker owns a Redis connection pool and, with ``local_view``, a daemon thread
    subscribed to transitions. Make one per process (after forking) and ``close()`` it, or
    use it as a context manager. One breaker may be shared by every thread of the process.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hooks: Sequence[object] = (),
        client: redis.Redis | None = None,
        async_client: aioredis.Redis | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(settings, hooks, client, async_client, classifier)

    @classmethod
    def ephemeral(cls, settings: Settings | None = None, **options: Any) -> Breaker:
        """A breaker for short-lived processes (a serverless handler, a cron job, a CLI
        call): no subscriber, no background thread, no batching: every admission asks Redis
        and every outcome is written at once, so nothing waits in the process when it is
        frozen or killed. ``options`` are the keyword options of :class:`Breaker`."""
        base = settings if settings is not None else Settings()
        light = base.model_copy(update={"local_view": False, "success_flush_seconds": 0.0})
        return cls(light, **options)

    def __enter__(self) -> Breaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the subscriber and closes the connections this breaker made."""
        if self._sync is not None:
            self._sync.close()

    def allow(self, target: Target) -> bool:
        """May a call to ``target`` go now?

        False while the target or its provider is open. When a probe is due, True for exactly
        one caller in the whole fleet; that caller's next ``record_success`` or
        ``record_failure`` for the target settles the probe. Never raises on a Redis
        problem: with ``fail_mode="open"`` the in-process breaker answers.
        """
        admission = self._gate_sync.admit(target)
        if isinstance(admission, Denial):
            return False
        self._engine.hold(admission)
        return True

    def acquire(self, target: Target) -> Permit:
        """Like :meth:`allow`, but returns the admission (pass it to ``record_*`` as
        ``permit=`` when several calls to one target run concurrently in this process).

        Raises:
            CircuitOpenError: the target or its provider is open.
        """
        return self._gate_sync.enter(target)

    def record_success(
        self,
        target: Target,
        latency_s: float | None = None,
        *,
        permit: Permit | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Records a successful call (latency in seconds, optional). One Redis round trip;
        never raises on a Redis problem."""
        self._gate_sync.finish(target, self._permit_for(target, permit), None, latency_s, endpoint)

    def record_failure(
        self,
        target: Target,
        error: object,
        *,
        permit: Permit | None = None,
        endpoint: str | None = None,
        latency_s: float | None = None,
    ) -> Classification:
        """Records a failed call and returns how it was classified.

        Args:
            target: the target called.
            error: the exception, an ``httpx.Response``, an :class:`ErrorKind` or a
                :class:`Classification` (classified by :meth:`classify`).
            permit: the admission from :meth:`acquire` (default: the probe this process holds
                for the target, if any).
            endpoint: the endpoint the call used, when it used a learned hint.
            latency_s: duration of the call in seconds, optional.
        """
        c = self.classify(error, target.provider)
        self._gate_sync.finish(target, self._permit_for(target, permit), c, latency_s, endpoint)
        return c

    def state(self, target: Target) -> TargetState:
        """The shared state of one target (a closed, empty state when none is stored).

        Raises:
            StoreUnavailableError: Redis is unreachable.
        """
        return self._run(self._engine.state(target))

    def states(self, provider: str | None = None) -> list[TargetState]:
        """Every target stored under this key prefix (or of one provider), read with
        pipelined round trips of 1000 targets.

        Raises:
            StoreUnavailableError: Redis is unreachable.
        """
        return self._run(self._engine.states(provider))

    def providers(self) -> list[str]:
        """Every provider with state under this key prefix."""
        return self._run(self._engine.providers())

    def provider_state(self, provider: str) -> ProviderState:
        """The provider-wide state of ``provider`` (closed when none is stored).

        Raises:
            StoreUnavailableError: Redis is unreachable.
        """
        return self._run(self._engine.provider_state(_provider(provider)))

    def provider_states(self) -> list[ProviderState]:
        """Every provider with a provider-wide state stored under this key prefix."""
        return self._run(self._engine.provider_states())

    def events(
        self, cursors: dict[str, str] | None = None, providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        """Transitions from the capped Redis event log, oldest first per provider.

        Args:
            cursors: provider -> last event id already seen; only newer events are returned.
            providers: providers to read (default: all).
        """
        return self._run(self._engine.events(cursors or {}, providers))

    def block(
        self, target: Target, seconds: float, reason: str = "", *, provider_wide: bool = False
    ) -> TargetState:
        """Opens ``target`` for ``seconds`` (at most ten years); afterwards one probe decides.
        With ``provider_wide``, blocks every model of the target's provider instead (see
        :meth:`block_provider`). Returns the target's new state.

        Raises:
            ValueError: ``seconds`` is not a positive number of at most ten years.
            StoreUnavailableError: Redis is unreachable.
        """
        if provider_wide:
            self.block_provider(target.provider, seconds, reason)
        else:
            self._run(self._engine.admin(target, "", "block", _duration(seconds), _reason(reason)))
        return self.state(target)

    def unblock(self, target: Target, *, provider_wide: bool = False) -> TargetState:
        """Closes ``target`` now and clears its trips (with ``provider_wide``: ends the
        provider-wide block instead). Returns the target's new state."""
        if provider_wide:
            self.unblock_provider(target.provider)
        else:
            self._run(self._engine.admin(target, "", "unblock", 0, ""))
        return self.state(target)

    def reset(self, target: Target) -> TargetState:
        """Forgets the target's counters, state and learned hints (a new ``since`` marks the
        restart)."""
        self._run(self._engine.admin(target, "", "reset", 0, ""))
        return self.state(target)

    def block_provider(self, provider: str, seconds: float, reason: str = "") -> ProviderState:
        """Blocks every model of ``provider`` for ``seconds``; afterwards one call probes the
        provider. Creates no target entry. Returns the provider's new state.

        Raises:
            ValueError: an empty provider, or ``seconds`` not positive or over ten years.
            StoreUnavailableError: Redis is unreachable.
        """
        name = _provider(provider)
        self._run(
            self._engine.admin(None, name, "block_provider", _duration(seconds), _reason(reason))
        )
        return self.provider_state(name)

    def unblock_provider(self, provider: str) -> ProviderState:
        """Ends a provider-wide block now. Returns the provider's new state."""
        name = _provider(provider)
        self._run(self._engine.admin(None, name, "unblock_provider", 0, ""))
        return self.provider_state(name)


class AsyncBreaker(_Base):
    """The shared breaker for asyncio: the methods of :class:`Breaker` as coroutines.

    Share one per process among all its tasks. Redis connections and the subscriber task
    belong to an event loop: each loop the breaker is used in gets its own, and
    ``await aclose()`` (or ``async with``) closes those of the loop it runs in.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hooks: Sequence[object] = (),
        client: aioredis.Redis | None = None,
        sync_client: redis.Redis | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(settings, hooks, sync_client, client, classifier)

    @classmethod
    def ephemeral(cls, settings: Settings | None = None, **options: Any) -> AsyncBreaker:
        """See :meth:`Breaker.ephemeral`: no subscriber task, no flusher, no batching."""
        base = settings if settings is not None else Settings()
        light = base.model_copy(update={"local_view": False, "success_flush_seconds": 0.0})
        return cls(light, **options)

    async def __aenter__(self) -> AsyncBreaker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stops the subscriber task and closes the connections this breaker made."""
        io = self._async_by_loop.pop(asyncio.get_running_loop(), None)
        if io is not None:
            await io.aclose()
        if self._sync is not None:
            self._sync.close()

    async def allow(self, target: Target) -> bool:
        """See :meth:`Breaker.allow`."""
        admission = await self._gate_async.admit(target)
        if isinstance(admission, Denial):
            return False
        self._engine.hold(admission)
        return True

    async def acquire(self, target: Target) -> Permit:
        """See :meth:`Breaker.acquire`."""
        return await self._gate_async.enter(target)

    async def record_success(
        self,
        target: Target,
        latency_s: float | None = None,
        *,
        permit: Permit | None = None,
        endpoint: str | None = None,
    ) -> None:
        """See :meth:`Breaker.record_success`."""
        permit = self._permit_for(target, permit)
        await self._gate_async.finish(target, permit, None, latency_s, endpoint)

    async def record_failure(
        self,
        target: Target,
        error: object,
        *,
        permit: Permit | None = None,
        endpoint: str | None = None,
        latency_s: float | None = None,
    ) -> Classification:
        """See :meth:`Breaker.record_failure`."""
        c = self.classify(error, target.provider)
        permit = self._permit_for(target, permit)
        await self._gate_async.finish(target, permit, c, latency_s, endpoint)
        return c

    async def state(self, target: Target) -> TargetState:
        """See :meth:`Breaker.state`."""
        return await self._arun(self._engine.state(target))

    async def states(self, provider: str | None = None) -> list[TargetState]:
        """See :meth:`Breaker.states`."""
        return await self._arun(self._engine.states(provider))

    async def providers(self) -> list[str]:
        """See :meth:`Breaker.providers`."""
        return await self._arun(self._engine.providers())

    async def provider_state(self, provider: str) -> ProviderState:
        """See :meth:`Breaker.provider_state`."""
        return await self._arun(self._engine.provider_state(_provider(provider)))

    async def provider_states(self) -> list[ProviderState]:
        """See :meth:`Breaker.provider_states`."""
        return await self._arun(self._engine.provider_states())

    async def events(
        self, cursors: dict[str, str] | None = None, providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        """See :meth:`Breaker.events`."""
        return await self._arun(self._engine.events(cursors or {}, providers))

    async def block(
        self, target: Target, seconds: float, reason: str = "", *, provider_wide: bool = False
    ) -> TargetState:
        """See :meth:`Breaker.block`."""
        if provider_wide:
            await self.block_provider(target.provider, seconds, reason)
        else:
            flow = self._engine.admin(target, "", "block", _duration(seconds), _reason(reason))
            await self._arun(flow)
        return await self.state(target)

    async def unblock(self, target: Target, *, provider_wide: bool = False) -> TargetState:
        """See :meth:`Breaker.unblock`."""
        if provider_wide:
            await self.unblock_provider(target.provider)
        else:
            await self._arun(self._engine.admin(target, "", "unblock", 0, ""))
        return await self.state(target)

    async def reset(self, target: Target) -> TargetState:
        """See :meth:`Breaker.reset`."""
        await self._arun(self._engine.admin(target, "", "reset", 0, ""))
        return await self.state(target)

    async def block_provider(
        self, provider: str, seconds: float, reason: str = ""
    ) -> ProviderState:
        """See :meth:`Breaker.block_provider`."""
        name = _provider(provider)
        flow = self._engine.admin(None, name, "block_provider", _duration(seconds), _reason(reason))
        await self._arun(flow)
        return await self.provider_state(name)

    async def unblock_provider(self, provider: str) -> ProviderState:
        """See :meth:`Breaker.unblock_provider`."""
        name = _provider(provider)
        await self._arun(self._engine.admin(None, name, "unblock_provider", 0, ""))
        return await self.provider_state(name)


def _duration(seconds: float) -> float:
    ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not ok or not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(
            f"block seconds must be a positive number of at most {MAX_DURATION_S:.0f} "
            f"(ten years), got {seconds!r}"
        )
    return float(seconds)


def _provider(provider: str) -> str:
    return Target(provider, "-").provider  # the same checks as a Target's provider


def _reason(reason: str) -> str:
    return redact(" ".join(str(reason).split()), 200)
