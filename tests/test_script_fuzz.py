"""No input makes a script fail on a healthy Redis.

Hypothesis drives every ``ErrorKind`` (as a bare kind, a ``Classification``, an
``httpx.Response`` and an exception), every Retry-After form, both scopes, endpoint hints,
probe tokens and generations (real, stale and forged) through ``record``, ``allow`` and the
admin operations, and asserts that the store-error hook never fires: a Lua error from a
healthy Redis is a bug, never an outage. (The autouse fixture in conftest also fails the
test on any Lua error.)
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import Breaker, CircuitOpenError, Classification, ErrorKind, Permit, Target
from tests.conftest import make_settings

NAMES = st.sampled_from(["gpt-4o", "a:b/c{d}", "模型", "x" * 512, "tab\tname", "%41"])
TARGETS = st.builds(Target, st.sampled_from(["openai", "p{x}", "prov:1"]), NAMES)
RETRY_FLOATS = st.sampled_from(
    [None, -1.0, 0.0, 1e-9, 0.5, 3.0, 86400.0, 1e308, float("nan"), float("inf")]
)
RETRY_HEADERS = st.sampled_from(
    [
        {},
        {"retry-after": "2"},
        {"retry-after": "-1"},
        {"retry-after": "NaN"},
        {"retry-after": "inf"},
        {"retry-after": "1e308"},
        {"retry-after": "abc"},
        {"retry-after": ""},
        {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"retry-after-ms": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"retry-after-ms": "1500"},
        {"x-ms-retry-after-ms": "-5"},
    ]
)
HINTS = st.sampled_from([None, "/v1/responses", "/v1/chat/completions", "a\tb\nc", "é" * 300])
STATUSES = st.sampled_from([200, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 529])
BODIES = st.sampled_from(
    [
        "",
        '{"error": {"type": "overloaded_error", "message": "Overloaded"}}',
        '{"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}}',
        '{"error": {"message": "This model is only supported in v1/responses"}}',
        '{"error": {"code": "model_not_found"}}',
        "<html>502 Bad Gateway</html>",
        "\x00\x01 binary",
    ]
)


@st.composite
def errors(draw: Any) -> object:
    form = draw(st.sampled_from(["kind", "classification", "response", "exception"]))
    kind = draw(st.sampled_from(list(ErrorKind)))
    if form == "kind":
        return kind
    if form == "classification":
        return Classification(
            kind,
            retry_after_s=draw(RETRY_FLOATS),
            endpoint_hint=draw(HINTS),
            message=draw(st.text(max_size=50)),
            scope=draw(st.sampled_from(["target", "provider"])),
        )
    response = httpx.Response(
        draw(STATUSES),
        headers=draw(RETRY_HEADERS),
        text=draw(BODIES),
        request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"),
    )
    if form == "response":
        return response
    return draw(
        st.sampled_from(
            [
                httpx.HTTPStatusError("failed", request=response.request, response=response),
                httpx.ConnectError("refused"),
                TimeoutError("slow"),
                ValueError("odd"),
                KeyboardInterrupt(),
            ]
        )
    )


class Errors:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_store_error(self, e: Any) -> None:
        self.events.append(e)


@st.composite
def operations(draw: Any) -> list[tuple[str, Any]]:
    ops = []
    for _ in range(draw(st.integers(1, 12))):
        op = draw(
            st.sampled_from(
                [
                    "fail",
                    "fail",
                    "succeed",
                    "allow",
                    "acquire",
                    "block",
                    "unblock",
                    "reset",
                    "block_provider",
                    "unblock_provider",
                ]
            )
        )
        ops.append(
            (
                op,
                {
                    "target": draw(TARGETS),
                    "error": draw(errors()) if op == "fail" else None,
                    "endpoint": draw(HINTS),
                    "latency": draw(st.sampled_from([None, 0.0, 0.3, float("nan"), 1e12])),
                    "permit": draw(st.sampled_from(["none", "held", "forged", "stale"])),
                    "seconds": draw(st.sampled_from([0.001, 0.2, 30.0, 86400.0 * 3650])),
                    "reason": draw(st.text(max_size=30)),
                },
            )
        )
    return ops


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations())
def test_no_input_makes_a_script_fail(redis_url: str, prefix: str, ops: list[Any]) -> None:
    errors_seen = Errors()
    s = make_settings(
        redis_url,
        prefix,
        failure_threshold=2,
        model_not_found_threshold=1,
        open_seconds=0.05,
        provider_block_seconds=0.05,
        half_open_successes=2,
    )
    with Breaker(s, hooks=[errors_seen]) as b:
        permits: dict[Target, Permit] = {}
        for op, a in ops:
            t: Target = a["target"]
            permit: Permit | None = None
            if a["permit"] == "held":
                permit = permits.get(t)
            elif a["permit"] == "forged":
                permit = Permit(t, generation=987654321, token="forged", source="redis")
            elif a["permit"] == "stale":
                permit = Permit(t, generation=0, token="", source="redis")
            if op == "fail":
                b.record_failure(
                    t, a["error"], permit=permit, endpoint=a["endpoint"], latency_s=a["latency"]
                )
            elif op == "succeed":
                b.record_success(t, a["latency"], permit=permit, endpoint=a["endpoint"])
            elif op == "allow":
                b.allow(t)
            elif op == "acquire":
                with contextlib.suppress(CircuitOpenError):
                    permits[t] = b.acquire(t)
            elif op == "block":
                b.block(t, a["seconds"], a["reason"])
            elif op in ("unblock", "reset"):
                getattr(b, op)(t)
            elif op == "block_provider":
                b.block_provider(t.provider, a["seconds"], a["reason"])
            else:
                b.unblock_provider(t.provider)
        b.states()
        b.events()
    assert errors_seen.events == []
