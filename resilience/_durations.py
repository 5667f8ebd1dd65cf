"""Durations written by people: ``90s``, ``5m``, ``1h30m``, ``7d``, ``2w`` or plain seconds.

One parser for the CLI's arguments and the ``RESILIENCE_*`` duration variables, so both
accept the same forms and refuse the same mistakes; and the short forms the CLI prints
(``1h``, ``in 29s``, ``3m ago``). No I/O.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

__all__ = ["MAX_DURATION_S", "format_duration", "parse_duration", "relative"]

MAX_DURATION_S = 3650 * 86400.0
"""Longest duration accepted (10 years, in seconds). Longer ones are typing mistakes, and
would overflow the millisecond deadlines Redis keeps."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART_RE = r"(\d+(?:\.\d+)?)([smhdw])"  # compiled at first use (re's cache)
_EXAMPLES = "use e.g. 90s, 5m, 1h, 1h30m, 7d, 2w or plain seconds"


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"``, ``"1h30m"`` or a plain
    number of seconds (``"90"``, ``"0.5"``).

    Args:
        text: the duration as written.
        allow_zero: accept 0 (settings such as ``store_retry_seconds`` may be 0).

    Raises:
        ValueError: a form not listed above, a negative, zero (unless allowed), infinite or
            NaN duration, or one longer than :data:`MAX_DURATION_S` (10 years); the message
            quotes the text and says what is accepted.
    """
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _with_units(raw, text)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"invalid duration {text!r}: must be {least}")
    if seconds > MAX_DURATION_S:
        raise ValueError(
            f"invalid duration {text!r}: at most {format_duration(MAX_DURATION_S)} "
            f"({MAX_DURATION_S / 86400 / 365:.0f} years)"
        )
    return seconds


def _with_units(raw: str, text: str) -> float:
    pos, seconds = 0, 0.0
    for m in re.finditer(_PART_RE, raw):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(raw) or not raw:
        raise ValueError(f"invalid duration {text!r}: {_EXAMPLES}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: ``"30m"``, ``"1h"``, ``"7d"``, else ``"95s"`` / ``"0.5s"``."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _approx(seconds: float) -> str:
    """``29s``, ``3m``, ``2h``, ``5d``: one unit, rounded down (0.4 s shows as ``0s``)."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def relative(when: datetime, now: datetime) -> str:
    """``"in 29s"`` for a time after ``now``, ``"3m ago"`` for one before (aware datetimes)."""
    delta = (when - now).total_seconds()
    return f"in {_approx(delta)}" if delta > 0 else f"{_approx(delta)} ago"
