"""A guarded function that returns a stream (the real openai and anthropic SDK streams, against a
local provider that streams SSE and can fail mid-way): recorded when the stream ends, fails, is
closed early or cancelled; the proxy keeps the stream's attributes and protocols."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from resilience import AsyncBreaker, Breaker, ErrorKind, Settings, Target
from tests.conftest import make_settings
from tests.llm_server import (
    ANTHROPIC_529,
    LLMServer,
    Reply,
    anthropic_stream,
    chat_completion,
    openai_stream,
)

MSG = [{"role": "user", "content": "hi"}]
GPT = Target("openai", "gpt-4o")
CLAUDE = Target("anthropic", "claude-sonnet-4")
# The connection dropped mid-stream: the Anthropic SDK lets httpx2's own error through.
DROPPED = (anthropic.APIConnectionError, httpx2.RemoteProtocolError)


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture
def s(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix)  # failure_threshold 5: three errors stay closed


def oai(llm: LLMServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=llm.url + "/v1", max_retries=0)


def aoai(llm: LLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=llm.url + "/v1", max_retries=0)


def claude(llm: LLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=llm.url, max_retries=0)


def aclaude(llm: LLMServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=llm.url, max_retries=0)


def read_into(got: list[Any], stream: Any) -> None:
    for chunk in stream:
        got.append(chunk.choices[0].delta.content or "" if hasattr(chunk, "choices") else chunk)


def counts(b: Breaker, t: Target) -> tuple[int, int]:
    st = b.state(t)
    return st.error_count, st.success_count


async def acounts(b: AsyncBreaker, t: Target) -> tuple[int, int]:
    st = await b.state(t)
    return st.error_count, st.success_count


# --------------------------------------------------------------------------- openai, sync


def test_three_openai_streams_failing_mid_way_are_three_errors(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcd"), cut_after=2)]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", model_arg="model")
        def ask(prompt: str, model: str) -> openai.Stream[Any]:
            return client.chat.completions.create(model=model, messages=MSG, stream=True)

        for _ in range(3):
            got: list[str] = []
            with pytest.raises(openai.APIConnectionError):
                read_into(got, ask("hi", "gpt-4o"))
            assert got == ["a", "b"]
        assert counts(b, GPT) == (3, 0)
        assert b.state(GPT).last_error_kind == "connection"


def test_an_openai_stream_is_a_success_when_it_ends(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abc"))]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> openai.Stream[Any]:
            return client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        stream = ask()
        # the proxy is still the SDK's stream for the caller
        assert isinstance(stream, openai.Stream)
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert counts(b, GPT) == (0, 0)  # not ended yet
        first = next(stream)
        assert first.choices[0].delta.content == "a"
        assert counts(b, GPT) == (0, 0)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "bc"
        assert counts(b, GPT) == (0, 1)
        assert b.state(GPT).state == "closed"


def test_an_openai_stream_closed_early_is_a_success(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> openai.Stream[Any]:
            return client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        with ask() as stream:  # the context-manager protocol reaches the SDK's stream
            assert next(iter(stream)).choices[0].delta.content == "a"
        assert stream.response.is_closed
        assert counts(b, GPT) == (0, 1)

        other = ask()
        next(other)
        other.close()
        assert other.response.is_closed
        assert counts(b, GPT) == (0, 2)

        unread = ask()
        unread.close()  # closed before anything arrived: nothing to credit
        assert counts(b, GPT) == (0, 2)


def test_a_stream_left_by_a_break_is_an_early_close(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> openai.Stream[Any]:
            return client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        def first_word() -> str:
            for chunk in ask():
                return str(chunk.choices[0].delta.content)  # leaves the stream behind
            return ""

        assert first_word() == "a"
        for _ in range(100):  # recorded in the background once the stream is dropped
            if counts(b, GPT) == (0, 1):
                break
            time.sleep(0.02)
        assert counts(b, GPT) == (0, 1)


def test_the_thread_recording_dropped_streams_ends_when_idle_and_comes_back(
    s: Settings, llm: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from resilience import _stream

    monkeypatch.setattr(_stream, "DROPPER_IDLE_S", 0.2)

    def droppers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "resilience-dropped")

    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> openai.Stream[Any]:
            return client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        def first_word() -> str:
            for chunk in ask():
                return str(chunk.choices[0].delta.content)  # leaves the stream behind
            return ""

        for n in (1, 2):  # the second stream is dropped after the thread ended
            llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
            assert first_word() == "a"
            for _ in range(200):
                if counts(b, GPT) == (0, n) and droppers() == 0:
                    break
                time.sleep(0.02)
            assert counts(b, GPT) == (0, n)
            assert droppers() == 0  # idle: no thread left behind


def test_a_caller_exception_inside_the_with_block_is_an_early_close(
    s: Settings, llm: LLMServer
) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> openai.Stream[Any]:
            return client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        def buggy() -> None:
            with ask() as stream:
                for _ in stream:
                    raise KeyError("the caller's own bug")

        with pytest.raises(KeyError):
            buggy()
        assert counts(b, GPT) == (0, 1)  # the provider delivered; not its failure


def test_a_non_streamed_answer_is_recorded_when_returned(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(200, chat_completion("gpt-4o", "whole"))]
    client = oai(llm)
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def ask() -> Any:
            return client.chat.completions.create(model="gpt-4o", messages=MSG)

        reply = ask()
        # a pydantic model iterates over its fields: an answer, not a stream
        assert type(reply) is openai.types.chat.ChatCompletion
        assert reply.choices[0].message.content == "whole"
        assert counts(b, GPT) == (0, 1)

        @b.guard("openai", "gpt-4o")
        def answers() -> tuple[list[int], dict[str, int], str]:
            return [1, 2], {"a": 1}, "text"

        assert answers() == ([1, 2], {"a": 1}, "text")
        assert counts(b, GPT) == (0, 2)


def test_an_iterator_returned_by_a_plain_function(s: Settings) -> None:
    with Breaker(s) as b:

        def chunks(fail: bool) -> Iterator[int]:
            yield 1
            if fail:
                raise ConnectionError("dropped")
            yield 2

        @b.guard("openai", "gpt-4o")
        def ask(fail: bool = False) -> Iterator[int]:
            return chunks(fail)  # not a generator function itself

        assert list(ask()) == [1, 2]
        assert counts(b, GPT) == (0, 1)
        with pytest.raises(ConnectionError):
            list(ask(True))
        assert counts(b, GPT) == (1, 1)
        assert b.state(GPT).last_error_kind == "connection"


# --------------------------------------------------------------------------- anthropic, sync


def test_three_anthropic_streams_failing_mid_way_are_three_errors(
    s: Settings, llm: LLMServer
) -> None:
    events = anthropic_stream("claude-sonnet-4", "abcd")
    llm.script["claude-sonnet-4"] = [Reply(events=events, cut_after=4)]
    client = claude(llm)
    with Breaker(s) as b:

        @b.guard("anthropic", model_arg="model")
        def raw(model: str) -> anthropic.Stream[Any]:
            return client.messages.create(model=model, max_tokens=5, messages=MSG, stream=True)

        @b.guard("anthropic", model_arg="model")
        def managed(model: str) -> Any:
            return client.messages.stream(model=model, max_tokens=5, messages=MSG)

        with pytest.raises(DROPPED):
            for _ in raw("claude-sonnet-4"):
                pass
        # the MessageStreamManager: the call is made when the `with` enters it
        got: list[str] = []

        def read_text() -> None:
            with managed("claude-sonnet-4") as stream:
                assert isinstance(stream, anthropic.lib.streaming.MessageStream)
                got.extend(stream.text_stream)

        with pytest.raises(DROPPED):
            read_text()
        assert got == ["a", "b"]
        with pytest.raises(DROPPED), managed("claude-sonnet-4") as stream:
            stream.get_final_text()  # reads the whole stream inside the SDK
        assert counts(b, CLAUDE) == (3, 0)
        assert b.state(CLAUDE).last_error_kind == "connection"


def test_anthropic_stream_manager_success_and_refusal(s: Settings, llm: LLMServer) -> None:
    llm.script["claude-sonnet-4"] = [
        Reply(events=anthropic_stream("claude-sonnet-4", "abc")),
        Reply(events=anthropic_stream("claude-sonnet-4", "xyz")),
        Reply(529, ANTHROPIC_529),
    ]
    client = claude(llm)
    with Breaker(s) as b:

        @b.guard("anthropic", "claude-sonnet-4")
        def managed() -> Any:
            return client.messages.stream(model="claude-sonnet-4", max_tokens=5, messages=MSG)

        with managed() as stream:
            assert "".join(stream.text_stream) == "abc"
            assert stream.request_id is None  # attributes reach the SDK's stream
        assert counts(b, CLAUDE) == (0, 1)
        with managed() as stream:
            assert stream.get_final_text() == "xyz"
        assert counts(b, CLAUDE) == (0, 2)
        with pytest.raises(anthropic.APIStatusError), managed():  # 529 when entered
            pass
        assert counts(b, CLAUDE) == (1, 2)
        assert b.state(CLAUDE).last_error_kind == "overloaded"


# --------------------------------------------------------------------------- asyncio


async def test_three_async_openai_streams_failing_mid_way(s: Settings, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcd"), cut_after=1)]
    client = aoai(llm)
    async with AsyncBreaker(s) as b:

        @b.guard("openai", model_arg="model")
        async def ask(model: str) -> openai.AsyncStream[Any]:
            return await client.chat.completions.create(model=model, messages=MSG, stream=True)

        for _ in range(3):
            stream = await ask("gpt-4o")
            assert isinstance(stream, openai.AsyncStream)
            with pytest.raises(openai.APIConnectionError):
                async for _ in stream:
                    pass
        assert await acounts(b, GPT) == (3, 0)


async def test_async_openai_stream_ends_closes_and_is_cancelled(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1, open_seconds=0.2)
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    client = aoai(llm)
    async with AsyncBreaker(settings) as b:

        @b.guard("openai", "gpt-4o")
        async def ask() -> openai.AsyncStream[Any]:
            return await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)

        text = "".join([c.choices[0].delta.content or "" async for c in await ask()])
        assert text == "abcdef"
        assert await acounts(b, GPT) == (0, 1)

        async with await ask() as stream:
            await stream.__anext__()
        assert await acounts(b, GPT) == (0, 2)

        stream = await ask()
        await stream.__anext__()
        await stream.close()  # the SDK's own (async) close
        assert await acounts(b, GPT) == (0, 3)

        # Cancelled in the consumer's own code: the stream is dropped with its task, like a
        # `break`: closed early, a success once it delivered (recorded in the background).
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in await ask():
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(b, GPT, (0, 4))

        # A probe dropped before it delivered: nothing recorded, its lease goes back at once
        # (it would otherwise hold the fleet's only probe for probe_lease_seconds).
        await b.block(GPT, 0.1, "test")
        await asyncio.sleep(0.15)
        dropped = await ask()
        assert dropped._call.permit.probe  # type: ignore[attr-defined]
        del dropped
        assert await probe_is_free(b, GPT)
        assert await acounts(b, GPT) == (0, 5)  # probe_is_free's own success


async def eventually(b: AsyncBreaker, t: Target, want: tuple[int, int]) -> bool:
    for _ in range(100):
        if await acounts(b, t) == want:
            return True
        await asyncio.sleep(0.02)
    return False


async def probe_is_free(b: AsyncBreaker, t: Target) -> bool:
    for _ in range(100):
        if await b.allow(t):
            await b.record_success(t)
            return True
        await asyncio.sleep(0.02)
    return False


async def test_cancelled_while_waiting_for_a_chunk_is_nothing(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, prefix, open_seconds=0.1)
    async with AsyncBreaker(settings) as b:
        await b.block(GPT, 0.1, "test")
        await asyncio.sleep(0.15)
        started = asyncio.Event()

        async def slow() -> AsyncIterator[str]:
            yield "a"
            started.set()
            await asyncio.sleep(10)  # the provider stalls
            yield "b"

        @b.guard("openai", "gpt-4o")
        async def ask() -> AsyncIterator[str]:
            return slow()

        async def consume() -> None:
            async for _ in await ask():
                pass

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        st = await b.state(GPT)
        assert (st.error_count, st.success_count) == (0, 0)
        assert (await b.acquire(GPT)).probe  # given back at once, not by a finalizer


async def test_async_anthropic_stream_manager(s: Settings, llm: LLMServer) -> None:
    events = anthropic_stream("claude-sonnet-4", "abcd")
    llm.script["claude-sonnet-4"] = [
        Reply(events=events),
        Reply(events=events, cut_after=4),
    ]
    client = aclaude(llm)
    async with AsyncBreaker(s) as b:

        @b.guard("anthropic", "claude-sonnet-4")
        async def managed() -> Any:
            return client.messages.stream(model="claude-sonnet-4", max_tokens=5, messages=MSG)

        async with await managed() as stream:
            assert isinstance(stream, anthropic.lib.streaming.AsyncMessageStream)
            assert "".join([t async for t in stream.text_stream]) == "abcd"
        assert await acounts(b, CLAUDE) == (0, 1)
        with pytest.raises(DROPPED):
            async with await managed() as stream:
                await stream.get_final_text()
        assert await acounts(b, CLAUDE) == (1, 1)


async def test_an_async_iterator_returned_by_a_sync_guarded_function(s: Settings) -> None:
    with Breaker(s) as b:

        async def chunks() -> AsyncIterator[int]:
            yield 1
            raise TimeoutError("read timed out")

        @b.guard("openai", "gpt-4o")
        def ask() -> AsyncIterator[int]:
            return chunks()

        got: list[int] = []

        async def read() -> None:
            async for x in ask():
                got.append(x)

        with pytest.raises(TimeoutError):
            await read()
        assert got == [1]
        st = b.state(GPT)
        assert (st.error_count, st.last_error_kind) == (1, ErrorKind.TIMEOUT.value)
