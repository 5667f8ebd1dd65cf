"""Error classification: any failure of a provider call → :class:`Classification`.

Pure code, no I/O. :func:`classify` accepts whatever a provider call can fail with (an
exception, an ``httpx.Response``, a body) and funnels it into :func:`classify_response`,
which decides from the status code, the headers and the body text together.

The decision is an ordered table of rules (``_RULES``): the first rule that matches wins.
The table has three parts:

1. *Strong text rules*: phrases and codes specific enough to override the status code
   (an auth failure sent as 400, exhausted quota sent as 429, an overloaded model sent as
   429, a wrong endpoint sent as 404 or 400, ...).
2. *The status code* (``_by_status``) when there is one (4xx/5xx).
3. *Weak text rules* for text without a status: SDK messages, errors inside a 200 stream,
   ``str(exception)``.

Then two adjustments: a ``rate_limited`` whose retry delay is an hour or more is really
``quota_exhausted`` (Azure's "retry after 86400 seconds"), and the scope is set
(``"provider"`` for auth and account-wide quota, see ``_scope``).

SDK exceptions (OpenAI, Anthropic, google-genai, google-api-core, botocore, requests,
aiohttp) are read by duck typing (``status_code``, ``response``, ``body``, ``code``,
``status``, ``details``, botocore's ``response`` dict); none of them is imported.

Deliberate departure from the golden set (``tests/data/provider_errors.jsonl``): OpenAI's
"Did you mean to use v1/completions?" is read as naming ``/v1/completions`` even for the one
model (gpt-5.2-pro) where that text is wrong; no text-only rule can tell the two apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import math
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import httpx
import orjson

from ._redact import redact
from ._types import Classification, ErrorKind, Scope

__all__ = ["classify", "classify_response"]

_MAX_SCAN = 20_000  # characters of body text scanned; error bodies that matter are short
_MAX_MESSAGE = 300  # characters kept in Classification.message
_MAX_HEADERS = 200
_MAX_CAUSES = 4  # how deep __cause__ / __context__ chains are followed
_QUOTA_RETRY_S = 3600.0  # a rate limit asking to wait this long (s) is an exhausted quota
_MAX_RETRY_S = 366 * 86400.0  # longer delays are clamped (s)

K = ErrorKind


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rules look at.

    ``low`` is the body text (plus any exception text), whitespace collapsed and lower-cased;
    ``raw`` the same text with its case kept (for model ids).
    """

    status: int | None
    low: str
    raw: str
    retry_after_s: float | None


class _Verdict(NamedTuple):
    kind: ErrorKind
    hint: str | None = None
    scope: Scope | None = None


class _Rule(NamedTuple):
    name: str
    test: Callable[[_Facts], _Verdict | None]


def _text(
    pattern: str, kind: ErrorKind, scope: Scope | None = None
) -> Callable[[_Facts], _Verdict | None]:
    """A rule matching ``pattern`` (a regex on the lower-cased text)."""
    rx = re.compile(pattern)

    def test(f: _Facts) -> _Verdict | None:
        return _Verdict(kind, None, scope) if rx.search(f.low) else None

    return test


# --------------------------------------------------------------------------- endpoint hints

_ENDPOINT_PATH = r"(/?v\d+(?:/[a-z0-9_{}-]+)+)"
# OpenAI: "This model is only supported in v1/responses and not in v1/chat/completions."
_ONLY_SUPPORTED_IN = re.compile(
    r"only supported (?:in|on|by|via|with|through) (?:the )?" + _ENDPOINT_PATH
)
# OpenAI: "... not supported in the v1/chat/completions endpoint. Did you mean to use
# v1/completions?" (names the endpoint to use; wrong for a few models, see module docstring)
_DID_YOU_MEAN = re.compile(r"did you mean to use (?:the )?" + _ENDPOINT_PATH)
# Azure: "The chatCompletion operation does not work with the specified model, o3-pro."
_AZURE_OPERATION = re.compile(r"the (\w+) operation does not work with the specified model")
_AZURE_HINTS = {
    "chatcompletion": "/openai/deployments/{deployment}/responses",
    "completion": "/openai/deployments/{deployment}/chat/completions",
}
# OpenRouter: "No endpoints found that support tool use."
_NO_ENDPOINTS_SUPPORT = re.compile(r"no endpoints found that support (?:the )?([a-z ]{1,40})")
_CAPABILITIES = {
    "tool use": "tools",
    "tool calling": "tools",
    "tools": "tools",
    "image input": "images",
    "images": "images",
    "response format": "response-format",
    "structured outputs": "response-format",
}
# Bedrock: "Invocation of model ID anthropic.claude-... with on-demand throughput isn’t
# supported. Retry your request with the ID or ARN of an inference profile ..."
_ON_DEMAND = re.compile(r"on-demand throughput (?:isn.t|is not) supported")
_BEDROCK_MODEL_ID = re.compile(r"(?i)model id (\S+?)\s+with on-demand")
_BEDROCK_GEOS = ("us", "us-gov", "eu", "apac", "jp", "au", "ca", "global")
# OpenAI, older wording: "... is not supported in the v1/completions endpoint" (no hint).
_NOT_SUPPORTED_ENDPOINT = re.compile(r"not supported (?:in|on|with) the v\d+/[a-z/_]+ endpoint")


def _endpoint(path: str) -> str:
    """``"v1/responses."`` → ``"/v1/responses"``."""
    path = path.strip().rstrip(".,;:?!)'\"")
    return path if path.startswith("/") else "/" + path


def _inference_profile(model_id: str) -> str:
    """Cross-region inference profile id for a Bedrock model id (``us.`` unless it has one)."""
    if model_id.startswith("arn:"):
        region = model_id.split(":")[3] if model_id.count(":") >= 4 else ""
        model_id = model_id.rsplit("/", 1)[-1]
        geo = {"eu": "eu", "ap": "apac", "us": "us"}.get(region.split("-")[0], "us")
        if model_id.split(".")[0] in _BEDROCK_GEOS:
            return "inference-profile:" + model_id
        return f"inference-profile:{geo}.{model_id}"
    if model_id.split(".")[0] in _BEDROCK_GEOS:
        return "inference-profile:" + model_id
    return "inference-profile:us." + model_id


def _endpoint_rule(f: _Facts) -> _Verdict | None:
    """Wrong endpoint or capability for this model: the hint says what the model needs."""
    low = f.low
    if m := _ONLY_SUPPORTED_IN.search(low):
        return _Verdict(K.ENDPOINT_MISMATCH, _endpoint(m.group(1)))
    if m := _DID_YOU_MEAN.search(low):
        return _Verdict(K.ENDPOINT_MISMATCH, _endpoint(m.group(1)))
    if m := _AZURE_OPERATION.search(low):
        return _Verdict(K.ENDPOINT_MISMATCH, _AZURE_HINTS.get(m.group(1)))
    if m := _NO_ENDPOINTS_SUPPORT.search(low):
        words = m.group(1).strip()
        cap = _CAPABILITIES.get(words) or "-".join(words.split()[:3]) or "unknown"
        return _Verdict(K.ENDPOINT_MISMATCH, f"capability:{cap}-unsupported")
    if _ON_DEMAND.search(low):
        mid = _BEDROCK_MODEL_ID.search(f.raw)
        return _Verdict(K.ENDPOINT_MISMATCH, _inference_profile(mid.group(1)) if mid else None)
    if _NOT_SUPPORTED_ENDPOINT.search(low):
        return _Verdict(K.ENDPOINT_MISMATCH)
    return None


# --------------------------------------------------------------------------- quota windows

# Groq "tokens per day (TPD)", Gemini quotaId "...PerDay...": the window is a day, so the
# limit will not lift in seconds even though the code says rate_limit_exceeded.
_PER_DAY = re.compile(r"per ?day|\((?:tpd|rpd)\)|daily (?:limit|quota)")
# Gemini quotaId "...PerMinute", OpenAI/Groq "(TPM)/(RPM)": a short window.
_PER_MINUTE = re.compile(r"per ?min(?:ute)?\b|perminute|\((?:tpm|rpm)\)")
# OpenAI and Gemini share this wording for an exhausted plan and for a Gemini window.
_CURRENT_QUOTA = re.compile(r"exceeded your current quota|quota exceeded for (?:metric|quota)")
# Gemini free tier: "limit: 0": the model is not in the plan at all.
_ZERO_LIMIT = re.compile(r"limit: ?0\b(?!\.)")


def _per_day(f: _Facts) -> _Verdict | None:
    """Groq TPD / Gemini per-day quotas: exhausted for the day (the model, not the account)."""
    return _Verdict(K.QUOTA_EXHAUSTED, None, "target") if _PER_DAY.search(f.low) else None


def _current_quota(f: _Facts) -> _Verdict | None:
    """OpenAI's and Gemini's "You exceeded your current quota" (Gemini: per-minute too)."""
    if not _CURRENT_QUOTA.search(f.low):
        return None
    if _ZERO_LIMIT.search(f.low):
        return _Verdict(K.QUOTA_EXHAUSTED, None, "target")
    short = f.retry_after_s is not None and f.retry_after_s < _QUOTA_RETRY_S
    if _PER_MINUTE.search(f.low) or short:
        return _Verdict(K.RATE_LIMITED)
    return _Verdict(K.QUOTA_EXHAUSTED)


# --------------------------------------------------------------------------- status codes

_STATUS_KINDS: dict[int, ErrorKind] = {
    400: K.BAD_REQUEST,
    401: K.AUTH,
    402: K.QUOTA_EXHAUSTED,  # OpenRouter "Insufficient credits", DeepSeek "Insufficient Balance"
    403: K.PERMISSION,
    404: K.MODEL_NOT_FOUND,  # a retired model or deployment, after the endpoint rules
    408: K.TIMEOUT,
    410: K.MODEL_NOT_FOUND,  # "gone": a decommissioned model
    413: K.BAD_REQUEST,  # Groq "Request too large" (never fits this tier)
    429: K.RATE_LIMITED,
    500: K.SERVER_ERROR,
    502: K.SERVER_ERROR,  # Cloudflare HTML "502 Bad Gateway"
    503: K.OVERLOADED,  # OpenAI/Gemini/Mistral: capacity
    504: K.TIMEOUT,
    529: K.OVERLOADED,  # Anthropic overloaded_error
}


def _by_status(f: _Facts) -> _Verdict | None:
    """The HTTP status when the strong text rules did not decide (4xx and 5xx only)."""
    s = f.status
    if s is None or s < 400:
        return None
    kind = _STATUS_KINDS.get(s)
    if kind is None:
        kind = K.BAD_REQUEST if s < 500 else K.SERVER_ERROR
    return _Verdict(kind)


# --------------------------------------------------------------------------- the table

_RULES: tuple[_Rule, ...] = (
    # ---- 1. strong text rules: specific enough to override the status code
    # OpenAI only-on-responses (404 and 400), "Did you mean", Azure chatCompletion operation,
    # OpenRouter "No endpoints found that support tool use", Bedrock on-demand profiles.
    _Rule("endpoint", _endpoint_rule),
    # OpenAI 403 unsupported_country_region_territory, Gemini "User location is not
    # supported": the egress region is blocked for every model of the provider.
    _Rule(
        "region",
        _text(
            r"unsupported_country|country, region,? or territory not supported"
            r"|user location is not supported|not available in your (?:country|region)",
            K.PERMISSION,
            "provider",
        ),
    ),
    # Gemini 400 API_KEY_INVALID, Anthropic "invalid x-api-key", OpenAI invalid_api_key,
    # Azure "invalid subscription key" (before "access denied" below),
    # Gemini 403 leaked key, AWS signature / token errors, suspended accounts.
    _Rule(
        "auth",
        _text(
            r"api_key_invalid|invalid_api_key|invalid x-api-key|incorrect api key"
            r"|api key not valid|invalid api[ -]?key|api key (?:has )?expired"
            r"|api key was reported as leaked|authentication_error|invalid authentication"
            r"|unrecognizedclientexception|invalidsignatureexception|expiredtokenexception"
            r"|security token included in the request is (?:invalid|expired)"
            r"|consumer_suspended|account (?:is |has been )?(?:deactivated|disabled|suspended)"
            r"|invalid subscription key",  # Azure 401 "Access denied due to invalid ..."
            K.AUTH,
        ),
    ),
    # OpenAI 429 insufficient_quota (NOT a rate limit), Anthropic 400 "credit balance is too
    # low", OpenRouter 402 "Insufficient credits", DeepSeek 402 "Insufficient Balance".
    _Rule(
        "billing",
        _text(
            r"insufficient_quota|credit balance is too low|insufficient (?:credits|balance|funds)"
            r"|insufficient_balance|billing_hard_limit|billing hard limit|out of credits"
            r"|payment required|billing_not_active",
            K.QUOTA_EXHAUSTED,
        ),
    ),
    # Groq 413 / OpenAI 429 "Request too large for model ... on tokens per minute": the
    # request alone exceeds the budget, waiting never helps.
    _Rule("too_large", _text(r"request too large|request entity too large", K.BAD_REQUEST)),
    # OpenAI context_length_exceeded, Anthropic "prompt is too long", Gemini "input token
    # count ... exceeds the maximum number of tokens", Anthropic "exceed context limit".
    _Rule(
        "context",
        _text(
            r"context_length_exceeded|maximum context length|prompt is too long"
            r"|input token count.{0,40}exceeds the maximum|exceeds the maximum number of tokens"
            r"|exceeds? (?:the )?context (?:limit|window)|context window (?:is )?exceeded"
            r"|model_context_window_exceeded|input is too long|too many input tokens"
            r"|reduce the length of the messages",
            K.CONTEXT_LENGTH,
        ),
    ),
    # OpenAI invalid_prompt (reasoning models), content_policy_violation / "safety system"
    # (images), Azure content management policy / content_filter.
    _Rule(
        "content_policy",
        _text(
            r"invalid_prompt|content_policy|safety system|flagged as potentially violating"
            r"|content management policy|content_filter|responsibleaipolicyviolation",
            K.CONTENT_POLICY,
        ),
    ),
    # OpenAI 404 model_not_found ("does not exist or you do not have access"), Azure
    # DeploymentNotFound, Gemini "is not found for API version v1beta, or is not supported
    # for generateContent", Anthropic not_found_error, Groq model_decommissioned, Bedrock
    # "model identifier is invalid", OpenRouter "No endpoints found for <model>".
    _Rule(
        "model_not_found",
        _text(
            r"model_not_found|deploymentnotfound|is not found for api version"
            r"|(?:model|deployment)[^.]{0,120}?does not exist|not_found_error|no such model"
            r"|unknown model|model_decommissioned|has been decommissioned"
            r"|model identifier is invalid|resourcenotfoundexception|no endpoints found for ",
            K.MODEL_NOT_FOUND,
        ),
    ),
    # OpenAI 400 "organization must be verified to stream", Bedrock 403 AccessDenied /
    # Marketplace, OpenAI 403 "does not have access to model", Anthropic permission_error.
    _Rule(
        "permission",
        _text(
            r"must be verified to|organization must be verified|accessdeniedexception"
            r"|permission_denied|permission_error|permissiondenied|(?:don.t|do not|does not)"
            r" have access|model access is denied|access denied|not authorized to"
            r"|request_forbidden",
            K.PERMISSION,
        ),
    ),
    # Anthropic 529 overloaded_error, OpenAI 503 "model is currently overloaded", Azure 429
    # "high demand ... peak load", Mistral "Service tier capacity exceeded", Bedrock
    # ServiceUnavailable / ModelNotReady.
    _Rule(
        "overloaded",
        _text(
            r"overloaded|high demand|peak load|capacity exceeded|(?:at|over|insufficient)"
            r" capacity|serviceunavailableexception|modelnotreadyexception",
            K.OVERLOADED,
        ),
    ),
    # Groq TPD / Gemini PerDay windows (before the generic rate-limit rules).
    _Rule("per_day", _per_day),
    # Gemini "You exceeded your current quota" with a PerMinute quotaId or a short retry.
    _Rule("current_quota", _current_quota),
    # Bedrock ThrottlingException (older APIs send it as 400), ServiceQuotaExceeded (a
    # tokens-per-minute quota, "resubmit later").
    _Rule(
        "throttling",
        _text(r"throttlingexception|servicequotaexceededexception", K.RATE_LIMITED),
    ),
    # Bedrock ModelTimeoutException (408), ModelErrorException (424).
    _Rule("bedrock_timeout", _text(r"modeltimeoutexception", K.TIMEOUT)),
    _Rule("bedrock_model_error", _text(r"modelerrorexception", K.SERVER_ERROR)),
    # ---- 2. the status code
    _Rule("status", _by_status),
    # ---- 3. weak text rules: text without a usable status (SDK messages, stream events).
    # Bare numbers are not read here (only "Error code: 400"-like forms, via the inferred
    # status): "x must be < 400" must not become a caller error that is never recorded.
    # Vertex/Gemini RESOURCE_EXHAUSTED, OpenAI rate_limit_exceeded, Anthropic
    # rate_limit_error, "Too many requests".
    _Rule(
        "rate_text",
        _text(
            r"rate[ _]limit|ratelimit|too many requests|resource_exhausted"
            r"|resource (?:has been )?exhausted|\b429\b",  # a bare 429 in a message
            K.RATE_LIMITED,
        ),
    ),
    # Gemini "UNAVAILABLE", "Service Unavailable".
    _Rule(
        "unavailable",
        _text(
            r"service unavailable|temporarily unavailable|[\"']unavailable[\"']",
            K.OVERLOADED,
        ),
    ),
    # OpenAI stream event {type: 'server_error'}, "Internal Server Error", "Bad Gateway".
    _Rule(
        "server_text",
        _text(
            r"server_error|internal server error|internal_error|internalserverexception"
            r"|internalservererror|bad gateway|an error occurred while processing your request"
            r"|the server had an error|[\"']internal[\"']",
            K.SERVER_ERROR,
        ),
    ),
    # requests/urllib3 "Read timed out", DEADLINE_EXCEEDED, "Request timed out."
    _Rule(
        "timeout_text",
        _text(
            r"timed out|timeout|deadline[ _]exceeded|gateway time-?out",
            K.TIMEOUT,
        ),
    ),
    # OpenAI SDK "Connection error.", refused/reset sockets, DNS failures.
    _Rule(
        "connection_text",
        _text(
            r"connection (?:error|refused|reset|aborted|closed)|connecterror"
            r"|failed to establish a new connection|name or service not known"
            r"|temporary failure in name resolution|nodename nor servname|econnrefused"
            r"|econnreset|enotfound|network is unreachable|server disconnected"
            r"|remote end closed connection|peer closed connection|broken pipe",
            K.CONNECTION,
        ),
    ),
    _Rule("auth_text", _text(r"unauthenticated|unauthorized", K.AUTH)),
    _Rule("forbidden_text", _text(r"forbidden", K.PERMISSION)),
    _Rule(
        "bad_request_text",
        _text(
            r"invalid_request_error|unsupported_parameter|unsupported_value|invalid_value"
            r"|validationexception|invalid_argument|failed_precondition|bad request"
            r"|invalid request",
            K.BAD_REQUEST,
        ),
    ),
    _Rule("not_found_text", _text(r"not_found|not found", K.MODEL_NOT_FOUND)),
)

_PROVIDER_KINDS = frozenset({K.AUTH, K.QUOTA_EXHAUSTED})


def _scope(verdict: _Verdict) -> Scope:
    """A bad key or an empty account affects every model of the provider."""
    if verdict.scope is not None:
        return verdict.scope
    return "provider" if verdict.kind in _PROVIDER_KINDS else "target"


# --------------------------------------------------------------------------- retry delays

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
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)" + "(" + _GO_UNITS + ")")
# "1s", "6m0s", "20ms", "9m38.016s" (Go's time.Duration, used by OpenAI and Groq).
_GO_DURATION = r"(?:\d+(?:\.\d+)?" + _GO_UNITS + r")+"
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
_RETRY_LEAD = r"(?:retry|try again)\s+(?:after|in)\s+(?:about |approximately |~)?"
# "Please try again in 18.642s", "try again in 6ms", "Please retry in 47.434392449s".
_BODY_RETRY_GO = re.compile(_RETRY_LEAD + "(" + _GO_DURATION + r")(?![a-z0-9µμ])")
# "Please retry after 20 seconds", "Try again in 2 minutes".
_BODY_RETRY_WORDS = re.compile(
    _RETRY_LEAD
    + r"(\d+(?:\.\d+)?)\s?("
    + "|".join(sorted(_WORD_UNITS, key=len, reverse=True))
    + r")\b"
)
# Google RetryInfo: "retryDelay": "47s" (JSON, Python repr or JS text).
_RETRY_DELAY = re.compile(r"retrydelay[\"']?\s*[:=]\s*[\"']?(\d+(?:\.\d+)?)s")
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")


def _clamp(value: float) -> float | None:
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, _MAX_RETRY_S)


def _go_duration(text: str) -> float | None:
    """Seconds in a Go duration ("6m0s", "20ms") or a bare number of seconds."""
    text = text.strip()
    if m := _NUMBER.fullmatch(text):
        return _clamp(float(m.group(1)))
    if not re.fullmatch(_GO_DURATION, text):
        return None
    return _clamp(sum(float(n) * _UNIT_S[u] for n, u in _GO_PART.findall(text)))


def _header_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from retry-after-ms, x-ms-retry-after-ms or retry-after (seconds or date)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value is not None and (m := _NUMBER.fullmatch(value)):
            return _clamp(float(m.group(1)) / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    if m := _NUMBER.fullmatch(value):
        return _clamp(float(m.group(1)))
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return _clamp(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()))


def _reset_headers_retry(headers: Mapping[str, str]) -> float | None:
    """OpenAI/Groq x-ratelimit-reset-requests/-tokens: a weaker fallback for rate limits.

    Prefers the window whose ``x-ratelimit-remaining-*`` is 0; else the longest reset.
    """
    found: list[tuple[bool, float]] = []
    for window in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-reset-{window}")
        if value is None:
            continue
        seconds = _go_duration(value)
        if seconds is not None:
            empty = headers.get(f"x-ratelimit-remaining-{window}", "").strip() == "0"
            found.append((empty, seconds))
    if not found:
        return None
    return max(found)[1]


def _body_retry_after(low: str) -> float | None:
    """Seconds from body text: "try again in 9m38.016s", "retry after 20 seconds",
    Google ``retryDelay: "47s"``."""
    if m := _BODY_RETRY_GO.search(low):
        return _go_duration(m.group(1))
    if m := _BODY_RETRY_WORDS.search(low):
        return _clamp(float(m.group(1)) * _WORD_UNITS[m.group(2)])
    if m := _RETRY_DELAY.search(low):
        return _clamp(float(m.group(1)))
    return None


# --------------------------------------------------------------------------- text helpers

_WS = re.compile(r"\s+")
_HTML_TAG = re.compile(r"<[^<>]{0,200}>")
# "message": "...", 'message': '...', message: '...' (JSON, Python repr, JS object text).
_MESSAGE_FIELD = re.compile(
    r"(?:^|[{,\s])[\"']?message[\"']?\s*:\s*(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)')"
)
# A status code written in the text: "Error code: 429 - ...", "HTTP 429", "429 Too Many
# Requests", '"code": 404', "status: 503", or a leading "402 Insufficient Balance".
_STATUS_IN_TEXT = re.compile(
    r"^\s*([45]\d\d)\b(?![.,]\d)"
    r"|error code:?\s*([45]\d\d)\b"
    r"|\bhttp(?:/\d(?:\.\d)?)?\s*(?:status\s*)?(?:code\s*)?:?\s*([45]\d\d)\b"
    r"|[\"']?\b(?:code|status|status_?code|httpstatuscode)[\"']?\s*[:=]\s*[\"']?([45]\d\d)\b"
    r"|\b([45]\d\d)[\s:-]+(?:too many requests|service unavailable|bad gateway|gateway"
    r" time-?out|internal server error|not found|unauthorized|forbidden|bad request"
    r"|payment required|request timeout|payload too large|request entity too large"
    r"|unprocessable entity|resource_exhausted|unavailable|invalid_argument|not_found"
    r"|permission_denied|unauthenticated|internal|deadline_exceeded|failed_precondition)",
    re.IGNORECASE,
)


def _to_text(body: object) -> str:
    """Body as text (first _MAX_SCAN characters); never raises."""
    if body is None:
        return ""
    if isinstance(body, str):
        return body[:_MAX_SCAN]
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body[: _MAX_SCAN * 4]).decode("utf-8", "replace")[:_MAX_SCAN]
    if isinstance(body, (dict, list)):
        try:
            dumped = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
            return dumped[: _MAX_SCAN * 4].decode("utf-8", "replace")[:_MAX_SCAN]
        except (TypeError, ValueError, orjson.JSONEncodeError):
            pass
    return _safe_str(body)[:_MAX_SCAN]


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        return ""


def _parse_json(text: str) -> object:
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


def _json_message(obj: object, depth: int = 0) -> str | None:
    """The provider's own message in a parsed body (OpenAI, Anthropic, Google, botocore)."""
    if depth > 3:
        return None
    if isinstance(obj, list):
        return _json_message(obj[0], depth + 1) if obj else None
    if not isinstance(obj, dict):
        return None
    err = obj.get("error", obj.get("Error"))
    if isinstance(err, str) and err:
        return err
    if isinstance(err, (dict, list)) and (found := _json_message(err, depth + 1)):
        return found
    for key in ("message", "Message", "detail", "error_description", "msg"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and (found := _json_message(value, depth + 1)):
            return found
    return None


def _message_from_text(text: str) -> str | None:
    if m := _MESSAGE_FIELD.search(text):
        found = m.group(1) if m.group(1) is not None else m.group(2)
        return found or None
    return None


def _plain(text: str) -> str:
    """HTML pages (CDN error pages) as their text."""
    if "<" in text and ">" in text and "</" in text:
        text = _HTML_TAG.sub(" ", text)
    return text


def _status_from_text(text: str) -> int | None:
    if m := _STATUS_IN_TEXT.search(text[:_MAX_SCAN]):
        for group in m.groups():
            if group is not None:
                return int(group)
    return None


def _valid_status(value: object) -> int | None:
    """An HTTP status (100-599) from an int or a 3-digit string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 100 <= value <= 599 else None
    if isinstance(value, str) and len(value) == 3 and value.isdigit():
        return _valid_status(int(value))
    return None


def _lower_headers(headers: object) -> dict[str, str]:
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


# --------------------------------------------------------------------------- the core


def _decide(
    status: int | None,
    headers: Mapping[str, str],
    texts: Iterable[str],
    message: str | None,
    prefix: str = "",
) -> Classification:
    """Apply the rules to everything known about one failure.

    ``message`` is the provider's message when already known; else it is looked for in the
    texts, else the text itself is used, after ``prefix`` (an exception's class name).
    """
    joined: list[str] = []
    parsed_message = message
    seen: set[str] = set()
    for text in texts:
        if not text or text in seen:
            continue
        seen.add(text)
        if parsed_message is None:
            parsed_message = _json_message(_parse_json(text)) or _message_from_text(text)
        joined.append(text)
    raw_text = "\n".join(joined)[:_MAX_SCAN]
    raw = _WS.sub(" ", _plain(raw_text)).strip()
    low = raw.lower()
    if status is None:
        status = _status_from_text(raw)

    body_retry = _body_retry_after(low)
    header_retry = _header_retry_after(headers)
    retry = header_retry if header_retry is not None else body_retry
    facts = _Facts(status=status, low=low, raw=raw, retry_after_s=retry)

    verdict = _Verdict(K.UNKNOWN)
    for rule in _RULES:
        found = rule.test(facts)
        if found is not None:
            verdict = found
            break

    if retry is None and verdict.kind in (K.RATE_LIMITED, K.QUOTA_EXHAUSTED):
        retry = _reset_headers_retry(headers)
    if verdict.kind is K.RATE_LIMITED and retry is not None and retry >= _QUOTA_RETRY_S:
        # Azure "Please retry after 86400 seconds": a window of a day is exhausted quota.
        verdict = _Verdict(K.QUOTA_EXHAUSTED, verdict.hint, "target")

    if parsed_message:
        text_for_message = parsed_message
    elif prefix:
        text_for_message = f"{prefix}: {raw}" if raw and not raw.startswith(prefix) else raw
        text_for_message = text_for_message or prefix
    else:
        text_for_message = raw or (f"HTTP {status}" if status is not None else "")
    return Classification(
        kind=verdict.kind,
        retry_after_s=retry,
        endpoint_hint=verdict.hint,
        status=status,
        message=redact(_plain(text_for_message), _MAX_MESSAGE),
        scope=_scope(verdict),
    )


def classify_response(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: str | bytes | Mapping[str, object] | None,
) -> Classification:
    """Classify one failed HTTP exchange (or a bare error body when ``status`` is None).

    Args:
        status: the HTTP status code, or None when unknown (an SDK message, an error event
            inside a 200 stream); a status written in the body ("Error code: 429") is used
            then.
        headers: response headers, any case. ``retry-after-ms`` / ``x-ms-retry-after-ms``
            (milliseconds) and ``retry-after`` (seconds or an HTTP-date) give the delay and
            win over the body; ``x-ratelimit-reset-requests`` / ``-tokens`` ("6m0s") are a
            fallback for rate limits.
        body: the body as text, bytes (UTF-8) or a parsed JSON object (a mapping). JSON,
            Python dict reprs, JS object text, truncated JSON and HTML are all fine; only the
            first 20 000 characters are scanned.

    Returns:
        The classification; ``retry_after_s`` in seconds; ``message`` redacted, at most 300
        characters (the provider's ``message`` field when one is found). Never raises:
        anything unexpected gives ``ErrorKind.UNKNOWN``.
    """
    try:
        if isinstance(body, Mapping) and not isinstance(body, dict):
            body = dict(body)
        return _decide(
            _valid_status(status),
            _lower_headers(headers),
            [_to_text(body)],
            _json_message(body) if isinstance(body, (dict, list)) else None,
        )
    except Exception:
        return Classification(ErrorKind.UNKNOWN, status=_valid_status(status))


# --------------------------------------------------------------------------- objects


def _get(obj: object, name: str) -> object:
    """getattr that never raises (properties of half-built SDK errors can)."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _response_text(response: object) -> str:
    """Body text of an httpx/requests-like response; "" when not read (a stream)."""
    if isinstance(response, httpx.Response):
        try:
            return _to_text(response.content)
        except httpx.ResponseNotRead:  # a streamed body nobody read: headers still count
            return ""
    text = _get(response, "text")
    return text[:_MAX_SCAN] if isinstance(text, str) else ""


def _from_response(response: httpx.Response, extra: str = "") -> Classification:
    status = _valid_status(response.status_code)
    return _decide(
        status, _lower_headers(response.headers), [_response_text(response), extra], None
    )


_CANCELLED: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)
_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    httpx.TimeoutException,
)
_CONNECTION: tuple[type[BaseException], ...] = (
    ConnectionError,
    socket.gaierror,
    socket.herror,
    ssl.SSLError,
    httpx.TransportError,  # ConnectError, NetworkError, RemoteProtocolError, ProxyError...
)
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EHOSTDOWN",
        "EPIPE",
        "ENOTCONN",
    )
    if hasattr(errno, name)
)

# SDK exception class names (anywhere in the MRO), used when status and text say nothing.
# OpenAI/Anthropic SDKs, LiteLLM, google-api-core, requests.
_CLASS_KINDS: dict[str, ErrorKind] = {
    "APITimeoutError": K.TIMEOUT,
    "Timeout": K.TIMEOUT,
    "ReadTimeout": K.TIMEOUT,
    "ConnectTimeout": K.TIMEOUT,
    "ReadTimeoutError": K.TIMEOUT,
    "ConnectTimeoutError": K.TIMEOUT,
    "DeadlineExceeded": K.TIMEOUT,
    "APIConnectionError": K.CONNECTION,
    "ConnectionError": K.CONNECTION,
    "EndpointConnectionError": K.CONNECTION,
    "ClientConnectionError": K.CONNECTION,
    "ServerDisconnectedError": K.CONNECTION,
    "RateLimitError": K.RATE_LIMITED,
    "TooManyRequests": K.RATE_LIMITED,
    "ResourceExhausted": K.RATE_LIMITED,
    "InternalServerError": K.SERVER_ERROR,
    "ServerError": K.SERVER_ERROR,
    "OverloadedError": K.OVERLOADED,
    "ServiceUnavailableError": K.OVERLOADED,
    "ServiceUnavailable": K.OVERLOADED,
    "NotFoundError": K.MODEL_NOT_FOUND,
    "NotFound": K.MODEL_NOT_FOUND,
    "AuthenticationError": K.AUTH,
    "Unauthenticated": K.AUTH,
    "Unauthorized": K.AUTH,
    "PermissionDeniedError": K.PERMISSION,
    "PermissionDenied": K.PERMISSION,
    "Forbidden": K.PERMISSION,
    "BadRequestError": K.BAD_REQUEST,
    "UnprocessableEntityError": K.BAD_REQUEST,
    "InvalidArgument": K.BAD_REQUEST,
    "BadRequest": K.BAD_REQUEST,
    "ContextWindowExceededError": K.CONTEXT_LENGTH,
    "ContentPolicyViolationError": K.CONTENT_POLICY,
}


def _kind_from_class(exc: BaseException) -> ErrorKind | None:
    for cls in type(exc).__mro__:
        kind = _CLASS_KINDS.get(cls.__name__)
        if kind is not None:
            return kind
    return None


def _from_exception(exc: BaseException, depth: int = 0) -> Classification:
    if isinstance(exc, _CANCELLED):
        return Classification(K.CANCELLED, message=_exc_message(exc))
    if isinstance(exc, httpx.HTTPStatusError):
        return _from_response(exc.response, _safe_str(exc))
    if isinstance(exc, _TIMEOUTS):
        return Classification(K.TIMEOUT, message=_exc_message(exc))
    if isinstance(exc, _CONNECTION):
        return Classification(K.CONNECTION, message=_exc_message(exc))

    result = _from_duck(exc)
    if result.kind is K.UNKNOWN:
        errno_value = _get(exc, "errno")
        if isinstance(exc, OSError) and errno_value in _NETWORK_ERRNOS:
            return Classification(K.CONNECTION, status=result.status, message=result.message)
        kind = _kind_from_class(exc)
        if kind is not None:
            return Classification(
                kind,
                status=result.status,
                message=result.message,
                scope="provider" if kind in _PROVIDER_KINDS else "target",
            )
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if cause is not None and cause is not exc and depth < _MAX_CAUSES:
            return _from_exception(cause, depth + 1)
    return result


def _exc_message(exc: BaseException) -> str:
    text = _safe_str(exc)
    name = type(exc).__name__
    return redact(f"{name}: {text}" if text else name, _MAX_MESSAGE)


def _from_duck(obj: object) -> Classification:
    """SDK errors and response-like objects, read by attribute names only."""
    status = _valid_status(_get(obj, "status_code"))
    headers: dict[str, str] = {}
    texts: list[str] = []
    message: str | None = None

    response = _get(obj, "response")
    if isinstance(response, Mapping):
        # botocore ClientError: {"Error": {"Code", "Message"}, "ResponseMetadata": {...}}
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping):
            status = status or _valid_status(meta.get("HTTPStatusCode"))
            headers = _lower_headers(meta.get("HTTPHeaders"))
        error = response.get("Error")
        if isinstance(error, Mapping):
            code, text = error.get("Code"), error.get("Message")
            if isinstance(text, str) and text:
                message = f"{code}: {text}" if isinstance(code, str) and code else text
                texts.append(message)
    elif response is not None:
        status = status or _valid_status(_get(response, "status_code"))
        status = status or _valid_status(_get(response, "status"))
        headers = _lower_headers(_get(response, "headers"))
        texts.append(_response_text(response))

    # google-genai APIError.code / google-api-core .code are HTTP statuses; aiohttp .status.
    for name in ("status", "code", "http_status", "status_code"):
        status = status or _valid_status(_get(obj, name))
    if not headers:
        headers = _lower_headers(_get(obj, "headers"))

    for name in ("body", "details"):
        value = _get(obj, name)
        if isinstance(value, (dict, list)):
            message = message or _json_message(value)
            texts.append(_to_text(value))
        elif isinstance(value, (str, bytes)):
            texts.append(_to_text(value))
    if not isinstance(obj, BaseException):
        texts.append(_response_text(obj))  # a requests-like response object
    attr_message = _get(obj, "message")
    if isinstance(attr_message, str):
        texts.append(attr_message[:_MAX_SCAN])
    if isinstance(obj, BaseException):
        texts.append(_safe_str(obj)[:_MAX_SCAN])
    prefix = type(obj).__name__ if isinstance(obj, BaseException) else ""
    return _decide(status, headers, texts, message, prefix)


def classify(error: object) -> Classification:
    """Classify any failure of a provider call. Pure, no I/O, never raises.

    Accepts:
        - a :class:`Classification` (returned as is) or an :class:`ErrorKind`;
        - an ``httpx.Response`` (status, headers, body; an unread streamed body is skipped)
          or ``httpx.HTTPStatusError``; httpx timeouts → ``timeout``, other transport errors
          → ``connection``;
        - OpenAI / Anthropic SDK exceptions (``status_code``, ``response``, ``body``,
          ``message``; ``APITimeoutError`` → ``timeout``, ``APIConnectionError`` →
          ``connection``), google-genai / google-api-core errors (``code``, ``status``,
          ``details``) and botocore ``ClientError`` (``response["Error"]["Code"]``,
          ``response["ResponseMetadata"]["HTTPStatusCode"]``), all by duck typing;
        - builtin exceptions: ``TimeoutError`` → ``timeout``; ``ConnectionError`` and socket
          errors → ``connection``; ``asyncio.CancelledError``, ``KeyboardInterrupt``,
          ``SystemExit``, ``GeneratorExit`` → ``cancelled``; any other exception by its text,
          its class name, then its ``__cause__`` (else ``unknown``);
        - a ``str`` / ``bytes`` error body or a parsed ``dict`` body, by its text.

    Anything else (None, numbers, ...) and anything that fails inside gives ``unknown``.
    See :func:`classify_response` for the meaning of the fields.
    """
    try:
        if isinstance(error, Classification):
            return error
        if isinstance(error, ErrorKind):
            # A bare kind gets the kind's usual scope: a bad key or an empty account
            # concerns the whole provider.
            return Classification(error, scope="provider" if error in _PROVIDER_KINDS else "target")
        if isinstance(error, httpx.Response):
            return _from_response(error)
        if isinstance(error, BaseException):
            return _from_exception(error)
        if isinstance(error, (str, bytes, bytearray, memoryview, dict)):
            body = error if isinstance(error, (str, dict)) else _to_text(error)
            return classify_response(None, None, body)
        if _get(error, "status_code") is not None or _get(error, "response") is not None:
            return _from_duck(error)
    except Exception:
        pass
    return Classification(ErrorKind.UNKNOWN)
