"""Router.stream and AsyncRouter.stream: fall-over before the first chunk, none after it;
the end, an early close and cancellation; the real openai SDK against a local provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
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
from tests.llm_server import OPENAI_500, OPENAI_CONTEXT, LLMServer, Reply, openai_stream

A = Target("openai", "gpt-4o")
B = Target("anthropic", "claude-sonnet-4")
C = Target("gemini", "gemini-2.5-pro")
MSG = [{"role": "user", "content": "hi"}]


class Failure(Exception):
    def __init__(self, kind: ErrorKind) -> None:
        super().__init__(kind.value)
        self.c = Classification(kind)


def failures(error: object, provider: str | None) -> Classification | None:
    return error.c if isinstance(error, Failure) else None


@pytest.fixture
def s(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix, failure_threshold=3)


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


def counts(b: Breaker, t: Target) -> tuple[int, int]:
    st = b.state(t)
    return st.error_count, st.success_count


async def acounts(b: AsyncBreaker, t: Target) -> tuple[int, int]:
    st = await b.state(t)
    return st.error_count, st.success_count


class Script:
    """Per target: chunks to yield, and where (if anywhere) to fail."""

    def __init__(self, plan: dict[Target, tuple[list[str], int | None, ErrorKind]]) -> None:
        self.plan = plan
        self.calls: list[Target] = []
        self.closed: list[Target] = []

    def gen(self, attempt: Attempt) -> Iterator[str]:
        self.calls.append(attempt.target)
        chunks, fail_at, kind = self.plan[attempt.target]
        try:
            for i, chunk in enumerate(chunks):
                if i == fail_at:
                    raise Failure(kind)
                yield chunk
            if fail_at == len(chunks):
                raise Failure(kind)
        finally:
            self.closed.append(attempt.target)

    async def agen(self, attempt: Attempt) -> AsyncIterator[str]:
        for chunk in self.gen(attempt):
            await asyncio.sleep(0)
            yield chunk


OK = ErrorKind.SERVER_ERROR  # unused kind for plans that never fail


# --------------------------------------------------------------------------- sync


def test_a_failure_before_the_first_chunk_falls_over(s: Settings) -> None:
    plan = {A: (["a1"], 0, ErrorKind.SERVER_ERROR), B: (["b1", "b2"], None, OK)}
    script = Script(plan)
    with Breaker(s, classifier=failures) as b:
        stream = Router(b, [A, B]).stream(script.gen)
        assert script.calls == []  # nothing happens before the first next()
        assert next(stream) == "b1"
        assert counts(b, A) == (1, 0)
        assert counts(b, B) == (0, 0)  # not ended yet
        assert list(stream) == ["b2"]
        assert counts(b, B) == (0, 1)
        assert script.calls == [A, B]


def test_a_failure_after_the_first_chunk_is_raised_not_switched(s: Settings) -> None:
    plan = {A: (["a1", "a2", "a3"], 2, ErrorKind.CONNECTION), B: (["b1"], None, OK)}
    script = Script(plan)
    got: list[str] = []
    with Breaker(s, classifier=failures) as b:

        def read() -> None:
            got.extend(Router(b, [A, B]).stream(script.gen))

        with pytest.raises(Failure):
            read()
        assert got == ["a1", "a2"]  # never a silent switch to B mid-answer
        assert script.calls == [A]
        assert counts(b, A) == (1, 0)
        assert b.state(A).last_error_kind == "connection"


def test_early_close_is_a_success_and_closes_the_stream(s: Settings) -> None:
    script = Script({A: (["a1", "a2", "a3"], None, OK)})
    with Breaker(s, classifier=failures) as b:
        stream = Router(b, [A]).stream(script.gen)
        assert next(stream) == "a1"
        stream.close()
        assert script.closed == [A]  # the provider's stream was closed too
        assert counts(b, A) == (0, 1)


def test_caller_errors_nested_open_circuits_and_empty_streams(s: Settings) -> None:
    plan = {A: (["a1"], 0, ErrorKind.CONTEXT_LENGTH), B: ([], None, OK)}
    script = Script(plan)
    with Breaker(s, classifier=failures) as b:
        with pytest.raises(Failure):  # a caller error: re-raised, no fall-over
            list(Router(b, [A, B]).stream(script.gen))
        assert script.calls == [A]
        assert counts(b, A) == (0, 0)

        inner = Target("openai", "inner")
        b.block(inner, 60, "test")

        @b.guard("openai", "inner")
        def nested() -> Iterator[str]:
            yield "never"

        def fn(attempt: Attempt) -> Iterator[str]:
            return nested() if attempt.target == A else script.gen(attempt)

        assert list(Router(b, [A, B]).stream(fn)) == []  # B's stream is empty: a success
        assert counts(b, A) == (0, 0)  # the nested open circuit is not A's failure
        assert counts(b, B) == (0, 1)


def test_all_targets_failed_before_a_chunk(s: Settings) -> None:
    script = Script({A: ([], 0, ErrorKind.TIMEOUT), B: (["b"], 0, ErrorKind.OVERLOADED)})
    with Breaker(s, classifier=failures) as b:
        b.block(C, 60, "test")
        with pytest.raises(AllTargetsFailedError) as info:
            list(Router(b, [A, B, C]).stream(script.gen))
        assert [(o.target, o.skipped, o.kind) for o in info.value.attempts] == [
            (A, False, ErrorKind.TIMEOUT),
            (B, False, ErrorKind.OVERLOADED),
            (C, True, None),
        ]


def test_something_that_is_not_a_stream_is_a_clear_error(s: Settings) -> None:
    with Breaker(s) as b:
        router = Router(b, [A, B])
        with pytest.raises(TypeError, match="fn returned str, not an iterable of chunks"):
            list(router.stream(lambda attempt: "a whole answer"))

        async def agen(attempt: Attempt) -> AsyncIterator[str]:
            yield "x"

        with pytest.raises(TypeError, match=r"use AsyncRouter\.stream"):
            list(router.stream(agen))  # type: ignore[arg-type]
        assert b.states() == []  # nothing recorded against any target


def test_openai_sdk_streams_through_the_router(
    s: Settings, llm: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    llm.script["gpt-4o"] = [
        Reply(500, OPENAI_500),  # fails before a chunk: fall-over
        Reply(events=openai_stream("gpt-4o", "abcd"), cut_after=2),  # fails mid-answer
    ]
    llm.script["gpt-4o-mini"] = [Reply(events=openai_stream("gpt-4o-mini", "xyz"))]
    mini = Target("openai", "gpt-4o-mini")
    client = openai.OpenAI(api_key="sk-test", base_url=llm.url + "/v1", max_retries=0)

    def fn(attempt: Attempt) -> openai.Stream[Any]:
        return client.chat.completions.create(model=attempt.target.model, messages=MSG, stream=True)

    def text(chunks: Iterator[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with Breaker(s) as b:
        router = Router(b, [A, mini])
        assert text(router.stream(fn)) == "xyz"
        assert (b.state(A).error_count, b.state(A).last_error_kind) == (1, "server_error")
        assert counts(b, mini) == (0, 1)
        got: list[str] = []

        def read() -> None:
            for chunk in router.stream(fn):
                got.append(chunk.choices[0].delta.content)

        with pytest.raises(openai.APIConnectionError):
            read()
        assert got == ["a", "b"]
        assert counts(b, A) == (2, 0)
        assert counts(b, mini) == (0, 1)  # no switch mid-answer
        assert llm.calls("gpt-4o-mini") == 1

        llm.script["gpt-4o"] = [Reply(400, OPENAI_CONTEXT)]
        with pytest.raises(openai.BadRequestError):
            text(router.stream(fn))
        assert counts(b, A) == (2, 0)  # the caller's error: not recorded


# --------------------------------------------------------------------------- asyncio


async def test_async_stream_falls_over_before_the_first_chunk_only(s: Settings) -> None:
    plan = {
        A: (["a1"], 0, ErrorKind.SERVER_ERROR),
        B: (["b1", "b2", "b3"], 2, ErrorKind.CONNECTION),
        C: (["c1"], None, OK),
    }
    script = Script(plan)
    async with AsyncBreaker(s, classifier=failures) as b:
        router = AsyncRouter(b, [A, B, C])
        got: list[str] = []

        async def read() -> None:
            async for chunk in router.stream(script.agen):
                got.append(chunk)

        with pytest.raises(Failure):
            await read()
        assert got == ["b1", "b2"]
        assert script.calls == [A, B]
        assert await acounts(b, A) == (1, 0)
        assert await acounts(b, B) == (1, 0)
        assert await acounts(b, C) == (0, 0)


async def test_async_stream_end_early_close_and_cancellation(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, open_seconds=0.1)
    script = Script({A: (["a1", "a2", "a3"], None, OK)})
    async with AsyncBreaker(settings, classifier=failures) as b:
        router = AsyncRouter(b, [A, B])
        assert [c async for c in router.stream(script.agen)] == ["a1", "a2", "a3"]
        assert await acounts(b, A) == (0, 1)

        stream = router.stream(script.agen)
        assert await stream.__anext__() == "a1"
        await stream.aclose()
        assert await acounts(b, A) == (0, 2)
        assert script.closed == [A, A]

        # Cancelled while waiting for a chunk, as the half-open probe: nothing recorded, and
        # the lease goes back at once.
        await b.block(A, 0.1, "test")
        await asyncio.sleep(0.15)
        started = asyncio.Event()

        async def stalls(attempt: Attempt) -> AsyncIterator[str]:
            assert attempt.probe
            yield "first"
            started.set()
            await asyncio.sleep(10)
            yield "never"

        async def consume() -> None:
            async for _ in router.stream(stalls):
                pass

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await acounts(b, A) == (0, 2)
        assert (await b.acquire(A)).probe


async def test_async_openai_sdk_streams_through_the_router(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(500, OPENAI_500)]
    llm.script["gpt-4o-mini"] = [Reply(events=openai_stream("gpt-4o-mini", "xyz"))]
    mini = Target("openai", "gpt-4o-mini")
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=llm.url + "/v1", max_retries=0)

    async def fn(attempt: Attempt) -> openai.AsyncStream[Any]:
        return await client.chat.completions.create(
            model=attempt.target.model, messages=MSG, stream=True
        )

    async with AsyncBreaker(s) as b:
        router = AsyncRouter(b, [A, mini])
        text = "".join([c.choices[0].delta.content or "" async for c in router.stream(fn)])
        assert text == "xyz"
        assert await acounts(b, A) == (1, 0)
        assert await acounts(b, mini) == (0, 1)

        def sync_chunks(attempt: Attempt) -> list[str]:
            return ["a"]

        with pytest.raises(TypeError, match="not an async iterable"):
            [c async for c in router.stream(sync_chunks)]  # type: ignore[arg-type]
