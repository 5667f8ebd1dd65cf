"""Router and AsyncRouter: order, skipping, fall-over, endpoint hints, caller errors."""

from __future__ import annotations

import logging

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

A = Target("openai", "gpt-4o")
B = Target("anthropic", "claude-sonnet-4")
C = Target("gemini", "gemini-2.5-pro")


class Failure(Exception):
    """A provider failure carrying its classification (classify accepts it via .kind)."""

    def __init__(self, c: Classification) -> None:
        super().__init__(c.message or c.kind.value)
        self.c = c


@pytest.fixture
def s(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix, failure_threshold=2)


def raising(kind: ErrorKind, **kw: object) -> Failure:
    return Failure(Classification(kind, **kw))  # type: ignore[arg-type]


def failures(error: object, provider: str | None) -> Classification | None:
    """A user classifier: this module's Failure carries its own classification."""
    return error.c if isinstance(error, Failure) else None


def test_first_healthy_target_wins(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B])
        seen: list[Attempt] = []

        def fn(attempt: Attempt) -> str:
            seen.append(attempt)
            return attempt.target.model

        assert router.call(fn) == "gpt-4o"
        assert [a.target for a in seen] == [A]


def test_falls_over_and_skips_blacklisted(s: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilience")
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B])
        calls: list[Target] = []

        def fn(attempt: Attempt) -> str:
            calls.append(attempt.target)
            if attempt.target == A:
                raise raising(ErrorKind.SERVER_ERROR)
            return "ok"

        assert router.call(fn) == "ok"
        assert router.call(fn) == "ok"  # A trips on its 2nd failure
        assert router.call(fn) == "ok"  # A skipped without a call
        assert calls == [A, B, A, B, B]
        assert b.state(A).state == "open"
    assert any(
        r.getMessage().startswith('[LLMRouter] Primary provider "openai" is blacklisted')
        for r in caplog.records
    )


def test_all_failed_lists_every_attempt(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        b.block(C, 60, "maintenance")
        router = Router(b, [A, B, C])

        def fn(attempt: Attempt) -> str:
            raise raising(ErrorKind.TIMEOUT)

        with pytest.raises(AllTargetsFailedError) as info:
            router.call(fn)
        attempts = info.value.attempts
        assert [(a.target, a.skipped, a.kind) for a in attempts] == [
            (A, False, ErrorKind.TIMEOUT),
            (B, False, ErrorKind.TIMEOUT),
            (C, True, None),
        ]
        assert attempts[2].retry_after_s is not None and attempts[2].retry_after_s > 50
        assert isinstance(info.value.__cause__, Failure)


def test_caller_error_is_reraised_without_fall_over(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B])
        calls: list[Target] = []

        def fn(attempt: Attempt) -> str:
            calls.append(attempt.target)
            raise raising(ErrorKind.CONTEXT_LENGTH)

        with pytest.raises(Failure):
            router.call(fn)
        assert calls == [A]
        assert b.state(A).error_count == 0
        router2 = Router(b, [A, B], fall_over_on_caller_errors=True)
        with pytest.raises(AllTargetsFailedError):
            router2.call(fn)
        assert calls == [A, A, B]


def test_endpoint_mismatch_retries_once_on_the_hinted_endpoint(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B])
        seen: list[tuple[Target, str | None]] = []

        def fn(attempt: Attempt) -> str:
            seen.append((attempt.target, attempt.endpoint))
            if attempt.target == A and attempt.endpoint != "/v1/responses":
                raise raising(ErrorKind.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses")
            return f"{attempt.target.model}@{attempt.endpoint}"

        assert router.call(fn) == "gpt-4o@/v1/responses"
        assert seen == [(A, None), (A, "/v1/responses")]
        # the hint is learned: the next call goes to the right endpoint at once
        assert router.call(fn) == "gpt-4o@/v1/responses"
        assert seen[2:] == [(A, "/v1/responses")]
        assert b.state(A).endpoint_hint == "/v1/responses"


def test_router_validates_targets(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        with pytest.raises(ValueError, match="at least one"):
            Router(b, [])
        with pytest.raises(ValueError, match="repeat"):
            Router(b, [A, A])


async def test_async_router_twin(s: Settings) -> None:
    async with AsyncBreaker(s, classifier=failures) as b:
        router = AsyncRouter(b, [A, B])
        calls: list[Target] = []

        async def fn(attempt: Attempt) -> str:
            calls.append(attempt.target)
            if attempt.target == A:
                raise raising(ErrorKind.OVERLOADED)
            return "ok"

        for _ in range(3):
            assert await router.call(fn) == "ok"
        assert calls == [A, B, A, B, B]
        assert (await b.state(A)).state == "open"

        async def all_fail(attempt: Attempt) -> str:
            raise raising(ErrorKind.SERVER_ERROR)

        with pytest.raises(AllTargetsFailedError) as info:
            await router.call(all_fail)
        assert [a.skipped for a in info.value.attempts] == [True, False]


def test_a_nested_open_circuit_falls_over(s: Settings) -> None:
    with Breaker(s, classifier=failures) as b:
        inner = Target("openai", "inner")
        b.block(inner, 60, "test")

        @b.guard("openai", "inner")
        def nested() -> str:
            return "never"

        def fn(attempt: Attempt) -> str:
            if attempt.target == A:
                return nested()  # raises CircuitOpenError: A's own dependency is open
            return f"answered by {attempt.target}"

        assert Router(b, [A, B]).call(fn) == f"answered by {B}"
        assert b.state(A).error_count == 0  # not charged to A

        with pytest.raises(AllTargetsFailedError) as info:
            Router(b, [A]).call(fn)
        [attempt] = info.value.attempts
        assert attempt.skipped and attempt.retry_after_s and attempt.retry_after_s > 50


async def test_async_router_gives_the_probe_lease_back_despite_a_second_cancellation(
    s: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from resilience._flow import Script
    from resilience._io import AsyncIO

    settings = make_settings(s.redis_url, s.key_prefix, open_seconds=0.1, failure_threshold=2)
    async with AsyncBreaker(settings) as b:
        await b.record_failure(A, ErrorKind.SERVER_ERROR)
        await b.record_failure(A, ErrorKind.SERVER_ERROR)  # open
        await asyncio.sleep(0.15)
        original = AsyncIO.execute

        async def slow_records(self: AsyncIO, op: object) -> object:
            if isinstance(op, Script) and op.name == "record.lua":
                await asyncio.sleep(0.3)  # a slow Redis while the outcome is recorded
            return await original(self, op)  # type: ignore[arg-type]

        monkeypatch.setattr(AsyncIO, "execute", slow_records)
        started = asyncio.Event()

        async def fn(attempt: Attempt) -> str:
            assert attempt.probe
            started.set()
            await asyncio.sleep(10)
            return "never"

        task = asyncio.create_task(AsyncRouter(b, [A]).call(fn))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()  # the call is cancelled: its probe lease is given back...
        await asyncio.sleep(0.05)
        task.cancel()  # ...even when the recording is cancelled again meanwhile
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.setattr(AsyncIO, "execute", original)
        await asyncio.sleep(0.4)
        assert (await b.acquire(A)).probe  # the lease is free: the next caller probes


def test_a_router_classifier_takes_precedence(s: Settings) -> None:
    def everything_is_bad_request(error: object, provider: str | None) -> Classification:
        return Classification(ErrorKind.BAD_REQUEST)

    with Breaker(s, classifier=failures) as b:
        router = Router(b, [A, B], classifier=everything_is_bad_request)

        def fn(attempt: Attempt) -> str:
            raise raising(ErrorKind.OVERLOADED)

        with pytest.raises(Failure):  # a caller error: re-raised, no fall-over
            router.call(fn)
        assert b.state(A).error_count == 0
