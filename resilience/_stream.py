"""Streams: what a guarded call returns when its answer is still arriving, and the helpers the
router's ``stream`` uses to open one.

A guarded function may return a stream instead of an answer:

* an iterator: a generator, ``openai.Stream``, ``anthropic.Stream``, ``anthropic.MessageStream``,
  LiteLLM's ``CustomStreamWrapper``;
* an async iterable: an async generator, ``openai.AsyncStream``, ``AsyncMessageStream``;
* a stream manager: a context manager that is not iterable and makes the call when entered
  (``client.messages.stream(...)``'s ``MessageStreamManager``, an httpx ``client.stream(...)``).

The call has then only begun, so the guard hands back a proxy (:func:`guarded_stream`) that
records the outcome once, when the stream ends:

* its end (``StopIteration``) is a success;
* a failure while iterating it, or raised by a manager's ``__enter__``, is that failure;
* an exception raised by one of its methods (``get_final_message()``) or leaving its ``with``
  block is that failure when it is recognisably a provider's (classified as anything but
  ``unknown``); any other exception there is the caller's own and closes the stream early;
* closed early by the caller (``close()``, ``aclose()``, the end of its ``with`` block) is a
  success once it delivered (a chunk was read, a method returned, a manager was entered), else
  nothing;
* cancellation and Ctrl-C while it waits for the provider, or leaving its ``with`` block,
  are nothing (a probe lease it holds is given back);
* dropped without any of these (a ``break`` out of its loop, a consumer that gave up or was
  cancelled in its own code): closed early, as a guarded generator dropped the same way,
  recorded in the background when the last reference to the stream goes.

Other iterables are answers, recorded when returned: lists, dicts, strings, and pydantic
models such as a non-streamed ``ChatCompletion`` (they iterate over their fields).

The proxy forwards every other attribute (``response``, ``request_id``, ``get_final_text()``,
...), the context-manager protocols and ``close()`` / ``aclose()`` to the stream, and
``isinstance(proxy, openai.Stream)`` holds. Iterators the stream hands out from its attributes
or methods (``MessageStream.text_stream``) are proxied too and share its outcome.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._classification import Classification
from ._exceptions import ResilienceError
from ._shapes import Shape, early_close, is_stream
from ._shapes import shape as shape_of
from ._types import ErrorKind, Permit, Target

if TYPE_CHECKING:
    from ._breaker import AsyncGate, SyncGate

__all__ = [
    "NotAStreamError",
    "Opened",
    "StreamCall",
    "aclose_quietly",
    "aopen_stream",
    "close_quietly",
    "early_close",
    "guarded_stream",
    "is_stream",
    "open_stream",
]

log = logging.getLogger("resilience")
T = TypeVar("T")
Classify = Callable[[object, str | None], Classification]


# --------------------------------------------------------------------------- the outcome


class StreamCall:
    """One admitted call whose stream is still open: records its outcome exactly once.

    Args:
        sync_gate, async_gate: the breaker's gates (blocking / asyncio recordings).
        classify: ``fn(error, provider)``, the breaker's classification.
        target, permit: the admitted call.
        start: ``time.monotonic()`` when the call started (for the latency).
    """

    __slots__ = (
        "_async",
        "_classify",
        "_sync",
        "delivered",
        "done",
        "permit",
        "start",
        "target",
    )

    def __init__(
        self,
        sync_gate: SyncGate,
        async_gate: AsyncGate,
        classify: Classify,
        target: Target,
        permit: Permit,
        start: float,
    ) -> None:
        self._sync = sync_gate
        self._async = async_gate
        self._classify = classify
        self.target = target
        self.permit = permit
        self.start = start
        self.delivered = False
        self.done = False

    def _verdict(
        self, exc: BaseException | None, strict: bool
    ) -> tuple[bool, Classification | None]:
        """(record?, what) for a stream ending with ``exc`` (None: ended or closed).

        ``strict``: ``exc`` came from the stream itself (iteration, a manager's enter), so
        any exception is a failure; otherwise only a recognisable provider failure is, and
        anything else closes the stream early.
        """
        if self.done:
            return False, None
        if exc is None or isinstance(exc, GeneratorExit):
            return True, early_close(self.delivered)
        c = self._classify(exc, self.target.provider)
        if not strict and c.kind is ErrorKind.UNKNOWN:
            return True, early_close(self.delivered)
        return True, c

    def _latency(self) -> float:
        self.done = True
        return time.monotonic() - self.start

    def end(self) -> None:
        """The stream ended: a success."""
        if not self.done:
            self._sync.finish(self.target, self.permit, None, self._latency())

    def settle(self, exc: BaseException | None, *, strict: bool = False) -> None:
        """The stream failed with ``exc`` or was closed (``exc`` None); see ``_verdict``."""
        record, c = self._verdict(exc, strict)
        if record:
            self._sync.finish(self.target, self.permit, c, self._latency())

    def __del__(self) -> None:
        # Dropped by every proxy without an end, a close or a failure (a `break` out of its
        # loop, a consumer that gave up): closed early, as for a guarded generator dropped
        # the same way. Recorded by the dropper thread: a finalizer must not block on, or
        # re-enter, the Redis connection pool (SimpleQueue.put is safe here).
        if self.done:
            return
        self.done = True
        latency = time.monotonic() - self.start
        _DROPPED.put((self._sync, self.target, self.permit, early_close(self.delivered), latency))
        _dropper_running()

    async def aend(self) -> None:
        """:meth:`end` for asyncio."""
        if not self.done:
            await self._async.finish(self.target, self.permit, None, self._latency())

    async def asettle(self, exc: BaseException | None, *, strict: bool = False) -> None:
        """:meth:`settle` for asyncio (the recording is shielded from cancellation)."""
        record, c = self._verdict(exc, strict)
        if record:
            await self._async.finish(self.target, self.permit, c, self._latency())


_Dropped = tuple["SyncGate", Target, Permit, Classification | None, float]
_DROPPED: queue.SimpleQueue[_Dropped] = queue.SimpleQueue()
_dropper: tuple[int, threading.Thread] | None = None
_dropper_lock = threading.Lock()


DROPPER_IDLE_S = 1.0
"""The thread recording dropped streams ends after this long without one (s); the next
dropped stream starts it again."""


def _dropper_running() -> None:
    """Starts (in this process, after a fork too) the thread recording dropped streams,
    unless one runs. Safe in a finalizer: it never waits for the lock (whoever holds it is
    starting the thread, or is the idle thread seeing the queue is not empty)."""
    global _dropper
    found = _dropper
    if found is not None and found[0] == os.getpid() and found[1].is_alive():
        return
    if not _dropper_lock.acquire(blocking=False):
        return
    try:
        found = _dropper
        if found is None or found[0] != os.getpid() or not found[1].is_alive():
            thread = threading.Thread(target=_record_dropped, name="resilience-dropped")
            thread.daemon = True
            _dropper = (os.getpid(), thread)
            thread.start()
    finally:
        _dropper_lock.release()


def _record_dropped() -> None:
    global _dropper
    while True:
        try:
            gate, target, permit, c, latency = _DROPPED.get(timeout=DROPPER_IDLE_S)
        except queue.Empty:
            me = (os.getpid(), threading.current_thread())
            with _dropper_lock:
                if _dropper == me:
                    _dropper = None
            # Looked at after the thread is gone from _dropper: a stream dropped from now on
            # starts a new thread, one dropped before is seen here.
            if _DROPPED.empty():
                return
            with _dropper_lock:
                if _dropper is not None:  # a new thread took over
                    return
                _dropper = me
            continue
        gate.finish(target, permit, c, latency)  # never raises


# --------------------------------------------------------------------------- the proxy


def guarded_stream(value: T, call: StreamCall) -> T:
    """``value`` (a stream, see :func:`is_stream`) behind a proxy recording ``call``'s outcome."""
    shape = shape_of(type(value))
    if shape is None:
        raise TypeError(f"not a stream: {type(value).__name__}")
    return cast(T, _proxy_class(shape)(value, call))


class _Proxy:
    """What every stream proxy does: forward attributes, share the call's outcome."""

    __slots__ = ("_ait", "_call", "_inner", "_it")

    def __init__(self, inner: Any, call: StreamCall) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "_it", None)
        object.__setattr__(self, "_ait", None)

    # isinstance(proxy, openai.Stream) holds, as for a plain object proxy
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._inner)

    def __repr__(self) -> str:
        return f"<guarded {self._inner!r}>"

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._inner)))

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def __getattr__(self, name: str) -> Any:
        inner = self._inner
        value = getattr(inner, name)
        if name.startswith("_"):
            return value
        if value is inner:
            return self
        if name in ("close", "aclose") and callable(value):
            return self._closer(value)
        if inspect.ismethod(value) or inspect.isbuiltin(value):
            return self._method(value)
        return self._share(value)

    def _share(self, value: Any) -> Any:
        """An iterator the stream hands out is the same answer: proxied, sharing the call."""
        if value is self._inner:
            return self
        shape = shape_of(type(value))
        if shape is None or not (shape.async_iter or hasattr(type(value), "__next__")):
            return value
        return _proxy_class(shape)(value, self._call)

    def _method(self, method: Callable[..., Any]) -> Callable[..., Any]:
        call = self._call

        @functools.wraps(method)
        def proxied(*args: Any, **kwargs: Any) -> Any:
            try:
                result = method(*args, **kwargs)
            except BaseException as exc:
                call.settle(exc)
                raise
            if inspect.isawaitable(result):
                return _watched(result, call, self)
            call.delivered = True
            return self._share(result)

        return proxied

    def _closer(self, close: Callable[[], Any]) -> Callable[[], Any]:
        call = self._call

        @functools.wraps(close)
        def proxied() -> Any:
            try:
                result = close()
            except BaseException:
                call.settle(None)
                raise
            if inspect.isawaitable(result):
                return _closed_later(result, call)
            call.settle(None)
            return result

        return proxied


async def _watched(awaitable: Awaitable[Any], call: StreamCall, proxy: _Proxy) -> Any:
    try:
        result = await awaitable
    except BaseException as exc:
        await call.asettle(exc)
        raise
    call.delivered = True
    return proxy._share(result)


async def _closed_later(awaitable: Awaitable[Any], call: StreamCall) -> Any:
    try:
        return await awaitable
    finally:
        await call.asettle(None)


class _SyncIter(_Proxy):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        call = self._call
        try:
            it = self._it
            if it is None:
                it = iter(self._inner)
                object.__setattr__(self, "_it", it)
            item = next(it)
        except StopIteration:
            call.end()
            raise
        except BaseException as exc:
            call.settle(exc, strict=True)
            raise
        call.delivered = True
        return item


class _AsyncIter(_Proxy):
    __slots__ = ()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        call = self._call
        try:
            it = self._ait
            if it is None:
                it = aiter(self._inner)
                object.__setattr__(self, "_ait", it)
            item = await anext(it)
        except StopAsyncIteration:
            await call.aend()
            raise
        except BaseException as exc:
            await call.asettle(exc, strict=True)
            raise
        call.delivered = True
        return item


class _SyncCM(_Proxy):
    __slots__ = ()

    def __enter__(self) -> Any:
        try:
            value = self._inner.__enter__()
        except BaseException as exc:
            self._call.settle(exc, strict=True)
            raise
        if value is self._inner:
            return self
        self._call.delivered = True  # a manager: entering made the call
        return self._share(value)

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._inner.__exit__(*exc_info)
        finally:
            self._call.settle(exc_info[1])


class _AsyncCM(_Proxy):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        try:
            value = await self._inner.__aenter__()
        except BaseException as exc:
            await self._call.asettle(exc, strict=True)
            raise
        if value is self._inner:
            return self
        self._call.delivered = True
        return self._share(value)

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc_info)
        finally:
            await self._call.asettle(exc_info[1])


@functools.cache
def _proxy_class(shape: Shape) -> type[_Proxy]:
    """The proxy class with exactly the protocols the stream has (so ``hasattr(proxy,
    "__aiter__")`` and ``async with`` answer as they would for the stream)."""
    bases: list[type[_Proxy]] = []
    for has, base in zip(shape, (_SyncIter, _AsyncIter, _SyncCM, _AsyncCM), strict=True):
        if has:
            bases.append(base)
    if not bases:  # pragma: no cover - _shape never gives an empty shape
        bases.append(_Proxy)
    name = "Guarded" + "".join(b.__name__.lstrip("_") for b in bases)
    return cast(type[_Proxy], type(name, tuple(bases), {"__slots__": ()}))


# --------------------------------------------------------------------------- for the router


class NotAStreamError(ResilienceError, TypeError):
    """The call function of ``Router.stream`` returned something that is not a stream of
    chunks. A :class:`ResilienceError`, so the router re-raises it at once and records
    nothing against the target."""


@dataclass(slots=True)
class Opened:
    """A stream opened by the router: its first chunk read (unless it was ``empty``)."""

    source: Any
    chunks: Any  # the iterator (async iterator) of the chunks after ``first``
    first: Any = None
    empty: bool = False


def _answer_type(value: object) -> str | None:
    """The name of a type that is an answer, never a stream of chunks, or None."""
    if isinstance(value, str | bytes | bytearray | Mapping):
        return type(value).__name__
    return None


def open_stream(value: object) -> Opened:
    """Starts the stream ``value`` (any iterable of chunks) and reads its first chunk.

    Raises:
        NotAStreamError: ``value`` is not an iterable of chunks (a str, a dict, an awaitable,
            a context manager, ...).
        Exception: what reading the first chunk raised (the stream is closed).
    """
    cls = type(value)
    bad = _answer_type(value)
    if bad is None and not hasattr(cls, "__iter__"):
        bad = cls.__name__
    if bad is not None:
        hint = ""
        if hasattr(cls, "__aiter__") or inspect.isawaitable(value):
            hint = " (an async stream: use AsyncRouter.stream)"
        elif hasattr(cls, "__enter__"):
            hint = " (a context manager: write fn as a generator that enters it and yields)"
        raise NotAStreamError(f"Router.stream: fn returned {bad}, not an iterable of chunks{hint}")
    chunks = iter(cast(Any, value))
    try:
        first = next(chunks)
    except StopIteration:
        return Opened(value, chunks, empty=True)
    except BaseException:
        close_quietly(value)
        raise
    return Opened(value, chunks, first)


async def aopen_stream(value: object) -> Opened:
    """:func:`open_stream` for async iterables (``value`` may be an awaitable of one)."""
    if inspect.isawaitable(value):
        value = await value
    cls = type(value)
    bad = _answer_type(value)
    if bad is None and not hasattr(cls, "__aiter__"):
        bad = cls.__name__
    if bad is not None:
        hint = ""
        if hasattr(cls, "__iter__") and not isinstance(value, str | bytes | bytearray | Mapping):
            hint = " (a sync iterable: use Router.stream, or an async generator)"
        elif hasattr(cls, "__aenter__"):
            hint = " (a context manager: write fn as an async generator that enters it and yields)"
        raise NotAStreamError(
            f"AsyncRouter.stream: fn returned {bad}, not an async iterable of chunks{hint}"
        )
    chunks = aiter(cast(Any, value))
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return Opened(value, chunks, empty=True)
    except BaseException:
        await aclose_quietly(value)
        raise
    return Opened(value, chunks, first)


def close_quietly(stream: object) -> None:
    """Closes ``stream`` (releasing its connection) when it has a ``close()``; a failure to
    close is logged, never raised (it must not replace the outcome being delivered)."""
    close = getattr(stream, "close", None)
    if not callable(close):
        return
    try:
        result = close()
        if inspect.iscoroutine(result):
            result.close()  # an async close called from sync code: nothing to await
    except Exception:
        log.debug("resilience: closing a stream failed", exc_info=True)


async def aclose_quietly(stream: object) -> None:
    """:func:`close_quietly` for async streams (``aclose()``, else ``close()``)."""
    close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
    if not callable(close):
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.debug("resilience: closing a stream failed", exc_info=True)
