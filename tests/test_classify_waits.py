"""Waits from everywhere: body phrases and fields, gRPC RetryInfo, window reset headers.

Pure unit tests: no Redis, no network.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from resilience import ErrorKind
from resilience._classify import classify_response
from resilience._classify._waits import MAX_WAIT_S, body_wait, clamp, go_duration

K = ErrorKind


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ('{"detail":"Request was throttled. Your rate limit resets in ~5s.","status":429}', 5.0),
        ("Your quota will reset after 8h44m7s.", 31447.0),
        ("All accounts have exhausted their quota (reset after 140h 21m 10s)", 505270.0),
        ("please try again after 1 seconds", 1.0),
        ('{"retry_after": 12}', 12.0),
        ("{'retryAfter': '30'}", 30.0),
        ('{"retry_after_ms": 1500}', 1.5),
        ('{"error":"Model x is currently loading","estimated_time":20.0}', 20.0),
        ("retry_delay {\n  seconds: 47\n  nanos: 500000000\n}", 47.5),
    ],
)
def test_body_waits(text: str, seconds: float) -> None:
    assert body_wait(text.lower()) == pytest.approx(seconds, rel=1e-9)


@pytest.mark.parametrize(
    "text",
    [
        "API Error (Request timed out.) · Retrying in 5 seconds… (attempt 4/10)",
        "Retrying langchain.llms.openai.completion_with_retry.<locals>._completion_with_retry "
        "in 4.0 seconds as it raised APIError",
        "no wait at all",
        "retry later",
    ],
)
def test_a_clients_own_backoff_is_not_a_wait(text: str) -> None:
    assert body_wait(text.lower()) is None


def test_clamp_and_durations() -> None:
    assert clamp(-1.0) is None
    assert clamp(float("nan")) is None
    assert clamp(float("inf")) is None
    assert clamp(10 * MAX_WAIT_S) == MAX_WAIT_S
    assert go_duration("6m0s") == 360.0
    assert go_duration("1h 2m 3s") == 3723.0
    assert go_duration("42") == 42.0
    assert go_duration("soon") is None
    assert go_duration("1" * 100) is None


def test_absurd_body_waits_are_clamped() -> None:
    c = classify_response(429, None, "Please try again in 999999999h.")
    assert c.retry_after_s == MAX_WAIT_S
    assert c.kind is K.QUOTA_EXHAUSTED  # a rate limit asking for hours is a spent quota


def test_anthropic_reset_headers_are_measured_from_the_date_header() -> None:
    server_now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    headers = {
        "date": format_datetime(server_now, usegmt=True),
        "anthropic-ratelimit-requests-remaining": "12",
        "anthropic-ratelimit-requests-reset": "2025-03-01T12:00:05Z",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2025-03-01T12:00:42Z",
    }
    body = '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    c = classify_response(429, headers, body, "anthropic")
    assert c.kind is K.RATE_LIMITED
    assert c.retry_after_s == 42.0  # the exhausted window, not the soonest one


def test_anthropic_reset_without_date_uses_this_hosts_clock() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=90)
    headers = {"anthropic-ratelimit-input-tokens-reset": when.isoformat()}
    c = classify_response(429, headers, "")
    assert c.retry_after_s is not None and 80 <= c.retry_after_s <= 91


def test_reset_instants_in_the_past_are_zero_and_garbage_is_ignored() -> None:
    server_now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    headers = {
        "date": format_datetime(server_now, usegmt=True),
        "anthropic-ratelimit-requests-reset": "2025-03-01T11:59:00Z",
    }
    assert classify_response(429, headers, "").retry_after_s == 0.0
    headers["anthropic-ratelimit-requests-reset"] = "not a time"
    assert classify_response(429, headers, "").retry_after_s is None


def test_reset_headers_are_only_read_for_rate_limits() -> None:
    headers = {"x-ratelimit-reset-requests": "3s", "x-ratelimit-remaining-requests": "0"}
    assert classify_response(429, headers, "").retry_after_s == 3.0
    assert classify_response(503, headers, "").retry_after_s is None
    assert classify_response(400, headers, "bad").retry_after_s is None


def test_retry_info_protobuf_text_from_google_api_core() -> None:
    body = (
        "429 Quota exceeded for quota metric 'Generate Content API requests per minute' "
        '[violations { quota_metric: "x" } , links { url: "y" } , retry_delay {\n'
        "  seconds: 21\n}\n]"
    )
    c = classify_response(None, None, body)
    assert c.kind is K.RATE_LIMITED and c.retry_after_s == 21.0


def test_header_wait_wins_over_body_wait() -> None:
    c = classify_response(429, {"retry-after": "3"}, '{"retry_after": 12}')
    assert c.retry_after_s == 3.0
