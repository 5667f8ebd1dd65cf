"""Waits from everywhere: headers, body fields, body phrases, gRPC RetryInfo.

Order of trust (first found wins):

1. ``retry-after-ms`` / ``x-ms-retry-after-ms`` (milliseconds), then ``retry-after``
   (seconds or an HTTP-date).
2. The body: a phrase ("try again in 20s", "Please retry in 37.5s", "retry after 20
   seconds", "resets in ~5s", "reset after 140h 21m 10s"), then a wait field
   (``retry_after``, ``retryAfter``, ``estimated_time``), then gRPC ``RetryInfo``
   (``"retryDelay": "47s"``, ``retry_delay { seconds: 47 }``). A client's own backoff
   written in its log ("Retrying in 5 seconds", "_completion_with_retry in 4.0 seconds")
   is not a wait.
3. For rate limits only (:func:`reset_headers_wait`): the window reset headers, OpenAI's
   ``x-ratelimit-reset-*`` (Go durations) and Anthropic's ``anthropic-ratelimit-*-reset``
   (RFC 3339 instants, measured from the response's ``date`` header when it has one).

Every value is clamped to ``[0, MAX_WAIT_S]``; the breaker applies its own, smaller cap
(``max_retry_after_seconds``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["MAX_WAIT_S", "body_wait", "header_wait", "reset_headers_wait"]

MAX_WAIT_S = 366 * 86400.0  # longer waits are clamped (s)

_UNIT_S = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
_GO_UNITS = r"(?:ms|us|µs|μs|ns|h|m|s)"
_GO_PART = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(" + _GO_UNITS + ")")
# "1s", "6m0s", "20ms", "9m38.016s" (Go's time.Duration, used by OpenAI and Groq).
_GO_DURATION = r"(?:\d{1,12}(?:\.\d{1,12})?" + _GO_UNITS + r"){1,6}"
_GO_DURATION_RX = re.compile(_GO_DURATION)
_WORD_UNITS = {
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "msec": 1e-3,
    "msecs": 1e-3,
    "second": 1.0,
    "seconds": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "minute": 60.0,
    "minutes": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "day": 86400.0,
    "days": 86400.0,
}
# Not "_completion_with_retry in 4.0 seconds" nor "Retrying in 5 seconds" (a client's own
# backoff written in its log, not the server's wait).
_LEAD = r"(?<![\w.])(?:retry|try again|resets?)\s(?:after|in)\s(?:about |approximately |~\s?)?"
# "Please try again in 18.642s", "try again in 6ms", "Please retry in 47.434392449s".
# In prose the parts may be spaced: "reset after 140h 21m 10s".
_PHRASE_GO = re.compile(
    _LEAD
    + r"((?:\d{1,12}(?:\.\d{1,12})?"
    + _GO_UNITS
    + r" ?){0,5}\d{1,12}(?:\.\d{1,12})?"
    + _GO_UNITS
    + r")(?![a-z0-9µμ])"
)
# "Please retry after 20 seconds", "Try again in 2 minutes", "try again after 1 seconds".
_PHRASE_WORDS = re.compile(
    _LEAD
    + r"(\d{1,12}(?:\.\d{1,12})?)\s?("
    + "|".join(sorted(_WORD_UNITS, key=len, reverse=True))
    + r")\b"
)
# Body fields: "retry_after": 5, 'retryAfter': '30', "estimated_time": 20.0 (seconds);
# "retry_after_ms": 1500 (milliseconds).
_FIELD = re.compile(
    r"[\"']?\b(retry_?after(?:_seconds|_ms)?|estimated_time)[\"']?\s{0,4}[:=]\s{0,4}[\"']?"
    r"(\d{1,12}(?:\.\d{1,12})?)"
)
# gRPC RetryInfo in JSON, Python repr or JS text: "retryDelay": "47s".
_RETRY_DELAY = re.compile(r"retrydelay[\"']?\s{0,4}[:=]\s{0,4}[\"']?(\d{1,12}(?:\.\d{1,12})?)s")
# gRPC RetryInfo as protobuf text (google-api-core error strings): retry_delay { seconds: 47 }
_RETRY_DELAY_PB = re.compile(
    r"retry_delay\s{0,4}\{\s{0,4}seconds:\s{0,4}(\d{1,12})(?:\s{1,4}nanos:\s{0,4}(\d{1,9}))?"
)
_NUMBER = re.compile(r"\s*(\d{1,15}(?:\.\d{1,15})?)\s*")
_RESET_WINDOWS = ("requests", "tokens", "input-tokens", "output-tokens")


def clamp(value: float) -> float | None:
    """A wait in ``[0, MAX_WAIT_S]`` seconds, or None for NaN, inf-like or negative."""
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_WAIT_S)


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration ("6m0s", "20ms") or a bare number of seconds."""
    text = text.strip()
    if len(text) > 80:
        return None
    text = text.replace(" ", "")
    if m := _NUMBER.fullmatch(text):
        return clamp(float(m.group(1)))
    if not _GO_DURATION_RX.fullmatch(text):
        return None
    return clamp(sum(float(n) * _UNIT_S[u] for n, u in _GO_PART.findall(text)))


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _iso_instant(value: str) -> datetime | None:
    text = value.strip()
    if not text or len(text) > 40:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _now(headers: Mapping[str, str]) -> datetime:
    """The server's clock when the response has a ``date`` header, else this host's."""
    date = headers.get("date")
    when = _http_date(date) if date else None
    return when if when is not None else datetime.now(timezone.utc)


def header_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds from retry-after-ms, x-ms-retry-after-ms or retry-after (seconds or date)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value is not None and (m := _NUMBER.fullmatch(value)):
            return clamp(float(m.group(1)) / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    if m := _NUMBER.fullmatch(value):
        return clamp(float(m.group(1)))
    when = _http_date(value)
    if when is None:
        return None
    return clamp(max(0.0, (when - _now(headers)).total_seconds()))


def reset_headers_wait(headers: Mapping[str, str]) -> float | None:
    """The reset of the exhausted rate-limit window (or the longest one), in seconds.

    Reads OpenAI/Groq ``x-ratelimit-reset-{requests,tokens}`` (Go durations) and Anthropic
    ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`` (RFC 3339
    instants). A window whose ``*-remaining`` is 0 is preferred.
    """
    found: list[tuple[bool, float]] = []
    for window in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-reset-{window}")
        if value is None:
            continue
        seconds = go_duration(value)
        if seconds is not None:
            empty = headers.get(f"x-ratelimit-remaining-{window}", "").strip() == "0"
            found.append((empty, seconds))
    now: datetime | None = None
    for window in _RESET_WINDOWS:
        value = headers.get(f"anthropic-ratelimit-{window}-reset")
        if value is None:
            continue
        when = _iso_instant(value)
        if when is None:
            continue
        now = now or _now(headers)
        seconds = clamp(max(0.0, (when - now).total_seconds()))
        if seconds is not None:
            remaining = headers.get(f"anthropic-ratelimit-{window}-remaining", "").strip()
            found.append((remaining == "0", seconds))
    if not found:
        return None
    return max(found)[1]


_WAIT_WORDS = ("retry", "try again", "reset", "estimated_time")


def body_wait(low: str) -> float | None:
    """Seconds stated in the (lower-cased, normalised) body text, or None."""
    if not any(w in low for w in _WAIT_WORDS):
        return None
    if m := _PHRASE_GO.search(low):
        return go_duration(m.group(1))
    if m := _PHRASE_WORDS.search(low):
        return clamp(float(m.group(1)) * _WORD_UNITS[m.group(2)])
    if m := _FIELD.search(low):
        value = float(m.group(2))
        return clamp(value / 1000.0 if m.group(1).endswith("_ms") else value)
    if m := _RETRY_DELAY.search(low):
        return clamp(float(m.group(1)))
    if m := _RETRY_DELAY_PB.search(low):
        return clamp(int(m.group(1)) + int(m.group(2) or 0) / 1e9)
    return None
