"""The decision: everything known about one failure → :class:`Classification`.

:func:`decide` reads, in order (the first verdict wins):

1. the rules of the provider blocks that apply (the named provider's family, then families
   whose signature is in the text; see :mod:`.providers`);
2. the generic strong rules (:data:`._generic.STRONG`);
3. the provider blocks' late rules (codes as broad as a status);
4. the HTTP status: the named family's status map, then the generic one;
5. the generic weak rules (:data:`._generic.WEAK`), for text without a status: a gRPC
   status name first, then wording.

Then two adjustments: a rate limit asking to wait an hour or more is an exhausted quota
(Azure's "retry after 86400 seconds"), and the scope is set (``"provider"`` for a bad key
or an empty account, unless a rule said otherwise). Last, for a caller's or a capability
error, the compatibility hints the text states are read (:mod:`._hints`); they change the
kind only of an error no rule placed (``unknown``), which becomes the caller's
(``context_length`` for a context window alone, else ``bad_request``): an error that says
what the model accepts never counts toward a trip.

:func:`classify` turns anything a provider call can fail with into those facts: exceptions
(builtin, httpx, SDK errors read by duck typing), responses, bodies. Nothing is imported
from the SDKs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import ssl
from collections.abc import Iterable, Mapping

import httpx

from .._classification import Classification
from .._policy import policy_of
from .._redact import redact
from .._types import ErrorKind, Scope
from . import _generic, _hints, _text, _waits
from ._model import Facts, ProviderBlock, Verdict
from .providers import blocks_for, family_of

__all__ = ["classify", "classify_response", "decide"]

K = ErrorKind

_MAX_MESSAGE = 300  # characters kept in Classification.message
_MAX_CAUSES = 4  # how deep __cause__ / __context__ chains are followed
_QUOTA_RETRY_S = 3600.0  # a rate limit asking to wait this long (s) is an exhausted quota


def _scope(verdict: Verdict) -> Scope:
    """The verdict's own scope, else the kind's usual one (the policy table: a bad key or an
    empty account affects every model of the provider)."""
    if verdict.scope is not None:
        return verdict.scope
    return policy_of(verdict.kind).scope


def _status_verdict(status: int | None, named_status: Mapping[int, ErrorKind]) -> Verdict | None:
    """The HTTP status when no strong rule decided (4xx and 5xx only)."""
    if status is None or status < 400:
        return None
    kind = named_status.get(status) or _generic.STATUS_KINDS.get(status)
    if kind is None:
        kind = K.BAD_REQUEST if status < 500 else K.SERVER_ERROR
    return Verdict(kind)


def decide(
    status: int | None,
    headers: Mapping[str, str],
    texts: Iterable[str],
    message: str | None,
    provider: str | None = None,
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
            parsed_message = _text.json_message(_text.parse_json(text)) or (
                _text.message_from_text(text)
            )
        joined.append(text)
    raw = _text.normalize(_text.scan_window("\n".join(joined)))
    low = raw.lower()
    # The HTTP status decides, unless it says nothing about the failure (None, or a 200 whose
    # stream carried an error event): then a status written in the text does. The status
    # reported stays the HTTP one when there is one.
    given_status = status is not None and status >= 400
    reported = status
    if not given_status:
        status = _text.status_from_text(raw) or status
        reported = reported if reported is not None else status

    retry = _waits.header_wait(headers)
    if retry is None:
        retry = _waits.body_wait(low)
    facts = Facts(status=status, low=low, raw=raw, retry_after_s=retry, given_status=given_status)

    blocks = blocks_for(provider, low)
    named = family_of(provider)
    named_status = next((b.status for b in blocks if b.family == named), {})
    verdict = _first(facts, blocks, named_status)

    if retry is None and verdict.kind in (K.RATE_LIMITED, K.QUOTA_EXHAUSTED):
        retry = _waits.reset_headers_wait(headers)
    if verdict.kind is K.RATE_LIMITED and retry is not None and retry >= _QUOTA_RETRY_S:
        # Azure "Please retry after 86400 seconds": a window of a day is exhausted quota.
        verdict = Verdict(K.QUOTA_EXHAUSTED, verdict.hint, "target")

    compat = _hints.extract(facts, blocks) if verdict.kind in _hints.HINT_KINDS else ()
    if compat and verdict.kind is K.UNKNOWN:
        # An error that states what the model accepts is the caller's, never a provider
        # failure: it must not count toward a trip.
        too_long = all(h.kind == "context_window" for h in compat)
        verdict = Verdict(K.CONTEXT_LENGTH if too_long else K.BAD_REQUEST, verdict.hint, "target")

    if parsed_message:
        text_for_message = parsed_message
    elif prefix:
        text_for_message = f"{prefix}: {raw}" if raw and not raw.startswith(prefix) else raw
        text_for_message = text_for_message or prefix
    else:
        text_for_message = raw or (f"HTTP {reported}" if reported is not None else "")
    return Classification(
        kind=verdict.kind,
        retry_after_s=retry,
        endpoint_hint=verdict.hint,
        status=reported,
        message=redact(_text.plain(text_for_message[: _MAX_MESSAGE * 2]), _MAX_MESSAGE),
        scope=_scope(verdict),
        compat=compat,
    )


def _first(
    facts: Facts, blocks: Iterable[ProviderBlock], named_status: Mapping[int, ErrorKind]
) -> Verdict:
    for block in blocks:
        for r in block.rules:
            if (found := r.test(facts)) is not None:
                return found
    for r in _generic.STRONG:
        if (found := r.test(facts)) is not None:
            return found
    for block in blocks:
        for r in block.late:
            if (found := r.test(facts)) is not None:
                return found
    if (found := _status_verdict(facts.status, named_status)) is not None:
        return found
    for r in _generic.WEAK:
        if (found := r.test(facts)) is not None:
            return found
    return Verdict(K.UNKNOWN)


def classify_response(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: str | bytes | Mapping[str, object] | None,
    provider: str | None = None,
) -> Classification:
    """Classify one failed HTTP exchange (or a bare error body when ``status`` is None).

    Args:
        status: the HTTP status code, or None when unknown (an SDK message, an error event
            inside a 200 stream); a status written in the body ("Error code: 429") is used
            then.
        headers: response headers, any case. ``retry-after-ms`` / ``x-ms-retry-after-ms``
            (milliseconds) and ``retry-after`` (seconds or an HTTP-date) give the wait and
            win over the body; for rate limits, ``x-ratelimit-reset-requests`` /
            ``-tokens`` ("6m0s") and ``anthropic-ratelimit-*-reset`` (RFC 3339, measured
            from the ``date`` header) are a fallback.
        body: the body as text, bytes (UTF-8) or a parsed JSON object (a mapping). JSON,
            Python dict reprs, JS object text, truncated JSON, nested escaped JSON, SSE
            ``event: error`` frames and HTML are all fine; long bodies are read at their
            head (6 000 characters) and tail (2 000).
        provider: the provider's name as the caller knows it (``"openai-eu"``,
            ``"my-azure"``); its family's own codes and phrases apply first (see
            :func:`resilience._classify.providers.family_of`). None: generic rules only.

    Returns:
        The classification; ``retry_after_s`` in seconds; ``message`` redacted, at most 300
        characters (the provider's ``message`` field when one is found); ``compat``: the
        compatibility hints the text states (parameters renamed or refused, features the
        model lacks, its token limits), read for caller and capability errors only (see
        :mod:`resilience._classify._hints`). Never raises: anything unexpected gives
        ``ErrorKind.UNKNOWN``.
    """
    try:
        if isinstance(body, Mapping) and not isinstance(body, dict):
            body = dict(body)
        return decide(
            _text.valid_status(status),
            _text.lower_headers(headers),
            [_text.to_text(body)],
            _text.json_message(body) if isinstance(body, (dict, list)) else None,
            provider if isinstance(provider, str) else None,
        )
    except Exception:
        return Classification(ErrorKind.UNKNOWN, status=_text.valid_status(status))


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
            return _text.to_text(response.content)
        except httpx.ResponseNotRead:  # a streamed body nobody read: headers still count
            return ""
    text = _get(response, "text")
    return _text.to_text(text) if isinstance(text, str) else ""


def _from_response(
    response: httpx.Response, provider: str | None, extra: str = ""
) -> Classification:
    return decide(
        _text.valid_status(response.status_code),
        _text.lower_headers(response.headers),
        [_response_text(response), extra],
        None,
        provider,
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
# OpenAI/Anthropic SDKs, LiteLLM, google-api-core, requests, grpc.
_CLASS_KINDS: dict[str, ErrorKind] = {
    "APIUserAbortError": K.CANCELLED,
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
    # httpx2 (what today's OpenAI and Anthropic SDKs are built on) has httpx's exception
    # tree under another module: its classes are known by name.
    "TimeoutException": K.TIMEOUT,
    "PoolTimeout": K.TIMEOUT,
    "WriteTimeout": K.TIMEOUT,
    "TransportError": K.CONNECTION,
}


def _kind_from_class(exc: BaseException) -> ErrorKind | None:
    for cls in type(exc).__mro__:
        kind = _CLASS_KINDS.get(cls.__name__)
        if kind is not None:
            return kind
    return None


def _from_exception(exc: BaseException, provider: str | None, depth: int = 0) -> Classification:
    if isinstance(exc, _CANCELLED):
        return Classification(K.CANCELLED, message=_exc_message(exc))
    if isinstance(exc, httpx.HTTPStatusError):
        return _from_response(exc.response, provider, _text.safe_str(exc))
    if isinstance(exc, _TIMEOUTS):
        return Classification(K.TIMEOUT, message=_exc_message(exc))
    if isinstance(exc, _CONNECTION):
        return Classification(K.CONNECTION, message=_exc_message(exc))

    if provider is None:  # LiteLLM exceptions carry the provider they came from
        named = _get(exc, "llm_provider")
        provider = named if isinstance(named, str) else None
    result = _from_duck(exc, provider)
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
                scope=policy_of(kind).scope,
            )
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if cause is not None and cause is not exc and depth < _MAX_CAUSES:
            return _from_exception(cause, provider, depth + 1)
    return result


def _exc_message(exc: BaseException) -> str:
    text = _text.safe_str(exc)
    name = type(exc).__name__
    return redact(f"{name}: {text}" if text else name, _MAX_MESSAGE)


def _from_duck(obj: object, provider: str | None) -> Classification:
    """SDK errors and response-like objects, read by attribute names only."""
    status = _text.valid_status(_get(obj, "status_code"))
    headers: dict[str, str] = {}
    texts: list[str] = []
    message: str | None = None

    response = _get(obj, "response")
    if isinstance(response, Mapping):
        # botocore ClientError: {"Error": {"Code", "Message"}, "ResponseMetadata": {...}}
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping):
            status = status or _text.valid_status(meta.get("HTTPStatusCode"))
            headers = _text.lower_headers(meta.get("HTTPHeaders"))
        error = response.get("Error")
        if isinstance(error, Mapping):
            code, text = error.get("Code"), error.get("Message")
            if isinstance(text, str) and text:
                message = f"{code}: {text}" if isinstance(code, str) and code else text
                texts.append(message)
    elif response is not None:
        status = status or _text.valid_status(_get(response, "status_code"))
        status = status or _text.valid_status(_get(response, "status"))
        headers = _text.lower_headers(_get(response, "headers"))
        texts.append(_response_text(response))

    # google-genai APIError.code / google-api-core .code are HTTP statuses; aiohttp .status.
    for name in ("status", "code", "http_status", "status_code"):
        status = status or _text.valid_status(_get(obj, name))
    if not headers:
        headers = _text.lower_headers(_get(obj, "headers"))

    for name in ("body", "details"):
        value = _get(obj, name)
        if isinstance(value, (dict, list)):
            message = message or _text.json_message(value)
            texts.append(_text.to_text(value))
        elif isinstance(value, (str, bytes)):
            texts.append(_text.to_text(value))
    if not isinstance(obj, BaseException):
        texts.append(_response_text(obj))  # a requests-like response object
    attr_message = _get(obj, "message")
    if isinstance(attr_message, str):
        texts.append(_text.to_text(attr_message))
    if isinstance(obj, BaseException):
        texts.append(_text.to_text(_text.safe_str(obj)))
    prefix = type(obj).__name__ if isinstance(obj, BaseException) else ""
    return decide(status, headers, texts, message, provider, prefix)


def classify(error: object, provider: str | None = None) -> Classification:
    """Classify any failure of a provider call. Pure, no I/O, never raises.

    Args:
        error: what the call failed with (see below).
        provider: the provider's name as the caller knows it (``"openai"``,
            ``"openai-eu"``, ``"my-azure"``), or None. When it belongs to a known family,
            that family's own codes and phrases apply before the generic rules; the
            generic rules apply in every case. For LiteLLM exceptions the exception's own
            ``llm_provider`` is used when this is None.

    Accepts:
        - a :class:`Classification` (returned as is) or an :class:`ErrorKind`;
        - an ``httpx.Response`` (status, headers, body; an unread streamed body is skipped)
          or ``httpx.HTTPStatusError``; httpx timeouts → ``timeout``, other transport errors
          → ``connection``;
        - OpenAI / Anthropic SDK exceptions (``status_code``, ``response``, ``body``,
          ``message``; ``APITimeoutError`` → ``timeout``, ``APIConnectionError`` →
          ``connection``), google-genai / google-api-core errors (``code``, ``status``,
          ``details``), botocore ``ClientError`` (``response["Error"]["Code"]``,
          ``response["ResponseMetadata"]["HTTPStatusCode"]``) and LiteLLM exceptions, all
          by duck typing;
        - builtin exceptions: ``TimeoutError`` → ``timeout``; ``ConnectionError`` and socket
          errors → ``connection``; ``asyncio.CancelledError``, ``KeyboardInterrupt``,
          ``SystemExit``, ``GeneratorExit`` → ``cancelled``; any other exception by its text
          (an aborted request's text, "Request was aborted.", is ``cancelled`` too), its
          class name, then its ``__cause__`` (else ``unknown``);
        - a ``str`` / ``bytes`` error body or a parsed ``dict`` body, by its text.

    Anything else (None, numbers, ...) and anything that fails inside gives ``unknown``.
    See :func:`classify_response` for the meaning of the fields.
    """
    try:
        if not isinstance(provider, str):
            provider = None
        if isinstance(error, Classification):
            return error
        if isinstance(error, ErrorKind):
            # A bare kind gets the kind's usual scope: a bad key or an empty account
            # concerns the whole provider.
            return Classification(error, scope=policy_of(error).scope)
        if isinstance(error, httpx.Response):
            return _from_response(error, provider)
        if isinstance(error, BaseException):
            return _from_exception(error, provider)
        if isinstance(error, (str, bytes, bytearray, memoryview, dict)):
            body = error if isinstance(error, (str, dict)) else _text.to_text(error)
            return classify_response(None, None, body, provider)
        if _get(error, "status_code") is not None or _get(error, "response") is not None:
            return _from_duck(error, provider)
    except Exception:
        pass
    return Classification(ErrorKind.UNKNOWN)
