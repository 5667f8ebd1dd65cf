"""The two drivers of the flow (``_flow``): blocking redis-py and redis.asyncio.

A driver runs a flow generator: it performs each operation the flow yields against Redis
and sends the reply back, or throws the error in at the ``yield``; the flow decides what the
error means. Nothing else lives here, so the sync and async faces cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal, Protocol, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from ._flow import (
    PING_INTERVAL_S,
    POLL_S,
    STORE_ERRORS,
    Engine,
    Fields,
    Flow,
    Listen,
    Op,
    Pause,
    Poll,
    Read,
    Scan,
    Script,
    log,
    now_ms,
)
from ._record import Record
from ._settings import Settings, sentinel_address
from ._view import SUBSCRIPTION_GRACE_S
from ._wire import SCRIPT_NAMES, load_script, text

__all__ = [
    "AsyncIO",
    "SyncIO",
    "async_client",
    "client_kwargs",
    "close_async_client",
    "close_sync_client",
    "run_async",
    "run_sync",
    "sync_client",
]

T = TypeVar("T")
OpT = TypeVar("OpT")
OpT_contra = TypeVar("OpT_contra", contravariant=True)


def client_kwargs(settings: Settings, timeout_s: float | None = None) -> dict[str, Any]:
    """Connection options shared by the sync and async clients: short timeouts and no
    automatic retries, so an unreachable Redis costs a call at most one timeout.
    ``timeout_s`` replaces both timeouts (the CLI's checks wait longer)."""
    return {
        "socket_timeout": timeout_s or settings.redis_socket_timeout,
        "socket_connect_timeout": timeout_s or settings.redis_connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": 0,
    }


def sync_client(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """The blocking client ``settings`` describe: a Redis Cluster client
    (``redis_cluster``), a client of the master a set of sentinels names
    (``redis+sentinel://``, redis-py's :class:`~redis.sentinel.Sentinel`), or a plain one.
    Each has at most ``redis_max_connections`` connections; when all are busy a call waits
    for one (up to the socket timeout) instead of failing as if Redis were down."""
    kwargs = client_kwargs(settings, timeout_s)
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        # Same commands, routed by slot; typed as Redis for the driver's purposes.
        return cast(
            redis.Redis,
            RedisCluster.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, **kwargs
            ),
        )
    address = sentinel_address(settings)
    if address is not None:
        from redis.sentinel import Sentinel

        nodes = _sentinel_kwargs(settings, kwargs)
        sentinel = Sentinel(address.sentinels, sentinel_kwargs=nodes)  # type: ignore[no-untyped-call]
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            address.master, connection_pool_class=_SentinelPool, **_master_kwargs(settings, kwargs)
        )
        return cast(redis.Redis, master)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=kwargs["socket_timeout"],
        **kwargs,
    )
    pool.connection_class = _dropping_on_readonly(pool.connection_class)
    return redis.Redis(connection_pool=pool)


def async_client(settings: Settings, timeout_s: float | None = None) -> aioredis.Redis:
    """The asyncio twin of :func:`sync_client`."""
    kwargs = client_kwargs(settings, timeout_s)
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return cast(
            aioredis.Redis,
            RedisCluster.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, **kwargs
            ),
        )
    address = sentinel_address(settings)
    if address is not None:
        from redis.asyncio.sentinel import Sentinel

        nodes = _sentinel_kwargs(settings, kwargs)
        sentinel = Sentinel(address.sentinels, sentinel_kwargs=nodes)  # type: ignore[no-untyped-call]
        master = sentinel.master_for(
            address.master,
            connection_pool_class=_AsyncSentinelPool,
            **_master_kwargs(settings, kwargs),
        )
        return cast(aioredis.Redis, master)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=kwargs["socket_timeout"],
        connection_class=_AsyncConnection,  # TCP; rediss:// and unix:// keep their own
        **kwargs,
    )
    pool.connection_class = _dropping_on_readonly(pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


def _master_kwargs(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pool and connection options of the master: ours, then the URL's (credentials,
    database, TLS options), which win as a plain URL's do."""
    address = sentinel_address(settings)
    assert address is not None
    options = {
        "max_connections": settings.redis_max_connections,
        "timeout": kwargs["socket_timeout"],
        **kwargs,
        **address.options,
    }
    if address.tls:
        options["ssl"] = True
    return options


def _sentinel_kwargs(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection options of the sentinels: the same timeouts and TLS as the master, their
    own credentials."""
    address = sentinel_address(settings)
    assert address is not None
    options: dict[str, Any] = {
        "socket_timeout": kwargs["socket_timeout"],
        "socket_connect_timeout": kwargs["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": 0,
    }
    if address.tls:
        options["ssl"] = True
        options.update({k: v for k, v in address.options.items() if k.startswith("ssl_")})
    if settings.redis_sentinel_username:
        options["username"] = settings.redis_sentinel_username
    password = settings.redis_sentinel_password.get_secret_value()
    if password:
        options["password"] = password
    return options


class _SentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's pool of a Sentinel-managed master, blocking when every connection is busy
    like the plain pool. A connection asks the sentinels for the master when it connects,
    a connection made to a master that is no longer the master is dropped when given back,
    and READONLY (a demoted master) disconnects and raises ``ConnectionError``."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        # redis-py's Sentinel support drops the idle connections when the master moved
        # (inuse_connections=False); the blocking pool of redis-py 5 takes no argument.
        if _TAKES_INUSE or inuse_connections:
            args = {"inuse_connections": inuse_connections} if _TAKES_INUSE else {}
            super().disconnect(**args)
            return
        with self.pool.mutex:  # the idle connections wait in the queue
            idle = [c for c in self.pool.queue if c is not None]
        for connection in idle:
            connection.disconnect()


_TAKES_INUSE = (
    "inuse_connections" in inspect.signature(redis.BlockingConnectionPool.disconnect).parameters
)


class _AsyncSentinelPool(AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The asyncio twin of :class:`_SentinelPool`."""

    async def release(self, connection: Any) -> None:
        # The blocking pool of redis-py drops a connection to a former master when it is
        # given back; redis.asyncio's keeps it, and it would go on writing to the old master.
        master = self.master_address
        if master is not None and (connection.host, connection.port) != tuple(master):
            await connection.disconnect()
        await super().release(connection)


# --------------------------------------------------------------------------- Sentinel failovers

SWITCHED = "+switch-master"
"""A sentinel names a new master: ``<master> <old ip> <old port> <new ip> <new port>``."""
PROMOTING = "+failover-state-send-slaveof-noone"
"""The leading sentinel is about to turn a replica into the master: from then on, what the
old master accepts is lost."""
ABORTED = "-failover-abort-slave-timeout"
"""The leading sentinel gave up waiting for the replica's promotion."""
ANNOUNCEMENTS = (SWITCHED, PROMOTING, ABORTED)

FAILOVER_PAUSE_S = 5.0
"""Longest pause of Redis calls between a failover's start and its end (s)."""

Announcement = Literal["promoting", "switched", "aborted"]
_ANNOUNCED: dict[str, Announcement] = {
    SWITCHED: "switched",
    PROMOTING: "promoting",
    ABORTED: "aborted",
}


def announcement(master: str, channel: str, data: str) -> Announcement | None:
    """What a sentinel's message on ``channel`` says about ``master`` (None: nothing, or
    another master). Messages name the master first (``+switch-master``), after ``@`` (an
    event about a replica), or after ``master`` (an event about the master)."""
    words = data.split()
    if not words:
        return None
    if "@" in words[:-1]:
        name = words[words.index("@") + 1]
    elif words[0] == "master" and len(words) > 1:
        name = words[1]
    else:
        name = words[0]
    if name != master:
        return None
    return _ANNOUNCED.get(channel)


class _Watch(Record):
    """Subscribe to :data:`ANNOUNCEMENTS` on the follower's sentinel."""

    __slots__ = ()


class _Heard(Record):
    """The sentinel announced ``what`` about the master."""

    __slots__ = ("what",)

    def __init__(self, what: Announcement) -> None:
        self.what = what


_FollowOp = _Watch | _Heard | Poll | Pause


def follow_master(master: str, stopped: Callable[[], bool]) -> Generator[_FollowOp, Any, None]:
    """Listens to one sentinel's failover announcements about ``master`` until
    ``stopped()``; a breaker runs one per sentinel.

    redis-py asks the sentinels for the master only when a connection connects. A master
    that dies drops its connections, so that is soon enough; but after a failover of a live
    master (``SENTINEL FAILOVER``, a partition) the sentinels turn the old master into a
    replica only about ten seconds later, and until then every pooled connection keeps
    writing to it: writes the old master then throws away. The announcements end that:

    * ``promoting`` (the leading sentinel is about to promote a replica): Redis calls pause
      (the in-process breaker decides, outcomes are summed) until the switch, an abort,
      or :data:`FAILOVER_PAUSE_S`;
    * ``switched``: the pool asks the announcing sentinel (which knows) for the master,
      redis-py drops the idle connections to the old one (the busy ones when they are given
      back), the pause ends and the subscriber moves to the new master.

    Pinged every ``PING_INTERVAL_S``; a silent or failing sentinel is subscribed to again
    with backoff (0.1 s doubling to 2 s).
    """
    delay = 0.1
    while not stopped():
        try:
            yield _Watch()
            last_ping, seen = 0.0, time.monotonic()
            while not stopped():
                now = time.monotonic()
                ping = now - last_ping >= PING_INTERVAL_S
                if ping:
                    last_ping = now
                if now - seen > SUBSCRIPTION_GRACE_S + 1:
                    raise redis.ConnectionError("sentinel ping unanswered")
                msg = yield Poll(ping, POLL_S)
                if msg is None:
                    continue
                seen = time.monotonic()
                if msg.get("type") == "message":
                    what = announcement(master, text(msg.get("channel")), text(msg.get("data")))
                    if what is not None:
                        yield _Heard(what)
            delay = 0.1
        except STORE_ERRORS as exc:
            log.debug("resilience: sentinel subscription lost (%s)", type(exc).__name__)
            yield Pause(delay)
            delay = min(delay * 2, 2.0)


class _Failover:
    """Where a breaker's driver stands in a failover (shared by its followers)."""

    def __init__(self) -> None:
        self.paused_until = 0.0  # time.monotonic(); Redis calls pause before it
        self.moved = False  # the subscriber must move to the new master

    def check(self) -> None:
        """Raises ``ConnectionError`` while a failover pauses Redis calls."""
        if self.paused_until and time.monotonic() < self.paused_until:
            raise redis.ConnectionError("the sentinels are failing the master over")

    def heard(self, what: Announcement) -> None:
        if what == "promoting":
            self.paused_until = time.monotonic() + FAILOVER_PAUSE_S
            self.moved = True  # no local view from the old master meanwhile
        else:
            self.paused_until = 0.0
            self.moved = self.moved or what == "switched"

    def subscriber_moves(self) -> None:
        """Raises ``ConnectionError`` once for the subscriber after a switch."""
        if self.moved:
            self.moved = False
            raise redis.ConnectionError("the sentinels announced a new master")


def _first(nodes: list[Any], node: Any) -> None:
    """Puts ``node`` first among the sentinels redis-py asks (a swap, as redis-py itself
    does after an answer, so a concurrent discovery never sees the list shorter)."""
    for i, other in enumerate(nodes):
        if other is node:
            nodes[0], nodes[i] = node, nodes[0]
            return


class _SyncFollower:
    """Runs :func:`follow_master` for a :class:`SyncIO`, one daemon thread per sentinel."""

    def __init__(self, io: SyncIO, pool: SentinelConnectionPool) -> None:
        self.io = io
        self.pool = pool
        self.threads = [
            threading.Thread(
                target=self._run, args=(node,), name="resilience-sentinel", daemon=True
            )
            for node in list(pool.sentinel_manager.sentinels)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, node: Any) -> None:
        driver = _SyncFollowing(self, node)
        try:
            run_sync(follow_master(self.pool.service_name, self.io._stop.is_set), driver)
        finally:
            driver.close()

    def switched(self, node: Any) -> None:
        _first(self.pool.sentinel_manager.sentinels, node)
        with contextlib.suppress(*STORE_ERRORS):  # the next connection asks again
            self.pool.get_master_address()  # type: ignore[no-untyped-call]

    def join(self, timeout_s: float) -> None:
        for thread in self.threads:
            thread.join(timeout_s)


class _SyncFollowing:
    """The blocking driver of one :func:`follow_master` flow (one sentinel)."""

    def __init__(self, follower: _SyncFollower, node: Any) -> None:
        self.follower = follower
        self.node = node
        self.pubsub: Any = None

    def execute(self, op: _FollowOp) -> Any:
        if isinstance(op, _Watch):
            self.pubsub = self.node.pubsub()
            self.pubsub.subscribe(*ANNOUNCEMENTS)
            return None
        if isinstance(op, Poll):
            if op.ping:
                self.pubsub.ping()
            return self.pubsub.get_message(timeout=op.timeout_s)
        io = self.follower.io
        if isinstance(op, _Heard):
            if op.what == "switched":
                self.follower.switched(self.node)
            io.failover.heard(op.what)
            return None
        self.close()
        io._stop.wait(op.seconds)
        return None

    def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()


class _AsyncFollower:
    """Runs :func:`follow_master` for an :class:`AsyncIO`, one task per sentinel."""

    def __init__(self, io: AsyncIO, pool: AsyncSentinelConnectionPool) -> None:
        self.io = io
        self.pool = pool
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self._run(node), name="resilience-sentinel")
            for node in list(pool.sentinel_manager.sentinels)
        ]

    async def _run(self, node: Any) -> None:
        driver = _AsyncFollowing(self, node)
        try:
            await run_async(follow_master(self.pool.service_name, lambda: self.io._closed), driver)
        finally:
            await driver.close()

    async def switched(self, node: Any) -> None:
        _first(self.pool.sentinel_manager.sentinels, node)
        with contextlib.suppress(*STORE_ERRORS):
            await self.pool.get_master_address()  # type: ignore[no-untyped-call]


class _AsyncFollowing:
    """The asyncio driver of one :func:`follow_master` flow (one sentinel)."""

    def __init__(self, follower: _AsyncFollower, node: Any) -> None:
        self.follower = follower
        self.node = node
        self.pubsub: Any = None

    async def execute(self, op: _FollowOp) -> Any:
        if isinstance(op, _Watch):
            self.pubsub = self.node.pubsub()
            await self.pubsub.subscribe(*ANNOUNCEMENTS)
            return None
        if isinstance(op, Poll):
            if op.ping:
                await self.pubsub.ping()
            return await self.pubsub.get_message(timeout=op.timeout_s)
        if isinstance(op, _Heard):
            if op.what == "switched":
                await self.follower.switched(self.node)
            self.follower.io.failover.heard(op.what)
            return None
        await self.close()
        await asyncio.sleep(op.seconds)
        return None

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


def close_sync_client(client: Any) -> None:
    """Closes ``client`` and, for a Sentinel-managed master, the sentinels' connections."""
    sentinel = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    with contextlib.suppress(Exception):
        client.close()
    for node in getattr(sentinel, "sentinels", ()):
        with contextlib.suppress(Exception):
            node.close()


async def close_async_client(client: Any) -> None:
    """The asyncio twin of :func:`close_sync_client`."""
    sentinel = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    with contextlib.suppress(Exception):
        await client.aclose()
    for node in getattr(sentinel, "sentinels", ()):
        with contextlib.suppress(Exception):
            await node.aclose()


class _DropOnReadOnly:
    """Mixed into a plain client's connections: a connection told READONLY drops itself.

    Behind a name that follows the primary (a managed service's primary endpoint, a DNS
    name an operator moves), READONLY means the node this connection reached was demoted
    (a failover); redis-py would keep the connection to it, and every write would be
    refused until it dropped. The next connection resolves the name again and reaches the
    new primary. The error is still raised (a refused write, ``write_refused``)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ReadOnlyError:
            self.disconnect()  # type: ignore[attr-defined]
            raise


class _AsyncDropOnReadOnly:
    """The asyncio twin of :class:`_DropOnReadOnly`."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ReadOnlyError:
            await self.disconnect()  # type: ignore[attr-defined]
            raise


_DROPPING: dict[type, type] = {}


def _dropping_on_readonly(cls: type[T]) -> type[T]:
    """``cls`` with :class:`_DropOnReadOnly` (or its asyncio twin) mixed in (made once)."""
    made = _DROPPING.get(cls)
    if made is None:
        asyncio_class = issubclass(cls, aioredis.connection.AbstractConnection)
        mixin = _AsyncDropOnReadOnly if asyncio_class else _DropOnReadOnly
        made = _DROPPING[cls] = type(f"ReadOnlyDropping{cls.__name__}", (mixin, cls), {})
    return cast(type[T], made)


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


SCAN_COUNT = 10_000
"""Keys a SCAN step looks at (its COUNT). A SCAN for the provider keys walks every key of
the database, targets included, whatever the pattern: at 100k targets, steps of 1,000 took
100 round trips (60 ms), steps of 10,000 take 10 (40 ms, nearly all of it Redis matching
keys), each holding Redis a few ms, as a ZRANGE of :data:`~resilience._bulk.WHOLE_INDEX`
members does."""

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


class _Scripts(dict[str, Any]):
    """The client's script objects by name, each registered (text read, SHA computed) when
    first used: a short-lived process loads only the scripts its calls need."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client

    def __missing__(self, name: str) -> Any:
        if name not in SCRIPT_NAMES:
            raise KeyError(name)
        script = self[name] = self._client.register_script(load_script(name))
        return script


def _is_a(obj: object, cls: type) -> bool:
    """``isinstance(obj, cls)`` by the class's MRO: redis-py's connection pools are ABCs,
    and an ABC's isinstance of an unrelated class walks every registered subclass (about
    3 ms on the first call of a process)."""
    return cls in type(obj).__mro__


def _is_cluster(client: object) -> bool:
    """Redis Cluster clients route by key and refuse keyless commands such as TIME in a
    pipeline; they are told apart by their node list."""
    return hasattr(client, "get_nodes")


class _Driver(Protocol[OpT_contra]):
    def execute(self, op: OpT_contra) -> Any: ...


def run_sync(flow: Generator[OpT, Any, T], driver: _Driver[OpT]) -> T:
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


class _AsyncDriver(Protocol[OpT_contra]):
    async def execute(self, op: OpT_contra) -> Any: ...


async def run_async(flow: Generator[OpT, Any, T], driver: _AsyncDriver[OpT]) -> T:
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
        self.client: redis.Redis = client or sync_client(engine.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = _Scripts(self.client)
        wait_s = 4 * (engine.settings.redis_socket_timeout + engine.settings.redis_connect_timeout)
        self.batcher = SyncBatcher(self._send_scripts, wait_s)
        self._pubsub: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._flush_wake = threading.Event()
        self._thread_lock = threading.Lock()
        pool = getattr(self.client, "connection_pool", None)
        self._sentinel_pool = pool if _is_a(pool, SentinelConnectionPool) else None
        self._follower: _SyncFollower | None = None
        self.failover = _Failover()
        _LIVE.add(self)

    def _forked(self) -> None:
        """In a forked child the subscriber, flusher and follower threads do not exist:
        start afresh (redis-py resets its own connection pool on the pid change)."""
        self._pubsub = None
        self._stop = threading.Event()
        self._thread = None
        self._flusher = None
        self._follower = None
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
        if self._sentinel_pool is not None:
            if isinstance(op, Poll):
                self.failover.subscriber_moves()
            elif not isinstance(op, Pause):
                self.failover.check()
        if isinstance(op, Script):
            return self.batcher.call(op)
        if isinstance(op, Read):
            return self._read(op)
        if isinstance(op, Fields):
            from ._bulk import BulkReader  # listings only: not loaded by a worker

            BulkReader(self.client, self.engine.keys).each(op.batches, op.fields, op.sink)
            return None
        if isinstance(op, Scan):
            return list(self.client.scan_iter(match=op.pattern, count=SCAN_COUNT))
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

    def _follow(self) -> None:
        """Starts following the sentinels' failover announcements (a Sentinel-managed
        master only; see :func:`follow_master`). A background job like the subscriber and
        the flusher, it starts with the first of them: a breaker that has neither (a call
        or two, ``Breaker.ephemeral``) starts no thread, and relies on redis-py alone."""
        with self._thread_lock:
            pool = self._sentinel_pool
            if self._follower is None and pool is not None and not self._stop.is_set():
                self._follower = _SyncFollower(self, pool)

    # ---- the subscriber thread
    def subscriber_missing(self) -> bool:
        return self._thread is None and not self._stop.is_set()

    def ensure_subscriber(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        self._follow()
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
        self._follow()
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
        # Threads are made and started under the lock, and none after _stop: read under it,
        # a thread another thread is starting right now is a started one (join() refuses
        # a thread not started yet).
        with self._thread_lock:
            flusher, subscriber, follower = self._flusher, self._thread, self._follower
        if flusher is not None:
            flusher.join(timeout=2.0)
        self.flush()
        try:
            self.run(self.engine.release_held())
        except Exception:
            self.engine.log_internal_error("close")
        _wake(self._pubsub)
        if subscriber is not None:
            subscriber.join(timeout=2.0)
        if follower is not None:
            follower.join(timeout_s=2.0)
        self.engine.view.last_pong = 0.0
        if self._owns_client:
            close_sync_client(self.client)


class AsyncIO:
    """asyncio Redis I/O for :class:`resilience.AsyncBreaker` (and async guarded calls).

    Bound to the event loop it was first used in; the subscriber is a task of that loop.
    """

    def __init__(self, engine: Engine, client: aioredis.Redis | None = None) -> None:
        self.engine = engine
        self.client: aioredis.Redis = client or async_client(engine.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = _Scripts(self.client)
        self.batcher = AsyncBatcher(self._send_scripts)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._flush_wake: asyncio.Event | None = None
        self._closed = False
        pool = getattr(self.client, "connection_pool", None)
        self._sentinel_pool = pool if _is_a(pool, AsyncSentinelConnectionPool) else None
        self._follower: _AsyncFollower | None = None
        self.failover = _Failover()
        _LIVE.add(self)

    def _forked(self) -> None:
        self._pubsub = None
        self._task = None
        self._flusher = None
        self._follower = None
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
        if self._sentinel_pool is not None:
            if isinstance(op, Poll):
                self.failover.subscriber_moves()
            elif not isinstance(op, Pause):
                self.failover.check()
        if isinstance(op, Script):
            return await self.batcher.call(op)
        if isinstance(op, Read):
            return await self._read(op)
        if isinstance(op, Fields):
            from ._bulk import each_async  # listings only: not loaded by a worker

            await each_async(self.client, op.batches, op.fields, op.sink)
            return None
        if isinstance(op, Scan):
            return [key async for key in self.client.scan_iter(match=op.pattern, count=SCAN_COUNT)]
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

    def _follow(self) -> None:
        """Starts following the sentinels' failover announcements (see
        :func:`follow_master`), with the subscriber or the flusher (see
        :meth:`SyncIO._follow`)."""
        if self._follower is None and self._sentinel_pool is not None and not self._closed:
            self._follower = _AsyncFollower(self, self._sentinel_pool)

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

    async def _fields(self, op: Fields) -> list[tuple[list[Any], int]]:
        out = []
        for keys in op.batches:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("HMGET", key, *op.fields)
            replies = list(await pipe.execute())
            out.append(([list(r) for r in replies], now_ms(await self.client.time())))
        return out

    def subscriber_missing(self) -> bool:
        return self._task is None and not self._closed

    def ensure_subscriber(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._follow()
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
            self._follow()
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
        followers = self._follower.tasks if self._follower is not None else []
        for task in (self._flusher, self._task, *followers):
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
            await close_async_client(self.client)


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
