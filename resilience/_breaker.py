"""``Breaker`` and ``AsyncBreaker``: the public faces of the shared breaker.

Both hold one :class:`~resilience._core.BreakerCore` (settings, local view, in-memory
fallback, hooks) and run the same Lua scripts. ``Breaker`` has blocking methods,
``AsyncBreaker`` coroutine methods; the names are the same. Either one's ``guard`` wraps sync,
async and async-generator functions alike: a coroutine never blocks on Redis (it uses the
asyncio client) and a sync function never needs an event loop (it uses the blocking one).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import redis
import redis.asyncio as aioredis

from ._classify import classify
from ._core import Admission, BreakerCore, Denial, Permit
from ._exceptions import CircuitOpenError, ResilienceError
from ._io import AsyncIO, SyncIO
from ._redact import redact
from ._settings import Settings
from ._types import Classification, ErrorKind, Target, TargetState, TransitionEvent

__all__ = ["AsyncBreaker", "Breaker"]

P = ParamSpec("P")
R = TypeVar("R")
ModelSpec = str | Callable[..., str]


def _denied(admission: Denial) -> CircuitOpenError:
    return CircuitOpenError(admission.target, admission.retry_after_s, admission.reason)


def classify_exception(exc: BaseException) -> Classification:
    """Classification of an exception raised by a guarded call.

    Anything that is not an ``Exception`` (cancellation, Ctrl-C, generator exit) and the
    library's own errors (a nested guard's ``CircuitOpenError``) are ``cancelled``: they say
    nothing about the provider and are never recorded as its failure.
    """
    if not isinstance(exc, Exception) or isinstance(exc, ResilienceError):
        return Classification(ErrorKind.CANCELLED)
    return classify(exc)


class _Base:
    """What both breakers share: the core and lazily made I/O shells of both kinds."""

    def __init__(
        self,
        settings: Settings | None,
        hooks: Sequence[object],
        client: redis.Redis | None,
        async_client: aioredis.Redis | None,
    ) -> None:
        self._core = BreakerCore(settings, hooks)
        self.settings = self._core.settings
        self._client = client
        self._async_client = async_client
        self._sync: SyncIO | None = None
        self._async: AsyncIO | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._io_lock = threading.Lock()

    def _sync_io(self) -> SyncIO:
        if self._sync is None:
            with self._io_lock:
                if self._sync is None:
                    self._sync = SyncIO(self._core, self._client)
        return self._sync

    def _async_io(self) -> AsyncIO:
        loop = asyncio.get_running_loop()
        io = self._async
        if io is None or self._async_loop is not loop:
            # redis.asyncio connections belong to one event loop: a new loop gets new ones.
            io = AsyncIO(self._core, self._async_client)
            self._async, self._async_loop = io, loop
        return io

    @property
    def hooks(self) -> list[object]:
        """The hooks this breaker fires (append to add one)."""
        return self._core.hooks

    # ---- pure helpers shared by the shells
    def _permit_for(self, target: Target, permit: Permit | None) -> Permit | None:
        return permit if permit is not None else self._core.take_held(target)

    # ---- guard
    def guard(self, provider: str, model: ModelSpec) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator recording every call of a provider call function.

        Args:
            provider: the provider name.
            model: the model name, or a callable receiving the call's arguments and returning
                the model name (e.g. ``lambda *a, **kw: kw["model"]``).

        Works on sync functions, coroutine functions, async generators and sync generators
        (the kind is decided once, here). Before the call: raises
        :class:`CircuitOpenError` when the target or provider is open. After it: records
        success (with the latency) or the classified failure, then returns the result or
        re-raises the provider's own exception unchanged. A stream is recorded when it ends
        or fails. Cancellation and Ctrl-C are never recorded as failures. A Redis problem
        never changes the call's result or exception.
        """
        if not isinstance(provider, str) or not provider:
            raise ValueError("guard(provider, model): provider must be a non-empty str")
        if not (isinstance(model, str) and model) and not callable(model):
            raise ValueError("guard(provider, model): model must be a non-empty str or callable")

        def target_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Target:
            name = model(*args, **kwargs) if callable(model) else model
            return Target(provider, name)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.isasyncgenfunction(fn):
                return cast(Callable[P, R], self._wrap_async_gen(fn, target_of))
            if inspect.iscoroutinefunction(fn):
                return cast(Callable[P, R], self._wrap_async(fn, target_of))
            if inspect.isgeneratorfunction(fn):
                return cast(Callable[P, R], self._wrap_gen(fn, target_of))
            return self._wrap_sync(fn, target_of)

        return decorate

    # sync pieces used by guard and Router
    def _admit_sync(self, target: Target) -> Admission:
        if not self.settings.enabled:
            return Permit(target, None, "", None, "disabled")
        return self._core.finish_admission(self._sync_io().admit(target))

    def _finish_sync(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None = None,
    ) -> None:
        try:
            args = self._core.plan_outcome(permit, c, latency_s, endpoint)
            view = self._sync_io().record(target, args) if args is not None else None
            if args is not None and args.outcome == "r":
                view = None
            self._core.after_outcome(target, permit, c, latency_s, view)
        except Exception:  # never let bookkeeping replace the call's own result
            self._core.log_internal_error("record")

    async def _admit_async(self, target: Target) -> Admission:
        if not self.settings.enabled:
            return Permit(target, None, "", None, "disabled")
        return self._core.finish_admission(await self._async_io().admit(target))

    async def _finish_async(
        self,
        target: Target,
        permit: Permit | None,
        c: Classification | None,
        latency_s: float | None,
        endpoint: str | None = None,
    ) -> None:
        try:
            args = self._core.plan_outcome(permit, c, latency_s, endpoint)
            view = await self._async_io().record(target, args) if args is not None else None
            if args is not None and args.outcome == "r":
                view = None
            self._core.after_outcome(target, permit, c, latency_s, view)
        except Exception:
            self._core.log_internal_error("record")

    def _wrap_sync(
        self, fn: Callable[P, R], target_of: Callable[[tuple[Any, ...], dict[str, Any]], Target]
    ) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            target = target_of(args, kwargs)
            permit = self._admit_sync(target)
            if isinstance(permit, Denial):
                raise _denied(permit)
            start = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._finish_sync(target, permit, classify_exception(exc), None)
                raise
            self._finish_sync(target, permit, None, time.monotonic() - start)
            return result

        return wrapper

    def _wrap_gen(
        self,
        fn: Callable[..., Iterator[Any]],
        target_of: Callable[[tuple[Any, ...], dict[str, Any]], Target],
    ) -> Callable[..., Iterator[Any]]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            target = target_of(args, kwargs)
            permit = self._admit_sync(target)
            if isinstance(permit, Denial):
                raise _denied(permit)
            start = time.monotonic()
            got_any = False
            try:
                for item in fn(*args, **kwargs):
                    got_any = True
                    yield item
            except GeneratorExit:
                # The consumer stopped early: a stream that delivered is a success.
                outcome = None if got_any else Classification(ErrorKind.CANCELLED)
                self._finish_sync(target, permit, outcome, time.monotonic() - start)
                raise
            except BaseException as exc:
                self._finish_sync(target, permit, classify_exception(exc), None)
                raise
            self._finish_sync(target, permit, None, time.monotonic() - start)

        return wrapper

    def _wrap_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        target_of: Callable[[tuple[Any, ...], dict[str, Any]], Target],
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = target_of(args, kwargs)
            permit = await self._admit_async(target)
            if isinstance(permit, Denial):
                raise _denied(permit)
            start = time.monotonic()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await _shielded(self._finish_async(target, permit, classify_exception(exc), None))
                raise
            await self._finish_async(target, permit, None, time.monotonic() - start)
            return result

        return wrapper

    def _wrap_async_gen(
        self,
        fn: Callable[..., AsyncIterator[Any]],
        target_of: Callable[[tuple[Any, ...], dict[str, Any]], Target],
    ) -> Callable[..., AsyncIterator[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            target = target_of(args, kwargs)
            permit = await self._admit_async(target)
            if isinstance(permit, Denial):
                raise _denied(permit)
            start = time.monotonic()
            got_any = False
            try:
                async for item in fn(*args, **kwargs):
                    got_any = True
                    yield item
            except GeneratorExit:
                outcome = None if got_any else Classification(ErrorKind.CANCELLED)
                # An async generator closed by the consumer may not await any more: record
                # in the background of the loop.
                _background(self._finish_async(target, permit, outcome, time.monotonic() - start))
                raise
            except BaseException as exc:
                await _shielded(self._finish_async(target, permit, classify_exception(exc), None))
                raise
            await self._finish_async(target, permit, None, time.monotonic() - start)

        return wrapper


_BACKGROUND: set[asyncio.Future[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    """Runs ``coro`` on the running loop without waiting (kept referenced until done)."""
    try:
        task = asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        coro.close()
        return
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _shielded(coro: Coroutine[Any, Any, None]) -> None:
    """Records an outcome even when the surrounding task is being cancelled."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        raise


class Breaker(_Base):
    """The shared breaker, with blocking methods.

    Args:
        settings: the configuration; ``Settings()`` (environment) when None.
        hooks: objects with any of the :class:`resilience.Hook` methods.
        client: an existing ``redis.Redis`` to use instead of one made from
            ``settings.redis_url`` (it should have short timeouts and
            ``decode_responses=True``).
        async_client: likewise for guarded coroutines (``redis.asyncio.Redis``).

    A breaker owns a Redis connection pool and, with ``local_view``, a daemon thread
    subscribed to transitions. Make one per process (after forking) and ``close()`` it, or
    use it as a context manager.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hooks: Sequence[object] = (),
        client: redis.Redis | None = None,
        async_client: aioredis.Redis | None = None,
    ) -> None:
        super().__init__(settings, hooks, client, async_client)

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
        admission = self._admit_sync(target)
        if isinstance(admission, Denial):
            return False
        self._core.hold(admission)
        return True

    def acquire(self, target: Target) -> Permit:
        """Like :meth:`allow`, but returns the admission (pass it to ``record_*`` as
        ``permit=`` when several calls to one target run concurrently in this process).

        Raises:
            CircuitOpenError: the target or its provider is open.
        """
        admission = self._admit_sync(target)
        if isinstance(admission, Denial):
            raise _denied(admission)
        return admission

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
        self._finish_sync(target, self._permit_for(target, permit), None, latency_s, endpoint)

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
                :class:`Classification`.
            permit: the admission from :meth:`acquire` (default: the probe this process holds
                for the target, if any).
            endpoint: the endpoint the call used, when it used a learned hint.
            latency_s: duration of the call in seconds, optional.
        """
        c = classify(error)
        self._finish_sync(target, self._permit_for(target, permit), c, latency_s, endpoint)
        return c

    def state(self, target: Target) -> TargetState:
        """The shared state of one target (a closed, empty state when none is stored).

        Raises:
            StoreUnavailableError: Redis is unreachable.
        """
        return self._sync_io().state(target)

    def states(self, provider: str | None = None) -> list[TargetState]:
        """Every target stored under this key prefix (or of one provider), read with
        pipelined round trips of 1000 targets.

        Raises:
            StoreUnavailableError: Redis is unreachable.
        """
        return self._sync_io().states(provider)

    def providers(self) -> list[str]:
        """Every provider with state under this key prefix."""
        return self._sync_io().providers()

    def events(
        self, cursors: dict[str, str] | None = None, providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        """Transitions from the capped Redis event log, oldest first per provider.

        Args:
            cursors: provider -> last event id already seen; only newer events are returned.
            providers: providers to read (default: all).
        """
        return self._sync_io().events(cursors or {}, providers)

    def block(
        self, target: Target, seconds: float, reason: str = "", *, provider_wide: bool = False
    ) -> TargetState:
        """Opens ``target`` (or, with ``provider_wide``, every model of its provider) for
        ``seconds``; afterwards one probe decides. Returns the new state."""
        op = "block_provider" if provider_wide else "block"
        self._sync_io().admin(target, op, _positive(seconds), _reason(reason))
        return self.state(target)

    def unblock(self, target: Target, *, provider_wide: bool = False) -> TargetState:
        """Closes ``target`` (or the provider-wide block) now and clears its trips."""
        op = "unblock_provider" if provider_wide else "unblock"
        self._sync_io().admin(target, op, 0, "")
        return self.state(target)

    def reset(self, target: Target) -> TargetState:
        """Forgets the target's counters and state (a new ``since`` marks the restart)."""
        self._sync_io().admin(target, "reset", 0, "")
        return self.state(target)


class AsyncBreaker(_Base):
    """The shared breaker for asyncio: the methods of :class:`Breaker` as coroutines.

    The Redis connections and the subscriber task belong to the event loop the breaker is
    first used in. Close it with ``await aclose()`` or ``async with``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hooks: Sequence[object] = (),
        client: aioredis.Redis | None = None,
        sync_client: redis.Redis | None = None,
    ) -> None:
        super().__init__(settings, hooks, sync_client, client)

    async def __aenter__(self) -> AsyncBreaker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stops the subscriber task and closes the connections this breaker made."""
        if self._async is not None:
            await self._async.aclose()
        if self._sync is not None:
            self._sync.close()

    async def allow(self, target: Target) -> bool:
        """See :meth:`Breaker.allow`."""
        admission = await self._admit_async(target)
        if isinstance(admission, Denial):
            return False
        self._core.hold(admission)
        return True

    async def acquire(self, target: Target) -> Permit:
        """See :meth:`Breaker.acquire`."""
        admission = await self._admit_async(target)
        if isinstance(admission, Denial):
            raise _denied(admission)
        return admission

    async def record_success(
        self,
        target: Target,
        latency_s: float | None = None,
        *,
        permit: Permit | None = None,
        endpoint: str | None = None,
    ) -> None:
        """See :meth:`Breaker.record_success`."""
        await self._finish_async(
            target, self._permit_for(target, permit), None, latency_s, endpoint
        )

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
        c = classify(error)
        await self._finish_async(target, self._permit_for(target, permit), c, latency_s, endpoint)
        return c

    async def state(self, target: Target) -> TargetState:
        """See :meth:`Breaker.state`."""
        return await self._async_io().state(target)

    async def states(self, provider: str | None = None) -> list[TargetState]:
        """See :meth:`Breaker.states`."""
        return await self._async_io().states(provider)

    async def providers(self) -> list[str]:
        """See :meth:`Breaker.providers`."""
        return await self._async_io().providers()

    async def events(
        self, cursors: dict[str, str] | None = None, providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        """See :meth:`Breaker.events`."""
        return await self._async_io().events(cursors or {}, providers)

    async def block(
        self, target: Target, seconds: float, reason: str = "", *, provider_wide: bool = False
    ) -> TargetState:
        """See :meth:`Breaker.block`."""
        op = "block_provider" if provider_wide else "block"
        await self._async_io().admin(target, op, _positive(seconds), _reason(reason))
        return await self.state(target)

    async def unblock(self, target: Target, *, provider_wide: bool = False) -> TargetState:
        """See :meth:`Breaker.unblock`."""
        op = "unblock_provider" if provider_wide else "unblock"
        await self._async_io().admin(target, op, 0, "")
        return await self.state(target)

    async def reset(self, target: Target) -> TargetState:
        """See :meth:`Breaker.reset`."""
        await self._async_io().admin(target, "reset", 0, "")
        return await self.state(target)


def _positive(seconds: float) -> float:
    if not isinstance(seconds, int | float) or not seconds > 0 or seconds != seconds:
        raise ValueError(f"block seconds must be a positive number, got {seconds!r}")
    return float(seconds)


def _reason(reason: str) -> str:
    return redact(" ".join(str(reason).split()), 200)
