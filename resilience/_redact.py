"""Secret redaction for every message the library logs or stores.

Provider error messages and exception texts sometimes echo credentials back (``Incorrect API
key provided: sk-...``, a request URL with ``?key=AIza...``, a Redis URL with a password).
:func:`redact` removes them before a message reaches a log line, Redis or Postgres.

Every pattern is linear-time: each one starts at a fixed literal or at the
start of a character run (a negative lookbehind), and no pattern nests quantifiers, so a
hostile multi-megabyte message cannot trigger catastrophic backtracking.

Kept on purpose: ordinary words, request ids (``req_011CVQ...``), organisation ids and model
names; they are what an operator needs to follow a failure up with the provider.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MARKER", "redact", "redact_url"]

MARKER = "[REDACTED]"
"""What a removed secret is replaced with (a URL password becomes ``***``)."""

_URL_MASK = "***"
_ELLIPSIS = "…"
# Work on at most this many characters (times max_chars): the output is short anyway, and a
# secret cut at this boundary leaves a fragment too short to be a credential.
_SCAN_FACTOR = 8
_MIN_SCAN = 20_000

_WS = r"\s+"

# Secrets recognisable by their own shape, wherever they appear. The lookbehinds keep the
# match at the start of a token, so "task-..." or "risk-..." words are never touched.
_TOKEN_SHAPES = (
    # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-api03-...) keys.
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{8,}",
    # Google API keys.
    r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{20,}",
    # Groq keys.
    r"(?<![A-Za-z0-9])gsk_[A-Za-z0-9]{16,}",
    # AWS access key ids (long-term AKIA, temporary ASIA).
    r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    # JWTs and other base64url JSON tokens: header.payload[.signature].
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+){1,2}",
)

# "Bearer <token>" in any case (Authorization headers echoed back).
_BEARER = r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]+=*"
# "Authorization: <scheme> <credentials>" (Basic, Token, ...): keep the scheme, drop the rest.
_AUTHORIZATION = (
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?:(basic|token|apikey|bearer)\s+)?"
    r"[^\s\"',;}]+"
)
# Header and query parameters that carry a credential: "api-key: x", "api_key=x",
# "x-api-key: x", "?key=x", "&token=x", "access_token=x", '"password": "x"', ...
_PARAM = (
    r"(?i)\b((?:x-)?api[-_]?key|x-goog-api-key|(?:ocp-apim-)?subscription[-_]?key|key"
    r"|(?:access|refresh|id|auth|session)[-_]?token|token|(?:client[-_]?)?secret"
    r"|aws[-_]secret[-_]access[-_]key|secret[-_]access[-_]key|password|passwd|pwd"
    r"|x-amz-security-token|x-amz-signature|signature|sig)"
    r"([\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"'&,;}<>]+"
)
# Escaped punctuation hides a credential from the patterns below: "key%3D<secret>",
# "url=https%3A%2F%2Fh%3Fkey%3D<secret>", "key\u003d<secret>", "key&#61;<secret>". Such
# escapes of URL and JSON punctuation are decoded first (the stored text is then easier
# to read too).
_ESCAPED = r"(?i)%(2[0-9a-f]|3[a-f]|40|5[bd])|\\u00([2-7][0-9a-f])|&#(\d{2,3});"
# "scheme://user:password@host": the password goes, the user and host stay.
_URL_USERINFO = r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/?#\s]*@"
# "http(s)://token@host": a user-info without a password in a web URL is a credential.
_URL_TOKEN = r"(?i)(?<![a-z0-9+.-])(https?://)[^:/?#@\s]+@"
# Whole-URL variant for redact_url: the password may itself hold "@" (last "@" wins).
_URL_USERINFO_WHOLE = r"(?i)^(\s*[a-z][a-z0-9+.-]*://[^:/?#@]*):[^/?#]*@"
# Long opaque runs: checked by _opaque() (mixed-case alphanumeric with digits, or long hex).
_LONG_RUN = r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])"
_HEX = r"[0-9a-f]{40,}"


@functools.cache
def _re(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled at its first use, then reused: most processes never redact
    anything, and compiling every pattern at import would cost each process's start a few
    milliseconds."""
    return re.compile(pattern)


# Identifiers that look random but are meant to be kept (request, org, message ids).
_KEEP_PREFIXES = (
    "req_",
    "request_",
    "org-",
    "org_",
    "msg_",
    "chatcmpl-",
    "resp_",
    "run_",
    "call_",
    "toolu_",
    "file-",
    "batch_",
)


def _opaque(match: re.Match[str]) -> str:
    """Replace a long run that looks like a random secret; keep ids and ordinary words."""
    token = match.group(0)
    if token.lower().startswith(_KEEP_PREFIXES):
        return token
    if _re(_HEX).fullmatch(token):
        return MARKER
    has_digit = any(c.isdigit() for c in token)
    has_lower = any(c.islower() for c in token)
    has_upper = any(c.isupper() for c in token)
    return MARKER if has_digit and has_lower and has_upper else token


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1) or match.group(2)
    value = int(code, 16) if code else int(match.group(3))
    return chr(value) if 0x20 <= value < 0x7F else match.group(0)


def _scrub(text: str) -> str:
    """All secret patterns applied to ``text`` (no whitespace change, no truncation)."""
    for _ in range(2):  # twice: a URL inside a URL parameter is escaped twice
        text = _re(_ESCAPED).sub(_unescape, text)
    for pattern in _TOKEN_SHAPES:
        text = _re(pattern).sub(MARKER, text)
    text = _re(_BEARER).sub(lambda m: f"{m.group(1)} {MARKER}", text)
    text = _re(_AUTHORIZATION).sub(
        lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{MARKER}", text
    )
    text = _re(_PARAM).sub(lambda m: f"{m.group(1)}{m.group(2)}{MARKER}", text)
    text = _re(_URL_USERINFO).sub(lambda m: f"{m.group(1)}:{_URL_MASK}@", text)
    text = _re(_URL_TOKEN).sub(lambda m: f"{m.group(1)}{MARKER}@", text)
    return _re(_LONG_RUN).sub(_opaque, text)


def redact(text: str, max_chars: int = 500) -> str:
    """Return ``text`` without secrets, on one line, at most ``max_chars`` characters long.

    Removes API keys (OpenAI ``sk-...``, Anthropic ``sk-ant-...``, Google ``AIza...``, Groq
    ``gsk_...``, AWS ``AKIA...``/``ASIA...``), ``Bearer`` tokens, credential parameters
    (``api-key: x``, ``api_key=x``, ``x-api-key: x``, ``key=x``, ``token=x``,
    ``access_token=x``, ``password=x``, ...), JWT-like ``eyJ...`` tokens and long random
    runs; each becomes ``[REDACTED]``. A password in a URL becomes ``***``
    (``redis://user:***@host``); a token as the user of a web URL
    (``https://<token>@host``) becomes ``[REDACTED]``. Escaped URL and JSON punctuation
    (``%3D``, ``\\u003d``, ``&#61;``) is decoded first, so an escaped credential is found
    too. Runs of whitespace collapse to one space. When the result is longer than
    ``max_chars`` (a count of characters) it is cut and ends with ``"…"``; the
    total length never exceeds ``max_chars``. Linear time; never raises for a ``str``.
    """
    if max_chars < 1:
        return ""
    text = str(text)[: max(max_chars * _SCAN_FACTOR, _MIN_SCAN)]
    text = _scrub(_re(_WS).sub(" ", text).strip())
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + _ELLIPSIS


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its user-info replaced by ``***``.

    ``redis://user:secret@host:6379/0`` → ``redis://user:***@host:6379/0``;
    ``redis://:secret@host`` → ``redis://:***@host``. Credential query parameters
    (``?password=x``, ``&token=x``, ...) and key-value DSN passwords (``password=x``) are
    replaced by ``[REDACTED]``. A URL without a password is returned unchanged. Never raises
    for a ``str``; not truncated.
    """
    url = str(url)
    url = _re(_URL_USERINFO_WHOLE).sub(lambda m: f"{m.group(1)}:{_URL_MASK}@", url, count=1)
    return _re(_PARAM).sub(lambda m: f"{m.group(1)}{m.group(2)}{MARKER}", url)
