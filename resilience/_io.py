"""The thin I/O shells: run the scripts with redis-py, sync and asyncio.

``SyncIO`` and ``AsyncIO`` have the same methods; every decision lives in ``_core``. Each
store call that sits on a provider call's path (``admit``, ``record``) catches Redis errors,
reports them to the core (fail-open bookkeeping) and never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._core import (
    PING_INTERVAL_S,
    SCRIPT_NAMES,
    SUBSCRIPTION_GRACE_S,
    Admission,
    BreakerCore,
    LocalView,
    RecordArgs,
    View,
    load_script,
    parse_event,
    parse_state,
    parse_view,
)
from ._exceptions import StoreUnavailableError
from ._keys import KeySpace, decode_name
from ._settings import Settings
from ._types import Target, TargetState, TransitionEvent

log = logging.getLogger("resilience")

STATES_BATCH = 1000
"""Targets read per pipeline by ``states()``."""

EVENTS_BATCH = 1000
"""Stream entries read per XRANGE by ``events()``."""


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

        # Same commands, routed by slot; typed as Redis for the shell's purposes.
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


def _admin_ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


class SyncIO:
    """Blocking Redis I/O for :class:`resilience.Breaker` (and sync guarded functions)."""

    def __init__(self, core: BreakerCore, client: redis.Redis | None = None) -> None:
        self.core = core
        self.client: redis.Redis = client or _sync_client(core.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = {n: self.client.register_script(load_script(n)) for n in SCRIPT_NAMES}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        _after_fork_in_child(self, SyncIO._forked)

    def _forked(self) -> None:
        """In a forked child the subscriber thread does not exist: start afresh (redis-py
        resets its own connection pool on the pid change)."""
        self._stop = threading.Event()
        self._thread = None
        self._thread_lock = threading.Lock()
        self.core.forked()

    # ---- scripts on the call path (never raise)
    def _run(self, name: str, target: Target, extra: Sequence[str]) -> View:
        reply = self._scripts[name](
            keys=self.core.keys.script_keys(target), args=self.core.argv(target, extra)
        )
        return parse_view(reply)

    def _with_time(self, replies: list[Any]) -> list[Any]:
        """Appends the server time when the pipeline could not carry TIME (Redis Cluster)."""
        if not self._time_in_pipeline:
            replies.append(self.client.time())
        return replies

    def admit(self, target: Target) -> Admission:
        core = self.core
        if core.settings.local_view:
            self.ensure_subscriber()
            local = core.view.decide(target)
            if local is not None:
                return local
        if not core.store_usable():
            return core.store_down_admission(target)
        try:
            view = self._run("allow.lua", target, [core.new_token()])
        except (redis.RedisError, OSError, ValueError) as exc:
            core.store_failed("allow", exc)
            return core.store_down_admission(target)
        core.store_ok()
        return core.admission_from_view(target, view)

    def record(self, target: Target, args: RecordArgs) -> View | None:
        core = self.core
        if not core.store_usable():
            return None
        try:
            view = self._run("record.lua", target, args.argv())
        except (redis.RedisError, OSError, ValueError) as exc:
            core.store_failed("record", exc)
            return None
        core.store_ok()
        core.view.apply_view(target, view)
        core.after_script(target, view)
        return view

    # ---- operator and read paths (raise StoreUnavailableError)
    def admin(self, target: Target, op: str, seconds: float, reason: str) -> View:
        try:
            view = self._run("admin.lua", target, [op, _admin_ms(seconds), reason])
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("admin", exc) from exc
        self.core.view.apply_view(target, view)
        self.core.after_script(target, view)
        return view

    def state(self, target: Target) -> TargetState:
        keys = self.core.keys
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue_batch(pipe, keys, [target], self._time_in_pipeline)
            h, p, now = self._with_time(pipe.execute())
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return parse_state(target, h, p, _now_ms(now))

    def providers(self) -> list[str]:
        keys = self.core.keys
        try:
            found = {
                name
                for key in self.client.scan_iter(match=keys.index_pattern, count=1000)
                if (name := keys.provider_of_index(key)) is not None
            }
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return sorted(found)

    def states(self, provider: str | None = None) -> list[TargetState]:
        keys = self.core.keys
        providers = [provider] if provider is not None else self.providers()
        out: list[TargetState] = []
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue_indexes(pipe, keys, providers)
            targets = _targets_of(providers, pipe.execute() if providers else [])
            for batch in _batches(targets):
                pipe = self.client.pipeline(transaction=False)
                names = _queue_batch(pipe, keys, batch, self._time_in_pipeline)
                out.extend(_states_from(batch, names, self._with_time(pipe.execute())))
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return out

    def events(
        self, cursors: Mapping[str, str], providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        keys = self.core.keys
        names = list(providers) if providers is not None else self.providers()
        out: list[TransitionEvent] = []
        try:
            for name in names:
                start = cursors.get(name, "0-0")
                while True:
                    entries: list[Any] = cast(
                        list[Any],
                        self.client.xrange(
                            keys.events(name), min=f"({start}", max="+", count=EVENTS_BATCH
                        ),
                    )
                    out.extend(parse_event(name, eid, fields) for eid, fields in entries)
                    if len(entries) < EVENTS_BATCH:
                        break
                    start = str(entries[-1][0])
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return out

    # ---- pub/sub subscriber (a daemon thread)
    def ensure_subscriber(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._thread_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._subscribe_forever, name="resilience-subscriber", daemon=True
                )
                self._thread.start()

    def _subscribe_forever(self) -> None:
        view = self.core.view
        channel = self.core.keys.channel
        delay = 0.1
        while not self._stop.is_set():
            pubsub: Any = cast(Any, self.client).pubsub()
            try:
                pubsub.subscribe(channel)
                last_ping = 0.0
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now - last_ping >= PING_INTERVAL_S:
                        pubsub.ping()
                        last_ping = now
                    if view.last_pong and now - view.last_pong > SUBSCRIPTION_GRACE_S + 1:
                        raise redis.ConnectionError("pub/sub ping unanswered")
                    _handle(view, pubsub.get_message(timeout=0.2))
                delay = 0.1
            except Exception as exc:  # any failure: view untrusted until resubscribed
                view.last_pong = 0.0
                view.clear()
                log.debug("resilience: subscriber reconnecting after %s", type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2.0)
        self.core.view.last_pong = 0.0
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()


class AsyncIO:
    """asyncio Redis I/O for :class:`resilience.AsyncBreaker` (and async guarded calls).

    Bound to the event loop it was first used in; the subscriber is a task of that loop.
    """

    def __init__(self, core: BreakerCore, client: aioredis.Redis | None = None) -> None:
        self.core = core
        self.client: aioredis.Redis = client or _async_client(core.settings)
        self._owns_client = client is None
        self._time_in_pipeline = not _is_cluster(self.client)
        self._scripts = {n: self.client.register_script(load_script(n)) for n in SCRIPT_NAMES}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        _after_fork_in_child(self, AsyncIO._forked)

    def _forked(self) -> None:
        self._task = None
        self.core.forked()

    async def _run(self, name: str, target: Target, extra: Sequence[str]) -> View:
        reply = await self._scripts[name](
            keys=self.core.keys.script_keys(target), args=self.core.argv(target, extra)
        )
        return parse_view(reply)

    async def _with_time(self, replies: list[Any]) -> list[Any]:
        if not self._time_in_pipeline:
            replies.append(await self.client.time())
        return replies

    async def admit(self, target: Target) -> Admission:
        core = self.core
        if core.settings.local_view:
            self.ensure_subscriber()
            local = core.view.decide(target)
            if local is not None:
                return local
        if not core.store_usable():
            return core.store_down_admission(target)
        try:
            view = await self._run("allow.lua", target, [core.new_token()])
        except (redis.RedisError, OSError, ValueError) as exc:
            core.store_failed("allow", exc)
            return core.store_down_admission(target)
        core.store_ok()
        return core.admission_from_view(target, view)

    async def record(self, target: Target, args: RecordArgs) -> View | None:
        core = self.core
        if not core.store_usable():
            return None
        try:
            view = await self._run("record.lua", target, args.argv())
        except (redis.RedisError, OSError, ValueError) as exc:
            core.store_failed("record", exc)
            return None
        core.store_ok()
        core.view.apply_view(target, view)
        core.after_script(target, view)
        return view

    async def admin(self, target: Target, op: str, seconds: float, reason: str) -> View:
        try:
            view = await self._run("admin.lua", target, [op, _admin_ms(seconds), reason])
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("admin", exc) from exc
        self.core.view.apply_view(target, view)
        self.core.after_script(target, view)
        return view

    async def state(self, target: Target) -> TargetState:
        keys = self.core.keys
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue_batch(pipe, keys, [target], self._time_in_pipeline)
            h, p, now = await self._with_time(await pipe.execute())
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return parse_state(target, h, p, _now_ms(now))

    async def providers(self) -> list[str]:
        keys = self.core.keys
        found: set[str] = set()
        try:
            async for key in self.client.scan_iter(match=keys.index_pattern, count=1000):
                name = keys.provider_of_index(key)
                if name is not None:
                    found.add(name)
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return sorted(found)

    async def states(self, provider: str | None = None) -> list[TargetState]:
        keys = self.core.keys
        providers = [provider] if provider is not None else await self.providers()
        out: list[TargetState] = []
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue_indexes(pipe, keys, providers)
            targets = _targets_of(providers, await pipe.execute() if providers else [])
            for batch in _batches(targets):
                pipe = self.client.pipeline(transaction=False)
                names = _queue_batch(pipe, keys, batch, self._time_in_pipeline)
                replies = await self._with_time(await pipe.execute())
                out.extend(_states_from(batch, names, replies))
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return out

    async def events(
        self, cursors: Mapping[str, str], providers: Sequence[str] | None = None
    ) -> list[TransitionEvent]:
        keys = self.core.keys
        names = list(providers) if providers is not None else await self.providers()
        out: list[TransitionEvent] = []
        try:
            for name in names:
                start = cursors.get(name, "0-0")
                while True:
                    entries: list[Any] = (
                        await self.client.xrange(
                            keys.events(name), min=f"({start}", max="+", count=EVENTS_BATCH
                        )
                        or []
                    )
                    out.extend(parse_event(name, eid, fields) for eid, fields in entries)
                    if len(entries) < EVENTS_BATCH:
                        break
                    start = str(entries[-1][0])
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailableError("read", exc) from exc
        return out

    def ensure_subscriber(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._subscribe_forever(), name="resilience-subscriber")

    async def _subscribe_forever(self) -> None:
        view = self.core.view
        channel = self.core.keys.channel
        delay = 0.1
        while not self._closed:
            pubsub: Any = self.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                last_ping = 0.0
                while not self._closed:
                    now = time.monotonic()
                    if now - last_ping >= PING_INTERVAL_S:
                        await pubsub.ping()
                        last_ping = now
                    if view.last_pong and now - view.last_pong > SUBSCRIPTION_GRACE_S + 1:
                        raise redis.ConnectionError("pub/sub ping unanswered")
                    _handle(view, await pubsub.get_message(timeout=0.2))
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                view.last_pong = 0.0
                view.clear()
                log.debug("resilience: subscriber reconnecting after %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def aclose(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self.core.view.last_pong = 0.0
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()


def _handle(view: LocalView, msg: Mapping[str, Any] | None) -> None:
    """Applies one pub/sub message to the view. Anything received (a message, the
    subscription's confirmation, the answer to a ping) proves the connection is alive.

    The answer to PING comes as ``["pong", ""]`` (RESP2) or as a plain ``PONG`` (RESP3, which
    redis-py turns into an odd-looking message), so no particular shape is required of it.
    """
    if msg is None:
        return
    kind = msg.get("type")
    if kind == "subscribe":
        view.clear()  # anything announced before this moment may have been missed
    elif kind == "message":
        view.apply_message(str(msg.get("data", "")))
    view.last_pong = time.monotonic()


def _after_fork_in_child(obj: Any, method: Any) -> None:
    """Calls ``method(obj)`` in the child after a fork, while ``obj`` is alive (weakly)."""
    ref = weakref.ref(obj)

    def hook() -> None:
        live = ref()
        if live is not None:
            method(live)

    os.register_at_fork(after_in_child=hook)


def _queue_indexes(pipe: Any, keys: KeySpace, providers: Sequence[str]) -> None:
    for name in providers:
        pipe.zrange(keys.index(name), 0, -1)


def _targets_of(providers: Sequence[str], models: Sequence[Any]) -> list[Target]:
    return [
        Target(name, decode_name(m)) for name, ms in zip(providers, models, strict=True) for m in ms
    ]


def _batches(targets: Sequence[Target]) -> Iterator[Sequence[Target]]:
    for start in range(0, len(targets), STATES_BATCH):
        yield targets[start : start + STATES_BATCH]


def _queue_batch(pipe: Any, keys: KeySpace, batch: Sequence[Target], with_time: bool) -> list[str]:
    """Queues the reads of a batch of targets (hashes, their providers' hashes, and TIME
    unless the client is a cluster's) on a sync or async pipeline; returns the provider
    names in queue order."""
    names = sorted({t.provider for t in batch})
    for t in batch:
        pipe.hgetall(keys.target(t))
    for name in names:
        pipe.hgetall(keys.provider(name))
    if with_time:
        pipe.time()
    return names


def _is_cluster(client: object) -> bool:
    """Redis Cluster clients route by key and refuse keyless commands such as TIME in a
    pipeline; they are told apart by their node list."""
    return hasattr(client, "get_nodes")


def _now_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _states_from(
    batch: Sequence[Target], names: Sequence[str], replies: Sequence[Any]
) -> list[TargetState]:
    now = _now_ms(replies[-1])
    phashes = dict(zip(names, replies[len(batch) : len(batch) + len(names)], strict=True))
    return [
        parse_state(t, h, phashes[t.provider], now)
        for t, h in zip(batch, replies[: len(batch)], strict=True)
        if h  # an index member whose hash expired is skipped
    ]


__all__ = ["AsyncIO", "SyncIO", "client_kwargs"]
