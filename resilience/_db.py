"""PostgreSQL access: connections and the migration runner.

Migrations are the SQL files in ``resilience/migrations`` (package data), named
``NNNN_name.up.sql`` / ``NNNN_name.down.sql``. The runner:

- takes a session advisory lock whose key is derived from the schema name, so replicas
  running ``resilience db upgrade`` at once queue up and each step is applied once;
- applies each step in its own transaction together with its row in
  ``resilience_migrations(version, name, applied_at, checksum)``: a step is applied and
  recorded, or neither;
- sets :data:`PREFIX_SETTING` to the settings' key prefix for each step (``SET LOCAL``), so
  a step that keys existing rows by application knows whose rows they are;
- refuses to revert a step whose down file starts with ``-- resilience: destroys-data``
  (0001 drops the tables) unless asked to drop data, so a rollback keeps the history.

Every table lives in ``settings.database_schema`` (connections set ``search_path`` to it).

The exceptions, all :class:`~resilience.ResilienceError`::

    DatabaseError                 a PostgreSQL statement failed
    ├── DatabaseUnavailableError  PostgreSQL could not be reached or the connection was lost
    └── MigrationError            a migration could not be applied or reverted
        └── MigrationRequiredError  the schema lacks tables: run ``resilience db upgrade``
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from ._exceptions import ExitCode, ResilienceError
from ._redact import redact, redact_url
from ._settings import Settings

__all__ = [
    "CHECKLIST_SQL",
    "REQUIRED_VERSION",
    "DatabaseError",
    "DatabaseUnavailableError",
    "Migration",
    "MigrationError",
    "MigrationRequiredError",
    "MigrationStatus",
    "connect",
    "downgrade",
    "load_migrations",
    "require_schema",
    "status",
    "translate_errors",
    "upgrade",
]

Connection = psycopg.Connection[TupleRow]

REQUIRED_VERSION = 7
"""The lowest schema version the snapshot job, reports and prune work with."""

PREFIX_SETTING = "resilience.key_prefix"
"""Session setting holding ``RESILIENCE_KEY_PREFIX`` while a migration step runs: a step
that adds the key prefix to existing rows gives them this one (0005)."""

CHECKLIST_SQL: tuple[str, ...] = (
    "SELECT * FROM model_compatibility_hints LIMIT 1;",
    "SELECT providerId, modelId, errorCount, successCount,\n"
    "  CASE WHEN isBlacklisted THEN '⚠️ BLACKLISTED' ELSE '✓ OK' END as status\n"
    "FROM model_compatibility_hints ORDER BY errorCount DESC;",
    "SELECT * FROM model_compatibility_hints WHERE modelId = 'bad-model';",
    "SELECT modelId, errorCount, successCount, isBlacklisted FROM model_compatibility_hints\n"
    "WHERE errorCount > 2 ORDER BY errorCount DESC;",
    "DELETE FROM model_compatibility_hints WHERE lastErrorTime < NOW() - INTERVAL '90 days'\n"
    "AND errorCount = 0 AND successCount = 0;",
)
"""The operators' checklist SQL, verbatim: the seed's camelCase names unquoted (PostgreSQL
folds them to lower case). Migration 0004 makes each run as written; ``resilience doctor``
checks that they still do, and the runbook shows them."""

MIGRATIONS_TABLE = "resilience_migrations"
DESTROYS_DATA_MARK = "-- resilience: destroys-data"
CONNECT_TIMEOUT_S = 5
"""Seconds to wait for a PostgreSQL connection before reporting it unreachable."""

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")


class DatabaseError(ResilienceError):
    """A PostgreSQL statement of the snapshot job, a report, prune or a migration failed."""

    exit_code = ExitCode.POSTGRES


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL could not be reached, or the connection was lost mid-way."""


class MigrationError(DatabaseError):
    """A migration could not be applied or reverted (nothing of that step was kept)."""

    exit_code = ExitCode.ERROR


class MigrationRequiredError(MigrationError):
    """The schema lacks the tables (or is older than needed): run ``resilience db upgrade``."""

    exit_code = ExitCode.MIGRATION


def check_schema(name: str) -> str:
    """Returns ``name`` when it is a plain PostgreSQL identifier, else raises ValueError."""
    if not isinstance(name, str) or not _SCHEMA_RE.match(name):
        raise ValueError(f"invalid PostgreSQL schema name {name!r}: use [A-Za-z_][A-Za-z0-9_]*")
    return name


def _one_line(text: str, max_chars: int = 300) -> str:
    return redact(" ".join(str(text).split()), max_chars)


@contextmanager
def translate_errors(settings: Settings, action: str) -> Iterator[None]:
    """Turns psycopg errors raised inside the block into :class:`DatabaseError` subclasses
    whose message is one line, names ``action`` and never holds a password."""
    try:
        yield
    except psycopg.OperationalError as exc:
        where = redact_url(settings.database_url)
        raise DatabaseUnavailableError(
            f"PostgreSQL unavailable during {action} ({where}): {_one_line(str(exc))}"
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise MigrationRequiredError(
            f"PostgreSQL schema {settings.database_schema!r} lacks the resilience tables "
            f"({_one_line(str(exc), 120)}): run `resilience db upgrade`"
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(
            f"PostgreSQL error during {action}: {type(exc).__name__}: {_one_line(str(exc))}"
        ) from exc


def connect(
    settings: Settings, *, autocommit: bool = False, application_name: str = "resilience"
) -> Connection:
    """Opens a psycopg connection to ``settings.database_url`` with ``search_path`` set to
    ``settings.database_schema`` (validated as an identifier).

    Waits at most :data:`CONNECT_TIMEOUT_S` seconds.

    Raises:
        DatabaseUnavailableError: PostgreSQL is unreachable or refused the connection.
        ValueError: the schema name is not a plain identifier.
    """
    schema = check_schema(settings.database_schema)
    with translate_errors(settings, "connect"):
        conn = psycopg.connect(
            settings.database_url,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
            autocommit=autocommit,
        )
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            if not autocommit:
                conn.commit()
        except BaseException:
            conn.close()
            raise
    return conn


# --------------------------------------------------------------------------- migration files


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned step: its SQL both ways and the checksum of the up file (sha256 hex)."""

    version: int
    name: str
    up: str
    down: str
    checksum: str
    destroys_data: bool

    @property
    def label(self) -> str:
        """``"0001_initial"``."""
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One line of ``resilience db status``.

    Attributes:
        version, name: the step.
        state: ``"applied"``, ``"pending"``, ``"modified"`` (applied, but the file's checksum
            differs from the recorded one) or ``"unknown"`` (applied by a newer package).
        applied_at: when it was applied (aware datetime), or None.
        checksum: the recorded checksum, else the file's.
    """

    version: int
    name: str
    state: str
    applied_at: datetime | None
    checksum: str


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, oldest first."""
    root = importlib.resources.files("resilience").joinpath("migrations")
    files: dict[tuple[int, str], dict[str, str]] = {}
    for entry in root.iterdir():
        m = _FILE_RE.match(entry.name)
        if m is None:
            continue
        key = (int(m.group(1)), m.group(2))
        files.setdefault(key, {})[m.group(3)] = entry.read_text(encoding="utf-8")
    out = []
    for (version, name), texts in sorted(files.items()):
        if set(texts) != {"up", "down"}:
            raise MigrationError(f"migration {version:04d}_{name} lacks its up or down file")
        out.append(
            Migration(
                version=version,
                name=name,
                up=texts["up"],
                down=texts["down"],
                checksum=hashlib.sha256(texts["up"].encode("utf-8")).hexdigest(),
                destroys_data=texts["down"].lstrip().startswith(DESTROYS_DATA_MARK),
            )
        )
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return out


def latest_version() -> int:
    """The newest version shipped with the package."""
    migrations = load_migrations()
    return migrations[-1].version if migrations else 0


# --------------------------------------------------------------------------- runner


def _lock_key(schema: str) -> int:
    """A signed 64-bit advisory lock key of the schema (stable across processes)."""
    digest = hashlib.blake2b(f"resilience.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _migration_lock(conn: Connection, schema: str) -> Iterator[None]:
    key = _lock_key(schema)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _table_exists(conn: Connection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
        (schema, table),
    ).fetchone()
    return row is not None


def _applied(conn: Connection, schema: str) -> dict[int, tuple[str, datetime, str]]:
    """version -> (name, applied_at, checksum); empty when the table does not exist."""
    if not _table_exists(conn, schema, MIGRATIONS_TABLE):
        return {}
    rows = conn.execute(
        sql.SQL("SELECT version, name, applied_at, checksum FROM {} ORDER BY version").format(
            sql.Identifier(schema, MIGRATIONS_TABLE)
        )
    ).fetchall()
    return {int(r[0]): (str(r[1]), r[2], str(r[3])) for r in rows}


def current_version(conn: Connection, schema: str) -> int:
    """The highest applied version in ``schema`` (0 when nothing is applied)."""
    applied = _applied(conn, schema)
    return max(applied) if applied else 0


def require_schema(conn: Connection, settings: Settings, need: int = REQUIRED_VERSION) -> None:
    """Raises :class:`MigrationRequiredError` unless version ``need`` or newer is applied."""
    schema = check_schema(settings.database_schema)
    with translate_errors(settings, "schema check"):
        have = current_version(conn, schema)
    if have < need:
        state = "has no resilience tables" if have == 0 else f"is at version {have}"
        raise MigrationRequiredError(
            f"PostgreSQL schema {schema!r} {state} (need version {need}): "
            "run `resilience db upgrade`"
        )


def _run_sql(conn: Connection, text: str) -> None:
    # No parameters: psycopg sends the file with the simple protocol, several statements at once.
    conn.execute(text.encode("utf-8"))


def upgrade(settings: Settings, target: int | None = None) -> list[Migration]:
    """Applies every pending migration up to ``target`` (default: the newest), each in its
    own transaction, under the schema's advisory lock. Creates the schema when missing.

    Returns:
        The steps this call applied (empty when another process had applied them).

    Raises:
        MigrationError: ``target`` is unknown or a step failed (that step left nothing).
        DatabaseUnavailableError: PostgreSQL is unreachable.
    """
    migrations = load_migrations()
    known = {m.version for m in migrations}
    want = target if target is not None else (migrations[-1].version if migrations else 0)
    if want != 0 and want not in known:
        raise MigrationError(f"unknown migration version {want}; known: {sorted(known)}")
    schema = check_schema(settings.database_schema)
    done: list[Migration] = []
    with (
        connect(settings, autocommit=True, application_name="resilience-migrate") as conn,
        translate_errors(settings, "db upgrade"),
        _migration_lock(conn, schema),
    ):
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        if exists is None:  # CREATE SCHEMA needs a privilege an app role may lack: only if missing
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " checksum text NOT NULL)"
            ).format(sql.Identifier(schema, MIGRATIONS_TABLE))
        )
        applied = _applied(conn, schema)
        for m in migrations:
            if m.version > want or m.version in applied:
                continue
            try:
                with conn.transaction():
                    conn.execute(
                        "SELECT set_config(%s, %s, true)", (PREFIX_SETTING, settings.key_prefix)
                    )
                    _run_sql(conn, m.up)
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)"
                        ).format(sql.Identifier(schema, MIGRATIONS_TABLE)),
                        (m.version, m.name, m.checksum),
                    )
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {m.label} failed and was rolled back: "
                    f"{type(exc).__name__}: {_one_line(str(exc))}"
                ) from exc
            done.append(m)
    return done


def downgrade(
    settings: Settings, steps: int = 1, *, to: int | None = None, drop_data: bool = False
) -> list[Migration]:
    """Reverts the newest ``steps`` applied migrations, or every one above version ``to``,
    newest first, each in its own transaction, under the schema's advisory lock.

    Args:
        steps: how many steps to revert when ``to`` is None (>= 1).
        to: revert down to this version (0 reverts everything).
        drop_data: allow steps whose down file destroys data (0001 drops the tables).

    Returns:
        The steps reverted.

    Raises:
        MigrationError: a step would destroy data without ``drop_data``, a step is unknown
            to this package, or a step failed (nothing of that step was kept).
    """
    if to is None and steps < 1:
        raise ValueError("downgrade steps must be >= 1")
    if to is not None and to < 0:
        raise ValueError("downgrade target version must be >= 0")
    by_version = {m.version: m for m in load_migrations()}
    schema = check_schema(settings.database_schema)
    done: list[Migration] = []
    with (
        connect(settings, autocommit=True, application_name="resilience-migrate") as conn,
        translate_errors(settings, "db downgrade"),
        _migration_lock(conn, schema),
    ):
        applied = sorted(_applied(conn, schema), reverse=True)
        chosen = [v for v in applied if v > to] if to is not None else applied[:steps]
        plan: list[Migration] = []
        for v in chosen:
            m = by_version.get(v)
            if m is None:
                raise MigrationError(
                    f"version {v} was applied by a newer resilience package; downgrade with it"
                )
            if m.destroys_data and not drop_data:
                raise MigrationError(
                    f"reverting {m.label} drops the tables and all history in them; "
                    "nothing was changed (pass --drop-data to do it anyway)"
                )
            plan.append(m)
        for m in plan:
            try:
                with conn.transaction():
                    _run_sql(conn, m.down)
                    conn.execute(
                        sql.SQL("DELETE FROM {} WHERE version = %s").format(
                            sql.Identifier(schema, MIGRATIONS_TABLE)
                        ),
                        (m.version,),
                    )
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise MigrationError(
                    f"reverting {m.label} failed and was rolled back: "
                    f"{type(exc).__name__}: {_one_line(str(exc))}"
                ) from exc
            done.append(m)
    return done


def status(settings: Settings) -> list[MigrationStatus]:
    """What is applied and what is pending, oldest first (changes nothing)."""
    migrations = load_migrations()
    schema = check_schema(settings.database_schema)
    with (
        connect(settings, autocommit=True) as conn,
        translate_errors(settings, "db status"),
    ):
        applied = _applied(conn, schema)
    out: list[MigrationStatus] = []
    for m in migrations:
        row = applied.pop(m.version, None)
        if row is None:
            out.append(MigrationStatus(m.version, m.name, "pending", None, m.checksum))
        else:
            state = "applied" if row[2] == m.checksum else "modified"
            out.append(MigrationStatus(m.version, m.name, state, row[1], row[2]))
    for version, (name, applied_at, checksum) in sorted(applied.items()):
        out.append(MigrationStatus(version, name, "unknown", applied_at, checksum))
    return out
