"""Text helpers: bodies of any shape to text, the provider's message, a status in the text.

Every function here takes untrusted input and never raises. Long inputs are cut before any
regex runs (see :data:`SCAN_HEAD` / :data:`SCAN_TAIL`), and the regexes have no nested
unbounded repeats, so the cost is linear in a bounded length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

__all__ = [
    "MAX_SOURCE",
    "SCAN_HEAD",
    "SCAN_TAIL",
    "json_message",
    "lower_headers",
    "message_from_text",
    "normalize",
    "parse_json",
    "plain",
    "safe_str",
    "scan_window",
    "status_from_text",
    "to_text",
    "valid_status",
]

# Characters of error text the rules read: the head (where the provider's message is) and
# the tail (where a traceback's last line is). Error bodies that matter are short; a 1 MB
# body costs the same as 8 KB.
SCAN_HEAD = 6_000
SCAN_TAIL = 2_000
# Characters kept from one source (a body, an exception's text) before joining.
MAX_SOURCE = 20_000
_MAX_HEADERS = 200

_WS = re.compile(r"\s+")
_HTML_TAG = re.compile(r"<[^<>]{0,200}>")
# JSON written inside JSON strings (``\"code\": 429``, ``\n``): undone so that phrases and
# code fields read the same at any nesting depth.
_ESCAPED_NEWLINE = re.compile(r"\\{1,8}[nrt]")
_ESCAPED_QUOTE = re.compile(r"\\{1,8}([\"'/])")
# "message": "...", 'message': '...', message: '...' (JSON, Python repr, JS object text).
_MESSAGE_FIELD = re.compile(
    r"(?:^|[{,\s])[\"']?message[\"']?\s{0,8}:\s{0,8}"
    r"(?:\"((?:[^\"\\]|\\.){0,2000})\"|'((?:[^'\\]|\\.){0,2000})')"
)
_WRAPPER_STATUSES = frozenset({400, 500, 502})
_MAX_STATUS_MATCHES = 8
# A status code written in the text: "Error code: 429 - ...", "API error: 429", "HTTP 429",
# "429 Too Many Requests", '"code": 404', "status: 503", or a leading "402 Insufficient
# Balance".
_STATUS_IN_TEXT = re.compile(
    r"^\s{0,8}([45]\d\d)\b(?![.,]\d)"
    r"|error code:?\s{0,4}([45]\d\d)\b"
    r"|\berror[\s:(]{1,4}([45]\d\d)\b(?![.,]\d)"
    r"|\bhttp(?:/\d(?:\.\d)?)?\s{0,4}(?:status\s{0,4})?(?:code\s{0,4})?:?\s{0,4}([45]\d\d)\b"
    r"|[\"']?\b(?:code|status|status_?code|httpstatuscode|statuscode)[\"']?\s{0,4}[:=]\s{0,4}"
    r"[\"']?([45]\d\d)\b"
    r"|\b(?:responded|failed|returned) with status(?: code)?\s{1,4}([45]\d\d)\b"
    r"|\b([45]\d\d)[\s:-]{1,6}(?:too many requests|service unavailable|bad gateway|gateway"
    r" time-?out|internal server error|not found|unauthorized|forbidden|bad request"
    r"|payment required|request timeout|payload too large|request entity too large"
    r"|unprocessable entity|resource_exhausted|unavailable|invalid_argument|not_found"
    r"|permission_denied|unauthenticated|internal|deadline_exceeded|failed_precondition)",
    re.IGNORECASE,
)


def safe_str(obj: object) -> str:
    """``str(obj)``, or "" when that raises.

    An exception holding one str or bytes argument (and no ``__str__`` of its own) gives
    that argument as text, bounded, without building the repr of a megabyte of bytes.
    """
    try:
        if isinstance(obj, BaseException) and type(obj).__str__ is BaseException.__str__:
            args = obj.args
            if len(args) == 1 and isinstance(args[0], (str, bytes, bytearray)):
                return to_text(args[0])
        return str(obj)
    except Exception:
        return ""


def to_text(body: object) -> str:
    """A body of any type as text (at most :data:`MAX_SOURCE` characters); never raises."""
    if body is None:
        return ""
    if isinstance(body, str):
        return _cut(body)
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body[: MAX_SOURCE * 4]) if len(body) <= MAX_SOURCE * 4 else _cut_bytes(body)
        return _cut(data.decode("utf-8", "replace"))
    if isinstance(body, (dict, list)):
        try:
            dumped = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
            return _cut(dumped.decode("utf-8", "replace"))
        except (TypeError, ValueError, orjson.JSONEncodeError):
            pass
    return _cut(safe_str(body))


def _cut(text: str) -> str:
    """Head and tail of a long text (the tail holds a traceback's last line)."""
    if len(text) <= MAX_SOURCE:
        return text
    tail = MAX_SOURCE // 4
    return text[: MAX_SOURCE - tail] + "\n" + text[-tail:]


def _cut_bytes(data: bytes | bytearray | memoryview) -> bytes:
    tail = MAX_SOURCE  # bytes: up to 4 per character
    return bytes(data[: MAX_SOURCE * 3]) + b"\n" + bytes(data[-tail:])


def scan_window(text: str) -> str:
    """The part of ``text`` the rules read: :data:`SCAN_HEAD` + :data:`SCAN_TAIL` chars."""
    if len(text) <= SCAN_HEAD + SCAN_TAIL:
        return text
    return text[:SCAN_HEAD] + "\n" + text[-SCAN_TAIL:]


def plain(text: str) -> str:
    """HTML pages (CDN error pages) as their text."""
    if "<" in text and ">" in text and "</" in text:
        text = _HTML_TAG.sub(" ", text)
    return text


def normalize(text: str) -> str:
    """Escapes of nested JSON undone, HTML tags dropped, whitespace collapsed (case kept)."""
    if "\\" in text:
        text = _ESCAPED_NEWLINE.sub(" ", text)
        text = _ESCAPED_QUOTE.sub(r"\1", text)
    return _WS.sub(" ", plain(text)).strip()


def parse_json(text: str) -> object:
    """The JSON value in ``text`` (also after a prefix such as "Error code: 400 - "), or None."""
    s = text.strip()
    if not s:
        return None
    if s[0] not in "{[":
        start = s.find("{")
        if start < 0:
            return None
        s = s[start:]
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return None


_MESSAGE_KEYS = ("message", "Message", "detail", "error_description", "msg", "errorMessage")


def json_message(obj: object, depth: int = 0) -> str | None:
    """The provider's own message in a parsed body (OpenAI, Anthropic, Google, botocore,
    RFC 7807 ``detail`` / ``title``)."""
    if depth > 4:
        return None
    if isinstance(obj, list):
        return json_message(obj[0], depth + 1) if obj else None
    if not isinstance(obj, dict):
        return None
    err = obj.get("error", obj.get("Error"))
    if isinstance(err, str) and err:
        return err
    if isinstance(err, (dict, list)) and (found := json_message(err, depth + 1)):
        return found
    errors = obj.get("errors")
    if isinstance(errors, list) and (found := json_message(errors, depth + 1)):
        return found
    for key in (*_MESSAGE_KEYS, "title"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and (found := json_message(value, depth + 1)):
            return found
    return None


def message_from_text(text: str) -> str | None:
    """A ``message`` field found in text that is not valid JSON (repr, JS, truncated);
    looked for in the first :data:`SCAN_HEAD` characters."""
    if "message" not in text:
        return None
    if m := _MESSAGE_FIELD.search(text, 0, SCAN_HEAD):
        found = m.group(1) if m.group(1) is not None else m.group(2)
        return found or None
    return None


_STATUS_HEAD = 2_000
_STATUS_TAIL = 1_000


def status_from_text(text: str) -> int | None:
    """An HTTP status written in the text (its first 2 000 or last 1 000 characters).

    The first one, unless it is a wrapper's catch-all (400, 500, 502) and the text quotes a
    more specific one after it: "HTTP error! status: 400 - {... Replicate API error: 429
    ...}" is the provider's 429 relayed by an application's own 400.
    """
    if len(text) > _STATUS_HEAD + _STATUS_TAIL:
        return status_from_text(text[:_STATUS_HEAD]) or status_from_text(text[-_STATUS_TAIL:])
    first: int | None = None
    for i, m in enumerate(_STATUS_IN_TEXT.finditer(text)):
        found = int(next(g for g in m.groups() if g is not None))
        if first is None:
            first = found
            if first not in _WRAPPER_STATUSES:
                return first
        elif found not in _WRAPPER_STATUSES:
            return found
        if i >= _MAX_STATUS_MATCHES:
            break
    return first


def valid_status(value: object) -> int | None:
    """An HTTP status (100-599) from an int or a 3-digit string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 100 <= value <= 599 else None
    if isinstance(value, str) and len(value) == 3 and value.isdigit():
        return valid_status(int(value))
    return None


def lower_headers(headers: object) -> dict[str, str]:
    """Header names lower-cased; accepts any Mapping, httpx.Headers or (name, value) pairs."""
    out: dict[str, str] = {}
    if headers is None:
        return out
    try:
        items: Iterable[object]
        items_of = getattr(headers, "items", None)
        if callable(items_of):
            items = items_of()
        elif isinstance(headers, (list, tuple)):
            items = headers
        else:
            return out
        for n, item in enumerate(items):
            if n >= _MAX_HEADERS:
                break
            if isinstance(item, (tuple, list)) and len(item) == 2:
                name, value = item
                if isinstance(name, bytes):
                    name = name.decode("latin-1")
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                out[str(name).lower()] = str(value)[:200]
    except Exception:
        return out
    return out
