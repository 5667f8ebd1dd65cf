"""Router policies: per-kind fall-over lists (context-window and content-policy fallbacks), a
short retry on the same target when the provider's wait is short, and waiting for a target to
reopen (``wait_up_to``); sync and async twins against the real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from resilience import (
    AllTargetsFailedError,
    AsyncBreaker,
    AsyncRouter,
    Attempt,
    Breaker,
    Classification,
    ErrorKind,
    Router,
    Settings,
    Target,
)
from tests.conftest import make_settings

SMALL = Target("openai", "gpt-4o-mini", context_window=8_000)
SMALL2 = Target("groq", "llama-3-8b", context_window=8_000)
BIG = Target("gemini", "gemini-2.5-pro", context_window=1_000_000)
A = Target("openai", "gpt-4o")
B = Target("anthropic", "claude-sonnet-4")
LENIENT = Target("mistral", "mistral-large")


class Failure(Exception):
    def __init__(self, kind: ErrorKind, retry_after_s: float | None = None) -> None:
        super().__init__(kind.value)
        self.c = Classification(kind, retry_after_s=retry_after_s)


def failures(error: object, provider: str | None) -> Classification | None:
    return error.c if isinstance(error, Failure) else None


@pytest.fixture
def s(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix)


class Provider:
    """Answers per target: the next failure of its list, else ``"answer from <target>"``."""

    def __init__(self, plan: dict[Target, list[Failure]] | None = None) -> None:
        self.plan = plan or {}
        self.calls: list[Target] = []
        self.times: list[float] = []

    def __call__(self, attempt: Attempt) -> str:
        self.calls.append(attempt.target)
        self.times.append(time.monotonic())
        pending = self.plan.get(attempt.target)
        if pending:
            raise pending.pop(0)
        return f"answer from {attempt.target}"

    async def acall(self, attempt: Attempt) -> str:
        await asyncio.sleep(0)
        return self(attempt)


# --------------------------------------------------------------------------- per-kind lists


def test_context_length_goes_to_a_target_declared_with_a_larger_window(s: Settings) -> None:
    provider = Provider({SMALL: [Failure(ErrorKind.CONTEXT_LENGTH)]})
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [SMALL, SMALL2, BIG])
        assert router.call(provider) == f"answer from {BIG}"
        assert provider.calls == [SMALL, BIG]  # SMALL2 is no larger: not tried
        assert b.state(SMALL).error_count == 0  # the caller's error: never recorded

        # Without declared windows a context_length error is the caller's: re-raised.
        plain = Provider({A: [Failure(ErrorKind.CONTEXT_LENGTH)]})
        with pytest.raises(Failure):
            Router(b, [A, B]).call(plain)
        assert plain.calls == [A]


def test_context_length_with_no_larger_window_is_reraised(s: Settings) -> None:
    provider = Provider(
        {
            SMALL: [Failure(ErrorKind.CONTEXT_LENGTH)],
            BIG: [Failure(ErrorKind.CONTEXT_LENGTH)],
        }
    )
    with Breaker(s, classifier=failures) as b:
        with pytest.raises(Failure) as info:
            Router(b, [SMALL, BIG]).call(provider)
        assert info.value.c.kind is ErrorKind.CONTEXT_LENGTH
        assert provider.calls == [SMALL, BIG]  # BIG's own refusal: nothing larger is left


def test_named_lists_for_content_policy_and_context_length(s: Settings) -> None:
    provider = Provider(
        {A: [Failure(ErrorKind.CONTENT_POLICY)], SMALL: [Failure(ErrorKind.CONTEXT_LENGTH)]}
    )
    fallbacks = {
        ErrorKind.CONTENT_POLICY: [LENIENT],
        ErrorKind.CONTEXT_LENGTH: [SMALL2, BIG],  # SMALL2 is known to be no larger
    }
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], fallbacks=fallbacks)
        assert router.call(provider) == f"answer from {LENIENT}"
        assert provider.calls == [A, LENIENT]  # not B: the refusal goes to the named one
        small_first = Router(b, [SMALL, A], fallbacks=fallbacks)
        assert small_first.call(provider) == f"answer from {BIG}"
        assert provider.calls[2:] == [SMALL, BIG]


def test_a_used_up_list_reraises_a_caller_error_and_lists_every_attempt(s: Settings) -> None:
    provider = Provider(
        {
            A: [Failure(ErrorKind.CONTENT_POLICY)],
            LENIENT: [Failure(ErrorKind.CONTENT_POLICY)],
        }
    )
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], fallbacks={ErrorKind.CONTENT_POLICY: [LENIENT]})
        with pytest.raises(Failure):
            router.call(provider)
        assert provider.calls == [A, LENIENT]

        # A listed target failing for a provider reason: the list goes on, then the error
        # lists every attempt.
        provider.plan = {
            A: [Failure(ErrorKind.CONTENT_POLICY)],
            LENIENT: [Failure(ErrorKind.SERVER_ERROR)],
        }
        with pytest.raises(AllTargetsFailedError) as info:
            router.call(provider)
        assert [(o.target, o.kind) for o in info.value.attempts] == [
            (A, ErrorKind.CONTENT_POLICY),
            (LENIENT, ErrorKind.SERVER_ERROR),
        ]


def test_a_list_for_a_kind_that_falls_over_comes_first(s: Settings) -> None:
    spare = Target("azure", "gpt-4o@eastus")
    provider = Provider({A: [Failure(ErrorKind.RATE_LIMITED)], spare: [Failure(ErrorKind.TIMEOUT)]})
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], fallbacks={ErrorKind.RATE_LIMITED: [spare]})
        assert router.call(provider) == f"answer from {B}"
        assert provider.calls == [A, spare, B]  # the list, then the rest of the order


def test_policies_are_checked(s: Settings) -> None:
    with Breaker(s) as b:
        with pytest.raises(TypeError, match="ErrorKind"):
            Router(b, [A], fallbacks={"content_policy": [B]})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="cancellation"):
            Router(b, [A], fallbacks={ErrorKind.CANCELLED: [B]})
        with pytest.raises(TypeError, match="list of Target"):
            Router(b, [A], fallbacks={ErrorKind.CONTENT_POLICY: B})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="must not repeat"):
            Router(b, [A], fallbacks={ErrorKind.CONTENT_POLICY: [B, B]})
        with pytest.raises(ValueError, match="retry_within"):
            Router(b, [A], retry_within=-1)
        with pytest.raises(ValueError, match="wait_up_to"):
            Router(b, [A], wait_up_to=float("nan"))
        with pytest.raises(ValueError, match="max_retries"):
            Router(b, [A], max_retries=-1)
        with pytest.raises(ValueError, match="context_window"):
            Target("openai", "gpt-4o", context_window=0)
    assert Target("openai", "gpt-4o", context_window=128_000) == A  # metadata, not identity


# --------------------------------------------------------------------------- short retries


def test_a_short_wait_is_retried_on_the_same_target(s: Settings) -> None:
    provider = Provider({A: [Failure(ErrorKind.RATE_LIMITED, retry_after_s=0.2)]})
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], retry_within=1.0)
        assert router.call(provider) == f"answer from {A}"
        assert provider.calls == [A, A]
        assert provider.times[1] - provider.times[0] >= 0.2  # the provider's wait, honoured
        st = b.state(A)
        assert (st.error_count, st.success_count, st.state) == (1, 1, "closed")

        # A longer wait than the bound: fall over at once.
        provider.plan = {A: [Failure(ErrorKind.RATE_LIMITED, retry_after_s=5)]}
        started = time.monotonic()
        assert router.call(provider) == f"answer from {B}"
        assert time.monotonic() - started < 1.0
        assert provider.calls[2:] == [A, B]


def test_retries_back_off_and_stop_at_max_retries(s: Settings) -> None:
    waits = [Failure(ErrorKind.OVERLOADED, retry_after_s=0.0) for _ in range(3)]
    provider = Provider({A: waits})
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], retry_within=1.0, max_retries=2)
        assert router.call(provider) == f"answer from {B}"
        assert provider.calls == [A, A, A, B]
        t = provider.times
        assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2  # 0.1 s, then 0.2 s
        # no wait given: no retry, whatever the bound
        provider.plan = {A: [Failure(ErrorKind.SERVER_ERROR)]}
        assert router.call(provider) == f"answer from {B}"
        assert provider.calls[4:] == [A, B]


def test_a_retry_refused_by_the_breaker_falls_over(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:

        def fn(attempt: Attempt) -> str:
            if attempt.target == A:
                b.block(A, 60, "another worker saw it fail")  # meanwhile, fleet-wide
                raise Failure(ErrorKind.RATE_LIMITED, retry_after_s=0.1)
            return "B"

        assert Router(b, [A, B], retry_within=1.0).call(fn) == "B"
        b.unblock(A)
        with pytest.raises(AllTargetsFailedError) as info:
            Router(b, [A], retry_within=1.0).call(fn)
        assert [(o.skipped, o.kind) for o in info.value.attempts] == [
            (False, ErrorKind.RATE_LIMITED),
            (True, None),
        ]


async def test_async_short_retry_uses_asyncio_sleep(s: Settings) -> None:
    provider = Provider({A: [Failure(ErrorKind.RATE_LIMITED, retry_after_s=0.3)]})
    async with AsyncBreaker(s, classifier=failures) as b:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            router = AsyncRouter(b, [A, B], retry_within=1.0)
            assert await router.call(provider.acall) == f"answer from {A}"
        finally:
            task.cancel()
        assert provider.calls == [A, A]
        assert ticks >= 10  # the loop kept running while the router waited
        st = await b.state(A)
        assert (st.error_count, st.success_count) == (1, 1)


# --------------------------------------------------------------------------- wait_up_to


def test_wait_up_to_waits_for_a_target_to_reopen(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url, prefix)
    provider = Provider()
    with Breaker(settings) as b:
        b.block(A, 0.4, "maintenance")
        b.block(B, 30, "maintenance")
        started = time.monotonic()
        with pytest.raises(AllTargetsFailedError):
            Router(b, [A, B]).call(provider)  # by default: no waiting
        assert provider.calls == []
        caplog.set_level("INFO", logger="resilience")
        router = Router(b, [A, B], wait_up_to=2.0)
        assert router.call(provider) == f"answer from {A}"
        assert 0.4 <= time.monotonic() - started < 2.0
        assert provider.calls == [A]  # the probe after the break
        assert b.state(A).state == "closed"
        assert any("waiting" in r.getMessage() for r in caplog.records)


def test_wait_up_to_gives_up_when_nothing_reopens_in_time(s: Settings) -> None:
    provider = Provider()
    with Breaker(s) as b:
        b.block(A, 30, "maintenance")
        b.block(B, 30, "maintenance")
        started = time.monotonic()
        with pytest.raises(AllTargetsFailedError) as info:
            Router(b, [A, B], wait_up_to=1.0).call(provider)
        assert time.monotonic() - started < 0.5  # no pointless sleep
        assert [o.skipped for o in info.value.attempts] == [True, True]


def test_wait_up_to_waits_for_a_target_that_asked_to_wait(s: Settings) -> None:
    provider = Provider({A: [Failure(ErrorKind.RATE_LIMITED, retry_after_s=0.3)]})
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A], wait_up_to=2.0)
        assert router.call(provider) == f"answer from {A}"
        assert provider.calls == [A, A]
        assert provider.times[1] - provider.times[0] >= 0.3


async def test_async_wait_up_to_twin(s: Settings) -> None:
    provider = Provider()
    async with AsyncBreaker(s) as b:
        await b.block(A, 30, "maintenance")
        await b.block(B, 0.3, "maintenance")
        started = time.monotonic()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            router = AsyncRouter(b, [A, B], wait_up_to=2.0)
            assert await router.call(provider.acall) == f"answer from {B}"
        finally:
            task.cancel()
        assert time.monotonic() - started >= 0.3
        assert ticks >= 10
        assert provider.calls == [B]

        with pytest.raises(AllTargetsFailedError) as info:
            await AsyncRouter(b, [A], wait_up_to=0.5).call(provider.acall)
        assert info.value.attempts[0].skipped


async def test_policies_apply_to_streams_before_the_first_chunk(s: Settings) -> None:
    calls: list[Target] = []

    async def fn(attempt: Attempt) -> Any:
        calls.append(attempt.target)
        if attempt.target == SMALL:
            raise Failure(ErrorKind.CONTEXT_LENGTH)
        for chunk in ("x", "y"):
            yield chunk

    async with AsyncBreaker(s, classifier=failures) as b:
        router = AsyncRouter(b, [SMALL, SMALL2, BIG])
        assert [c async for c in router.stream(fn)] == ["x", "y"]
        assert calls == [SMALL, BIG]
