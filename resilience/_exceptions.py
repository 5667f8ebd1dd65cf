"""Exceptions raised by resilience.

The tree, with each class's ``exit_code`` (the status the ``resilience`` CLI exits with when
the error ends a command)::

    ResilienceError                                                         exit 1
    ├── CircuitOpenError        a guarded call was not made: the target or      1
    │                           provider is open
    ├── AllTargetsFailedError   (resilience._attempts) the router found no      1
    │                           target that worked
    ├── SettingsError           Settings refused its input (also a ValueError)  2
    ├── StoreUnavailableError   an operator or read call (state, block, ...)    3
    │                           could not reach Redis; never raised on a
    │                           provider call's path
    ├── DatabaseError           (resilience._db) PostgreSQL failed              4
    │   ├── DatabaseUnavailableError   PostgreSQL could not be reached          4
    │   └── MigrationError             a migration step failed or was refused   1
    │       └── MigrationRequiredError the schema is older than this version    5
    │                                  needs
    ├── SnapshotError           (resilience._snapshot) a snapshot wrote      3 or 4
    │                           nothing; ``.service`` names what failed
    │                           ("redis": 3, "postgres": 4)
    └── PlotUnavailableError    (resilience._report) matplotlib is missing      1

Provider exceptions are never wrapped or replaced: a guarded call that fails re-raises the
provider's own exception, and a store (Redis) failure never reaches the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ._redact import redact
from ._types import Target

__all__ = [
    "CircuitOpenError",
    "ResilienceError",
    "SettingsError",
    "StoreUnavailableError",
]


class ExitCode(enum.IntEnum):
    """Exit statuses of the ``resilience`` CLI (documented in the README and the runbook)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    """Bad arguments or settings."""
    REDIS = 3
    """Redis unreachable."""
    POSTGRES = 4
    """PostgreSQL unreachable or failing."""
    MIGRATION = 5
    """A migration is missing (``resilience db upgrade``), or pending with ``--check``."""
    SKIPPED = 6
    """A one-shot snapshot did nothing: another replica holds the snapshot leader lock."""


class ResilienceError(Exception):
    """Base of every exception raised by resilience itself.

    Attributes:
        exit_code: the CLI's exit status when this error ends a command (an
            :class:`ExitCode`; subclasses set their own, see the tree above).
    """

    exit_code: int = ExitCode.ERROR


class CircuitOpenError(ResilienceError):
    """The call was not made because its target (or the target's provider) is open.

    Attributes:
        target: the target that was skipped.
        retry_after_s: seconds until the break ends or the probe lease frees up (best known
            value; 0.0 when unknown).
        reason: why it is open: an error kind, an operator's reason, or ``"store unavailable"``
            in strict mode.
    """

    def __init__(self, target: Target, retry_after_s: float, reason: str = "") -> None:
        self.target = target
        self.retry_after_s = max(0.0, retry_after_s)
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{target} is open{detail}; retry after {self.retry_after_s:.1f}s")


class StoreUnavailableError(ResilienceError):
    """Redis could not be reached for a read or operator call (``state``, ``states``,
    ``block``, ...). Calls on a provider call's path never raise it: they fail open.

    Attributes:
        operation: ``"read"`` or ``"admin"``.
    """

    exit_code = ExitCode.REDIS

    def __init__(self, operation: str, error: BaseException) -> None:
        self.operation = operation
        super().__init__(
            f"Redis unavailable for {operation}: {type(error).__name__}: {redact(str(error), 300)}"
        )


class SettingsError(ResilienceError, ValueError):
    """:class:`~resilience.Settings` refused its input: every problem found, one line each
    (``field (VARIABLE): what is wrong (got 'x')``). URL passwords and the sentinel password
    are never shown.

    Attributes:
        problems: the lines, in the order of the settings (then unknown keywords).
        fields: the setting, or unknown keyword, each line is about (same order).
    """

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        pairs = list(problems)
        self.fields = tuple(name for name, _ in pairs)
        self.problems = tuple(line for _, line in pairs)
        if len(pairs) == 1:
            message = f"invalid setting: {self.problems[0]}"
        else:
            message = f"{len(pairs)} invalid settings:" + "".join(
                f"\n  {line}" for line in self.problems
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[type[SettingsError], tuple[list[tuple[str, str]]]]:
        return type(self), (list(zip(self.fields, self.problems, strict=True)),)
