"""The operator CLI: ``resilience`` (console script) and ``python -m resilience``.

One module per command group: :mod:`.targets` (status, block, unblock, reset),
:mod:`.history` (snapshot, report, prune), :mod:`.db` (migrations), :mod:`.doctor`; the demo
and ``serve-metrics`` register themselves from their own modules. :mod:`.base` holds what
they share.

Settings come from the ``RESILIENCE_*`` environment (and ``--env-file``), read after the
arguments are parsed and only by the commands that run, so ``--help`` always works.

Exit codes (:class:`resilience._exceptions.ExitCode`): 0 success; 1 another error; 2 bad
arguments or settings; 3 Redis unreachable; 4 PostgreSQL unreachable or failing; 5 a missing
migration (or a pending one with ``db status --check``); 6 a one-shot snapshot skipped because
another replica holds the leader lock. Every failure is short lines on stderr, never a
traceback (``-v`` adds the traceback of an unexpected error).

An error chooses its own exit code: every :class:`~resilience.ResilienceError` and
:class:`~.base.CliError` carries ``exit_code``. Only argument and settings parsing exit 2;
anything else a handler raises is an unexpected error (exit 1, one line).

Adding a subcommand is one function ``register(subparsers)`` that adds its parser and sets
``func``, the handler ``(args, settings) -> int`` (``set_defaults(func=...)``), plus one line
in :data:`COMMANDS`. A handler raises :class:`ResilienceError` or :class:`CliError` for
failures and prints its output to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._durations import parse_duration
from .._exceptions import ExitCode, ResilienceError
from .._settings import Settings
from . import db, doctor, history, metrics, targets
from .base import CliError, Parser, load_settings, one_line

__all__ = ["COMMANDS", "CliError", "build_parser", "main", "parse_duration"]

Handler = Callable[[argparse.Namespace, Settings], int]
Registrar = Callable[[Any], None]

_EPILOG = (
    "Settings come from RESILIENCE_* environment variables (RESILIENCE_REDIS_URL, "
    "RESILIENCE_KEY_PREFIX, RESILIENCE_DATABASE_URL, RESILIENCE_DATABASE_SCHEMA, ...) and "
    "--env-file. Exit codes: 0 ok, 1 error, 2 bad arguments or settings, 3 Redis unreachable, "
    "4 PostgreSQL unreachable, 5 missing migration (run `resilience db upgrade`), "
    "6 snapshot skipped (another replica holds the lock)."
)


def _add_demo(sub: Any) -> None:
    """``resilience demo``: a thin entry point to the demo, which is an example in the source
    repository (``examples/demo``, written against the public API only), not library code."""
    demo = _demo_module()
    if demo is not None:
        demo.register(sub)
        return
    p = sub.add_parser("demo", help="run the demo (needs the source repository)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_no_demo)


def _demo_module() -> Any:
    """``examples.demo.cli`` from the source tree this package runs from (an editable
    install) or the current directory, or None."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "examples" / "demo" / "cli.py").is_file():
            if str(root) not in sys.path:
                sys.path.append(str(root))
            try:
                return importlib.import_module("examples.demo.cli")
            except ImportError:
                return None
    return None


def _no_demo(args: argparse.Namespace, settings: Settings) -> int:
    raise CliError(
        "resilience demo: the demo ships with the source repository (examples/demo); "
        "run scripts/demo in a clone of it",
        ExitCode.USAGE,
    )


COMMANDS: list[Registrar] = [
    targets.add_status,
    targets.add_block,
    targets.add_unblock,
    targets.add_reset,
    history.add_snapshot,
    history.add_report,
    history.add_prune,
    db.add_db,
    doctor.add_doctor,
    _add_demo,
    metrics.add_serve_metrics,
]
"""Functions that each add one subcommand to the parser, in ``--help`` order."""

# Commands whose outcome line says it all: the library's own log lines only with -v.
_QUIET_COMMANDS = frozenset(
    {"status", "block", "unblock", "reset", "snapshot", "report", "prune", "db", "doctor"}
)


def _add_env_file(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        # below the top level: keep what the top level parsed unless given again
        default=None if top else argparse.SUPPRESS,
        help="also read RESILIENCE_* settings from this dotenv file (the environment wins)",
    )


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subparser per function in :data:`COMMANDS`."""
    parser = Parser(
        prog="resilience",
        description="Operate the fleet-wide circuit breaker: live state, manual blocks, "
        "snapshots to PostgreSQL, reports, retention, migrations and checks.",
        epilog=_EPILOG,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"resilience {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the library's log lines ([CompatibilityHint] ...) on stderr",
    )
    _add_env_file(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for register in COMMANDS:
        register(sub)
    for child in _leaf_parsers(parser):
        if not any("--env-file" in a.option_strings for a in child._actions):
            _add_env_file(child, top=False)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0) if isinstance(exc.code, int | None) else ExitCode.USAGE
        verbose = bool(args.verbose)
        handler: Handler = args.func
        settings = load_settings(args.env_file)
        if verbose or args.command in _QUIET_COMMANDS:
            with _library_logs(verbose=verbose):
                return handler(args, settings)
        return handler(args, settings)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except ResilienceError as exc:
        print(f"resilience: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("resilience: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return ExitCode.OK
    except OSError as exc:  # the environment said no (a port taken, a file not writable)
        print(f"resilience: {one_line(exc)}", file=sys.stderr)
        return ExitCode.ERROR
    except Exception as exc:  # not a known failure: one line, the traceback with -v
        if verbose:
            traceback.print_exc(file=sys.stderr)
        hint = "" if verbose else " (run with -v for the traceback)"
        print(
            f"resilience: unexpected error: {type(exc).__name__}: {one_line(exc)}{hint}",
            file=sys.stderr,
        )
        return ExitCode.ERROR
