"""classify / classify_response: the golden set of real provider errors, headers, exceptions.

Pure unit tests: no Redis, no network.
"""

from __future__ import annotations

import asyncio
import errno
import math
import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import Classification, ErrorKind, classify
from resilience._classify import classify_response
from resilience._classify._evaluate import check, check_hints, load

CORPUS_PATH = Path(__file__).parent / "data" / "provider_errors.jsonl"
CORPUS: list[dict[str, Any]] = load(CORPUS_PATH)
IDS = [f"{i}-{e['provider']}" for i, e in enumerate(CORPUS)]


def _cases(entries: list[dict[str, Any]], ids: list[str]) -> list[Any]:
    """Corpus entries as pytest params; documented misses are strict xfails."""
    return [
        pytest.param(e, id=i, marks=pytest.mark.xfail(strict=True, reason=e["known_miss"]))
        if "known_miss" in e
        else pytest.param(e, id=i)
        for e, i in zip(entries, ids, strict=True)
    ]


CASES = _cases(CORPUS, IDS)


def check_entry(entry: dict[str, Any], c: Classification) -> None:
    assert check(entry, c) == [], entry.get("note", "")
    assert check_hints(entry, c) == [], entry.get("note", "")
    assert len(c.message) <= 300


@pytest.mark.parametrize("entry", CASES)
def test_corpus_classify_response(entry: dict[str, Any]) -> None:
    check_entry(
        entry,
        classify_response(entry["status"], entry["headers"], entry["body"], entry["provider"]),
    )


@pytest.mark.parametrize("entry", CASES)
def test_corpus_bytes_body(entry: dict[str, Any]) -> None:
    body = entry["body"].encode("utf-8")
    check_entry(
        entry, classify_response(entry["status"], entry["headers"], body, entry["provider"])
    )


@pytest.mark.parametrize("entry", CASES)
def test_corpus_httpx_response(entry: dict[str, Any]) -> None:
    # No status in the source: the error arrived inside a 200 response (a stream).
    response = httpx.Response(
        entry["status"] or 200, headers=entry["headers"], content=entry["body"].encode()
    )
    c = classify(response, entry["provider"])
    check_entry(entry, c)
    if entry["status"] is None:
        assert c.status == 200


_WITH_STATUS = [(e, i) for e, i in zip(CORPUS, IDS, strict=True) if (e["status"] or 0) >= 400]


# raise_for_status needs an error status: the entries without one (or with a 200 whose stream
# carried the error) are covered above.
@pytest.mark.parametrize(
    "entry", _cases([e for e, _ in _WITH_STATUS], [i for _, i in _WITH_STATUS])
)
def test_corpus_http_status_error(entry: dict[str, Any]) -> None:
    request = httpx.Request("POST", "https://api.example.com/v1/chat/completions")
    response = httpx.Response(
        entry["status"], headers=entry["headers"], content=entry["body"].encode(), request=request
    )
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    check_entry(entry, classify(info.value, entry["provider"]))


class RateLimitError(Exception):
    """Duck-typed stand-in for an OpenAI/Anthropic SDK APIStatusError (not imported)."""

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message)
        self.message = message
        self.response = response
        self.status_code = response.status_code
        self.body = body


def _sdk_error(status: int, body_text: str, headers: dict[str, str] | None = None) -> Exception:
    try:
        parsed: object = orjson.loads(body_text)
    except orjson.JSONDecodeError:
        parsed = body_text
    # The OpenAI SDK keeps only the inner "error" object as .body
    body = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    response = httpx.Response(status, headers=headers, content=body_text.encode())
    return RateLimitError(f"Error code: {status} - {parsed}", response=response, body=body)


@pytest.mark.parametrize("entry", CASES)
def test_corpus_sdk_exception(entry: dict[str, Any]) -> None:
    error = _sdk_error(entry["status"] or 200, entry["body"], entry["headers"])
    check_entry(entry, classify(error, entry["provider"]))


# --------------------------------------------------------------------------- scope, message


def test_scope_provider_for_auth_and_billing() -> None:
    by_source = {e["source"]: e for e in CORPUS}

    def scope_of(fragment: str) -> str:
        entry = next(e for s, e in by_source.items() if fragment in s)
        return classify_response(entry["status"], None, entry["body"]).scope

    assert scope_of("openai-scala-client/issues/109") == "provider"  # API_KEY_INVALID
    assert scope_of("NextChat/issues/3664") == "provider"  # insufficient_quota
    assert scope_of("claude-code/issues/66314") == "provider"  # credit balance
    assert scope_of("home-assistant/core/issues/120072") == "provider"  # region block
    assert scope_of("dirkpetersen/our-chat") == "target"  # model access
    assert scope_of("claude-code/issues/35792") == "target"  # overloaded


def test_message_prefers_provider_message_and_is_redacted() -> None:
    key = "sk-proj-" + "Ab1" * 15
    body = {"error": {"message": f"Incorrect API key provided: {key}.", "code": "invalid_api_key"}}
    c = classify_response(401, None, body)
    assert c.kind is ErrorKind.AUTH
    assert c.message.startswith("Incorrect API key provided: ")
    assert key not in c.message
    c = classify_response(401, None, orjson.dumps(body))
    assert key not in c.message and c.message.startswith("Incorrect")


def test_message_is_short() -> None:
    c = classify_response(500, None, "boom " * 10_000)
    assert c.kind is ErrorKind.SERVER_ERROR
    assert 0 < len(c.message) <= 300


def test_html_message_is_plain_text() -> None:
    c = classify_response(502, None, "<html><head><title>502 Bad Gateway</title></head></html>")
    assert c.kind is ErrorKind.SERVER_ERROR
    assert "<" not in c.message and "502 Bad Gateway" in c.message


# --------------------------------------------------------------------------- headers

RATE_BODY = '{"error":{"message":"Rate limit reached. Please try again in 18.642s."}}'


def test_retry_after_seconds_header() -> None:
    c = classify_response(429, {"Retry-After": "30"}, "")
    assert c.kind is ErrorKind.RATE_LIMITED
    assert c.retry_after_s == 30.0


def test_retry_after_http_date_header() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    c = classify_response(429, {"retry-after": format_datetime(when, usegmt=True)}, None)
    assert c.retry_after_s is not None
    assert 110 <= c.retry_after_s <= 121


def test_retry_after_date_in_the_past_is_zero() -> None:
    c = classify_response(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None)
    assert c.retry_after_s == 0.0


def test_retry_after_ms_headers() -> None:
    assert classify_response(429, {"retry-after-ms": "1500"}, None).retry_after_s == 1.5
    assert classify_response(429, {"x-ms-retry-after-ms": "250"}, None).retry_after_s == 0.25
    # the millisecond header is the more precise one
    both = {"retry-after": "2", "retry-after-ms": "1500"}
    assert classify_response(429, both, None).retry_after_s == 1.5


def test_header_beats_body() -> None:
    c = classify_response(429, {"retry-after": "5"}, RATE_BODY)
    assert c.retry_after_s == 5.0
    assert classify_response(429, None, RATE_BODY).retry_after_s == pytest.approx(18.642)


def test_ratelimit_reset_headers_are_a_fallback() -> None:
    headers = {
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-remaining-tokens": "0",
    }
    c = classify_response(429, headers, "")
    assert c.kind is ErrorKind.RATE_LIMITED and c.retry_after_s == 360.0
    headers = {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-remaining-requests": "0"}
    assert classify_response(429, headers, "").retry_after_s == pytest.approx(0.02)
    # the body wins over the weak reset headers
    assert classify_response(429, headers, RATE_BODY).retry_after_s == pytest.approx(18.642)
    # and reset headers say nothing about a server error
    assert classify_response(500, headers, "").retry_after_s is None


def test_day_long_retry_after_header_is_quota() -> None:
    c = classify_response(429, {"retry-after": "86400"}, "")
    assert c.kind is ErrorKind.QUOTA_EXHAUSTED and c.retry_after_s == 86400.0


def test_bad_retry_after_headers_are_ignored() -> None:
    for value in ("soon", "-5", "nan", "", "Wed, 99 Foo 2015"):
        c = classify_response(429, {"retry-after": value}, None)
        assert c.kind is ErrorKind.RATE_LIMITED
        assert c.retry_after_s is None


def test_headers_on_httpx_response_and_sdk_exception() -> None:
    response = httpx.Response(429, headers={"Retry-After": "7"}, content=RATE_BODY.encode())
    assert classify(response).retry_after_s == 7.0
    assert classify(_sdk_error(429, RATE_BODY, {"retry-after-ms": "2500"})).retry_after_s == 2.5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Please try again in 18.642s.", 18.642),
        ("try again in 6ms", 0.006),
        ("Please try again in 9m38.016s.", 578.016),
        ("Please try again in 1h2m3s", 3723.0),
        ("Please retry after 20 seconds.", 20.0),
        ("Try again in 2 minutes", 120.0),
        ("Please retry in 47.434392449s.", 47.434392449),
        ('{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "47s"}', 47.0),
        ("{'retryDelay': '3s'}", 3.0),
    ],
)
def test_body_retry_delays(text: str, seconds: float) -> None:
    c = classify_response(429, None, text)
    assert c.retry_after_s == pytest.approx(seconds, rel=1e-9)


# --------------------------------------------------------------------------- more texts


@pytest.mark.parametrize(
    ("status", "body", "kind", "hint"),
    [
        (400, "This model is only supported in v1/responses and not in v1/chat/completions.",
         ErrorKind.ENDPOINT_MISMATCH, "/v1/responses"),
        (None, "Error code: 429 - {'error': {'message': 'Rate limit reached'}}",
         ErrorKind.RATE_LIMITED, None),
        (None, "429 Too Many Requests", ErrorKind.RATE_LIMITED, None),
        (None, "Service Unavailable", ErrorKind.OVERLOADED, None),
        (404, "The completion operation does not work with the specified model, gpt-4o.",
         ErrorKind.ENDPOINT_MISMATCH, "/openai/deployments/{deployment}/chat/completions"),
        (400, "Invocation of model ID us.anthropic.claude-3-7-sonnet-20250219-v1:0 with "
         "on-demand throughput is not supported.", ErrorKind.ENDPOINT_MISMATCH,
         "inference-profile:us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
        (400, "Invocation of model ID eu.anthropic.claude-3-haiku with on-demand throughput "
         "isn't supported.", ErrorKind.ENDPOINT_MISMATCH,
         "inference-profile:eu.anthropic.claude-3-haiku"),
        (404, '{"error":{"message":"No endpoints found that support image input","code":404}}',
         ErrorKind.ENDPOINT_MISMATCH, "capability:images-unsupported"),
        (404, '{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}',
         ErrorKind.MODEL_NOT_FOUND, None),
        (400, "The model `mixtral-8x7b-32768` has been decommissioned and is no longer supported.",
         ErrorKind.MODEL_NOT_FOUND, None),
        (403, "Project `proj_abc` does not have access to model `o3`", ErrorKind.PERMISSION, None),
        (400, "User location is not supported for the API use.", ErrorKind.PERMISSION, None),
        (400, "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000",
         ErrorKind.CONTEXT_LENGTH, None),
        (400, "An error occurred (ThrottlingException) when calling the Converse operation",
         ErrorKind.RATE_LIMITED, None),
        (503, '{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}',
         ErrorKind.OVERLOADED, None),
        (504, "Gateway Timeout", ErrorKind.TIMEOUT, None),
        (418, "I'm a teapot", ErrorKind.BAD_REQUEST, None),
        (599, "", ErrorKind.SERVER_ERROR, None),
        (401, "Access denied due to invalid subscription key or wrong API endpoint.",
         ErrorKind.AUTH, None),
        (None, "value must be below 400 and 500", ErrorKind.UNKNOWN, None),
        (200, "", ErrorKind.UNKNOWN, None),
        (None, "", ErrorKind.UNKNOWN, None),
        (None, "everything is fine", ErrorKind.UNKNOWN, None),
    ],
)  # fmt: skip
def test_more_texts(status: int | None, body: str, kind: ErrorKind, hint: str | None) -> None:
    c = classify_response(status, None, body)
    assert c.kind is kind
    assert c.endpoint_hint == hint


def test_gemini_free_tier_daily_quota_is_not_a_rate_limit() -> None:
    body = (
        '{"error":{"code":429,"message":"You exceeded your current quota. Quota exceeded for '
        "metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: "
        '50","details":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}}'
    )
    c = classify_response(429, None, body)
    assert c.kind is ErrorKind.QUOTA_EXHAUSTED
    assert c.scope == "target"  # a per-model daily window, not the whole account


def test_python_repr_and_js_bodies() -> None:
    repr_body = str({"error": {"message": "Overloaded", "type": "overloaded_error", "x": None}})
    assert classify(repr_body).kind is ErrorKind.OVERLOADED
    assert classify(repr_body).message == "Overloaded"
    js = "{type: 'server_error', code: 'server_error', message: 'Oops', param: null}"
    assert classify(js).kind is ErrorKind.SERVER_ERROR
    assert classify(js).message == "Oops"


def test_dict_body() -> None:
    body = {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    c = classify(body)
    assert c.kind is ErrorKind.RATE_LIMITED
    assert c.status == 429
    assert c.message == "Resource exhausted"


def test_huge_body_is_read_at_head_and_tail_only() -> None:
    middle = " " * 5_000_000 + "insufficient_quota" + " " * 5_000_000
    body = '{"error":{"message":"Overloaded"}}' + middle
    assert classify_response(None, None, body).kind is ErrorKind.OVERLOADED
    # a traceback's last line is at the end: the tail is read
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 200_000
    tail = "openai.RateLimitError: Error code: 429 - insufficient_quota"
    assert classify_response(None, None, traceback + tail).kind is ErrorKind.QUOTA_EXHAUSTED


# --------------------------------------------------------------------------- inputs


def test_classification_and_kind_pass_through() -> None:
    c = Classification(ErrorKind.AUTH, message="x", scope="provider")
    assert classify(c) is c
    assert classify(ErrorKind.TIMEOUT) == Classification(ErrorKind.TIMEOUT)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError("t"), ErrorKind.TIMEOUT),
        (asyncio.TimeoutError(), ErrorKind.TIMEOUT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ErrorKind.CONNECTION),
        (ConnectionResetError(), ErrorKind.CONNECTION),
        (socket.gaierror(-2, "Name or service not known"), ErrorKind.CONNECTION),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), ErrorKind.CONNECTION),
        (asyncio.CancelledError(), ErrorKind.CANCELLED),
        (KeyboardInterrupt(), ErrorKind.CANCELLED),
        (ValueError("boom"), ErrorKind.UNKNOWN),
        (RuntimeError("Read timed out"), ErrorKind.TIMEOUT),
        (RuntimeError("Error code: 429 - slow down"), ErrorKind.RATE_LIMITED),
        (RuntimeError("upstream said 503 Service Unavailable"), ErrorKind.OVERLOADED),
        (httpx.ConnectTimeout("x"), ErrorKind.TIMEOUT),
        (httpx.ReadTimeout("x"), ErrorKind.TIMEOUT),
        (httpx.PoolTimeout("x"), ErrorKind.TIMEOUT),
        (httpx.ConnectError("x"), ErrorKind.CONNECTION),
        (httpx.ReadError("x"), ErrorKind.CONNECTION),
        (httpx.RemoteProtocolError("x"), ErrorKind.CONNECTION),
        (httpx.ProxyError("x"), ErrorKind.CONNECTION),
    ],
)
def test_exceptions(exc: BaseException, kind: ErrorKind) -> None:
    c = classify(exc)
    assert c.kind is kind
    assert c.message.startswith(type(exc).__name__)


class APITimeoutError(Exception):
    pass


class APIConnectionError(Exception):
    pass


class OverloadedError(Exception):
    def __init__(self) -> None:
        super().__init__("something odd")
        self.status_code = None
        self.body = None


def test_sdk_class_names() -> None:
    assert classify(APITimeoutError("Request timed out.")).kind is ErrorKind.TIMEOUT
    assert classify(APITimeoutError("")).kind is ErrorKind.TIMEOUT
    assert classify(APIConnectionError("Connection error.")).kind is ErrorKind.CONNECTION
    assert classify(APIConnectionError("")).kind is ErrorKind.CONNECTION
    assert classify(OverloadedError()).kind is ErrorKind.OVERLOADED


def test_text_beats_class_name() -> None:
    # LiteLLM reported the Bedrock marketplace denial as an APIConnectionError.
    exc = APIConnectionError("Model access is denied due to IAM user or service role")
    assert classify(exc).kind is ErrorKind.PERMISSION


def test_unread_streamed_response() -> None:
    response = httpx.Response(
        429, headers={"retry-after": "3"}, stream=httpx.ByteStream(b"never read")
    )
    c = classify(response)
    assert c.kind is ErrorKind.RATE_LIMITED and c.retry_after_s == 3.0
    request = httpx.Request("GET", "https://x")
    err = httpx.HTTPStatusError(
        "Server error '503 Service Unavailable'",
        request=request,
        response=httpx.Response(503, stream=httpx.ByteStream(b""), request=request),
    )
    assert classify(err).kind is ErrorKind.OVERLOADED


class ClientError(Exception):
    """botocore.exceptions.ClientError look-alike (a dict ``response``)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"An error occurred ({code}) when calling the Converse operation: ...")
        self.response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"x-amzn-id": "1"}},
        }


def test_botocore_like() -> None:
    c = classify(ClientError("ThrottlingException", "Too many requests", 429))
    assert c.kind is ErrorKind.RATE_LIMITED and c.status == 429
    assert c.message == "ThrottlingException: Too many requests"
    c = classify(ClientError("AccessDeniedException", "You don't have access", 403))
    assert c.kind is ErrorKind.PERMISSION
    c = classify(
        ClientError(
            "ValidationException",
            "Invocation of model ID meta.llama3-70b with on-demand throughput isn’t supported.",
            400,
        )
    )
    assert c.kind is ErrorKind.ENDPOINT_MISMATCH
    assert c.endpoint_hint == "inference-profile:us.meta.llama3-70b"
    assert classify(ClientError("ValidationException", "bad", 400)).kind is ErrorKind.BAD_REQUEST
    c = classify(ClientError("ServiceUnavailableException", "try later", 503))
    assert c.kind is ErrorKind.OVERLOADED


class GenaiClientError(Exception):
    """google-genai APIError look-alike: int ``code``, str ``status``, dict ``details``."""

    def __init__(self, code: int, status: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code} {status}. {details}")
        self.code = code
        self.status = status
        self.message = details["error"]["message"]
        self.details = details


def test_google_genai_like() -> None:
    details = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"}],
        }
    }
    c = classify(GenaiClientError(429, "RESOURCE_EXHAUSTED", details))
    assert c.kind is ErrorKind.RATE_LIMITED
    assert c.status == 429 and c.retry_after_s == 9.0
    assert c.message == "Resource has been exhausted."


class RequestsLikeResponse:
    """requests.Response look-alike: status_code, headers, text (not an exception)."""

    status_code = 429
    headers = {"Retry-After": "11"}  # noqa: RUF012
    text = '{"error": {"message": "Rate limit reached"}}'


def test_requests_like_response() -> None:
    c = classify(RequestsLikeResponse())
    assert c.kind is ErrorKind.RATE_LIMITED
    assert c.retry_after_s == 11.0
    assert c.message == "Rate limit reached"


def test_cause_chain() -> None:
    outer = RuntimeError("wrapper failed")
    outer.__cause__ = httpx.ConnectError("refused")
    assert classify(outer).kind is ErrorKind.CONNECTION
    inner = RuntimeError("wrapper failed")
    inner.__context__ = TimeoutError()
    assert classify(inner).kind is ErrorKind.TIMEOUT
    inner.__suppress_context__ = True  # "raise ... from None": the context is not the cause
    assert classify(inner).kind is ErrorKind.UNKNOWN


class Evil:
    @property
    def status_code(self) -> int:
        raise RuntimeError("no")

    @property
    def response(self) -> object:
        raise RuntimeError("no")

    def __str__(self) -> str:
        raise RuntimeError("no")


class EvilError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")

    @property
    def body(self) -> object:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        42,
        3.5,
        float("nan"),
        b"\xff",
        bytearray(b"\xfe"),
        [],
        (),
        object(),
        Evil(),
        EvilError(),
    ],
)
def test_garbage_is_unknown(garbage: object) -> None:
    c = classify(garbage)
    assert c.kind is ErrorKind.UNKNOWN


def test_odd_arguments_to_classify_response() -> None:
    assert classify_response(True, None, None).status is None
    assert classify_response(-1, None, None).kind is ErrorKind.UNKNOWN
    assert classify_response(10**9, {"retry-after": "x" * 10_000}, "x").kind is ErrorKind.UNKNOWN
    odd_headers: Any = [("Retry-After", "4")]
    assert classify_response(429, odd_headers, None).retry_after_s == 4.0
    int_headers: Any = {1: 2}
    assert classify_response(429, int_headers, None).kind is ErrorKind.RATE_LIMITED
    assert classify_response(None, None, {"a": {1, 2}}).kind is ErrorKind.UNKNOWN


# --------------------------------------------------------------------------- never raises

_statuses = st.one_of(st.none(), st.integers(min_value=-1000, max_value=10_000))
_headers = st.dictionaries(
    st.sampled_from(
        ["retry-after", "retry-after-ms", "x-ms-retry-after-ms", "x-ratelimit-reset-tokens", "x"]
    )
    | st.text(max_size=20),
    st.text(max_size=40),
    max_size=5,
)
_bodies = st.one_of(
    st.none(),
    st.text(max_size=2000),
    st.binary(max_size=500),
    st.dictionaries(st.text(max_size=10), st.text(max_size=50) | st.integers(), max_size=5),
    st.sampled_from([e["body"] for e in CORPUS]).map(lambda b: b[: len(b) // 2]),
)


@settings(max_examples=300, deadline=None)
@given(status=_statuses, headers=_headers, body=_bodies)
def test_classify_response_never_raises(status: int | None, headers: Any, body: Any) -> None:
    c = classify_response(status, headers, body)
    assert isinstance(c, Classification)
    assert isinstance(c.kind, ErrorKind)
    assert len(c.message) <= 300
    assert c.retry_after_s is None or (math.isfinite(c.retry_after_s) and c.retry_after_s >= 0)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=1000))
def test_classify_text_never_raises(text: str) -> None:
    assert isinstance(classify(text), Classification)
    assert isinstance(classify(RuntimeError(text)), Classification)
