"""The two drivers of the flow (``_flow``): blocking redis-py and redis.asyncio.

A driver runs a flow generator: it performs each operation the flow yields against Redis
and sends the reply back, or throws the error in at the ``yield``; the flow decides what the
error means. Nothing else lives here, so the sync and async faces cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from typing import Any, Protocol, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._flow import Engine, Flow, Listen, Op, Poll, Read, Scan, Script
from ._settings import Settings
from ._wire import SCRIPT_NAMES, load_script

__all__ = ["AsyncIO", "SyncIO", "client_kwargs", "run_async", "run_sync"]

T = TypeVar("T")


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection options shared by the sync and async clients: short timeouts and no
    automatic retries, so an unreachable Redis costs a call at most one timeout."""
    return {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": 0,
    }


def _sync_client(settings: Settings) -> redis.Redis:
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        # Same commands, routed by slot; typed as Redis for the driver's purposes.
        return cast(
            redis.Redis, RedisCluster.from_url(settings.redis_url, **client_kwargs(settings))
        )
    return redis.Redis.from_url(settings.redis_url, **client_kwargs(settings))


def _async_client(settings: Settings) -> aioredis.Redis:
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return cast(
            aioredis.Redis, RedisCluster.from_url(settings.redis_url, **client_kwargs(settings))
        )
    return aioredis.Redis.from_url(settings.redis_url, **client_kwargs(settings))


def _is_cluster(client: object) -> bool:
    """Redis Cluster clients route by key and refuse keyless commands such as TIME in a
    pipeline; they are told apart by their node list."""
    return hasattr(client, "get_nodes")


class _Driver(Protocol):
    def execute(self, op: Op) -> Any: ...


def run_sync(flow: Flow[T], driver: _Driver) -> T:
    """Runs ``flow`` to its end with blocking I/O; returns its value."""
    try:
        op = next(flow)
        while True:
            try:
                reply = driver.execute(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return cast(T, stop.value)


class _AsyncDriver(Protocol):
    async def execute(self, op: Op) -> Any: ...


async def run_async(flow: Flow[T], driver: _AsyncDriver) -> T:
    """Runs ``flow`` to its end with asyncio I/O; returns its value."""
    try:
        op = next(flow)
        while True:
            try:
                reply = await driver.execute(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return cast(T, stop.value)


class SyncIO:
    """Blocking Redis I/O for :class:`resilience.Breaker` (and sync guarded functions)."""

    def __init__(self, engine: Engine, client: redis.Redis | None = None) -> None:
        self.engine = engine
        self.client: redis.Redis = client or _sync_client(engine.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = {n: self.client.register_script(load_script(n)) for n in SCRIPT_NAMES}
        self._pubsub: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        _LIVE.add(self)

    def _forked(self) -> None:
        """In a forked child the subscriber thread does not exist: start afresh (redis-py
        resets its own connection pool on the pid change)."""
        self._pubsub = None
        self._stop = threading.Event()
        self._thread = None
        self._thread_lock = threading.Lock()

    def run(self, flow: Flow[T]) -> T:
        return run_sync(flow, self)

    def execute(self, op: Op) -> Any:
        if isinstance(op, Script):
            return self._scripts[op.name](keys=op.keys, args=op.args)
        if isinstance(op, Read):
            return self._read(op)
        if isinstance(op, Scan):
            return list(self.client.scan_iter(match=op.pattern, count=1000))
        if isinstance(op, Poll):
            if op.ping:
                self._pubsub.ping()
            return self._pubsub.get_message(timeout=op.timeout_s)
        if isinstance(op, Listen):
            self._pubsub = cast(Any, self.client).pubsub()
            self._pubsub.subscribe(op.channel)
            return None
        self._close_pubsub()
        self._stop.wait(op.seconds)
        return None

    def _read(self, op: Read) -> list[Any]:
        if len(op.commands) == 1 and not op.with_time:
            return [self.client.execute_command(*op.commands[0])]  # type: ignore[no-untyped-call]
        pipe = self.client.pipeline(transaction=False)
        for command in op.commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        if op.with_time and self._time_in_pipeline:
            pipe.time()
        replies = list(pipe.execute())
        if op.with_time and not self._time_in_pipeline:
            replies.append(self.client.time())
        return replies

    # ---- the subscriber thread
    def ensure_subscriber(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._thread_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._subscribe, name="resilience-subscriber", daemon=True
                )
                self._thread.start()

    def _subscribe(self) -> None:
        try:
            self.run(self.engine.subscribe(self._stop.is_set))
        finally:
            self._close_pubsub()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2.0)
        self.engine.view.last_pong = 0.0
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()


class AsyncIO:
    """asyncio Redis I/O for :class:`resilience.AsyncBreaker` (and async guarded calls).

    Bound to the event loop it was first used in; the subscriber is a task of that loop.
    """

    def __init__(self, engine: Engine, client: aioredis.Redis | None = None) -> None:
        self.engine = engine
        self.client: aioredis.Redis = client or _async_client(engine.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = {n: self.client.register_script(load_script(n)) for n in SCRIPT_NAMES}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        _LIVE.add(self)

    def _forked(self) -> None:
        self._pubsub = None
        self._task = None

    async def run(self, flow: Flow[T]) -> T:
        return await run_async(flow, self)

    async def execute(self, op: Op) -> Any:
        if isinstance(op, Script):
            return await self._scripts[op.name](keys=op.keys, args=op.args)
        if isinstance(op, Read):
            return await self._read(op)
        if isinstance(op, Scan):
            return [key async for key in self.client.scan_iter(match=op.pattern, count=1000)]
        if isinstance(op, Poll):
            if op.ping:
                await self._pubsub.ping()
            return await self._pubsub.get_message(timeout=op.timeout_s)
        if isinstance(op, Listen):
            self._pubsub = self.client.pubsub()
            await self._pubsub.subscribe(op.channel)
            return None
        await self._close_pubsub()
        await asyncio.sleep(op.seconds)
        return None

    async def _read(self, op: Read) -> list[Any]:
        if len(op.commands) == 1 and not op.with_time:
            return [await self.client.execute_command(*op.commands[0])]  # type: ignore[no-untyped-call]
        pipe = self.client.pipeline(transaction=False)
        for command in op.commands:
            pipe.execute_command(*command)
        if op.with_time and self._time_in_pipeline:
            pipe.time()
        replies = list(await pipe.execute())
        if op.with_time and not self._time_in_pipeline:
            replies.append(await self.client.time())
        return replies

    def ensure_subscriber(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._subscribe(), name="resilience-subscriber")

    async def _subscribe(self) -> None:
        try:
            await self.run(self.engine.subscribe(lambda: self._closed))
        finally:
            await self._close_pubsub()

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self.engine.view.last_pong = 0.0
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()


# One fork handler for every live driver (registering one per object would leak).
_LIVE: weakref.WeakSet[SyncIO | AsyncIO] = weakref.WeakSet()
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def track_engine(engine: Engine) -> None:
    """Makes a forked child start ``engine`` afresh (see :meth:`Engine.forked`)."""
    _ENGINES.add(engine)


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.forked()
    for driver in list(_LIVE):
        driver._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
