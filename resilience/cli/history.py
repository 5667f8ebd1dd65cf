"""The history in PostgreSQL: ``snapshot`` (and its liveness check), ``report`` (and the
quarterly review), ``prune``.

Each key prefix (application) keeps its own history in a shared schema; these commands work
on the prefix of the settings unless ``--all-prefixes`` asks for every one.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from .._durations import parse_duration
from .._exceptions import ExitCode, ResilienceError
from .._settings import Settings
from .base import (
    CliError,
    duration,
    fmt_seconds,
    fmt_time,
    one_line,
    operator_breaker,
    out,
    positive_int,
)

__all__ = ["add_prune", "add_report", "add_snapshot"]


def _add_all_prefixes(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--all-prefixes",
        action="store_true",
        help=f"{what} every key prefix (application) in the schema, not only "
        "RESILIENCE_KEY_PREFIX's",
    )


# --------------------------------------------------------------------------- snapshot


def add_snapshot(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="copy the Redis state to PostgreSQL (once, or every N seconds); --check",
        description="Copy every target's state and the new transitions from Redis to "
        "PostgreSQL in one transaction. With --every, repeat until SIGTERM or Ctrl-C (the "
        "loop stops between snapshots); of several replicas one leader writes each "
        "interval. The leader lock has a short lease renewed while its holder runs, so a "
        "killed job blocks the next one for seconds only. A one-shot snapshot that finds "
        "another replica holding the lock does nothing and exits 6. With --check, take no "
        "snapshot: exit 0 when the newest snapshot of this key prefix is younger than two "
        "intervals (or --max-age), else 1 (a liveness check for the job).",
    )
    p.add_argument(
        "--every",
        type=duration,
        metavar="SECONDS",
        help="repeat at this interval (seconds, or e.g. 1m); with --check: the interval "
        "to compare with",
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
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that the snapshot job is alive (PostgreSQL only; Redis not needed)",
    )
    p.add_argument(
        "--max-age",
        type=duration,
        metavar="DURATION",
        help="with --check: the oldest acceptable snapshot (default: two intervals, as "
        "recorded by `snapshot --every` or seen between the last two snapshots)",
    )
    p.set_defaults(func=_cmd_snapshot)


def _cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        return _check_snapshot(args, settings)
    if args.max_age is not None:
        raise CliError("resilience snapshot: --max-age goes with --check", ExitCode.USAGE)
    from .._snapshot import SnapshotResult, run_every, take_snapshot

    stream = out()

    def show(result: SnapshotResult) -> None:
        if not args.quiet:
            stream.write(result.describe() + "\n")
            stream.flush()

    def failed(exc: ResilienceError) -> None:
        print(f"resilience snapshot: {one_line(exc)}", file=sys.stderr, flush=True)

    server = None
    if args.metrics_port is not None:
        from .._metrics import start_metrics_server

        server = start_metrics_server(args.metrics_port, args.metrics_addr)
    try:
        with operator_breaker(settings) as breaker:
            if args.every is None:
                result = take_snapshot(breaker, settings)
                if not result.written:  # cron must see it: its own exit code, on stderr
                    print(f"resilience: {result.describe()}", file=sys.stderr)
                    return ExitCode.SKIPPED
                show(result)
                return ExitCode.OK
            written = run_every(args.every, breaker, settings, on_result=show, on_error=failed)
    finally:
        if server is not None:
            server.shutdown()
    if not args.quiet:
        stream.write(f"snapshot loop stopped after {written} snapshots\n")
    return ExitCode.OK


def _check_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from .._snapshot import snapshot_health

    health = snapshot_health(
        settings, max_age_s=args.max_age, interval_s=args.every if args.max_age is None else None
    )
    line = f"snapshot job: {health.describe()}"
    if health.last_at is not None and health.max_age_s is None:
        line += " (--max-age)"
    if health.ok:
        out().write(line + "\n")
        return ExitCode.OK
    print(f"resilience: {line}", file=sys.stderr)
    return ExitCode.ERROR


# --------------------------------------------------------------------------- report


def add_report(sub: Any) -> None:
    from .._sections import REVIEW_SECTIONS, SECTIONS

    names = [name for name, _ in SECTIONS] + [name for name, _ in REVIEW_SECTIONS]
    p = sub.add_parser(
        "report",
        help="problematic models, provider success rates, blacklist, hints, transitions; "
        "--quarterly review",
        description="Report from the PostgreSQL history for a period: problematic models, "
        "provider success rates (lowest first), what is blacklisted now, learned endpoint "
        "hints and recent transitions. With --review (--quarterly: the last 90 days), the "
        "quarterly review instead: providers and models ranked by success rate and time "
        "open, and a suggested target order per model family. CSV has one table per "
        "section: choose one with --section, or write one file per section with --out DIR.",
    )
    period = p.add_mutually_exclusive_group()
    period.add_argument(
        "--since",
        type=duration,
        default=None,
        metavar="DURATION",
        help="length of the period before now (default 7d; e.g. 24h, 90d)",
    )
    period.add_argument(
        "--quarterly", action="store_true", help="the quarterly review: --since 90d --review"
    )
    p.add_argument(
        "--review",
        action="store_true",
        help="rank providers and models and suggest a target order per model family",
    )
    p.add_argument(
        "--min-success-rate",
        type=_rate,
        default=0.95,
        metavar="RATE",
        help="with --review: providers below this success rate (0-1, default 0.95) are "
        "marked for replacement",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--section", choices=names, help="only this section")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="with --format csv: write one file per section, DIR/<section>.csv",
    )
    p.add_argument("--plot", metavar="FILE.png", help="also draw charts into this file")
    p.add_argument("--limit", type=positive_int, default=50, help="most problematic models listed")
    _add_all_prefixes(p, "report on")
    p.set_defaults(func=_cmd_report)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _check_report_args(args: argparse.Namespace, review: bool) -> None:
    from .._report import REVIEW_SECTIONS, SECTIONS, check_plot_path

    def usage(message: str) -> CliError:
        return CliError(
            f"resilience report: {message} (see resilience report --help)", ExitCode.USAGE
        )

    valid = [n for n, _ in (REVIEW_SECTIONS if review else SECTIONS)]
    if args.section is not None and args.section not in valid:
        kind = "the review" if review else "the report"
        raise usage(f"{kind} has no section {args.section!r}; choose from {', '.join(valid)}")
    if args.out is not None:
        if args.format != "csv":
            raise usage("--out writes CSV files: add --format csv")
        if not Path(args.out).is_dir():
            raise usage(f"--out {args.out}: no such directory")
    if args.format == "csv" and args.section is None and args.out is None:
        raise usage(
            "CSV has one table per section, with its own header: add --section NAME "
            f"({', '.join(valid)}) or --out DIR for one file per section"
        )
    if args.plot is not None:
        try:
            check_plot_path(args.plot)
        except ValueError as exc:
            raise usage(f"--plot: {exc}") from None


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from .._report import (
        build_report,
        build_review,
        csv_sections,
        format_report,
        format_review,
        plot_report,
    )

    review = args.review or args.quarterly
    _check_report_args(args, review)
    since = args.since if args.since is not None else parse_duration("90d" if review else "7d")
    period = timedelta(seconds=since)
    doc: Any
    if review:
        doc = build_review(
            settings,
            period,
            all_prefixes=args.all_prefixes,
            min_success_rate=args.min_success_rate,
        )
    else:
        doc = build_report(settings, period, limit=args.limit, all_prefixes=args.all_prefixes)
    if args.plot:
        plot_report(settings, args.plot, doc.since, now=doc.until, all_prefixes=args.all_prefixes)
    if args.out is not None:
        written = []
        for name, text in csv_sections(doc).items():
            path = Path(args.out) / f"{name}.csv"
            path.write_text(text, encoding="utf-8")
            written.append(str(path))
        out().write("\n".join(written) + "\n")
    elif review:
        out().write(format_review(doc, args.format, section=args.section))
    else:
        out().write(format_report(doc, args.format, section=args.section))
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return ExitCode.OK


# --------------------------------------------------------------------------- prune


def add_prune(sub: Any) -> None:
    p = sub.add_parser(
        "prune",
        help="delete history and transitions older than a duration",
        description="Delete snapshot history and transitions older than the given age, of "
        "this key prefix (or --all-prefixes). The current state rows "
        "(model_compatibility_hints) stay, and so does the newest keyframe before the cutoff "
        "(the history records changes; the keyframe holds every target's starting value).",
    )
    p.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="age of the rows to delete, e.g. 90d",
    )
    _add_all_prefixes(p, "prune")
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from .._snapshot import prune

    result = prune(settings, timedelta(seconds=args.older_than), all_prefixes=args.all_prefixes)
    scope = "every key prefix" if args.all_prefixes else f"key prefix {settings.key_prefix!r}"
    out().write(
        f"pruned rows of {scope} older than {fmt_time(result.cutoff)} UTC "
        f"({fmt_seconds(args.older_than)}): {result.history} history, "
        f"{result.transitions} transitions, {result.snapshots} snapshots\n"
    )
    return ExitCode.OK
