"""``db upgrade``, ``db downgrade``, ``db status`` (``--check`` for health checks)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._exceptions import ExitCode
from .._settings import Settings
from .base import fmt_time, out, positive_int, version

__all__ = ["add_db"]


def add_db(sub: Any) -> None:
    p = sub.add_parser(
        "db",
        help="database migrations: upgrade, downgrade, status",
        description="Apply, revert or list the SQL migrations (under an advisory lock; "
        "safe from several replicas at once).",
    )
    dbsub = p.add_subparsers(dest="db_command", metavar="{upgrade,downgrade,status}")
    dbsub.required = True
    up = dbsub.add_parser(
        "upgrade",
        help="apply pending migrations",
        description="Apply pending migrations. Rows that existed before a migration that "
        "adds the key prefix to the history belong to RESILIENCE_KEY_PREFIX's application.",
    )
    up.add_argument("--to", type=version, help="stop at this version (default: newest)")
    up.set_defaults(func=_cmd_upgrade)
    down = dbsub.add_parser(
        "downgrade",
        help="revert migrations (one step by default)",
        description="Revert the newest migration (or --steps N, or down to --to VERSION). "
        "Reverting 0001 drops the tables and their data, and needs --drop-data.",
    )
    group = down.add_mutually_exclusive_group()
    group.add_argument("--steps", type=positive_int, default=1, help="steps to revert")
    group.add_argument("--to", type=version, help="revert down to this version (0: all)")
    down.add_argument(
        "--drop-data", action="store_true", help="allow steps that drop tables with data"
    )
    down.set_defaults(func=_cmd_downgrade)
    st = dbsub.add_parser(
        "status",
        help="show applied and pending migrations (--check: exit 5 when any is pending)",
        description="Show applied and pending migrations. With --check, exit 5 when a "
        "migration is pending (or applied from a modified file), so a health check "
        "or a deployment step can wait for `resilience db upgrade`.",
    )
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.add_argument(
        "--check",
        action="store_true",
        help="exit 5 when a migration is pending or modified (print one line)",
    )
    st.set_defaults(func=_cmd_status)


def _cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from .._db import upgrade

    done = upgrade(settings, args.to)
    schema = settings.database_schema
    if done:
        names = ", ".join(m.label for m in done)
        out().write(f"schema {schema}: applied {names}\n")
    else:
        out().write(f"schema {schema}: up to date\n")
    return ExitCode.OK


def _cmd_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    from .._db import downgrade

    done = downgrade(settings, args.steps, to=args.to, drop_data=args.drop_data)
    schema = settings.database_schema
    if done:
        out().write(f"schema {schema}: reverted {', '.join(m.label for m in done)}\n")
    else:
        out().write(f"schema {schema}: nothing to revert\n")
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .._db import status
    from .._tables import render_table

    rows = status(settings)
    stream = out()
    if args.check:
        # "unknown": applied by a newer package; the schema is ahead, not behind
        bad = [r for r in rows if r.state in ("pending", "modified")]
        if not bad:
            applied = sum(1 for r in rows if r.state == "applied")
            stream.write(f"schema {settings.database_schema}: {applied} migrations applied\n")
            return ExitCode.OK
        listed = ", ".join(f"{r.version:04d}_{r.name} {r.state}" for r in bad)
        print(
            f"resilience: schema {settings.database_schema}: {listed}; run `resilience db upgrade`",
            file=sys.stderr,
        )
        return ExitCode.MIGRATION
    if args.format == "json":
        records = [
            {
                "version": r.version,
                "name": r.name,
                "state": r.state,
                "applied_at": r.applied_at.isoformat() if r.applied_at else None,
                "checksum": r.checksum,
            }
            for r in rows
        ]
        json.dump(records, stream, indent=2)
        stream.write("\n")
        return ExitCode.OK
    table = [
        [f"{r.version:04d}", r.name, r.state, fmt_time(r.applied_at), r.checksum[:12]] for r in rows
    ]
    stream.write(
        render_table(["version", "name", "state", "applied (UTC)", "checksum"], table, set())
    )
    stream.write("\n")
    return ExitCode.OK
