"""The two drivers of the flow (``_flow``): blocking redis-py and redis.asyncio.

A driver runs a flow generator: it performs each operation the flow yields against Redis
and sends the reply back, or throws the error in at the ``yield``; the flow decides what the
error means. Nothing else lives here, so the sync and async faces cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
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
    kwargs = client_kwargs(settings)
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        # Same commands, routed by slot; typed as Redis for the driver's purposes.
        return cast(
            redis.Redis,
            RedisCluster.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, **kwargs
            ),
        )
    # A blocking pool: running out of connections waits for one (up to the socket timeout)
    # instead of failing the call as if Redis were down.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout,
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


def _async_client(settings: Settings) -> aioredis.Redis:
    kwargs = client_kwargs(settings)
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return cast(
            aioredis.Redis,
            RedisCluster.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, **kwargs
            ),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout,
        connection_class=_AsyncConnection,  # TCP; rediss:// and unix:// keep their own
        **kwargs,
    )
    return aioredis.Redis(connection_pool=pool)


class _AsyncConnection(aioredis.Connection):
    """redis.asyncio's TCP connection, packing commands with hiredis when it is installed
    (as the blocking client already does): encoding a script call in Python costs more than
    the rest of the call's client-side work."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if _PACKER is None:
            return super().pack_command(*args)
        packed: list[bytes] = _PACKER.pack(*args)
        return packed


def _hiredis_packer() -> Any:
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        return None
    from redis.connection import HiredisRespSerializer

    return HiredisRespSerializer()


_PACKER = _hiredis_packer()


MAX_BATCH = 128
"""Most script calls sent in one pipelined round trip."""


class _Slot:
    """One script call waiting in a batch: its reply (or error), and a lock its caller
    blocks on until a leader fills it (sync) or hands it the lead."""

    __slots__ = ("batch", "gate", "op", "reply")

    def __init__(self, op: Script) -> None:
        self.op = op
        self.reply: Any = None
        self.batch: list[_Slot] | None = None  # set when this caller is handed the lead
        self.gate = threading.Lock()
        self.gate.acquire()

    def result(self) -> Any:
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


class SyncBatcher:
    """Concurrent script calls from the threads of one process share round trips.

    The first caller sends its call at once (no added latency when alone). Callers arriving
    while a round trip is in flight queue up; when it returns, the first of them is handed
    the lead and sends the whole queue (up to :data:`MAX_BATCH`) in one pipeline, and so
    on. One round trip is in flight at a time, each caller gets its own reply, and the
    order of calls is kept (a call queued after a trip sees it).

    Args:
        send: sends a list of script calls in one round trip; returns one reply or error
            per call (raising means every call failed alike).
        wait_s: longest a queued caller waits for its reply (s).
    """

    def __init__(self, send: Callable[[list[Script]], list[Any]], wait_s: float) -> None:
        self._send = send
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._busy = False
        self._queue: list[_Slot] = []
        self.round_trips = 0
        self.calls = 0

    def call(self, op: Script) -> Any:
        slot = _Slot(op)
        with self._lock:
            self.calls += 1
            if self._busy:
                self._queue.append(slot)
                batch = None
            else:
                self._busy = True
                batch = [slot]
        if batch is None:
            if not slot.gate.acquire(timeout=self._wait_s):
                raise redis.TimeoutError("no reply within the batch wait")
            if slot.batch is None:
                return slot.result()
            batch = slot.batch
        self._run(batch)
        return slot.result()

    def _run(self, batch: list[_Slot]) -> None:
        try:
            replies = self._send([s.op for s in batch])
        except Exception as exc:
            replies = [exc] * len(batch)
        except BaseException:
            interrupted = redis.ConnectionError("the sending thread was interrupted")
            self._fill(batch, [interrupted] * len(batch))
            raise
        self._fill(batch, replies)

    def _fill(self, batch: list[_Slot], replies: list[Any]) -> None:
        self.round_trips += 1
        lead = batch[0]
        for slot, reply in zip(batch, replies, strict=True):
            slot.reply = reply
            if slot is not lead:
                slot.gate.release()
        with self._lock:
            if not self._queue:
                self._busy = False
                return
            nxt, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        nxt[0].batch = nxt
        nxt[0].gate.release()


class AsyncBatcher:
    """The asyncio twin of :class:`SyncBatcher`: concurrent tasks share round trips.

    The first caller sends at once; tasks arriving meanwhile queue up and a drain task sends
    them in pipelines of up to :data:`MAX_BATCH` (small enough that building one never
    holds the event loop for long).
    """

    def __init__(self, send: Callable[[list[Script]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._busy = False
        self._queue: list[tuple[Script, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.calls = 0

    async def call(self, op: Script) -> Any:
        self.calls += 1
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append((op, future))
            return await future
        self._busy = True
        try:
            (reply,) = await self._send([op])
        finally:
            self.round_trips += 1
            self._after()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _after(self) -> None:
        if self._queue:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            replies = await self._send([op for op, _ in batch])
        except BaseException as exc:
            replies = [exc if isinstance(exc, Exception) else redis.ConnectionError(str(exc))]
            replies *= len(batch)
        self.round_trips += 1
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled; the call itself was made
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        self._after()


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
        wait_s = 4 * (engine.settings.redis_socket_timeout + engine.settings.redis_connect_timeout)
        self.batcher = SyncBatcher(self._send_scripts, wait_s)
        self._pubsub: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._flush_wake = threading.Event()
        self._thread_lock = threading.Lock()
        _LIVE.add(self)

    def _forked(self) -> None:
        """In a forked child the subscriber and flusher threads do not exist: start afresh
        (redis-py resets its own connection pool on the pid change)."""
        self._pubsub = None
        self._stop = threading.Event()
        self._thread = None
        self._flusher = None
        self._flush_wake = threading.Event()
        self._thread_lock = threading.Lock()
        self.batcher = SyncBatcher(self._send_scripts, self.batcher._wait_s)

    def run(self, flow: Flow[T]) -> T:
        return run_sync(flow, self)

    def _send_scripts(self, ops: list[Script]) -> list[Any]:
        if len(ops) == 1:
            op = ops[0]
            try:
                return [self._scripts[op.name](keys=op.keys, args=op.args)]
            except redis.ResponseError as exc:  # a reply about this call only
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            _queue_script(pipe, self._scripts[op.name], op)
        replies = list(pipe.execute(raise_on_error=False))
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:  # SCRIPT FLUSH or a restart: load them and send those calls again
            for name in {ops[i].name for i in missing}:
                self.client.script_load(self._scripts[name].script)
            pipe = self.client.pipeline(transaction=False)
            for i in missing:
                _queue_script(pipe, self._scripts[ops[i].name], ops[i])
            for i, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies

    def execute(self, op: Op) -> Any:
        if isinstance(op, Script):
            return self.batcher.call(op)
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
    def subscriber_missing(self) -> bool:
        return self._thread is None and not self._stop.is_set()

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

    # ---- the flusher thread (summed outcomes)
    def after_record(self) -> None:
        """Starts the flusher when sums wait, and wakes it when enough successes do."""
        pending = self.engine.pending
        if len(pending):
            if self._flusher is None:
                self._start_flusher()
            if pending.peak >= self.engine.settings.success_flush_count:
                self._flush_wake.set()

    def _start_flusher(self) -> None:
        with self._thread_lock:
            if self._flusher is None and not self._stop.is_set():
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="resilience-flusher", daemon=True
                )
                self._flusher.start()

    def _flush_loop(self) -> None:
        interval = _flush_interval(self.engine)
        while not self._stop.is_set():
            self._flush_wake.wait(interval)
            self._flush_wake.clear()
            if not self._stop.is_set():
                self.flush()

    def flush(self) -> None:
        """Writes the summed outcomes now (never raises)."""
        try:
            self.run(self.engine.flush())
        except Exception:
            self.engine.log_internal_error("flush")

    def close(self) -> None:
        """Writes what is summed, stops the threads without waiting out a poll, and closes
        the connections it made."""
        self._stop.set()
        self._flush_wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2.0)
        self.flush()
        try:
            self.run(self.engine.release_held())
        except Exception:
            self.engine.log_internal_error("close")
        _wake(self._pubsub)
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
        self.batcher = AsyncBatcher(self._send_scripts)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._flush_wake: asyncio.Event | None = None
        self._closed = False
        _LIVE.add(self)

    def _forked(self) -> None:
        self._pubsub = None
        self._task = None
        self._flusher = None
        self._flush_wake = None
        self.batcher = AsyncBatcher(self._send_scripts)

    async def run(self, flow: Flow[T]) -> T:
        return await run_async(flow, self)

    async def _send_scripts(self, ops: list[Script]) -> list[Any]:
        if len(ops) == 1:
            op = ops[0]
            try:
                return [await self._scripts[op.name](keys=op.keys, args=op.args)]
            except redis.ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            _queue_script(pipe, self._scripts[op.name], op)
        replies = list(await pipe.execute(raise_on_error=False))
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            for name in {ops[i].name for i in missing}:
                await self.client.script_load(self._scripts[name].script)
            pipe = self.client.pipeline(transaction=False)
            for i in missing:
                _queue_script(pipe, self._scripts[ops[i].name], ops[i])
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies

    async def execute(self, op: Op) -> Any:
        if isinstance(op, Script | Read):
            reply = await self._execute_unstarved(op)
        else:
            reply = await self._execute(op)
        _deliver_swallowed_cancellation()
        return reply

    async def _execute_unstarved(self, op: Script | Read) -> Any:
        """Runs ``op``; a timeout the event loop caused is retried once, not reported.

        When thousands of tasks start at once, the loop can be busy running them for longer
        than the socket timeouts: the connection attempt (or the reply) was ready, but the
        loop never got back to it. That says nothing about Redis. The loop's lag is measured
        with a callback queued when the call starts; a timeout after a lag of more than half
        the connect timeout is retried once, when the burst has been scheduled.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        ran: list[float] = []
        loop.call_soon(lambda: ran.append(loop.time()))
        try:
            return await self._execute(op)
        except (redis.TimeoutError, redis.ConnectionError) as exc:
            if not _is_timeout(exc):
                raise
            lag = (ran[0] if ran else loop.time()) - started
            if lag < self.engine.settings.redis_connect_timeout / 2:
                raise
            return await self._execute(op)

    async def _execute(self, op: Op) -> Any:
        if isinstance(op, Script):
            return await self.batcher.call(op)
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

    def subscriber_missing(self) -> bool:
        return self._task is None and not self._closed

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

    # ---- the flusher task (summed outcomes)
    def after_record(self) -> None:
        """Starts the flusher when sums wait, and wakes it when enough successes do."""
        pending = self.engine.pending
        if not len(pending) or self._closed:
            return
        if self._flusher is None:
            self._flush_wake = asyncio.Event()
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="resilience-flusher"
            )
        if pending.peak >= self.engine.settings.success_flush_count and self._flush_wake:
            self._flush_wake.set()

    async def _flush_loop(self) -> None:
        interval = _flush_interval(self.engine)
        wake = self._flush_wake
        assert wake is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Writes the summed outcomes now (never raises)."""
        try:
            await self.run(self.engine.flush())
        except Exception:
            self.engine.log_internal_error("flush")

    async def aclose(self) -> None:
        """Writes what is summed, stops the tasks and closes the connections it made."""
        self._closed = True
        for task in (self._flusher, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.flush()
        try:
            await self.run(self.engine.release_held())
        except Exception:
            self.engine.log_internal_error("close")
        self.engine.view.last_pong = 0.0
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, redis.TimeoutError) or "Timeout" in str(exc)


def _flush_interval(engine: Engine) -> float:
    """How often summed outcomes are written (s): the batching interval, or once a second for
    outage sums when successes are written at once."""
    seconds = engine.settings.success_flush_seconds
    return seconds if seconds > 0 else 1.0


def _wake(pubsub: Any) -> None:
    """Wakes a subscriber blocked reading its connection (so closing does not wait out a
    poll): shutting the socket down makes the blocked read return at once."""
    sock = getattr(getattr(pubsub, "connection", None), "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _noscript(replies: list[Any]) -> list[int]:
    """Positions of the replies that say the script is not loaded (SCRIPT FLUSH, restart)."""
    return [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]


def _queue_script(pipe: Any, script: Any, op: Script) -> None:
    """Queues one EVALSHA of ``script`` on a (sync or async) pipeline."""
    pipe.execute_command("EVALSHA", script.sha, len(op.keys), *op.keys, *op.args)


def _deliver_swallowed_cancellation() -> None:
    """Raises the cancellation a Redis call swallowed.

    redis.asyncio can swallow a cancellation that arrives while it opens a connection: the
    call then returns normally while the task still has a cancel request pending
    (``Task.cancelling()``), and the guarded function would run to its end although its
    caller gave up (``asyncio.wait_for``, ``asyncio.timeout``). Delivering it here keeps
    the caller's cancellation intact.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError()


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
