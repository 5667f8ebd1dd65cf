"""The rollout switches: ``enabled=False`` (kill switch) records nothing and never blocks;
``shadow=True`` records, logs and reports what it would have blocked but never blocks."""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import pytest
import redis

from resilience import (
    AllTargetsFailedError,
    AsyncBreaker,
    Attempt,
    Breaker,
    ErrorKind,
    RejectedEvent,
    Router,
    Target,
    TransitionInfo,
)
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")
FALLBACK = Target("anthropic", "claude-sonnet-4")


class Recorder:
    """A hook keeping every event it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_allowed(self, e: Any) -> None:
        self.events.append(("allowed", e))

    def on_rejected(self, e: Any) -> None:
        self.events.append(("rejected", e))

    def on_outcome(self, e: Any) -> None:
        self.events.append(("outcome", e))

    def on_transition(self, e: Any) -> None:
        self.events.append(("transition", e))

    def on_store_error(self, e: Any) -> None:
        self.events.append(("store_error", e))

    def of(self, name: str) -> list[Any]:
        return [e for n, e in self.events if n == name]


def keys_under(rclient: redis.Redis, prefix: str) -> list[str]:
    return list(rclient.scan_iter(match=f"{prefix}:*", count=1000))


class ProviderDown(Exception):
    pass


# --------------------------------------------------------------------------- kill switch


def test_disabled_guard_behaves_exactly_as_unguarded(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    settings = make_settings(redis_url, prefix, enabled=False, failure_threshold=1)
    hook = Recorder()
    calls: list[int] = []
    error = ProviderDown("boom")
    result = object()

    def plain(fail: bool) -> object:
        calls.append(1)
        if fail:
            raise error
        return result

    with Breaker(settings, hooks=[hook]) as breaker:
        guarded = breaker.guard("openai", "gpt-4o")(plain)
        for _ in range(10):  # 10x the threshold
            with pytest.raises(ProviderDown) as info:
                guarded(True)
            assert info.value is error  # the very same exception object
        assert guarded(False) is result  # the very same result object
        assert breaker.allow(T) is True
        breaker.record_failure(T, ErrorKind.MODEL_NOT_FOUND)
        assert breaker.allow(T) is True
    assert len(calls) == 11  # never skipped
    assert keys_under(rclient, prefix) == []  # nothing written under the prefix
    assert [n for n, _ in hook.events] == []  # no hook: nothing happened as far as it knows


async def test_disabled_async_guard(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    settings = make_settings(redis_url, prefix, enabled=False, failure_threshold=1)
    async with AsyncBreaker(settings) as breaker:

        @breaker.guard("openai", "gpt-4o")
        async def call(fail: bool) -> str:
            if fail:
                raise httpx.ConnectError("refused")
            return "ok"

        for _ in range(5):
            with pytest.raises(httpx.ConnectError):
                await call(True)
        assert await call(False) == "ok"
        assert await breaker.allow(T) is True
    assert keys_under(rclient, prefix) == []


def test_disabled_router_never_skips(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    settings = make_settings(redis_url, prefix, enabled=False, failure_threshold=1)
    tried: list[Target] = []

    def call(attempt: Attempt) -> str:
        tried.append(attempt.target)
        assert attempt.endpoint is None  # no hint handed out: nothing is learned
        if attempt.target == T:
            raise httpx.ConnectError("refused")
        return "fallback"

    with Breaker(settings) as breaker:
        router = Router(breaker, [T, FALLBACK])
        assert [router.call(call) for _ in range(6)] == ["fallback"] * 6
    assert tried == [T, FALLBACK] * 6  # the failing primary was called every time
    assert keys_under(rclient, prefix) == []


def test_disabled_never_touches_redis(prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there: any Redis use would fire on_store_error.
    settings = make_settings(f"redis://127.0.0.1:{port}/0", prefix, enabled=False)
    hook = Recorder()
    with Breaker(settings, hooks=[hook]) as breaker:

        @breaker.guard("openai", "gpt-4o")
        def call() -> str:
            return "ok"

        assert [call() for _ in range(3)] == ["ok"] * 3
    assert hook.of("store_error") == []


# --------------------------------------------------------------------------- shadow mode


def test_shadow_records_and_logs_but_never_blocks(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url, prefix, shadow=True, failure_threshold=2)
    hook = Recorder()
    calls: list[int] = []

    with Breaker(settings, hooks=[hook]) as breaker:

        @breaker.guard("openai", "gpt-4o")
        def call() -> str:
            calls.append(1)
            raise httpx.ConnectError("refused")

        with caplog.at_level(logging.INFO, logger="resilience"):
            for _ in range(6):
                with pytest.raises(httpx.ConnectError):  # the provider's own error, always
                    call()
            assert breaker.allow(T) is True  # open, yet allowed
        state = breaker.state(T)

    assert len(calls) == 6  # every call was made
    assert (state.state, state.blacklisted) == ("open", True)  # but the trip was recorded
    assert state.error_count == 6
    transitions: list[TransitionInfo] = hook.of("transition")
    assert [(t.to_state, t.shadow) for t in transitions] == [("open", True)]
    rejected: list[RejectedEvent] = hook.of("rejected")
    assert len(rejected) == 5  # 4 guarded calls after the trip + the allow()
    assert all(r.shadow for r in rejected)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "Blacklisted openai/gpt-4o" in m and "[shadow mode: not enforced]" in m for m in messages
    )
    assert sum("Shadow mode: would skip openai/gpt-4o" in m for m in messages) == 5


def test_shadow_router_calls_the_open_target(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, shadow=True, failure_threshold=1)
    tried: list[Target] = []

    def call(attempt: Attempt) -> str:
        tried.append(attempt.target)
        if attempt.target == T:
            raise httpx.ConnectError("refused")
        return "fallback"

    with Breaker(settings) as breaker:
        router = Router(breaker, [T, FALLBACK])
        assert [router.call(call) for _ in range(4)] == ["fallback"] * 4
        assert breaker.state(T).state == "open"
    assert tried == [T, FALLBACK] * 4  # never skipped


def test_enforced_mode_does_block(redis_url: str, prefix: str) -> None:
    """The control: the same traffic without shadow mode skips the open target."""
    settings = make_settings(redis_url, prefix, failure_threshold=1)
    tried: list[Target] = []

    def call(attempt: Attempt) -> str:
        tried.append(attempt.target)
        if attempt.target == T:
            raise httpx.ConnectError("refused")
        return "fallback"

    with Breaker(settings) as breaker:
        router = Router(breaker, [T, FALLBACK])
        assert [router.call(call) for _ in range(4)] == ["fallback"] * 4
        with pytest.raises(AllTargetsFailedError):
            Router(breaker, [T]).call(call)
    assert tried == [T, FALLBACK, FALLBACK, FALLBACK, FALLBACK]


# --------------------------------------------------------------------------- in the demo


def short_demo(settings: Any) -> Any:
    import io

    from examples.demo import DemoOptions, run_demo

    # A seed whose first route draws give every route a few requests within 1.5 s (the
    # assertions count calls per model).
    options = DemoOptions(duration_s=1.5, workers=2, seed=31, live=False, snapshot=False)
    return run_demo(settings, options, io.StringIO())


def test_demo_with_the_kill_switch(redis_url: str, prefix: str, rclient: redis.Redis) -> None:
    s = short_demo(make_settings(redis_url, prefix, enabled=False))
    assert s.ok
    assert (s.skipped, s.shadow_skipped, s.probes, s.events) == (0, 0, 0, ())
    retired = s.model("openai", "gpt-4-0314")
    # paid on every request, as without the library (with it: model_not_found_threshold
    # calls, plus at most one already in flight per other worker)
    assert retired.calls > 3
    assert retired.first_trip_at is None
    quota = s.model("together", "Qwen/Qwen2.5-72B-Instruct")
    # no provider-wide block either (with it: at most one call per worker)
    assert quota.calls > 2
    assert s.hints_learned == {}
    o3 = s.model("openai", "o3-pro")
    assert o3.hint_calls == 0  # nothing learned: every call starts on chat completions
    assert o3.calls_by_path["/v1/chat/completions"] == o3.retry_calls
    # no compatibility hint is stored either: every request to the model that refuses
    # max_tokens is refused once, then retried with what its own refusal taught; no request
    # is routed away for needing tools
    assert s.compat == ()
    o1 = s.model("openai", "o1")
    assert o1.refused_calls >= 1
    assert o1.failures == o1.refused_calls == o1.adapted_calls == o1.calls - o1.refused_calls
    assert s.model("ollama", "deepseek-r1:14b").needs_skips == 0
    assert keys_under(rclient, prefix) == []
    assert "kill switch was on" in s.text


def test_demo_in_shadow_mode(redis_url: str, prefix: str) -> None:
    s = short_demo(make_settings(redis_url, prefix, shadow=True))
    assert s.ok
    assert s.skipped == 0
    assert s.shadow_skipped > 10
    retired = s.model("openai", "gpt-4-0314")
    assert retired.first_trip_kind == "model_not_found"  # the trip is recorded
    assert retired.state == "open"
    assert retired.calls > 5  # but the model is still called
    assert retired.calls > (retired.calls_to_first_trip or 0)
    assert f"{s.shadow_skipped} calls would have been skipped" in s.text
