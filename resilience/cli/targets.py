"""Live state and manual changes: ``status``, ``block``, ``unblock``, ``reset`` (Redis only).

Times shown are UTC with a relative form beside them (``in 29s``, ``3m ago``), measured
against this machine's clock.

"trips" means what it means in ``resilience report``: openings caused by failures that count
toward a trip (consecutive failures, failure rate, a retired model, a failed probe), never
rate-limit breaks, provider blocks (auth, permission, quota) or manual blocks. ``status``
shows the count since the target's state began (or its last ``unblock``), ``report`` the
count within its period.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .._durations import relative
from .._exceptions import ExitCode, ResilienceError
from .._settings import Settings
from .._states import ProviderState, TargetState
from .._status import SORTS, Listing, list_targets
from .._types import Target
from .base import (
    CliError,
    duration,
    fmt_seconds,
    fmt_time,
    fmt_when,
    non_negative_int,
    one_line,
    operator_breaker,
    out,
)

__all__ = ["add_block", "add_reset", "add_status", "add_unblock", "state_record"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def probe_due(s: TargetState | ProviderState, now: datetime) -> bool:
    """True when the break of a target (or provider) has ended and the next call will be its
    probe."""
    return s.state == "open" and s.open_until is not None and s.open_until <= now


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def provider_record(p: ProviderState, now: datetime | None = None) -> dict[str, Any]:
    """A provider-wide block as a JSON object: ``scope`` "provider", ``model`` null."""
    now = now or _now()
    return {
        "scope": "provider",
        "provider": p.provider,
        "model": None,
        "state": p.state,
        "blacklisted": p.blocked,
        "probe_due": probe_due(p, now),
        "open_until": _iso(p.open_until),
        "trips": p.trips,
        "reason": p.reason,
        "manual": p.manual,
    }


def state_record(s: TargetState, now: datetime | None = None) -> dict[str, Any]:
    """One target as a JSON object (times ISO 8601, UTC)."""
    now = now or _now()
    iso = _iso  # a short name for the many times below
    return {
        "scope": "target",
        "provider": s.provider,
        "model": s.model,
        "state": s.state,
        "blacklisted": s.blacklisted,
        "probe_due": probe_due(s, now),
        "open_until": iso(s.open_until),
        "error_count": s.error_count,
        "success_count": s.success_count,
        "consecutive_errors": s.consecutive_errors,
        "trips": s.trips,
        "reason": s.reason,
        "manual": s.manual,
        "last_error_kind": s.last_error_kind,
        "last_error_message": s.last_error_message,
        "last_error_time": iso(s.last_error_time),
        "last_success_time": iso(s.last_success_time),
        "endpoint_hint": s.endpoint_hint,
        "compat": [h.encode() for h in s.compat],
        "compat_text": [str(h) for h in s.compat],
        "compat_at": iso(s.compat_at),
        "compat_message": s.compat_message,
        "provider_blocked_until": iso(s.provider_blocked_until),
        "since": iso(s.since),
    }


def _hints_cell(s: TargetState) -> str:
    """What the fleet learned of the target: its endpoint hint and compatibility hints."""
    return _cut(
        "; ".join([*([s.endpoint_hint] if s.endpoint_hint else []), *map(str, s.compat)]), 60
    )


def _state_line(s: TargetState) -> str:
    until = f" until {fmt_time(s.open_until)} UTC" if s.blacklisted and s.open_until else ""
    why = f" ({s.reason})" if s.reason else ""
    return f"{s.provider}/{s.model}: {s.state}{until}{why}"


def _cut(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- status

DEFAULT_LIMIT = 100
"""Rows ``status`` shows in a table unless ``--limit`` says otherwise (JSON: every row)."""


def add_status(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="live state of every target, from Redis",
        description="Show the live state of every target (or one provider's, or the models "
        "matching --model) from Redis. PostgreSQL is not needed. 'probe due' means the "
        "break has ended and the next call will be the probe. 'trips' counts openings "
        "after counted failures (not rate limits, provider or manual blocks), as in "
        "`resilience report`.",
    )
    p.add_argument("--provider", help="only this provider")
    p.add_argument(
        "--model", metavar="NAME", help="only models named NAME (or matching a glob: 'gpt-4*')"
    )
    p.add_argument("--blocked", action="store_true", help="only targets that are blocked now")
    p.add_argument(
        "--sort",
        choices=SORTS,
        default="name",
        help="order of the rows (default name; counts largest first, until soonest first)",
    )
    p.add_argument(
        "--limit",
        type=non_negative_int,
        metavar="N",
        help=f"show N rows (default {DEFAULT_LIMIT} in a table, every row in JSON; 0: every "
        "row); the summary counts every match",
    )
    p.add_argument(
        "--offset",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="skip the first N rows (the next page: --offset 100)",
    )
    p.add_argument(
        "--watch",
        type=duration,
        metavar="SECONDS",
        help="redraw every SECONDS (e.g. 2, 5s) until Ctrl-C; with --format json, one "
        "JSON array per line",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_status)


def _until_cell(s: TargetState, now: datetime) -> str:
    if probe_due(s, now):
        assert s.open_until is not None
        return f"probe due (break ended {relative(s.open_until, now)})"
    if s.state == "half_open":
        return "probing"
    if s.blacklisted and s.open_until is not None:
        return fmt_when(s.open_until, now)
    return ""


def _last_error_cell(s: TargetState, now: datetime) -> str:
    if not s.last_error_kind and not s.last_error_time:
        return ""
    when = relative(s.last_error_time, now) if s.last_error_time else ""
    head = " ".join(x for x in (s.last_error_kind or "", when) if x)
    msg = _cut(s.last_error_message, 60)
    return f"{head}: {msg}" if msg else head


def _provider_row(p: ProviderState, now: datetime) -> list[str]:
    if probe_due(p, now):
        assert p.open_until is not None
        until = f"probe due (break ended {relative(p.open_until, now)})"
    elif p.state == "half_open":
        until = "probing"
    else:
        until = fmt_when(p.open_until, now) if p.blocked else ""
    reason = _cut(p.reason, 40) + (" (manual)" if p.manual and p.reason else "")
    return [p.provider, "(provider-wide)", p.state, "", "", "", str(p.trips), until, reason, "", ""]


def render_status(
    states: Sequence[TargetState],
    now: datetime,
    providers: Sequence[ProviderState] = (),
    listing: Listing | None = None,
) -> str:
    """The status table and its summary line (ends with a newline); provider-wide blocks
    first, as rows whose model is ``(provider-wide)``. With ``listing`` (a page of a longer
    list) the summary counts every match and says which rows are shown."""
    from .._tables import render_table

    if not states and not providers and (listing is None or not listing.matched):
        return "no targets in Redis under this key prefix (or matching the filters)\n"
    rows = [_provider_row(p, now) for p in providers]
    rows += [
        [
            s.provider,
            s.model,
            s.state,
            str(s.error_count),
            str(s.success_count),
            str(s.consecutive_errors),
            str(s.trips),
            _until_cell(s, now),
            _cut(s.reason, 40),
            _last_error_cell(s, now),
            _hints_cell(s),
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
        "until (UTC)",
        "reason",
        "last error",
        "hints",
    ]
    if listing is None:
        total = len(states)
        blocked = sum(1 for s in states if s.blacklisted)
        due = sum(1 for s in states if probe_due(s, now))
    else:
        total, blocked, due = listing.matched, listing.blocked, listing.probe_due
    summary = f"{total} targets, {blocked} blocked"
    if due:
        summary += f", {due} probe due"
    if listing is not None and not listing.complete:
        first = listing.offset + 1
        shown = f"rows {first}-{listing.offset + len(states)}" if states else "no rows"
        summary += f"; {shown} shown (--limit N, --offset N for others)"
    if providers:
        summary += f"; provider-wide: {', '.join(f'{p.provider} {p.state}' for p in providers)}"
    return render_table(headers, rows, {3, 4, 5, 6}) + f"\n\n{summary}\n"


def _providers(args: argparse.Namespace, breaker: Any) -> list[ProviderState]:
    """Provider-wide states that are not closed (none when filtering by model)."""
    if args.model is not None:
        return []
    found = [
        p
        for p in breaker.provider_states()
        if p.state != "closed" and (args.provider is None or p.provider == args.provider)
    ]
    if args.blocked:
        found = [p for p in found if p.blocked]
    return sorted(found, key=lambda p: p.provider)


def _show_status(args: argparse.Namespace, breaker: Any) -> str:
    limit = args.limit
    if limit is None and args.format == "table":
        limit = DEFAULT_LIMIT
    listing = list_targets(
        breaker,
        provider=args.provider,
        model=args.model,
        blocked=args.blocked,
        sort=args.sort,
        limit=limit or None,
        offset=args.offset,
    )
    providers = _providers(args, breaker) if args.offset == 0 else []
    now = _now()
    if args.format == "json":
        records = [provider_record(p, now) for p in providers]
        records += [state_record(s, now) for s in listing.states]
        if args.watch:
            return json.dumps(records, ensure_ascii=False) + "\n"
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    return render_status(listing.states, now, providers, listing)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with operator_breaker(settings) as breaker:
        if args.watch is None:
            out().write(_show_status(args, breaker))
            return ExitCode.OK
        return _watch(args, breaker)


def _watch(args: argparse.Namespace, breaker: Any) -> int:
    """Redraws until Ctrl-C (exit 0). A Redis outage shows as a line and the loop goes on."""
    stream = out()
    clear = args.format == "table" and stream.isatty()
    try:
        while True:
            try:
                text = _show_status(args, breaker)
            except ResilienceError as exc:
                text = f"resilience: {one_line(exc)}\n"
            if clear:
                stream.write("\x1b[H\x1b[2J")
            if args.format == "table":
                stamp = fmt_time(_now())
                text = f"every {fmt_seconds(args.watch)}, {stamp} UTC (Ctrl-C to stop)\n\n{text}\n"
            stream.write(text)
            stream.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return ExitCode.OK


# --------------------------------------------------------------------------- changes


def _add_target_args(p: argparse.ArgumentParser, *, model_optional: bool = False) -> None:
    p.add_argument("provider", help="provider name, e.g. openai")
    if model_optional:
        p.add_argument(
            "model",
            nargs="?",
            help="model name, e.g. gpt-4o (not needed with --provider-wide; '*' means "
            "--provider-wide)",
        )
    else:
        p.add_argument("model", help="model name, e.g. gpt-4o")


def _target(args: argparse.Namespace) -> Target:
    try:
        return Target(args.provider, args.model)
    except ValueError as exc:
        raise CliError(f"resilience {args.command}: {exc}", ExitCode.USAGE) from None


def _provider_wide(args: argparse.Namespace) -> bool:
    """True for the whole provider (``--provider-wide``, or ``*`` as the model, which would
    otherwise create a target named ``*``); checks the provider name either way."""
    wide = bool(args.provider_wide) or args.model == "*"
    if not wide and args.model is None:
        raise CliError(
            f"resilience {args.command}: MODEL is required unless --provider-wide "
            f"(see resilience {args.command} --help)",
            ExitCode.USAGE,
        )
    if wide:
        try:
            Target(args.provider, "*")  # a provider name follows a Target's rules
        except ValueError as exc:
            raise CliError(f"resilience {args.command}: {exc}", ExitCode.USAGE) from None
    return wide


def _provider_line(p: ProviderState) -> str:
    until = f" until {fmt_time(p.open_until)} UTC" if p.blocked and p.open_until else ""
    why = f" ({p.reason})" if p.reason else ""
    return f"provider {p.provider}: {p.state}{until}{why}"


def closest_targets(breaker: Any, target: Target, n: int = 3) -> list[str]:
    """The names (``provider/model``) of known targets closest to ``target``."""
    names = sorted({f"{s.provider}/{s.model}" for s in breaker.states()})
    return difflib.get_close_matches(str(target), names, n=n, cutoff=0.6)


def _is_known(breaker: Any, target: Target) -> bool:
    return any(s.model == target.model for s in breaker.states(target.provider))


def _refuse_unknown(breaker: Any, target: Target, args: argparse.Namespace) -> None:
    """Unknown targets are refused (a typing mistake would create a phantom target that
    then shows in status, snapshots, reports and metrics) unless ``--force``."""
    if args.force or _is_known(breaker, target):
        return
    close = closest_targets(breaker, target)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise CliError(
        f"resilience {args.command}: no such target {target} under key prefix "
        f"{breaker.settings.key_prefix!r}{hint} (--force to {args.command} it anyway)",
        ExitCode.ERROR,
    )


def _refuse_unknown_provider(breaker: Any, args: argparse.Namespace) -> None:
    providers = set(breaker.providers()) | {p.provider for p in breaker.provider_states()}
    if args.force or args.provider in providers:
        return
    close = difflib.get_close_matches(args.provider, sorted(providers), n=3, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise CliError(
        f"resilience {args.command}: no such provider {args.provider} under key prefix "
        f"{breaker.settings.key_prefix!r}{hint} (--force to {args.command} it anyway)",
        ExitCode.ERROR,
    )


def _provider_note(state: TargetState) -> str:
    """A line saying the provider's own block still applies, or ""."""
    until = state.provider_blocked_until
    if until is None or until <= _now():
        return ""
    return (
        f"note: provider {state.provider} is still blocked until {fmt_when(until, _now())} "
        f"UTC, so {state.provider}/{state.model} stays skipped; lift it with "
        f"`resilience unblock {state.provider} --provider-wide`\n"
    )


def add_block(sub: Any) -> None:
    p = sub.add_parser(
        "block",
        help="block a target (or its whole provider) for a while",
        description="Open a target for the given time; afterwards one probe decides. "
        "With --provider-wide every model of the provider is blocked. A target with no "
        "state yet may be blocked (before it is first called); a note names the closest "
        "known targets in case of a typing mistake.",
    )
    _add_target_args(p, model_optional=True)
    p.add_argument(
        "--for",
        dest="duration",
        type=duration,
        required=True,
        metavar="DURATION",
        help="how long, e.g. 30m, 1h, 7d (at most 10 years)",
    )
    p.add_argument("--reason", default="", help="shown in status, reports and logs")
    p.add_argument(
        "--provider-wide",
        action="store_true",
        help="block every model of PROVIDER (MODEL is then not needed)",
    )
    p.set_defaults(func=_cmd_block)


def _cmd_block(args: argparse.Namespace, settings: Settings) -> int:
    if _provider_wide(args):
        with operator_breaker(settings) as breaker:
            pstate = breaker.block_provider(args.provider, args.duration, args.reason)
        out().write(
            f"blocked provider {args.provider} for {fmt_seconds(args.duration)}: "
            f"{_provider_line(pstate)}\n"
        )
        return ExitCode.OK
    target = _target(args)
    with operator_breaker(settings) as breaker:
        if not _is_known(breaker, target):
            close = closest_targets(breaker, target)
            if close:
                print(
                    f"resilience block: note: {target} had no state yet; known targets "
                    f"close to it: {', '.join(close)}",
                    file=sys.stderr,
                )
        state = breaker.block(target, args.duration, args.reason)
    out().write(f"blocked {target} for {fmt_seconds(args.duration)}: {_state_line(state)}\n")
    return ExitCode.OK


def add_unblock(sub: Any) -> None:
    p = sub.add_parser(
        "unblock",
        help="close a blocked target (or provider) now",
        description="Close a target now and clear its trips; with --provider-wide (no "
        "MODEL needed), lift the provider-wide block. An unknown target or provider is "
        "refused with the closest known names (--force to go ahead). Unblocking a model "
        "while its provider is blocked says that the provider block still applies.",
    )
    _add_target_args(p, model_optional=True)
    p.add_argument(
        "--provider-wide",
        action="store_true",
        help="lift the block of the whole provider (MODEL is then not needed)",
    )
    p.add_argument("--force", action="store_true", help="even if the target has no state")
    p.set_defaults(func=_cmd_unblock)


def _cmd_unblock(args: argparse.Namespace, settings: Settings) -> int:
    if _provider_wide(args):
        with operator_breaker(settings) as breaker:
            _refuse_unknown_provider(breaker, args)
            pstate = breaker.unblock_provider(args.provider)
        out().write(f"unblocked: {_provider_line(pstate)}\n")
        return ExitCode.OK
    target = _target(args)
    with operator_breaker(settings) as breaker:
        _refuse_unknown(breaker, target, args)
        state = breaker.unblock(target)
    out().write(f"unblocked: {_state_line(state)}\n")
    out().write(_provider_note(state))
    return ExitCode.OK


def add_reset(sub: Any) -> None:
    p = sub.add_parser(
        "reset",
        help="forget a target's counters and state",
        description="Forget a target's counters and state in Redis. Totals in PostgreSQL "
        "keep growing: the next snapshot sees the restart. An unknown target is refused "
        "with the closest known names (--force to go ahead).",
    )
    _add_target_args(p)
    p.add_argument("--force", action="store_true", help="even if the target has no state")
    p.set_defaults(func=_cmd_reset)


def _cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    target = _target(args)
    with operator_breaker(settings) as breaker:
        _refuse_unknown(breaker, target, args)
        state = breaker.reset(target)
    out().write(f"reset: {_state_line(state)}\n")
    out().write(_provider_note(state))
    return ExitCode.OK
