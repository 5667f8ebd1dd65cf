"""Bulk reads of target hashes, for the snapshot job and ``resilience status`` at 100k
targets and more.

``Breaker.states()`` builds a full :class:`~resilience.TargetState` for every target. The
snapshot job needs every target but only as rows for PostgreSQL, and ``status`` needs a few
fields of every target (to filter, sort and count) and the full state of one page. This
module reads the fields its caller names, provider by provider, batch by batch, so memory
does not grow with the number of targets:

- providers: :meth:`Breaker.providers` (a SCAN of the provider keys);
- the models of a provider: its index with one ZRANGE up to :data:`WHOLE_INDEX` members,
  else in ZRANGE slices of ranks from the newest member down, then the members written
  since the slices began (:meth:`BulkReader.members` says why nothing present throughout
  is missed; a member met twice is dropped). A large index keeps one provider's member
  names in memory while it is read;
- the fields: one HMGET per target, :data:`BATCH` targets and a TIME (server clock, ms)
  per round trip. An index member whose hash has expired (every field missing) is dropped,
  as ``states()`` drops it.

On a single Redis server the HMGETs of a batch are written in the Redis protocol directly
(the field list is encoded once) on a connection of the client's pool, and the next batch
is sent before the replies of the previous one are read, so Redis works while Python
parses. On Redis Cluster a redis-py cluster pipeline routes each batch by slot instead.
``Breaker.states()`` hands each batch to its parser as it arrives (:meth:`BulkReader.each`),
one stream of batches over every provider; :func:`each_async` does the same on a
``redis.asyncio`` client for ``AsyncBreaker.states()``.

Errors are redis-py's (``redis.RedisError``, ``OSError``); callers translate them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from ._keys import KeySpace, decode_name
from ._wire import text, to_int

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - a dependency (redis[hiredis]); redis-py then parses
    hiredis = None

if TYPE_CHECKING:
    from ._breaker import Breaker

__all__ = [
    "BATCH",
    "CLOCK_MARGIN_MS",
    "REDIS_ERRORS",
    "WHOLE_INDEX",
    "Batch",
    "BulkReader",
    "Sink",
    "each_async",
    "gc_paused",
    "reader_of",
]

BATCH = 1000
"""Targets per round trip."""

WHOLE_INDEX = 10_000
"""An index of at most this many members is read with one ZRANGE (a few ms of Redis time);
a larger one in ZRANGE slices of this many ranks, so no single command holds Redis long
(ZSCAN pages would cost five to ten times the Redis time)."""

CLOCK_MARGIN_MS = 1000
"""How much earlier than the server's clock at its start a sliced index read looks for
members written meanwhile (ms): room for the clocks of Redis Cluster nodes to disagree."""

Values = list[Any]
"""One HMGET reply: the named fields in order, ``None`` where missing (str otherwise)."""


class Batch(NamedTuple):
    """The fields of up to :data:`BATCH` targets of one provider.

    Attributes:
        provider: the provider (decoded name).
        members: the encoded model names (index members), in the order of ``values``.
        values: per target, the fields asked for, in that order.
        now_ms: Redis server time when the batch was read (ms since the epoch).
    """

    provider: str
    members: list[str]
    values: list[Values]
    now_ms: int

    def models(self) -> list[str]:
        """The decoded model names, in order."""
        return [decode_name(m) for m in self.members]


def _arg(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


_TIME = b"*1\r\n$4\r\nTIME\r\n"
_READ_SIZE = 1 << 16


def _now_ms(reply: Any) -> int:
    seconds, micros = reply
    return to_int(seconds) * 1000 + to_int(micros) // 1000


class _Requests:
    """Batches of keys as requests in the Redis protocol: an HMGET of ``fields`` per key
    (the field list encoded once), then a TIME."""

    __slots__ = ("head", "tail")

    def __init__(self, fields: Sequence[str]) -> None:
        self.head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        self.tail = b"".join(_arg(f) for f in fields)

    def of(self, keys: Sequence[str]) -> bytes:
        head, tail = self.head, self.tail
        parts = [
            b"%s$%d\r\n%s\r\n%s" % (head, len(e), e, tail)
            for e in (key.encode("utf-8") for key in keys)
        ]
        parts.append(_TIME)
        return b"".join(parts)


Sink = Callable[[int, list[Values], int], None]
"""Takes one batch's replies: ``sink(i, rows, now_ms)``, ``i`` the batch's position."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (when it runs), then running again, whatever
    happens meanwhile. A listing's replies and states form no cycle, and the collections
    that thousands of them trigger would scan the growing list of states again and again:
    a sixth of the time of ``states()`` at 100k targets. Under asyncio the other tasks run
    without it meanwhile (about a second at 100k targets)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class BulkReader:
    """Reads named fields of many targets (see the module docstring).

    Args:
        client: the breaker's redis-py client (``redis.Redis`` or ``RedisCluster``).
        keys: the key space of the key prefix.
        batch: targets per round trip.
        whole_index: the largest index read with one ZRANGE, and the slice of a larger one
            (default :data:`WHOLE_INDEX`).
    """

    def __init__(
        self, client: Any, keys: KeySpace, batch: int = BATCH, whole_index: int | None = None
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.client = client
        self.keys = keys
        self.batch = batch
        self.cluster = hasattr(client, "get_nodes")  # as resilience._io tells them apart
        self.whole_index = WHOLE_INDEX if whole_index is None else whole_index

    # ---- members
    def members(self, provider: str) -> Iterator[list[str]]:
        """The encoded models of ``provider``'s index, page by page (each once)."""
        key = self.keys.index(provider)
        if int(self.client.zcard(key)) <= self.whole_index:
            members = [text(m) for m in self.client.zrange(key, 0, -1)]
            for i in range(0, len(members), self.batch):
                yield members[i : i + self.batch]
            return
        # A large index, in slices of ranks from the newest down, then every member written
        # since the slices began. Scores only grow (last write, server ms) and only the oldest
        # members are removed, so a member no write touched during the scan only moves to
        # later ranks and is met by some slice; one written meanwhile is in the last read.
        seen: set[str] = set()
        began = _now_ms(self.client.time()) - CLOCK_MARGIN_MS
        start = 0
        while True:
            ranks = self.client.zrange(key, start, start + self.whole_index - 1, desc=True)
            yield from self._fresh(ranks, seen)
            if len(ranks) < self.whole_index:
                break
            start += self.whole_index
        yield from self._fresh(self.client.zrange(key, began, "+inf", byscore=True), seen)

    def _fresh(self, members: Sequence[Any], seen: set[str]) -> Iterator[list[str]]:
        fresh = []
        for member in members:
            m = text(member)
            if m not in seen:
                seen.add(m)
                fresh.append(m)
        for i in range(0, len(fresh), self.batch):
            yield fresh[i : i + self.batch]

    def count(self, provider: str) -> int:
        """Members of ``provider``'s index (targets, a few of which may have expired)."""
        return int(self.client.zcard(self.keys.index(provider)))

    # ---- fields
    def read(
        self,
        provider: str,
        fields: Sequence[str],
        members: Iterable[Sequence[str]] | None = None,
    ) -> Iterator[Batch]:
        """The ``fields`` of every target of ``provider`` (or of the encoded ``members``,
        given in pages), batch by batch."""
        pages = self.members(provider) if members is None else members
        tag = f"{self.keys.tag(provider)}:t:"

        def batches() -> Iterator[list[str]]:
            for page in pages:
                for i in range(0, len(page), self.batch):
                    yield list(page[i : i + self.batch])

        width = len(fields)
        sent: deque[list[str]] = deque()  # pages whose keys went out, in order

        def keyed() -> Iterator[list[str]]:
            for chunk in batches():
                sent.append(chunk)
                yield [tag + m for m in chunk]

        for replies, now in self.fields(keyed(), fields):
            chunk = sent.popleft()
            kept = [(m, v) for m, v in zip(chunk, replies, strict=True) if v.count(None) < width]
            yield Batch(provider, [m for m, _ in kept], [v for _, v in kept], now)

    def fields(
        self, batches: Iterable[Sequence[str]], fields: Sequence[str]
    ) -> Iterator[tuple[list[Values], int]]:
        """The ``fields`` of every key (HMGET), batch by batch of keys, each batch with the
        server's time (ms) when it was read: what ``states()``, ``status`` and the snapshot
        read of many target hashes."""
        read = self._pipelined if self.cluster else self._packed
        return read(iter(batches), fields)

    def each(self, batches: Sequence[Sequence[str]], fields: Sequence[str], sink: Sink) -> None:
        """:meth:`fields`, each batch handed to ``sink`` as it arrives (the next batch is
        already on its way, so Redis works while ``sink`` does), with the cyclic garbage
        collector paused (:func:`gc_paused`). What ``states()`` reads; :func:`each_async`
        is its asyncio twin."""
        replies = self.fields(batches, fields)
        try:
            with gc_paused():
                for i, (rows, now) in enumerate(replies):
                    sink(i, rows, now)
        finally:
            close = getattr(replies, "close", None)
            if close is not None:  # a sink that raised: the read is given up
                close()

    def hashes(self, keys: Sequence[str], fields: Sequence[str]) -> tuple[list[Values], int]:
        """The ``fields`` of a few whole keys (provider hashes, say), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("HMGET", key, *fields)
        replies = list(pipe.execute()) if keys else []
        return [list(r) for r in replies], _now_ms(self.client.time())

    def _pipelined(
        self, batches: Iterator[Sequence[str]], fields: Sequence[str]
    ) -> Iterator[tuple[list[Values], int]]:
        for chunk in batches:
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.execute_command("HMGET", key, *fields)
            replies = [list(r) for r in pipe.execute()]
            yield replies, _now_ms(self.client.time())

    def _packed(
        self, batches: Iterator[Sequence[str]], fields: Sequence[str]
    ) -> Iterator[tuple[list[Values], int]]:
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py < 5.3 wants a command name
            conn = pool.get_connection("HMGET")
        # Every reply of the exchange is read by one hiredis reader of ours when the
        # connection has its socket where redis-py keeps it (else by redis-py itself).
        requests = _Requests(fields)
        reader = None
        if hiredis is not None and getattr(conn, "_sock", None) is not None:
            reader = hiredis.Reader(encoding="utf-8")
        done = False
        try:
            ahead: int | None = None  # keys of the batch sent and not read yet
            for chunk in batches:
                conn.send_packed_command([requests.of(chunk)], check_health=False)
                if ahead is not None:
                    yield self._replies(conn, reader, ahead)
                ahead = len(chunk)
            if ahead is not None:
                yield self._replies(conn, reader, ahead)
            done = True
        finally:
            if not done:  # replies may be left unread: the connection cannot be reused
                with contextlib.suppress(Exception):
                    conn.disconnect()
            pool.release(conn)

    @staticmethod
    def _replies(conn: Any, reader: Any, n: int) -> tuple[list[Values], int]:
        if reader is None:
            rows = [conn.read_response() for _ in range(n)]
            return rows, _now_ms(conn.read_response())
        out: list[Any] = []
        while not _take(reader, out, n + 1):
            data = conn._sock.recv(_READ_SIZE)
            if not data:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(data)
        return out[:n], _now_ms(out[n])


def _take(reader: Any, out: list[Any], n: int) -> bool:
    """Moves the replies ``reader`` holds to ``out`` until it has ``n``; True when it has.
    Replies are read straight from the socket and parsed by hiredis, without redis-py's
    per-reply bookkeeping (a third of the time of a snapshot's reads); ``reader`` lives as
    long as the exchange: it keeps what arrived of the next batch's replies."""
    gets, append = reader.gets, out.append
    while len(out) < n:
        reply = gets()
        if reply is False:
            return False
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        append(reply)
    return True


async def each_async(
    client: Any, batches: Sequence[Sequence[str]], fields: Sequence[str], sink: Sink
) -> None:
    """:meth:`BulkReader.each` on a ``redis.asyncio`` client: the same requests on one
    connection of its pool, the next batch sent before ``sink`` takes the previous one's
    replies, read by hiredis from the connection's stream (by redis-py where the stream is
    not where redis-py keeps it). On Redis Cluster, a pipeline per batch."""
    if hasattr(client, "get_nodes"):
        with gc_paused():
            for i, keys in enumerate(batches):
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.execute_command("HMGET", key, *fields)
                rows = [list(r) for r in await pipe.execute()]
                sink(i, rows, _now_ms(await client.time()))
        return
    pool = client.connection_pool
    try:
        conn = await pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        conn = await pool.get_connection("HMGET")
    requests = _Requests(fields)
    stream: Any = getattr(conn, "_reader", None)
    reader = None
    if hiredis is not None and stream is not None:
        reader = hiredis.Reader(encoding="utf-8")
    timeout = getattr(conn, "socket_timeout", None)

    async def replies(n: int) -> tuple[list[Values], int]:
        if reader is None:
            rows = [await conn.read_response() for _ in range(n)]
            return rows, _now_ms(await conn.read_response())
        out: list[Any] = []
        while not _take(reader, out, n + 1):
            try:
                data = await asyncio.wait_for(stream.read(_READ_SIZE), timeout)
            except asyncio.TimeoutError as exc:  # not an OSError before Python 3.11
                raise redis.TimeoutError("Timeout reading from Redis") from exc
            if not data:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(data)
        return out[:n], _now_ms(out[n])

    done = False
    try:
        with gc_paused():
            ahead: tuple[int, int] | None = None  # the batch sent and not read yet, its keys
            for i, chunk in enumerate(batches):
                await conn.send_packed_command([requests.of(chunk)], check_health=False)
                if ahead is not None:
                    sink(ahead[0], *(await replies(ahead[1])))
                ahead = (i, len(chunk))
            if ahead is not None:
                sink(ahead[0], *(await replies(ahead[1])))
        done = True
    finally:
        if not done:  # replies may be left unread: the connection cannot be reused
            with contextlib.suppress(Exception):
                await conn.disconnect()
        await pool.release(conn)


def reader_of(breaker: Breaker, batch: int | None = None) -> BulkReader:
    """A :class:`BulkReader` on a breaker's own client and key space (``batch`` targets per
    round trip, default :data:`BATCH`). The successes the breaker still holds summed are
    written first, so what it reads includes this process's own outcomes (as
    ``Breaker.states()`` does)."""
    io = breaker._sync_io()
    if len(breaker._engine.pending):
        io.flush()
    return BulkReader(io.client, breaker._engine.keys, batch or BATCH)


REDIS_ERRORS = (redis.RedisError, OSError)
"""What a bulk read raises when Redis fails."""
