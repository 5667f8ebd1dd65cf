"""The snapshot job: copies the state of every target and the new transitions from Redis to
PostgreSQL, in one transaction.

One snapshot, all or nothing:

1. ``BEGIN``; a transaction-scoped advisory lock (per schema and key prefix) serialises
   writers, so two jobs that both believe they lead still never count a delta twice.
2. Read from PostgreSQL the per-provider event cursors, and whether a keyframe is due (the
   newest keyframe of the key prefix is ``snapshot_keyframe_seconds`` old, or there is none).
3. Provider by provider, read every target's fields from Redis batch by batch
   (:mod:`resilience._bulk`: the provider's index, pipelined HMGET of :data:`TARGET_FIELDS`)
   and compare each target's digest (8 bytes of BLAKE2b over the values its state row holds)
   with the one its state row keeps; ``COPY`` only the targets that differ (every target in
   a keyframe) into a temporary table, and the targets no longer in Redis into another. No
   per-target object is built on the way; memory follows the largest provider (its
   digests), not the number of targets. Then the events newer than the cursors.
4. Set-based statements over the rows copied, each joined with its
   ``model_compatibility_hints`` row by primary key: upsert the rows that changed (and only
   those); insert a history row for each target whose counters, state or blacklist changed
   (for every target in a keyframe); mark targets gone from Redis as closed, each with one
   history row saying so; insert the transitions (``ON CONFLICT DO NOTHING`` on the Redis
   event id) and advance the cursors. ``COMMIT``. PostgreSQL's work follows the targets
   that changed.

A crash, a Redis error or a PostgreSQL error anywhere before the commit leaves nothing; the
next run re-reads the same events from the cursors it finds (exactly once).

Change-only history (migration 0006): the rows a snapshot leaves out are those whose every
column would repeat the target's previous row with zero increments, so sums of increments
over any period are what one row per target per snapshot gives, and the value of a target at
a time is its newest row at or before it, never older than the newest keyframe before it
(``model_compatibility_history_at(at)`` in SQL). :func:`prune` keeps that keyframe.

Counter resets: the Redis counters restart when an entry expires or is reset (its ``since``
changes) or vanishes. Like Prometheus ``rate()``, the increment of a counter is
``raw - last_raw`` when the entry is the same and did not go down, else ``raw``; the lifetime
totals ``error_count`` / ``success_count`` in PostgreSQL only grow. The rule is the SQL of
``_CHANGES``, next to the previous raw counters it needs.

Leader election: :class:`LeaderLock` is a Redis key (``KeySpace.snapshot_lock``) holding a
random token with a short lease (:data:`LEADER_LEASE_S`), taken with ``SET NX PX`` and
renewed or released only by its holder (compare-and-set scripts). A thread renews the lease
while its holder runs, so a live holder keeps the lock however long a snapshot takes and a
killed one loses it within seconds. ``run_every`` keeps the lock across intervals while it
leads; the other replicas try again each interval and take over once the lease lapses. A
one-shot snapshot that finds the lock held does nothing and says so
(``SnapshotResult.written`` False; the CLI exits 6).

Each key prefix (application) has its own leader lock, its own rows in every table (the
prefix leads every key of the history, migration 0005) and its own advisory lock, so
applications sharing a schema never mix or wait for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import blake2b
from types import FrameType
from typing import Any, Literal

import redis
from psycopg import sql

from ._breaker import Breaker
from ._bulk import REDIS_ERRORS, Batch, reader_of
from ._db import (
    Connection,
    DatabaseError,
    MigrationRequiredError,
    connect,
    require_schema,
    translate_errors,
)
from ._exceptions import ExitCode, ResilienceError, StoreUnavailableError
from ._io import close_sync_client, sync_client
from ._keys import KeySpace, decode_name
from ._metrics import observe_snapshot
from ._redact import redact, redact_url
from ._settings import Settings
from ._states import TransitionEvent
from ._wire import provider_block, shown_state, to_int

__all__ = [
    "LEADER_LEASE_S",
    "LeaderLock",
    "PruneResult",
    "SnapshotError",
    "SnapshotHealth",
    "SnapshotResult",
    "prune",
    "run_every",
    "snapshot_health",
    "take_snapshot",
]

log = logging.getLogger("resilience")

LEADER_LEASE_S = 10.0
"""Lease of the snapshot leader lock (s). Its holder renews it every third of the lease for
as long as it runs (one snapshot, or the whole ``--every`` loop), so a snapshot may take
any time, while a killed holder blocks the other replicas and the next cron run for at most
this long."""


class SnapshotError(ResilienceError):
    """A snapshot failed; nothing of it was written to PostgreSQL.

    Attributes:
        service: ``"redis"`` or ``"postgres"``: which one failed.
    """

    def __init__(self, service: Literal["redis", "postgres"], message: str) -> None:
        self.service = service
        self.exit_code = ExitCode.REDIS if service == "redis" else ExitCode.POSTGRES
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """What one snapshot did.

    Attributes:
        written: False when another replica holds the leader lock and nothing was done.
        targets: targets read from Redis.
        transitions: transitions inserted (events already in PostgreSQL are not counted).
        new_targets: targets seen for the first time.
        counter_resets: targets whose Redis counters restarted since the previous snapshot.
        duration_s: wall time of the snapshot, in seconds (Redis reads and the commit).
        snapshot_id: the ``resilience_snapshots.id`` of the snapshot, or None.
        taken_at: the snapshot time (PostgreSQL transaction time, aware), or None.
        events_lost: transitions the capped Redis event log dropped before this snapshot
            could copy them (the job was down too long for ``events_max_len``); logged as a
            warning and kept in ``resilience_snapshots.events_lost``.
        history_rows: rows written to ``model_compatibility_history``: one per target whose
            counters or state changed (one per target in a keyframe), and one per target
            gone from Redis.
        hint_rows: rows of ``model_compatibility_hints`` inserted or updated (targets that
            changed in any way, and targets gone from Redis).
        keyframe: True when this snapshot wrote a history row for every target
            (``snapshot_keyframe_seconds`` after the previous keyframe).
    """

    written: bool
    targets: int = 0
    transitions: int = 0
    new_targets: int = 0
    counter_resets: int = 0
    duration_s: float = 0.0
    snapshot_id: int | None = None
    taken_at: datetime | None = None
    events_lost: int = 0
    history_rows: int = 0
    hint_rows: int = 0
    keyframe: bool = False

    def describe(self) -> str:
        """One line for the CLI and logs."""
        if not self.written:
            return "snapshot skipped: another replica holds the snapshot lock"
        return (
            f"snapshot {self.snapshot_id}{' (keyframe)' if self.keyframe else ''}: "
            f"{self.targets} targets ({self.new_targets} new, {self.counter_resets} counter "
            f"resets), {self.history_rows} history rows, {self.hint_rows} state rows, "
            f"{self.transitions} transitions in {self.duration_s:.2f}s"
            + (
                f"; {self.events_lost} transitions lost from the capped Redis log"
                if self.events_lost
                else ""
            )
        )


# --------------------------------------------------------------------------- leader lock

_ACQUIRE_LUA = """
-- Takes or renews the snapshot leader lock.
-- KEYS[1]: the lock key. ARGV[1]: this holder's token. ARGV[2]: lease (ms).
-- Returns 1 when the caller holds the lock afterwards, else 0. One script, so the check and
-- the write cannot interleave with another replica's.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE_LUA = """
-- Releases the snapshot leader lock if the caller still holds it.
-- KEYS[1]: the lock key. ARGV[1]: this holder's token. Returns 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLock:
    """The snapshot leader lock: a Redis key with a random token and a lease.

    Args:
        settings: Redis URL, timeouts and key prefix.
        ttl_s: lease in seconds; a holder that dies loses the lock after this.
        client: an existing ``redis.Redis`` (default: one made from the settings).
    """

    def __init__(
        self, settings: Settings, ttl_s: float = LEADER_LEASE_S, client: redis.Redis | None = None
    ) -> None:
        if not ttl_s > 0:
            raise ValueError("lock ttl_s must be > 0")
        self.key = KeySpace(settings.key_prefix).snapshot_lock
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.token = uuid.uuid4().hex
        self.held = False
        self._settings = settings
        self._owns_client = client is None
        self._client: redis.Redis = client or sync_client(settings)  # a cluster's too
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)

    def acquire(self) -> bool:
        """Takes the lock, or renews it when held; True when this holder leads now.

        Raises:
            SnapshotError: Redis is unreachable.
        """
        try:
            self.held = bool(self._acquire(keys=[self.key], args=[self.token, self.ttl_ms]))
        except (redis.RedisError, OSError) as exc:
            self.held = False
            raise _redis_error(self._settings, "taking the snapshot lock", exc) from exc
        return self.held

    @contextlib.contextmanager
    def renewing(self) -> Iterator[None]:
        """While the block runs, a daemon thread renews the lease every third of it (or
        takes the lock when it is free). A renewal that finds another holder stops; a Redis
        error is logged and retried at the next tick."""
        stop = threading.Event()
        every = self.ttl_ms / 3000.0

        def renew() -> None:
            while not stop.wait(every):
                try:
                    was = self.held
                    if not self.acquire() and was:
                        log.warning("resilience snapshot: another replica took the leader lock")
                except SnapshotError as exc:
                    log.warning("resilience snapshot: could not renew the leader lock: %s", exc)

        thread = threading.Thread(target=renew, name="resilience-snapshot-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Gives the lock up if this holder still has it (errors are ignored: the lease
        expires by itself)."""
        if self.held:
            with contextlib.suppress(redis.RedisError, OSError):
                self._release(keys=[self.key], args=[self.token])
            self.held = False

    def close(self) -> None:
        """Releases the lock and closes the client this lock made."""
        self.release()
        if self._owns_client:
            close_sync_client(self._client)

    def __enter__(self) -> LeaderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redis_error(settings: Settings, action: str, exc: BaseException) -> SnapshotError:
    text = " ".join(str(exc).split())
    return SnapshotError(
        "redis",
        f"snapshot failed, nothing written: Redis unavailable while {action} "
        f"({redact_url(settings.redis_url)}): {type(exc).__name__}: {redact(text, 300)}",
    )


# --------------------------------------------------------------------------- the snapshot


def _xact_lock_key(schema: str, prefix: str) -> int:
    """Serialises the snapshots of one application into one schema (other applications'
    snapshots touch other rows and may run at the same time)."""
    key = f"resilience.snapshot:{schema}:{prefix}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _split_id(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL or lone surrogates; replace them, keep the rest."""
    if value is None:
        return None
    if "\x00" not in value:
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            pass
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


# --------------------------------------------------------------------------- reading Redis

TARGET_FIELDS = (
    "since",
    "state",
    "open_until",
    "lease_until",
    "reason",
    "error_count",
    "success_count",
    "consecutive_errors",
    "trips",
    "gen",
    "manual",
    "last_error_time",
    "last_error_kind",
    "last_error_message",
    "last_success_time",
    "endpoint_hint",
    "compat",
    "compat_at",
    "compat_message",
)
"""The target hash fields a snapshot reads (docs/state-machine.md), in this order."""

PROVIDER_FIELDS = ("state", "open_until", "lease_until", "reason")
"""The provider hash fields a snapshot reads."""

_STATE_COLUMNS = (
    "provider_id",
    "model_id",
    "state",
    "is_blacklisted",
    "blacklisted_until_ms",
    "raw_error_count",
    "raw_success_count",
    "since_ms",
    "consecutive_errors",
    "trips",
    "last_error_ms",
    "last_error_kind",
    "last_error_message",
    "last_success_ms",
    "endpoint_hint",
    "reason",
    "manual",
    "provider_blocked_until_ms",
    "generation",
    "compat_hints",
    "compat_at_ms",
    "compat_message",
    "digest",
)
"""Columns of ``snap_in``: one row per target as read, times in ms (0: none)."""


def _name(encoded: str) -> str:
    """A decoded index member, as PostgreSQL can store it."""
    return encoded if "%" not in encoded else (_text(decode_name(encoded)) or "")


def _nul(value: str) -> str:
    """A text field read from Redis (valid UTF-8) holding NUL, escaped as :func:`_text`
    escapes it."""
    return value.replace("\x00", "\\x00")


_UNSEEN = object()


def _state_rows(
    batch: Batch,
    provider_id: str,
    provider: Sequence[Any] | None,
    known: dict[str, bytes | None],
    keyframe: bool,
) -> Iterator[tuple[Any, ...]]:
    """``snap_in`` rows of one batch: targets whose digest differs from the one their state
    row holds in ``known`` (model -> digest; each target seen is removed from it), or every
    target in a ``keyframe``.

    ``provider`` is the provider hash's :data:`PROVIDER_FIELDS` (None when it has none). The
    state, the blacklist and its end follow :func:`resilience._wire.shown_state`, as
    ``Breaker.state()`` shows them; numbers follow :func:`resilience._wire.to_int`
    (``int()`` first, the same rule, inlined: this loop runs once per target). The digest
    covers every value of the row (8 bytes of BLAKE2b): a target whose digest did not change
    has nothing new to write, and costs no row in PostgreSQL.
    """
    now = batch.now_ms
    if provider is None:
        p_until, p_reason = None, None
    else:
        p_until = provider_block(provider[0], provider[1], provider[2], now)
        p_reason = provider[3]
    for member, v in zip(batch.members, batch.values, strict=True):
        (since, state, open_until, lease_until, reason, errors, successes, consecutive, trips,
         gen, manual, error_at, kind, message, success_at, hint, compat, compat_at,
         compat_message) = v  # fmt: skip
        shown, blacklisted, until, why = shown_state(
            state, open_until, lease_until, reason, p_until, p_reason, now
        )
        if not blacklisted:
            until = 0
        model = member if "%" not in member else _name(member)
        digest = blake2b(
            f"{shown}\x1f{blacklisted}\x1f{until}\x1f{why}\x1f{p_until}\x1f{since}\x1f"
            f"{errors}\x1f{successes}\x1f{consecutive}\x1f{trips}\x1f{gen}\x1f{manual}\x1f"
            f"{error_at}\x1f{kind}\x1f{message}\x1f{success_at}\x1f{hint}\x1f{compat}\x1f"
            f"{compat_at}\x1f{compat_message}".encode("utf-8", "surrogatepass"),
            digest_size=8,
        ).digest()
        if known.pop(model, _UNSEEN) == digest and not keyframe:
            continue
        n: tuple[int, ...]
        try:
            n = (int(errors or 0), int(successes or 0), int(since or 0), int(consecutive or 0),
                 int(trips or 0), int(error_at or 0), int(success_at or 0), int(manual or 0),
                 int(gen or 0), int(compat_at or 0))  # fmt: skip
        except (ValueError, TypeError):
            n = tuple(
                to_int(x)
                for x in (errors, successes, since, consecutive, trips, error_at, success_at,
                          manual, gen, compat_at)
            )  # fmt: skip
        yield (
            provider_id,
            model,
            shown,
            blacklisted,
            until,
            n[0] if n[0] > 0 else 0,
            n[1] if n[1] > 0 else 0,
            n[2],
            n[3],
            n[4],
            n[5],
            (kind if "\x00" not in kind else _nul(kind)) if kind else None,
            (message if "\x00" not in message else _nul(message)) if message else None,
            n[6],
            (hint if "\x00" not in hint else _nul(hint)) if hint else None,
            (why if "\x00" not in why else _nul(why)) if why else None,
            n[7] == 1,
            p_until or 0,
            n[8],
            compat or "",  # encodings hold no NUL (CompatHint.encode quotes every value)
            n[9],
            (compat_message if "\x00" not in compat_message else _nul(compat_message))
            if compat_message
            else None,
            digest,
        )


def _copy_states(conn: Connection, breaker: Breaker, keyframe: bool) -> tuple[int, int]:
    """Streams the rows of the targets that changed (every target in a ``keyframe``) from
    Redis into ``snap_in``, provider by provider, batch by batch, and the targets gone from
    Redis into ``snap_gone``. Returns (targets read, rows written to ``snap_in``).

    Per provider, the digests its state rows hold are read first (one provider's at a time:
    memory follows the largest provider, not the number of targets)."""
    reader = reader_of(breaker)
    keys = reader.keys
    prefix = breaker.settings.key_prefix
    targets = written = 0
    copy_in = sql.SQL("COPY pg_temp.snap_in ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, _STATE_COLUMNS))
    )
    seen: list[str] = []
    try:
        providers = breaker.providers()
        blocks, _now = reader.hashes([keys.provider(p) for p in providers], PROVIDER_FIELDS)
        for name, block in zip(providers, blocks, strict=True):
            provider = block if any(x is not None for x in block) else None
            provider_id = _text(name) or ""
            seen.append(provider_id)
            known: dict[str, bytes | None] = dict(
                conn.execute(_KNOWN_DIGESTS, {"prefix": prefix, "provider": provider_id}).fetchall()
            )
            with conn.cursor() as cur, cur.copy(copy_in) as copy:
                for batch in reader.read(name, TARGET_FIELDS):
                    targets += len(batch.members)
                    for row in _state_rows(batch, provider_id, provider, known, keyframe):
                        copy.write_row(row)
                        written += 1
            if known:  # in its state rows, no longer in Redis
                with conn.cursor() as cur, cur.copy(_COPY_GONE) as copy:
                    for model in known:
                        copy.write_row((provider_id, model))
    except REDIS_ERRORS as exc:
        raise _redis_error(breaker.settings, "reading states", exc) from exc
    except StoreUnavailableError as exc:
        raise _redis_error(breaker.settings, "reading states", exc) from exc
    conn.execute(_GONE_PROVIDERS, {"prefix": prefix, "seen": seen})
    return targets, written


def _read_events(breaker: Breaker, cursors: dict[str, str]) -> list[TransitionEvent]:
    try:
        return breaker.events(cursors)
    except StoreUnavailableError as exc:
        raise _redis_error(breaker.settings, "reading events", exc) from exc


# --------------------------------------------------------------------------- writing PostgreSQL

_CREATE_TEMP = """
CREATE TEMP TABLE snap_in (
    provider_id text NOT NULL, model_id text NOT NULL, state text NOT NULL,
    is_blacklisted boolean NOT NULL, blacklisted_until_ms bigint NOT NULL,
    raw_error_count bigint NOT NULL, raw_success_count bigint NOT NULL, since_ms bigint NOT NULL,
    consecutive_errors integer NOT NULL, trips integer NOT NULL, last_error_ms bigint NOT NULL,
    last_error_kind text, last_error_message text, last_success_ms bigint NOT NULL,
    endpoint_hint text, reason text, manual boolean NOT NULL,
    provider_blocked_until_ms bigint NOT NULL, generation bigint NOT NULL,
    compat_hints text NOT NULL, compat_at_ms bigint NOT NULL, compat_message text,
    digest bytea NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE snap_gone (provider_id text NOT NULL, model_id text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE snap_ev (
    provider_id text NOT NULL, event_ms bigint NOT NULL, event_seq bigint NOT NULL,
    model_id text, from_state text NOT NULL, to_state text NOT NULL, kind text NOT NULL,
    reason text NOT NULL, generation bigint NOT NULL, occurred_at timestamptz NOT NULL,
    open_until timestamptz, event_n bigint
) ON COMMIT DROP;
"""

# For this transaction only: memory for the temporary tables (larger ones spill to disk, so
# PostgreSQL's memory stays bounded), and the rows read joined with their state rows through
# the primary key, one lookup each (the time follows the rows that changed, not the size of
# the table, and does not hang on the table's statistics, which a first snapshot of 100k
# targets leaves stale until autovacuum runs).
_SESSION = (
    "SET LOCAL temp_buffers = '64MB'; SET LOCAL work_mem = '64MB';"
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
)

_MAX_MS = 253402300800000  # 10000-01-01: later times are not times (ms_to_dt gives None)


def _ts(column: str) -> str:
    """SQL for a time in ms (0: none) as timestamptz, as ``_wire.ms_to_dt`` reads it."""
    return (
        f"CASE WHEN {column} > 0 AND {column} < {_MAX_MS}"
        f" THEN timestamptz 'epoch' + {column} * interval '1 millisecond' END"
    )


# Every statement below names the key prefix (%(prefix)s): each application's rows are its own.

_KNOWN_DIGESTS = """
SELECT model_id, snapshot_digest FROM model_compatibility_hints
WHERE key_prefix = %(prefix)s AND provider_id = %(provider)s AND in_redis
"""

_COPY_GONE = "COPY pg_temp.snap_gone (provider_id, model_id) FROM STDIN"

# Every target of a provider with no key left in Redis is gone too.
_GONE_PROVIDERS = """
INSERT INTO pg_temp.snap_gone (provider_id, model_id)
SELECT provider_id, model_id FROM model_compatibility_hints
WHERE key_prefix = %(prefix)s AND in_redis AND NOT provider_id = ANY(%(seen)s::text[])
"""

# The targets read (those whose digest changed, every one in a keyframe), each compared with
# its state row: new ones, changed ones (counters, state, hint or any other column of the
# state row). The increments follow Prometheus rate(): the counter's growth when the Redis
# entry is the same one (same `since`, still in Redis) and did not go down, else the whole
# counter (it restarted). history_changed: a column of the history row differs from the
# previous one; other_changed: only the state row changes. A name seen twice (two names
# PostgreSQL stores alike) keeps one row.
_CHANGES = f"""
CREATE TEMP TABLE snap_ch ON COMMIT DROP AS
SELECT DISTINCT ON (provider_id, model_id) * FROM (
  SELECT n.*, h.provider_id IS NULL AS is_new,
    (h.provider_id IS NOT NULL AND (NOT h.in_redis OR n.redis_since IS DISTINCT FROM h.redis_since
     OR n.raw_error_count < h.raw_error_count OR n.raw_success_count < h.raw_success_count))
      AS is_reset,
    d.error_delta, d.success_delta,
    coalesce(h.error_count, 0) + d.error_delta AS error_count,
    coalesce(h.success_count, 0) + d.success_delta AS success_count,
    (h.provider_id IS NULL OR NOT h.in_redis OR d.error_delta > 0 OR d.success_delta > 0
     OR (n.state, n.is_blacklisted, n.blacklisted_until, n.raw_error_count, n.raw_success_count,
         n.consecutive_errors, n.trips)
        IS DISTINCT FROM (h.state, h.is_blacklisted, h.blacklisted_until, h.raw_error_count,
         h.raw_success_count, h.consecutive_errors, h.trips)) AS history_changed,
    ((n.endpoint_hint, n.reason, n.manual, n.provider_blocked_until, n.generation, n.redis_since,
      n.snapshot_digest, n.compat_hints, n.compat_learned_at, n.compat_message)
        IS DISTINCT FROM (h.endpoint_hint, h.reason, h.manual, h.provider_blocked_until,
         h.generation, h.redis_since, h.snapshot_digest, h.compat_hints, h.compat_learned_at,
         h.compat_message)
     OR (n.last_error_time IS NOT NULL AND n.last_error_time IS DISTINCT FROM h.last_error_time)
     OR (n.last_error_kind IS NOT NULL AND n.last_error_kind IS DISTINCT FROM h.last_error_kind)
     OR (n.last_error_message IS NOT NULL
         AND n.last_error_message IS DISTINCT FROM h.last_error_message)
     OR (n.last_success_time IS NOT NULL
         AND n.last_success_time IS DISTINCT FROM h.last_success_time)) AS other_changed
  FROM (SELECT provider_id, model_id, state, is_blacklisted,  -- OFFSET 0: converted once
          {_ts("blacklisted_until_ms")} AS blacklisted_until,
          raw_error_count, raw_success_count, {_ts("since_ms")} AS redis_since,
          consecutive_errors, trips, {_ts("last_error_ms")} AS last_error_time,
          last_error_kind, last_error_message, {_ts("last_success_ms")} AS last_success_time,
          endpoint_hint, reason, manual,
          {_ts("provider_blocked_until_ms")} AS provider_blocked_until, generation,
          coalesce(string_to_array(nullif(compat_hints, ''), ' '), '{{}}') AS compat_hints,
          {_ts("compat_at_ms")} AS compat_learned_at, compat_message,
          digest AS snapshot_digest
        FROM pg_temp.snap_in OFFSET 0) AS n
  LEFT JOIN model_compatibility_hints h
    ON h.key_prefix = %(prefix)s AND h.provider_id = n.provider_id AND h.model_id = n.model_id
  CROSS JOIN LATERAL (SELECT
    CASE WHEN h.provider_id IS NULL OR NOT h.in_redis
              OR n.redis_since IS DISTINCT FROM h.redis_since
              OR n.raw_error_count < h.raw_error_count
         THEN n.raw_error_count ELSE n.raw_error_count - h.raw_error_count END AS error_delta,
    CASE WHEN h.provider_id IS NULL OR NOT h.in_redis
              OR n.redis_since IS DISTINCT FROM h.redis_since
              OR n.raw_success_count < h.raw_success_count
         THEN n.raw_success_count ELSE n.raw_success_count - h.raw_success_count END
      AS success_delta) AS d
) AS c
WHERE %(keyframe)s OR c.history_changed OR c.other_changed
ORDER BY provider_id, model_id
"""

_UPSERT_HINTS = """
INSERT INTO model_compatibility_hints AS h (
    key_prefix, provider_id, model_id, error_count, success_count, is_blacklisted, last_error_time,
    last_error_message, state, trips, consecutive_errors, blacklisted_until, last_error_kind,
    last_success_time, endpoint_hint, reason, manual, provider_blocked_until, generation,
    raw_error_count, raw_success_count, redis_since, snapshot_digest, compat_hints,
    compat_learned_at, compat_message, in_redis, updated_at)
SELECT %(prefix)s::text, provider_id, model_id, error_delta, success_delta, is_blacklisted,
    last_error_time, last_error_message, state, trips, consecutive_errors, blacklisted_until,
    last_error_kind, last_success_time, endpoint_hint, reason, manual, provider_blocked_until,
    generation, raw_error_count, raw_success_count, redis_since, snapshot_digest, compat_hints,
    compat_learned_at, compat_message, true, now()
FROM pg_temp.snap_ch
WHERE history_changed OR other_changed
ON CONFLICT (key_prefix, provider_id, model_id) DO UPDATE SET
    error_count = h.error_count + EXCLUDED.error_count,
    success_count = h.success_count + EXCLUDED.success_count,
    is_blacklisted = EXCLUDED.is_blacklisted,
    last_error_time = COALESCE(EXCLUDED.last_error_time, h.last_error_time),
    last_error_message = COALESCE(EXCLUDED.last_error_message, h.last_error_message),
    last_error_kind = COALESCE(EXCLUDED.last_error_kind, h.last_error_kind),
    last_success_time = COALESCE(EXCLUDED.last_success_time, h.last_success_time),
    state = EXCLUDED.state,
    trips = EXCLUDED.trips,
    consecutive_errors = EXCLUDED.consecutive_errors,
    blacklisted_until = EXCLUDED.blacklisted_until,
    endpoint_hint = EXCLUDED.endpoint_hint,
    reason = EXCLUDED.reason,
    manual = EXCLUDED.manual,
    provider_blocked_until = EXCLUDED.provider_blocked_until,
    generation = EXCLUDED.generation,
    raw_error_count = EXCLUDED.raw_error_count,
    raw_success_count = EXCLUDED.raw_success_count,
    redis_since = EXCLUDED.redis_since,
    snapshot_digest = EXCLUDED.snapshot_digest,
    compat_hints = EXCLUDED.compat_hints,
    compat_learned_at = EXCLUDED.compat_learned_at,
    compat_message = EXCLUDED.compat_message,
    in_redis = true,
    updated_at = EXCLUDED.updated_at
"""

_HISTORY_COLUMNS = """snapshot_id, key_prefix, taken_at, provider_id, model_id, state,
    is_blacklisted, blacklisted_until, error_delta, success_delta, error_count, success_count,
    raw_error_count, raw_success_count, consecutive_errors, trips, in_redis"""

_INSERT_HISTORY = f"""
INSERT INTO model_compatibility_history ({_HISTORY_COLUMNS})
SELECT %(snapshot_id)s, %(prefix)s::text, now(), provider_id, model_id, state, is_blacklisted,
    blacklisted_until, error_delta, success_delta, error_count, success_count, raw_error_count,
    raw_success_count, consecutive_errors, trips, true
FROM pg_temp.snap_ch
WHERE %(keyframe)s OR history_changed
"""

# Targets gone from Redis (idle TTL, flush): nothing blocks them any more. Each gets one
# history row saying so (in_redis false), so the change-only history knows it is gone.
_MARK_GONE = f"""
WITH gone AS (
  UPDATE model_compatibility_hints AS h
  SET in_redis = false, state = 'closed', is_blacklisted = false, blacklisted_until = NULL,
      provider_blocked_until = NULL, consecutive_errors = 0, manual = false, reason = NULL,
      snapshot_digest = NULL, updated_at = now()
  FROM (SELECT DISTINCT provider_id, model_id FROM pg_temp.snap_gone) AS g
  WHERE h.key_prefix = %(prefix)s AND h.provider_id = g.provider_id
    AND h.model_id = g.model_id AND h.in_redis
  RETURNING h.provider_id, h.model_id, h.error_count, h.success_count, h.raw_error_count,
            h.raw_success_count, h.trips)
INSERT INTO model_compatibility_history ({_HISTORY_COLUMNS})
SELECT %(snapshot_id)s, %(prefix)s::text, now(), provider_id, model_id, 'closed', false, NULL,
    0, 0, error_count, success_count, raw_error_count, raw_success_count, 0, trips, false
FROM gone
"""

_INSERT_TRANSITIONS = """
INSERT INTO model_compatibility_transitions (
    key_prefix, provider_id, event_ms, event_seq, model_id, from_state, to_state, kind, reason,
    generation, occurred_at, open_until)
SELECT %(prefix)s::text, provider_id, event_ms, event_seq, model_id, from_state, to_state, kind,
    reason, generation, occurred_at, open_until
FROM pg_temp.snap_ev
ORDER BY provider_id, event_ms, event_seq
ON CONFLICT (key_prefix, provider_id, event_ms, event_seq) DO NOTHING
"""

_ADVANCE_CURSORS = """
INSERT INTO resilience_event_cursors AS c (
    key_prefix, provider_id, event_ms, event_seq, event_n, updated_at)
SELECT DISTINCT ON (provider_id) %(prefix)s::text, provider_id, event_ms, event_seq, event_n, now()
FROM pg_temp.snap_ev
ORDER BY provider_id, event_ms DESC, event_seq DESC
ON CONFLICT (key_prefix, provider_id) DO UPDATE SET
    event_ms = EXCLUDED.event_ms, event_seq = EXCLUDED.event_seq, event_n = EXCLUDED.event_n,
    updated_at = now()
WHERE (EXCLUDED.event_ms, EXCLUDED.event_seq) > (c.event_ms, c.event_seq)
"""

# A keyframe is due when the newest keyframe of the key prefix is older than the interval
# (or there is none: the first snapshot is one).
_KEYFRAME_DUE = """
SELECT coalesce(max(taken_at) <= now() - make_interval(secs => %(every)s), true)
FROM resilience_snapshots WHERE key_prefix = %(prefix)s AND keyframe
"""


def _event_rows(events: Iterable[TransitionEvent]) -> list[tuple[Any, ...]]:
    out = []
    for e in events:
        ms, seq = _split_id(e.id)
        out.append(
            (
                _text(e.provider),
                ms,
                seq,
                _text(e.model),
                e.from_state,
                e.to_state,
                _text(e.kind) or "",
                _text(e.reason) or "",
                e.generation,
                e.time,
                e.open_until,
                e.sequence,
            )
        )
    return out


def _copy(conn: Connection, table: str, columns: tuple[str, ...], rows: Iterable[Any]) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier("pg_temp", table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)


_EVENT_COLUMNS = (
    "provider_id",
    "event_ms",
    "event_seq",
    "model_id",
    "from_state",
    "to_state",
    "kind",
    "reason",
    "generation",
    "occurred_at",
    "open_until",
    "event_n",
)


def events_lost(
    events: Iterable[TransitionEvent], copied: Mapping[str, int | None]
) -> dict[str, int]:
    """Events the capped Redis log dropped before they were copied, per provider.

    ``copied`` is the number of the last event copied per provider (None when unknown).
    Events are numbered 1, 2, 3, ... per provider: a first new event numbered above the last
    copied one plus one means the ones between are gone. A first event numbered 1 (or lower
    than the last copied) is a log that expired and started again: nothing to tell.
    """
    first: dict[str, int] = {}
    for e in events:
        if e.sequence is not None and e.provider not in first:
            first[e.provider] = e.sequence
    lost: dict[str, int] = {}
    for provider, n in first.items():
        last = copied.get(provider)
        if provider in copied and last is None:
            continue  # a cursor from before event numbers: nothing to compare with
        base = last if last is not None and last < n else 0
        if n - base - 1 > 0:
            lost[provider] = n - base - 1
    return lost


def _write(
    conn: Connection,
    breaker: Breaker,
    settings: Settings,
    start: float,
    interval_s: float | None,
) -> SnapshotResult:
    schema = settings.database_schema
    prefix = breaker.settings.key_prefix
    keyed: dict[str, Any] = {"prefix": prefix}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_xact_lock_key(schema, prefix),))
        conn.execute(_SESSION)
        cursors: dict[str, str] = {}
        copied: dict[str, int | None] = {}
        for p, ms, seq, n in conn.execute(
            "SELECT provider_id, event_ms, event_seq, event_n FROM resilience_event_cursors"
            " WHERE key_prefix = %(prefix)s",
            keyed,
        ):
            cursors[str(p)] = f"{ms}-{seq}"
            copied[str(p)] = None if n is None else int(n)
        due = conn.execute(
            _KEYFRAME_DUE, {**keyed, "every": settings.snapshot_keyframe_seconds}
        ).fetchone()
        keyframe = bool(due and due[0])
        conn.execute(_CREATE_TEMP)
        targets, _read = _copy_states(conn, breaker, keyframe)
        events = _read_events(breaker, cursors)
        lost = events_lost(events, copied)
        for provider, count in sorted(lost.items()):
            log.warning(
                "resilience snapshot: the Redis event log of %r dropped %d transitions before "
                "they were copied (raise RESILIENCE_EVENTS_MAX_LEN or snapshot more often)",
                provider,
                count,
            )
        _copy(conn, "snap_ev", _EVENT_COLUMNS, _event_rows(events))
        row = conn.execute(
            "INSERT INTO resilience_snapshots"
            " (key_prefix, taken_at, targets, transitions, interval_seconds, keyframe)"
            " VALUES (%s, now(), %s, 0, %s, %s) RETURNING id, taken_at",
            (prefix, targets, interval_s, keyframe),
        ).fetchone()
        assert row is not None
        snapshot_id, taken_at = int(row[0]), row[1]
        values = {**keyed, "snapshot_id": snapshot_id, "keyframe": keyframe}
        conn.execute(_CHANGES, values)
        counted = conn.execute(
            "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE is_reset)"
            " FROM pg_temp.snap_ch"
        ).fetchone()
        assert counted is not None
        new, resets = int(counted[0]), int(counted[1])
        hint_rows = max(0, conn.execute(_UPSERT_HINTS, values).rowcount)
        history_rows = max(0, conn.execute(_INSERT_HISTORY, values).rowcount)
        gone = max(0, conn.execute(_MARK_GONE, values).rowcount)
        inserted = max(0, conn.execute(_INSERT_TRANSITIONS, keyed).rowcount)
        conn.execute(_ADVANCE_CURSORS, keyed)
        conn.execute(
            "UPDATE resilience_snapshots SET transitions = %s, duration_ms = %s,"
            " events_lost = %s, history_rows = %s, hint_rows = %s WHERE id = %s",
            (
                inserted,
                round((time.monotonic() - start) * 1000),
                sum(lost.values()),
                history_rows + gone,
                hint_rows + gone,
                snapshot_id,
            ),
        )
    observe_snapshot(time.monotonic() - start)
    return SnapshotResult(
        written=True,
        targets=targets,
        transitions=inserted,
        new_targets=new,
        counter_resets=resets,
        duration_s=time.monotonic() - start,
        snapshot_id=snapshot_id,
        taken_at=taken_at,
        events_lost=sum(lost.values()),
        history_rows=history_rows + gone,
        hint_rows=hint_rows + gone,
        keyframe=keyframe,
    )


def take_snapshot(
    breaker: Breaker,
    settings: Settings | None = None,
    *,
    lock: bool = True,
    interval_s: float | None = None,
) -> SnapshotResult:
    """Takes one snapshot: every target's state and the new transitions, from Redis to
    PostgreSQL, in one transaction (all rows or none).

    Args:
        breaker: reads the Redis state (its settings give the Redis URL and key prefix).
        settings: the PostgreSQL URL and schema (default: the breaker's settings).
        lock: take the leader lock for this snapshot (renewed while it runs, released
            after); when another replica holds it, return ``SnapshotResult(written=False)``
            without doing anything. ``run_every`` passes False because it holds the lock
            across intervals.
        interval_s: the interval of the loop taking this snapshot (recorded for the
            liveness check), None for a one-shot snapshot.

    Raises:
        SnapshotError: Redis or PostgreSQL failed; nothing was written.
        MigrationRequiredError: the schema lacks the tables (run ``resilience db upgrade``).
    """
    settings = settings if settings is not None else breaker.settings
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if lock:
            leader = stack.enter_context(LeaderLock(breaker.settings))
            if not leader.acquire():
                return SnapshotResult(written=False, duration_s=time.monotonic() - start)
            stack.enter_context(leader.renewing())
        try:
            conn = stack.enter_context(
                connect(settings, autocommit=True, application_name="resilience-snapshot")
            )
            require_schema(conn, settings)
            with translate_errors(settings, "snapshot"):
                return _write(conn, breaker, settings, start, interval_s)
        except MigrationRequiredError:
            raise
        except DatabaseError as exc:
            raise SnapshotError("postgres", f"snapshot failed, nothing written: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- the loop


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, enabled: bool) -> Iterator[None]:
    """Sets ``stop`` on SIGTERM and SIGINT (main thread only); restores the old handlers."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("resilience: snapshot loop stopping after signal %d", signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_every(
    seconds: float,
    breaker: Breaker,
    settings: Settings | None = None,
    *,
    stop: threading.Event | None = None,
    on_result: Callable[[SnapshotResult], None] | None = None,
    on_error: Callable[[ResilienceError], None] | None = None,
    handle_signals: bool = True,
    lock_ttl_s: float | None = None,
) -> int:
    """Takes a snapshot every ``seconds`` while this process leads, until ``stop`` is set
    or (in the main thread, with ``handle_signals``) SIGTERM or SIGINT arrives. A signal
    during a snapshot lets it finish: the loop only stops between snapshots.

    Every interval the loop takes or renews the leader lock (lease ``lock_ttl_s``, default
    :data:`LEADER_LEASE_S`, renewed by a thread meanwhile); replicas that do not lead report
    a skipped result and wait for the next interval. Each snapshot records ``seconds`` as
    its interval, for :func:`snapshot_health`. A Redis or PostgreSQL failure is passed to
    ``on_error`` (default: a log line) and the loop goes on; a missing migration stops it.

    Returns:
        The number of snapshots written.

    Raises:
        MigrationRequiredError: the schema lacks the tables.
    """
    if not seconds > 0:
        raise ValueError("snapshot interval must be > 0 seconds")
    stop = stop if stop is not None else threading.Event()
    ttl = lock_ttl_s if lock_ttl_s is not None else LEADER_LEASE_S
    written = 0

    def report_error(exc: ResilienceError) -> None:
        if on_error is not None:
            on_error(exc)
        else:
            log.error("resilience: %s", exc)

    with (
        _stop_on_signals(stop, handle_signals),
        LeaderLock(breaker.settings, ttl) as leader,
        leader.renewing(),
    ):
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                if leader.acquire():
                    result = take_snapshot(breaker, settings, lock=False, interval_s=seconds)
                    written += 1
                else:
                    result = SnapshotResult(written=False)
                if on_result is not None:
                    on_result(result)
            except MigrationRequiredError:
                raise
            except SnapshotError as exc:
                report_error(exc)
            now = time.monotonic()
            next_at += seconds
            if next_at < now:  # a slow snapshot: skip the missed intervals
                next_at = now + seconds - ((now - next_at) % seconds)
            stop.wait(max(0.0, next_at - time.monotonic()))
    return written


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True, slots=True)
class PruneResult:
    """Rows deleted by :func:`prune`, and the cutoff (aware datetime, server time)."""

    cutoff: datetime
    history: int
    transitions: int
    snapshots: int


# History rows and snapshots go up to the newest keyframe at or before the cutoff, which
# stays: it holds the value every target starts the remaining history with. (Without one, as
# in a history written by hand, up to the cutoff.)
_PRUNE_HISTORY = """
WITH k AS (
  SELECT key_prefix, coalesce(max(taken_at) FILTER (WHERE keyframe), %(cutoff)s) AS kept_from
  FROM resilience_snapshots WHERE {mine} AND taken_at <= %(cutoff)s GROUP BY key_prefix)
DELETE FROM {table} AS t USING k
WHERE t.key_prefix = k.key_prefix AND t.taken_at < k.kept_from
"""


def prune(settings: Settings, older_than: timedelta, *, all_prefixes: bool = False) -> PruneResult:
    """Deletes history rows, transitions and snapshot rows older than ``older_than`` (before
    the PostgreSQL server's ``now() - older_than``), in one transaction, of the settings' key
    prefix (or of every prefix with ``all_prefixes``). The current state rows
    (``model_compatibility_hints``) and the event cursors stay.

    The history keeps the newest keyframe at or before the cutoff and what follows it (at
    most ``snapshot_keyframe_seconds`` older than the cutoff): the history only records
    changes, and that keyframe holds the value each target starts from.

    Raises:
        ValueError: ``older_than`` is not positive.
        MigrationRequiredError: the schema lacks the tables.
        DatabaseError: PostgreSQL is unreachable or failed (nothing was deleted).
    """
    if older_than <= timedelta(0):
        raise ValueError("prune: older_than must be positive")
    mine = sql.SQL("true" if all_prefixes else "key_prefix = %(prefix)s")
    with connect(settings, autocommit=True, application_name="resilience-prune") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, "prune"), conn.transaction():
            row = conn.execute("SELECT now() - %s", (older_than,)).fetchone()
            assert row is not None
            values = {"cutoff": row[0], "prefix": settings.key_prefix}
            deleted = {}
            for table in ("model_compatibility_history", "resilience_snapshots"):
                stmt = sql.SQL(_PRUNE_HISTORY).format(table=sql.Identifier(table), mine=mine)
                deleted[table] = max(0, conn.execute(stmt, values).rowcount)
            stmt = sql.SQL(
                "DELETE FROM model_compatibility_transitions WHERE {} AND occurred_at < %(cutoff)s"
            ).format(mine)
            transitions = max(0, conn.execute(stmt, values).rowcount)
    return PruneResult(
        row[0],
        deleted["model_compatibility_history"],
        transitions,
        deleted["resilience_snapshots"],
    )


# --------------------------------------------------------------------------- liveness


@dataclass(frozen=True, slots=True)
class SnapshotHealth:
    """Whether the snapshot job of one key prefix is alive: its newest snapshot is younger
    than ``max_age_s`` (two intervals unless given).

    Attributes:
        key_prefix: the application checked.
        ok: True when the newest snapshot is young enough.
        last_at: when the newest snapshot was taken (aware), or None when there is none.
        age_s: its age in seconds (PostgreSQL server time), or None.
        interval_s: the job's interval in seconds, or None when unknown.
        interval_from: where the interval came from: ``"given"``, ``"recorded"`` (written
            by ``snapshot --every``), ``"seen"`` (between the last two snapshots) or ``""``.
        max_age_s: the oldest acceptable age in seconds, or None when it could not be told.
    """

    key_prefix: str
    ok: bool
    last_at: datetime | None
    age_s: float | None
    interval_s: float | None
    interval_from: str
    max_age_s: float | None

    def describe(self) -> str:
        """One line: the age, the limit, and what to do when it is too old."""
        from ._durations import format_duration

        def fmt(seconds: float) -> str:
            return format_duration(round(seconds, 1) if seconds < 60 else round(seconds))

        who = f"key prefix {self.key_prefix!r}"
        if self.last_at is None or self.age_s is None:
            return (
                f"no snapshot of {who} yet: run `resilience snapshot --every 60` with the "
                "same RESILIENCE_KEY_PREFIX and RESILIENCE_DATABASE_SCHEMA"
            )
        if self.max_age_s is None:
            return (
                f"newest snapshot of {who} is {fmt(self.age_s)} old; the job's interval is "
                "unknown (a single snapshot, taken once): give the oldest acceptable age"
            )
        interval = (
            f"; interval {fmt(self.interval_s)} ({self.interval_from})" if self.interval_s else ""
        )
        head = f"newest snapshot of {who} is {fmt(self.age_s)} old (limit {fmt(self.max_age_s)}"
        if self.ok:
            return f"{head}{interval})"
        return (
            f"{head}{interval}): the job is down, failing or not leading; check its logs "
            "(exit 3: Redis, 4: PostgreSQL, 5: migrations)"
        )


def snapshot_health(
    settings: Settings,
    *,
    max_age_s: float | None = None,
    interval_s: float | None = None,
) -> SnapshotHealth:
    """Checks the age of the newest snapshot of ``settings.key_prefix`` in PostgreSQL.

    Args:
        max_age_s: the oldest acceptable age in seconds; default two intervals.
        interval_s: the job's interval in seconds; default the interval recorded by
            ``snapshot --every`` with the newest snapshot, else the gap between the newest
            two snapshots (a cron schedule).

    Raises:
        MigrationRequiredError: the schema lacks the tables.
        DatabaseError: PostgreSQL is unreachable or failed.
    """
    prefix = settings.key_prefix
    with connect(settings, autocommit=True, application_name="resilience-check") as conn:
        require_schema(conn, settings)
        with translate_errors(settings, "snapshot check"):
            rows = conn.execute(
                "SELECT taken_at, interval_seconds, extract(epoch FROM now() - taken_at)"
                " FROM resilience_snapshots WHERE key_prefix = %s"
                " ORDER BY taken_at DESC LIMIT 2",
                (prefix,),
            ).fetchall()
    if not rows:
        return SnapshotHealth(prefix, False, None, None, interval_s, "", max_age_s)
    last_at, recorded, age = rows[0][0], rows[0][1], max(0.0, float(rows[0][2]))
    source = ""
    if interval_s is not None:
        source = "given"
    elif recorded is not None:
        interval_s, source = float(recorded), "recorded"
    elif len(rows) == 2 and rows[0][0] > rows[1][0]:
        interval_s, source = (rows[0][0] - rows[1][0]).total_seconds(), "seen"
    limit = max_age_s if max_age_s is not None else (2 * interval_s if interval_s else None)
    ok = limit is not None and age <= limit
    return SnapshotHealth(prefix, ok, last_at, age, interval_s, source, limit)
