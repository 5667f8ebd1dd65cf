"""What every command of the CLI shares: the one-line errors, argument types, settings,
output helpers and the operator's breaker."""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TextIO

from .._durations import format_duration, parse_duration, relative
from .._exceptions import ExitCode
from .._settings import Settings, SettingsWarning, settings_error_lines

__all__ = [
    "OPERATOR_TIMEOUT_S",
    "CliError",
    "Parser",
    "duration",
    "fmt_time",
    "fmt_when",
    "load_settings",
    "non_negative_duration",
    "non_negative_int",
    "one_line",
    "operator_breaker",
    "out",
    "positive_int",
    "version",
]

OPERATOR_TIMEOUT_S = 5.0
"""Redis timeouts of CLI commands and the snapshot job (s), unless settings ask for more."""


class CliError(Exception):
    """A failure the CLI reports as it is (one short line each) with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = ExitCode.ERROR) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed and exited)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)", ExitCode.USAGE)


def one_line(exc: BaseException) -> str:
    """The exception's text on one line (its class name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- argument types


def duration(text: str) -> float:
    """argparse type: a duration > 0 (:func:`resilience._durations.parse_duration`)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def non_negative_duration(text: str) -> float:
    """argparse type: a duration >= 0."""
    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def version(text: str) -> int:
    """argparse type: a migration version >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid version {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------- settings


def load_settings(env_file: str | None = None) -> Settings:
    """``Settings()`` from the ``RESILIENCE_*`` environment (and ``env_file`` when given).

    A mistyped variable is printed as one warning line naming the closest setting; invalid
    values raise :class:`CliError` (exit 2) with one short line per problem.
    """
    values: dict[str, Any] = {}
    if env_file is not None:
        if not Path(env_file).is_file():
            raise CliError(f"resilience: --env-file {env_file}: no such file", ExitCode.USAGE)
        values["_env_file"] = env_file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingsWarning)
        try:
            settings = Settings(**values)
        except ValueError as exc:
            lines = settings_error_lines(exc)
            raise CliError(
                "\n".join(f"resilience: invalid setting: {line}" for line in lines),
                ExitCode.USAGE,
            ) from None
    seen: set[str] = set()
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, SettingsWarning):
            if text not in seen:
                seen.add(text)
                print(f"resilience: warning: {text}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return settings


# --------------------------------------------------------------------------- output


def out() -> TextIO:
    """Where commands print (looked up at each call, so tests can capture it)."""
    return sys.stdout


def fmt_time(dt: datetime | None) -> str:
    """``2026-01-08 12:00:00`` in UTC, or "" for None."""
    if dt is None:
        return ""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_when(dt: datetime | None, now: datetime) -> str:
    """``2026-01-08 12:00:00 (in 29s)`` / ``(3m ago)``, or "" for None."""
    if dt is None:
        return ""
    return f"{fmt_time(dt)} ({relative(dt, now)})"


def fmt_seconds(seconds: float) -> str:
    """``30m``, ``1h``, ``7d`` or ``95s``."""
    return format_duration(seconds)


def operator_breaker(settings: Settings) -> Any:
    """A :class:`~resilience.Breaker` for operator commands: no local view (a few calls need
    no subscriber thread) and Redis timeouts of at least :data:`OPERATOR_TIMEOUT_S`, since
    these commands are not on a provider call's path and may wait for a remote Redis."""
    from .._breaker import Breaker

    return Breaker(
        settings.model_copy(
            update={
                "local_view": False,
                "redis_socket_timeout": max(settings.redis_socket_timeout, OPERATOR_TIMEOUT_S),
                "redis_connect_timeout": max(settings.redis_connect_timeout, OPERATOR_TIMEOUT_S),
            }
        )
    )
