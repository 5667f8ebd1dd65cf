"""The operator CLI: ``resilience`` (console script) and ``python -m resilience``.

Settings come from the ``RESILIENCE_*`` environment (``Settings()``), read only by the
commands that need them, so ``--help`` always works.

Exit codes: 0 success; 1 another error; 2 bad arguments or settings; 3 Redis unreachable;
4 PostgreSQL unreachable or failing; 5 missing migration. Every failure is one line on
stderr, never a traceback.

Adding a subcommand is one function ``register(subparsers)`` that adds its parser and sets
``func`` to the handler ``(args, settings) -> int`` (``set_defaults(func=...)``), plus one
line registering it in :data:`COMMANDS` (or the ``@command`` decorator). The settings are
built after parsing, so ``--help`` never needs valid settings. A handler raises
:class:`ResilienceError` or :class:`CliError` for failures and prints its output to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn, TextIO

from ._exceptions import ResilienceError, StoreUnavailableError
from ._settings import Settings
from ._types import Target, TargetState

__all__ = ["CliError", "command", "main", "parse_duration"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REDIS = 3
EXIT_POSTGRES = 4
EXIT_MIGRATION = 5

_EPILOG = (
    "Settings come from RESILIENCE_* environment variables (RESILIENCE_REDIS_URL, "
    "RESILIENCE_KEY_PREFIX, RESILIENCE_DATABASE_URL, RESILIENCE_DATABASE_SCHEMA, ...). "
    "Exit codes: 0 ok, 1 error, 2 bad arguments or settings, 3 Redis unreachable, "
    "4 PostgreSQL unreachable, 5 missing migration (run `resilience db upgrade`)."
)


OPERATOR_TIMEOUT_S = 5.0
"""Redis timeouts of CLI commands and the snapshot job (s), unless settings ask for more."""


class CliError(Exception):
    """A failure the CLI reports as one line with the given exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        self.code = code
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed and exited)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)", EXIT_USAGE)


# --------------------------------------------------------------------------- durations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"``, ``"1h30m"`` or a plain
    number of seconds. Raises ValueError for anything else or a duration that is not > 0."""
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(raw):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(raw) or not raw:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 15m, 1h, 7d, 90d") from None
    if not (seconds > 0 and seconds < float("inf")):
        raise ValueError(f"invalid duration {text!r}: must be more than 0")
    return seconds


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid version {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------- plumbing

Handler = Callable[[argparse.Namespace, Settings], int]
Registrar = Callable[[Any], None]

COMMANDS: list[Registrar] = []
"""Functions that each add one subcommand to the parser, in ``--help`` order (``demo`` and
``serve-metrics`` delegate to their modules' ``register``)."""


def command(register: Registrar) -> Registrar:
    """Decorator adding a subcommand: ``register(subparsers)`` calls
    ``subparsers.add_parser(...)`` and sets ``func``, the handler ``(args, settings) -> int``,
    with ``set_defaults``."""
    COMMANDS.append(register)
    return register


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        raise CliError(" ".join(str(exc).split()), EXIT_USAGE) from None


def _out() -> TextIO:
    return sys.stdout


def _fmt_time(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _state_record(s: TargetState) -> dict[str, Any]:
    return {
        "provider": s.provider,
        "model": s.model,
        "state": s.state,
        "blacklisted": s.blacklisted,
        "open_until": s.open_until.isoformat() if s.open_until else None,
        "error_count": s.error_count,
        "success_count": s.success_count,
        "consecutive_errors": s.consecutive_errors,
        "trips": s.trips,
        "reason": s.reason,
        "manual": s.manual,
        "last_error_kind": s.last_error_kind,
        "last_error_time": s.last_error_time.isoformat() if s.last_error_time else None,
        "last_success_time": s.last_success_time.isoformat() if s.last_success_time else None,
        "endpoint_hint": s.endpoint_hint,
        "provider_blocked_until": (
            s.provider_blocked_until.isoformat() if s.provider_blocked_until else None
        ),
        "since": s.since.isoformat() if s.since else None,
    }


def _state_line(s: TargetState) -> str:
    until = f" until {_fmt_time(s.open_until)} UTC" if s.blacklisted and s.open_until else ""
    why = f" ({s.reason})" if s.reason else ""
    return f"{s.provider}/{s.model}: {s.state}{until}{why}"


def _breaker(settings: Settings) -> Any:
    from ._breaker import Breaker

    # No local view: the CLI makes a few calls and needs no subscriber thread.
    # Operator commands and the snapshot job are not on a provider call's path: they may wait
    # longer for a remote Redis than the fail-open timeouts of the workers allow.
    return Breaker(
        settings.model_copy(
            update={
                "local_view": False,
                "redis_socket_timeout": max(settings.redis_socket_timeout, OPERATOR_TIMEOUT_S),
                "redis_connect_timeout": max(settings.redis_connect_timeout, OPERATOR_TIMEOUT_S),
            }
        )
    )


# --------------------------------------------------------------------------- commands


@command
def _add_status(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="live state of every target, from Redis",
        description="Show the live state of every target (or one provider's) from Redis. "
        "PostgreSQL is not needed.",
    )
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--blocked", action="store_true", help="only targets that are blocked now")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ._report import render_table

    with _breaker(settings) as breaker:
        states: list[TargetState] = breaker.states(args.provider)
    states.sort(key=lambda s: (s.provider, s.model))
    if args.blocked:
        states = [s for s in states if s.blacklisted]
    out = _out()
    if args.format == "json":
        json.dump([_state_record(s) for s in states], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return EXIT_OK
    if not states:
        out.write("no targets in Redis under this key prefix\n")
        return EXIT_OK
    rows = [
        [
            s.provider,
            s.model,
            s.state,
            str(s.error_count),
            str(s.success_count),
            str(s.consecutive_errors),
            str(s.trips),
            _fmt_time(s.open_until) if s.blacklisted else "",
            " ".join((s.reason or "").split())[:50],
            s.endpoint_hint or "",
        ]
        for s in states
    ]
    headers = [
        "provider",
        "model",
        "state",
        "errors",
        "successes",
        "consec",
        "trips",
        "blocked until (UTC)",
        "reason",
        "endpoint hint",
    ]
    out.write(render_table(headers, rows, {3, 4, 5, 6}) + "\n")
    blocked = sum(1 for s in states if s.blacklisted)
    out.write(f"\n{len(states)} targets, {blocked} blocked\n")
    return EXIT_OK


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("provider", help="provider name, e.g. openai")
    p.add_argument("model", help="model name, e.g. gpt-4o")


def _target(args: argparse.Namespace) -> Target:
    try:
        return Target(args.provider, args.model)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


@command
def _add_block(sub: Any) -> None:
    p = sub.add_parser(
        "block",
        help="block a target (or its whole provider) for a while",
        description="Open a target for the given time; afterwards one probe decides. "
        "With --provider-wide every model of the provider is blocked.",
    )
    _add_target_args(p)
    p.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="how long, e.g. 30m, 1h, 7d",
    )
    p.add_argument("--reason", default="", help="shown in status, reports and logs")
    p.add_argument("--provider-wide", action="store_true", help="block every model of PROVIDER")
    p.set_defaults(func=_cmd_block)


def _cmd_block(args: argparse.Namespace, settings: Settings) -> int:
    target = _target(args)
    with _breaker(settings) as breaker:
        state = breaker.block(target, args.duration, args.reason, provider_wide=args.provider_wide)
    scope = f"provider {target.provider}" if args.provider_wide else str(target)
    _out().write(f"blocked {scope} for {_fmt_seconds(args.duration)}: {_state_line(state)}\n")
    return EXIT_OK


@command
def _add_unblock(sub: Any) -> None:
    p = sub.add_parser(
        "unblock",
        help="close a blocked target (or provider) now",
        description="Close a target now and clear its trips; with --provider-wide, lift "
        "the provider-wide block.",
    )
    _add_target_args(p)
    p.add_argument(
        "--provider-wide", action="store_true", help="lift the block of the whole provider"
    )
    p.set_defaults(func=_cmd_unblock)


def _cmd_unblock(args: argparse.Namespace, settings: Settings) -> int:
    target = _target(args)
    with _breaker(settings) as breaker:
        state = breaker.unblock(target, provider_wide=args.provider_wide)
    _out().write(f"unblocked: {_state_line(state)}\n")
    return EXIT_OK


@command
def _add_reset(sub: Any) -> None:
    p = sub.add_parser(
        "reset",
        help="forget a target's counters and state",
        description="Forget a target's counters and state in Redis. Totals in PostgreSQL "
        "keep growing: the next snapshot sees the restart.",
    )
    _add_target_args(p)
    p.set_defaults(func=_cmd_reset)


def _cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    target = _target(args)
    with _breaker(settings) as breaker:
        state = breaker.reset(target)
    _out().write(f"reset: {_state_line(state)}\n")
    return EXIT_OK


@command
def _add_snapshot(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="copy the Redis state to PostgreSQL (once, or every N seconds)",
        description="Copy every target's state and the new transitions from Redis to "
        "PostgreSQL in one transaction. With --every, repeat until SIGTERM or Ctrl-C (the "
        "loop stops between snapshots); of several replicas one leader writes each "
        "interval.",
    )
    p.add_argument(
        "--every",
        type=_duration,
        metavar="SECONDS",
        help="repeat at this interval (seconds, or e.g. 1m)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics (snapshot duration, fleet state) on this port "
        "(needs llm-resilience[metrics])",
    )
    p.add_argument(
        "--metrics-addr", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)"
    )
    p.set_defaults(func=_cmd_snapshot)


def _cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from ._snapshot import SnapshotResult, run_every, take_snapshot

    out = _out()

    def show(result: SnapshotResult) -> None:
        if not args.quiet:
            out.write(result.describe() + "\n")
            out.flush()

    def failed(exc: ResilienceError) -> None:
        print(f"resilience snapshot: {_one_line(exc)}", file=sys.stderr, flush=True)

    server = None
    if args.metrics_port is not None:
        from ._metrics import start_metrics_server

        server = start_metrics_server(args.metrics_port, args.metrics_addr)
    with _breaker(settings) as breaker:
        if args.every is None:
            show(take_snapshot(breaker, settings))
            if server is not None:
                server.shutdown()
            return EXIT_OK
        written = run_every(args.every, breaker, settings, on_result=show, on_error=failed)
    if not args.quiet:
        out.write(f"snapshot loop stopped after {written} snapshots\n")
    return EXIT_OK


@command
def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="problematic models, provider success rates, blacklist, hints, transitions",
        description="Report from the PostgreSQL history for a period: problematic models, "
        "provider success rates (lowest first), what is blacklisted now, learned endpoint "
        "hints and recent transitions.",
    )
    p.add_argument(
        "--since",
        type=_duration,
        default=parse_duration("7d"),
        metavar="DURATION",
        help="length of the period before now (default 7d; e.g. 24h, 90d)",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw charts into this file")
    p.add_argument("--limit", type=_positive_int, default=50, help="most problematic models listed")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from ._report import build_report, format_report, plot_report

    period = timedelta(seconds=args.since)
    report = build_report(settings, period, limit=args.limit)
    if args.plot:
        plot_report(settings, args.plot, report.since, now=report.until)
    _out().write(format_report(report, args.format))
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return EXIT_OK


@command
def _add_prune(sub: Any) -> None:
    p = sub.add_parser(
        "prune",
        help="delete history and transitions older than a duration",
        description="Delete snapshot history and transitions older than the given age. "
        "The current state rows (model_compatibility_hints) stay.",
    )
    p.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="age of the rows to delete, e.g. 90d",
    )
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from ._snapshot import prune

    result = prune(settings, timedelta(seconds=args.older_than))
    _out().write(
        f"pruned rows older than {_fmt_time(result.cutoff)} UTC: {result.history} history, "
        f"{result.transitions} transitions, {result.snapshots} snapshots\n"
    )
    return EXIT_OK


@command
def _add_db(sub: Any) -> None:
    p = sub.add_parser(
        "db",
        help="database migrations: upgrade, downgrade, status",
        description="Apply, revert or list the SQL migrations (under an advisory lock; "
        "safe from several replicas at once).",
    )
    dbsub = p.add_subparsers(dest="db_command", metavar="{upgrade,downgrade,status}")
    dbsub.required = True
    up = dbsub.add_parser(
        "upgrade", help="apply pending migrations", description="Apply pending migrations."
    )
    up.add_argument("--to", type=_version, help="stop at this version (default: newest)")
    up.set_defaults(func=_cmd_db_upgrade)
    down = dbsub.add_parser(
        "downgrade",
        help="revert migrations (one step by default)",
        description="Revert the newest migration (or --steps N, or down to --to VERSION). "
        "Reverting 0001 drops the tables and their data, and needs --drop-data.",
    )
    group = down.add_mutually_exclusive_group()
    group.add_argument("--steps", type=_positive_int, default=1, help="steps to revert")
    group.add_argument("--to", type=_version, help="revert down to this version (0: all)")
    down.add_argument(
        "--drop-data", action="store_true", help="allow steps that drop tables with data"
    )
    down.set_defaults(func=_cmd_db_downgrade)
    st = dbsub.add_parser(
        "status",
        help="show applied and pending migrations",
        description="Show applied and pending migrations.",
    )
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.set_defaults(func=_cmd_db_status)


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from ._db import upgrade

    done = upgrade(settings, args.to)
    schema = settings.database_schema
    if done:
        names = ", ".join(m.label for m in done)
        _out().write(f"schema {schema}: applied {names}\n")
    else:
        _out().write(f"schema {schema}: up to date\n")
    return EXIT_OK


def _cmd_db_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    from ._db import downgrade

    done = downgrade(settings, args.steps, to=args.to, drop_data=args.drop_data)
    schema = settings.database_schema
    if done:
        _out().write(f"schema {schema}: reverted {', '.join(m.label for m in done)}\n")
    else:
        _out().write(f"schema {schema}: nothing to revert\n")
    return EXIT_OK


def _cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from ._db import status
    from ._report import render_table

    rows = status(settings)
    out = _out()
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
        json.dump(records, out, indent=2)
        out.write("\n")
        return EXIT_OK
    table = [
        [f"{r.version:04d}", r.name, r.state, _fmt_time(r.applied_at), r.checksum[:12]]
        for r in rows
    ]
    out.write(render_table(["version", "name", "state", "applied (UTC)", "checksum"], table, set()))
    out.write("\n")
    return EXIT_OK


@command
def _add_demo(sub: Any) -> None:
    from ._demo.cli import register

    register(sub)


@command
def _add_serve_metrics(sub: Any) -> None:
    from ._metrics import register

    register(sub)


# Commands whose outcome line says it all: the library's own log lines only with -v.
_QUIET_COMMANDS = frozenset(
    {"status", "block", "unblock", "reset", "snapshot", "report", "prune", "db"}
)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subparser per function in :data:`COMMANDS`."""
    parser = _Parser(
        prog="resilience",
        description="Operate the fleet-wide circuit breaker: live state, manual blocks, "
        "snapshots to PostgreSQL, reports, retention and migrations.",
        epilog=_EPILOG,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"resilience {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the library's log lines ([CompatibilityHint] ...) on stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


@contextlib.contextmanager
def _library_logs(*, verbose: bool) -> Iterator[None]:
    """The library's log lines go to stderr with ``-v`` only: by default the commands print
    their own outcome, and a failure must stay one line."""
    logger = logging.getLogger("resilience")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler] if verbose else [logging.NullHandler()]
    logger.setLevel(logging.INFO if verbose else logging.CRITICAL)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _exit_code(exc: ResilienceError) -> int:
    from ._db import DatabaseError, MigrationError, MigrationRequiredError
    from ._snapshot import SnapshotError

    if isinstance(exc, MigrationRequiredError):
        return EXIT_MIGRATION
    if isinstance(exc, MigrationError):
        return EXIT_ERROR
    if isinstance(exc, StoreUnavailableError):
        return EXIT_REDIS
    if isinstance(exc, SnapshotError):
        return EXIT_REDIS if exc.service == "redis" else EXIT_POSTGRES
    if isinstance(exc, DatabaseError):
        return EXIT_POSTGRES
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
        handler: Handler = args.func
        if args.verbose or args.command in _QUIET_COMMANDS:
            with _library_logs(verbose=args.verbose):
                return handler(args, _settings())
        return handler(args, _settings())
    except CliError as exc:
        print(_one_line(exc), file=sys.stderr)
        return exc.code
    except ResilienceError as exc:
        print(f"resilience: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(exc)
    except ValueError as exc:
        print(f"resilience: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:  # an optional extra is missing (metrics, plot)
        print(f"resilience: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("resilience: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # e.g. the metrics port is taken
        print(f"resilience: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
