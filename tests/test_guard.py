"""The guard decorator on sync, async, generator and async-generator functions, with both
breakers (sync and async twins must behave the same)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from resilience import (
    AsyncBreaker,
    Breaker,
    CircuitOpenError,
    ErrorKind,
    Settings,
    Target,
)
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")


class ProviderDown(Exception):
    status_code = 503


@pytest.fixture
def low(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix, failure_threshold=2, open_seconds=30)


def test_sync_function(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", "gpt-4o")
        def call(x: int) -> int:
            if x < 0:
                raise ProviderDown("down")
            return x * 2

        assert call(21) == 42
        for _ in range(2):
            with pytest.raises(ProviderDown):
                call(-1)
        with pytest.raises(CircuitOpenError) as info:
            call(1)
        assert info.value.target == T
        assert 25 < info.value.retry_after_s <= 30
        s = b.state(T)
        assert (s.success_count, s.error_count, s.state) == (1, 2, "open")
        assert call.__name__ == "call"


async def test_async_function_with_sync_breaker(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", "gpt-4o")
        async def call(x: int) -> int:
            await asyncio.sleep(0)
            if x < 0:
                raise ProviderDown("down")
            return x

        assert await call(3) == 3
        for _ in range(2):
            with pytest.raises(ProviderDown):
                await call(-1)
        with pytest.raises(CircuitOpenError):
            await call(1)
        assert b.state(T).error_count == 2


async def test_async_function_with_async_breaker(low: Settings) -> None:
    async with AsyncBreaker(low) as b:

        @b.guard("openai", "gpt-4o")
        async def call(x: int) -> int:
            if x < 0:
                raise ProviderDown("down")
            return x

        assert await call(3) == 3
        for _ in range(2):
            with pytest.raises(ProviderDown):
                await call(-1)
        with pytest.raises(CircuitOpenError):
            await call(1)
        s = await b.state(T)
        assert (s.success_count, s.error_count, s.state) == (1, 2, "open")


async def test_async_generator_recorded_when_stream_ends(low: Settings) -> None:
    async with AsyncBreaker(low) as b:

        @b.guard("openai", "gpt-4o")
        async def stream(n: int, fail: bool = False) -> AsyncIterator[int]:
            for i in range(n):
                yield i
            if fail:
                raise ProviderDown("stream broke")

        assert [x async for x in stream(3)] == [0, 1, 2]
        assert (await b.state(T)).success_count == 1
        got: list[int] = []

        async def consume() -> None:
            async for x in stream(2, fail=True):
                got.append(x)

        with pytest.raises(ProviderDown):
            await consume()
        assert got == [0, 1]
        s = await b.state(T)
        assert (s.success_count, s.error_count) == (1, 1)


def test_sync_generator(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", "gpt-4o")
        def stream(n: int) -> Iterator[int]:
            yield from range(n)

        assert list(stream(3)) == [0, 1, 2]
        assert b.state(T).success_count == 1


def test_model_from_call_arguments(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", lambda *a, **kw: kw["model"])
        def call(prompt: str, *, model: str) -> str:
            return f"{model}:{prompt}"

        assert call("hi", model="gpt-4.1") == "gpt-4.1:hi"
        assert b.state(Target("openai", "gpt-4.1")).success_count == 1


async def test_cancellation_is_not_a_failure(low: Settings) -> None:
    async with AsyncBreaker(low) as b:

        @b.guard("openai", "gpt-4o")
        async def slow() -> None:
            await asyncio.sleep(10)

        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(slow(), 0.01)
        s = await b.state(T)
        assert (s.error_count, s.state) == (0, "closed")


def test_keyboard_interrupt_is_not_a_failure(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", "gpt-4o")
        def call() -> None:
            raise KeyboardInterrupt

        for _ in range(3):
            with pytest.raises(KeyboardInterrupt):
                call()
        assert b.state(T).error_count == 0


def test_caller_error_is_reraised_and_not_counted(low: Settings) -> None:
    with Breaker(low) as b:
        body = '{"error": {"code": "context_length_exceeded", "message": "maximum context length"}}'
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx.Response(400, text=body, request=request)

        @b.guard("openai", "gpt-4o")
        def call() -> None:
            response.raise_for_status()

        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError):
                call()
        assert b.state(T).error_count == 0


def test_http_errors_classified_from_the_exception(low: Settings) -> None:
    with Breaker(low) as b:
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx.Response(
            429, headers={"retry-after": "12"}, text="slow down", request=request
        )

        @b.guard("openai", "gpt-4o")
        def call() -> None:
            response.raise_for_status()

        with pytest.raises(httpx.HTTPStatusError) as info:
            call()
        assert info.value.response is response  # the provider's own exception, unchanged
        s = b.state(T)
        assert s.last_error_kind == "rate_limited" and s.state == "open"
        with pytest.raises(CircuitOpenError) as open_info:
            call()
        assert 10 < open_info.value.retry_after_s <= 12


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_twins_reach_the_same_state(redis_url: str, prefix: str, kind: str) -> None:
    """The same sequence through Breaker and AsyncBreaker gives the same stored state."""
    s = make_settings(redis_url, f"{prefix}-{kind}", failure_threshold=3)
    seq: list[Any] = [None, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR, None, ErrorKind.TIMEOUT]
    seq += [ErrorKind.TIMEOUT, ErrorKind.TIMEOUT]
    if kind == "sync":
        with Breaker(s) as b:
            for item in seq:
                if b.allow(T):
                    b.record_success(T) if item is None else b.record_failure(T, item)
            st = b.state(T)
            allowed = b.allow(T)
    else:
        async with AsyncBreaker(s) as ab:
            for item in seq:
                if await ab.allow(T):
                    await (ab.record_success(T) if item is None else ab.record_failure(T, item))
            st = await ab.state(T)
            allowed = await ab.allow(T)
    assert (st.state, st.error_count, st.success_count, st.trips, allowed) == (
        "open",
        5,
        2,
        1,
        False,
    )
    # tidy the extra prefix
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}-{kind}:*"):
        client.delete(key)
    client.close()


def test_guard_rejects_bad_arguments(breaker: Breaker) -> None:
    with pytest.raises(ValueError, match="provider"):
        breaker.guard("", "m")
    with pytest.raises(ValueError, match="model"):
        breaker.guard("p", "")


async def test_async_stream_closed_early_counts_as_success(low: Settings) -> None:
    async with AsyncBreaker(low) as b:

        @b.guard("openai", "gpt-4o")
        async def stream() -> AsyncIterator[int]:
            for i in range(100):
                yield i

        gen = stream()
        assert await gen.__anext__() == 0
        await gen.aclose()  # the consumer stops reading
        for _ in range(100):
            if (await b.state(T)).success_count == 1:
                break
            await asyncio.sleep(0.01)
        s = await b.state(T)
        assert (s.success_count, s.error_count) == (1, 0)


def test_model_from_a_named_argument(low: Settings) -> None:
    with Breaker(low) as b:

        @b.guard("openai", model_arg="model")
        def call(prompt: str, model: str, temperature: float = 0.0) -> str:
            return f"{model}:{prompt}"

        assert call("hi", "gpt-4.1") == "gpt-4.1:hi"  # positionally
        assert call("hi", model="gpt-4.1") == "gpt-4.1:hi"  # by keyword
        assert b.state(Target("openai", "gpt-4.1")).success_count == 2


def test_model_arg_must_name_a_parameter(breaker: Breaker) -> None:
    with pytest.raises(ValueError, match="no parameter"):

        @breaker.guard("openai", model_arg="model")
        def call(prompt: str) -> str:
            return prompt

    with pytest.raises(ValueError, match="exactly one"):
        breaker.guard("openai")
    with pytest.raises(ValueError, match="exactly one"):
        breaker.guard("openai", "m", model_arg="model")


@pytest.mark.parametrize("how", ["lambda raises", "too long", "not a str", "missing"])
def test_a_model_that_cannot_be_used_never_breaks_the_call(
    low: Settings, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Breaker(low) as b:
        if how == "lambda raises":
            guard = b.guard("openai", lambda *a, **kw: kw["model"])
        else:
            guard = b.guard("openai", model_arg="model")
        called: list[Any] = []

        @guard
        def call(prompt: str, model: Any = None) -> str:
            called.append(model)
            return "answer"

        model = {"too long": "x" * 600, "not a str": 42, "missing": None}.get(how)
        with caplog.at_level("WARNING", logger="resilience"):
            for _ in range(3):
                if how == "lambda raises":
                    assert call("hi") == "answer"
                else:
                    assert call("hi", model=model) == "answer"
        assert len(called) == 3  # the provider was called every time
        warnings = [r for r in caplog.records if "could not find a usable model" in r.message]
        assert len(warnings) == 1  # warned once per guard
        assert b.states() == []  # nothing recorded


def test_the_breaker_classifier_sees_the_target_provider(low: Settings) -> None:
    seen: list[tuple[str, str | None]] = []

    def mine(error: object, provider: str | None) -> Any:
        seen.append((type(error).__name__, provider))
        if isinstance(error, ProviderDown):
            from resilience import Classification

            return Classification(ErrorKind.QUOTA_EXHAUSTED, scope="provider")
        return None  # the built-in rules

    with Breaker(low, classifier=mine) as b:

        @b.guard("my-gateway", "m1")
        def call() -> None:
            raise ProviderDown("budget")

        with pytest.raises(ProviderDown):
            call()
        assert not b.allow(Target("my-gateway", "another-model"))  # the user's verdict
        c = b.record_failure(Target("openai", "x"), httpx.Response(429, text="slow"))
        assert c.kind is ErrorKind.RATE_LIMITED  # None: the built-in rules decided
    assert seen == [("ProviderDown", "my-gateway"), ("Response", "openai")]
