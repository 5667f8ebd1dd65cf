"""``resilience doctor``: the post-deployment verification of the operators' checklist, as
checks that each say ok, warn or fail, with the remedy.

Redis: reachable (and the round trip), version, eviction policy (``noeviction``: any other
policy lets Redis silently erase the state of open targets under memory pressure), the
scripts load and run, pub/sub delivers a transition. PostgreSQL: reachable, migrations
applied (the checklist's "table not created"), the checklist's SQL still parses against the
table, the snapshot job ran within two intervals. Learning: outcomes recorded in the last 24
hours (the checklist's "no learning happening") and what is blacklisted now.

The script and pub/sub checks run the public :class:`~resilience.Breaker` API under a key
prefix of their own (``<prefix>.doctor-<random>``) and delete its keys afterwards: the
application's state is only read, never changed.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import redis

from .._durations import relative
from .._exceptions import ExitCode, ResilienceError
from .._keys import KeySpace
from .._redact import redact, redact_url
from .._settings import Settings
from .._states import TargetState
from .._types import ErrorKind, Target
from .base import duration, out

__all__ = ["MIN_REDIS_VERSION", "Check", "add_doctor", "run_checks"]

Status = Literal["ok", "warn", "fail", "skip"]

MIN_REDIS_VERSION = (6, 2)
"""Oldest Redis the scripts are written for."""

TIMEOUT_S = 5.0
"""Redis timeouts of the checks (s)."""

LEARNING_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the verification.

    Attributes:
        name: what was checked.
        status: ``"ok"``, ``"warn"`` (works, but worth a look), ``"fail"`` (broken) or
            ``"skip"`` (not run: what it needs failed).
        detail: what was found.
        remedy: what to do, for warn and fail ("" otherwise).
    """

    name: str
    status: Status
    detail: str
    remedy: str = ""


@dataclass
class _Run:
    settings: Settings
    snapshot_max_age_s: float | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, remedy: str = "") -> Check:
        check = Check(name, status, detail, remedy if status in ("warn", "fail") else "")
        self.checks.append(check)
        return check

    def guarded(self, name: str, fn: Callable[[], Check | None]) -> bool:
        """Runs one check; an exception is its failure. True when it did not fail."""
        try:
            result = fn()
        except Exception as exc:
            result = self.add(name, "fail", _error(exc))
        return result is None or result.status != "fail"


def _error(exc: BaseException) -> str:
    text = redact(" ".join(str(exc).split()), 300)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _client(settings: Settings) -> Any:
    from .._io import sync_client

    return sync_client(settings, TIMEOUT_S)


def run_checks(settings: Settings, *, snapshot_max_age_s: float | None = None) -> list[Check]:
    """Runs every check, in order; never raises (a failing check says why).

    Args:
        snapshot_max_age_s: the oldest acceptable snapshot (s); default two intervals of the
            job (see :func:`resilience._snapshot.snapshot_health`).
    """
    run = _Run(settings, snapshot_max_age_s)
    where = redact_url(settings.redis_url)
    client = None
    try:
        client = _client(settings)
        _ping(run, client, where)
        redis_ok = True
    except Exception as exc:
        redis_ok = False
        run.add(
            "Redis reachable",
            "fail",
            _error(exc),
            f"start Redis or correct RESILIENCE_REDIS_URL ({where})",
        )
    if not redis_ok:
        for name in ("Redis version", "eviction policy", "scripts", "pub/sub"):
            run.add(name, "skip", "Redis is unreachable")
    else:
        run.guarded("Redis version", lambda: _version(run, client))
        run.guarded("eviction policy", lambda: _eviction(run, client))
        run.guarded("scripts", lambda: _scripts_and_pubsub(run, client))
    pg_ok = run.guarded("PostgreSQL reachable", lambda: _postgres(run))
    if pg_ok:
        migrated = run.guarded("migrations", lambda: _migrations(run))
        if migrated:
            run.guarded("checklist SQL", lambda: _checklist(run))
            run.guarded("snapshot job", lambda: _snapshot_job(run))
        else:
            run.add("checklist SQL", "skip", "the tables are not there")
            run.add("snapshot job", "skip", "the tables are not there")
    else:
        for name in ("migrations", "checklist SQL", "snapshot job"):
            run.add(name, "skip", "PostgreSQL is unreachable")
    if redis_ok:
        run.guarded("learning", lambda: _learning(run, pg_ok))
    else:
        run.add("learning", "skip", "Redis is unreachable")
    if client is not None:
        from .._io import close_sync_client

        close_sync_client(client)
    return run.checks


# --------------------------------------------------------------------------- Redis


def _ping(run: _Run, client: Any, where: str) -> Check:
    start = time.perf_counter()
    client.ping()
    ms = (time.perf_counter() - start) * 1000
    return run.add("Redis reachable", "ok", f"{where}, PING {ms:.1f} ms")


def _version(run: _Run, client: Any) -> Check:
    try:
        info = client.info("server")
    except redis.ResponseError as exc:  # an ACL user without INFO (docs/managed-redis.md)
        need = ".".join(map(str, MIN_REDIS_VERSION))
        return run.add(
            "Redis version",
            "warn",
            f"cannot read it (INFO refused: {_error(exc)})",
            f"check that Redis is {need} or newer, or grant +info to the ACL user",
        )
    if isinstance(info, dict) and "redis_version" not in info:  # a cluster: per node
        info = next(iter(info.values()), {})
    text = str(info.get("redis_version", "?"))
    try:
        have = tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return run.add("Redis version", "warn", f"unreadable version {text!r}")
    if have < MIN_REDIS_VERSION:
        need = ".".join(map(str, MIN_REDIS_VERSION))
        return run.add(
            "Redis version",
            "fail",
            f"{text}; the scripts need {need} or newer",
            f"upgrade Redis to {need}+",
        )
    return run.add("Redis version", "ok", text)


def _eviction(run: _Run, client: Any) -> Check:
    name = "eviction policy"
    remedy = (
        "set maxmemory-policy noeviction (redis.conf or CONFIG SET): with any other policy "
        "Redis erases keys under memory pressure without a word, and an erased open target is "
        "called again; with noeviction a full Redis refuses writes, which the breaker treats "
        "as unavailable (workers go on with their in-process breakers) and logs"
    )
    try:
        reply = client.config_get("maxmemory-policy")
        memory = client.config_get("maxmemory")
    except redis.ResponseError as exc:  # managed services may refuse CONFIG
        return run.add(name, "warn", f"cannot read it (CONFIG GET refused: {_error(exc)})", remedy)
    policy = str(_first(reply, "maxmemory-policy"))
    limit = str(_first(memory, "maxmemory"))
    if policy == "noeviction":
        return run.add(name, "ok", "noeviction")
    now = " (no maxmemory set: nothing is evicted yet)" if limit in ("0", "None") else ""
    return run.add(name, "warn", f"{policy}{now}", remedy)


def _first(reply: Any, key: str) -> Any:
    if isinstance(reply, dict):
        if key in reply:
            return reply[key]
        for value in reply.values():  # a cluster: {node: {key: value}}
            if isinstance(value, dict) and key in value:
                return value[key]
    return None


class _StoreErrors:
    """A hook collecting store errors of the check's breaker."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_store_error(self, event: Any) -> None:
        self.errors.append(f"{event.operation}: {event.error}")


@contextlib.contextmanager
def _scratch(settings: Settings, client: Any) -> Iterator[Settings]:
    """Settings of a key prefix of the check's own, whose keys are deleted afterwards."""
    prefix = f"{settings.key_prefix[:40]}.doctor-{uuid.uuid4().hex[:8]}"
    scratch = settings.model_copy(
        update={
            "key_prefix": prefix,
            "local_view": False,
            "enabled": True,
            "shadow": False,
            "redis_socket_timeout": max(settings.redis_socket_timeout, TIMEOUT_S),
            "redis_connect_timeout": max(settings.redis_connect_timeout, TIMEOUT_S),
        }
    )
    try:
        yield scratch
    finally:
        with contextlib.suppress(Exception):
            if settings.redis_cluster:
                keys = list(client.scan_iter(match=f"{prefix}:*", count=1000, target_nodes="all"))
                for key in keys:
                    client.delete(key)
            else:
                keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                if keys:
                    client.delete(*keys)


def _scripts_and_pubsub(run: _Run, client: Any) -> Check:
    from .._breaker import Breaker

    target = Target("doctor", "check")
    errors = _StoreErrors()
    with _scratch(run.settings, client) as scratch:
        channel = KeySpace(scratch.key_prefix).channel
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(channel)
            _await_message(pubsub, "subscribe", 2.0)
            with Breaker(scratch, hooks=[errors]) as breaker:
                breaker.record_failure(target, ErrorKind.SERVER_ERROR)
                recorded = breaker.state(target)
                start = time.perf_counter()
                blocked = breaker.block(target, 60, "resilience doctor")
                heard = _await_message(pubsub, "message", 2.0)
                ms = (time.perf_counter() - start) * 1000
                breaker.reset(target)
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()
    if errors.errors or recorded.error_count != 1 or blocked.state != "open":
        found = "; ".join(errors.errors) or (
            f"a recorded failure shows {recorded.error_count} errors, a block shows "
            f"{blocked.state!r}"
        )
        run.add(
            "scripts",
            "fail",
            found,
            "the Lua scripts do not run on this Redis: check that EVALSHA/SCRIPT LOAD are "
            "allowed (ACL) and the Redis version",
        )
        run.add("pub/sub", "skip", "the scripts failed")
        return run.checks[-2]
    run.add("scripts", "ok", "record, block, state and reset ran (under a scratch prefix)")
    if heard:
        return run.add("pub/sub", "ok", f"a transition arrived in {ms:.0f} ms")
    return run.add(
        "pub/sub",
        "warn",
        "no transition announcement arrived within 2 s",
        "workers then answer from a stale local view for up to "
        "RESILIENCE_LOCAL_VIEW_MAX_AGE_SECONDS: check that PUBLISH/SUBSCRIBE are allowed "
        "(ACL, proxies) or set RESILIENCE_LOCAL_VIEW=false",
    )


def _await_message(pubsub: Any, kind: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        if msg is not None and msg.get("type") == kind:
            return True
    return False


# --------------------------------------------------------------------------- PostgreSQL


def _postgres(run: _Run) -> Check:
    from .._db import connect

    where = redact_url(run.settings.database_url)
    try:
        start = time.perf_counter()
        with connect(run.settings, autocommit=True) as conn:
            conn.execute("SELECT 1")
        ms = (time.perf_counter() - start) * 1000
    except ResilienceError as exc:
        return run.add(
            "PostgreSQL reachable",
            "fail",
            _error(exc),
            f"start PostgreSQL or correct RESILIENCE_DATABASE_URL ({where})",
        )
    return run.add("PostgreSQL reachable", "ok", f"{where}, connected in {ms:.0f} ms")


def _migrations(run: _Run) -> Check:
    from .._db import connect, status

    schema = run.settings.database_schema
    rows = status(run.settings)
    pending = [f"{r.version:04d}_{r.name}" for r in rows if r.state in ("pending", "modified")]
    if not pending:
        applied = sum(1 for r in rows if r.state == "applied")
        return run.add("migrations", "ok", f"schema {schema!r}: {applied} applied")
    with connect(run.settings, autocommit=True) as conn:
        elsewhere = [
            str(r[0])
            for r in conn.execute(
                "SELECT schemaname FROM pg_catalog.pg_tables"
                " WHERE tablename = 'model_compatibility_hints' AND schemaname <> %s",
                (schema,),
            )
        ]
    remedy = (
        f"run `resilience db upgrade` with RESILIENCE_DATABASE_SCHEMA={schema} (the "
        "checklist's 'table not created')"
    )
    if elsewhere:
        remedy += (
            f"; the tables exist in schema {', '.join(map(repr, elsewhere))}: if that is the "
            "application's, set RESILIENCE_DATABASE_SCHEMA to it instead"
        )
    return run.add("migrations", "fail", f"schema {schema!r}: pending {', '.join(pending)}", remedy)


def _checklist(run: _Run) -> Check:
    from .._db import CHECKLIST_SQL, connect

    with connect(run.settings, autocommit=True) as conn:
        for statement in CHECKLIST_SQL:
            try:
                conn.execute(b"EXPLAIN " + statement.rstrip(";").encode())
            except Exception as exc:
                first = " ".join(statement.split())[:60]
                return run.add(
                    "checklist SQL",
                    "fail",
                    f"{first}...: {_error(exc)}",
                    "run `resilience db upgrade` (0004 adds the checklist's column names)",
                )
    return run.add(
        "checklist SQL", "ok", f"its {len(CHECKLIST_SQL)} statements run as written (EXPLAIN)"
    )


def _snapshot_job(run: _Run) -> Check:
    from .._snapshot import snapshot_health

    health = snapshot_health(run.settings, max_age_s=run.snapshot_max_age_s)
    if health.ok:
        return run.add("snapshot job", "ok", health.describe())
    if health.last_at is not None and health.max_age_s is None:
        return run.add(
            "snapshot job",
            "warn",
            health.describe(),
            "pass --snapshot-max-age (e.g. 2m for a cron job every minute), or run the job "
            "as `resilience snapshot --every N`, which records its interval",
        )
    return run.add(
        "snapshot job",
        "fail",
        health.describe(),
        "run `resilience snapshot --every 60` (one or more replicas) with the same "
        "RESILIENCE_KEY_PREFIX and RESILIENCE_DATABASE_SCHEMA; `resilience snapshot --check` "
        "is its health check",
    )


# --------------------------------------------------------------------------- learning


def _learning(run: _Run, pg_ok: bool) -> Check:
    from .._breaker import Breaker

    now = datetime.now(timezone.utc)
    since = now - LEARNING_WINDOW
    reader = run.settings.model_copy(
        update={
            "local_view": False,
            "redis_socket_timeout": max(run.settings.redis_socket_timeout, TIMEOUT_S),
            "redis_connect_timeout": max(run.settings.redis_connect_timeout, TIMEOUT_S),
        }
    )
    with Breaker(reader) as breaker:
        states: list[TargetState] = breaker.states()
        providers = [p for p in breaker.provider_states() if p.blocked]

    def recent(s: TargetState) -> bool:
        return any(t is not None and t >= since for t in (s.last_error_time, s.last_success_time))

    active = [s for s in states if recent(s)]
    calls = _history_calls(run.settings, since) if pg_ok else None
    in_history = f"; {calls} outcomes in the history" if calls is not None else ""
    prefix = run.settings.key_prefix
    if active:
        check = run.add(
            "learning",
            "ok",
            f"{len(active)} of {len(states)} targets recorded outcomes in the last 24 h"
            f"{in_history}",
        )
    else:
        check = run.add(
            "learning",
            "warn",
            f"no outcome recorded in the last 24 h under key prefix {prefix!r} "
            f"({len(states)} targets in Redis){in_history}",
            "the checklist's 'no learning happening': are the workers deployed with the same "
            f"RESILIENCE_REDIS_URL and RESILIENCE_KEY_PREFIX ({prefix}), RESILIENCE_ENABLED "
            "true, and their provider calls made through guard() or a Router? (A fresh "
            "deployment without traffic also shows this.)",
        )
    blocked = [
        _blocked(p.provider + " (provider-wide)", p.reason or p.state, p.open_until, now)
        for p in sorted(providers, key=lambda p: p.provider)
    ]
    blocked += [
        _blocked(f"{s.provider}/{s.model}", s.reason or s.state, s.open_until, now)
        for s in sorted(states, key=lambda s: (s.provider, s.model))
        if s.blacklisted
    ]
    if blocked:
        more = f" and {len(blocked) - 10} more" if len(blocked) > 10 else ""
        run.add("blacklisted", "ok", f"{len(blocked)}: {', '.join(blocked[:10])}{more}")
    else:
        run.add("blacklisted", "ok", "nothing is blacklisted now")
    return check


def _blocked(name: str, why: str, until: datetime | None, now: datetime) -> str:
    ends = f", ends {relative(until, now)}" if until else ""
    return f"{name} ({why}{ends})"


def _history_calls(settings: Settings, since: datetime) -> int | None:
    from .._db import connect

    try:
        with connect(settings, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(error_delta + success_delta), 0)"
                " FROM model_compatibility_history WHERE key_prefix = %s AND taken_at > %s",
                (settings.key_prefix, since),
            ).fetchone()
    except Exception:
        return None
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------- the command


def add_doctor(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="verify a deployment: Redis, PostgreSQL, migrations, snapshot job, learning",
        description="The post-deployment verification of the checklist as one command. "
        "Redis: reachable, version, eviction policy (noeviction), scripts load and run, "
        "pub/sub delivers. PostgreSQL: reachable, migrations applied, the checklist's SQL "
        "runs against the table, the snapshot job ran within two intervals. Learning: "
        "outcomes recorded in the last 24 h, what is blacklisted. Each check prints ok, warn "
        "or fail with the remedy; exit 0 without failures, 1 with any. The application's "
        "state is only read (the script checks use a scratch key prefix).",
    )
    p.add_argument(
        "--snapshot-max-age",
        type=duration,
        metavar="DURATION",
        help="oldest acceptable snapshot (default: two intervals of the job, as "
        "`resilience snapshot --every` records it)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: Any, settings: Settings) -> int:
    import json

    checks = run_checks(settings, snapshot_max_age_s=args.snapshot_max_age)
    failed = sum(1 for c in checks if c.status == "fail")
    warned = sum(1 for c in checks if c.status == "warn")
    stream = out()
    if args.format == "json":
        doc = {
            "key_prefix": settings.key_prefix,
            "ok": failed == 0,
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail, "remedy": c.remedy}
                for c in checks
            ],
        }
        stream.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        stream.write(
            f"resilience doctor: key prefix {settings.key_prefix!r}, schema "
            f"{settings.database_schema!r}\n"
        )
        width = max(len(c.name) for c in checks)
        for c in checks:
            stream.write(f"{c.status:<5} {c.name:<{width}}  {c.detail}\n")
            if c.remedy:
                stream.write(f"{'':<5} {'':<{width}}  -> {c.remedy}\n")
        stream.write(
            f"\n{failed} failed, {warned} warnings, "
            f"{sum(1 for c in checks if c.status == 'ok')} ok\n"
        )
    return ExitCode.ERROR if failed else ExitCode.OK
