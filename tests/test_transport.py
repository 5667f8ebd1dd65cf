"""GuardedTransport / AsyncGuardedTransport with the real openai and anthropic SDKs (built on
httpx2), with httpx clients, against a local provider returning real error bodies: outcomes,
streams, refusals the SDKs do not retry, models read from paths, endpoint hints."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from resilience import (
    AsyncBreaker,
    AsyncGuardedTransport,
    Breaker,
    CircuitOpenError,
    ErrorKind,
    GuardedTransport,
    RejectedEvent,
    Settings,
    Target,
)
from tests.conftest import make_settings
from tests.llm_server import (
    ANTHROPIC_529,
    ANTHROPIC_STREAM_ERROR,
    OPENAI_500,
    OPENAI_CONTEXT,
    OPENAI_ONLY_RESPONSES,
    LLMServer,
    Reply,
    anthropic_message,
    anthropic_stream,
    chat_completion,
    openai_stream,
)

MSG = [{"role": "user", "content": "hi"}]


class Rejections:
    """A hook counting refusals: a refusal the SDK retried would show up several times."""

    def __init__(self) -> None:
        self.events: list[RejectedEvent] = []

    def on_rejected(self, event: RejectedEvent) -> None:
        self.events.append(event)


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


def _settings(redis_url: str, prefix: str, **kw: Any) -> Settings:
    return make_settings(redis_url, prefix, **kw)


def openai_client(breaker: Breaker, llm: LLMServer, **kw: Any) -> openai.OpenAI:
    http = httpx2.Client(transport=GuardedTransport(breaker, "openai"))
    return openai.OpenAI(api_key="sk-test", base_url=llm.url + "/v1", http_client=http, **kw)


# --------------------------------------------------------------------------- outcomes


def test_openai_success_and_failure_are_recorded(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["broken"] = [Reply(500, OPENAI_500)]
    client = openai_client(breaker, llm, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=MSG)
    assert reply.choices[0].message.content == "hello"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=MSG)
    ok = breaker.state(Target("openai", "gpt-4o"))
    bad = breaker.state(Target("openai", "broken"))
    assert (ok.success_count, ok.error_count) == (1, 0)
    assert (bad.error_count, bad.last_error_kind) == (1, "server_error")
    assert "Sorry about that" in (bad.last_error_message or "")


def test_caller_errors_are_not_provider_failures(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(400, OPENAI_CONTEXT)]
    client = openai_client(breaker, llm, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    st = breaker.state(Target("openai", "gpt-4o"))
    assert (st.error_count, st.consecutive_errors, st.state) == (0, 0, "closed")


def test_requests_without_a_model_pass_unguarded(breaker: Breaker, llm: LLMServer) -> None:
    with httpx2.Client(transport=GuardedTransport(breaker, "openai")) as client:
        assert client.get(llm.url + "/v1/models").status_code == 200
    assert breaker.states("openai") == []


def test_legacy_httpx_client_works_too(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["broken"] = [Reply(500, OPENAI_500)]
    http = httpx.Client(transport=GuardedTransport(breaker, "openai"))
    client = openai.OpenAI(api_key="sk-test", base_url=llm.url + "/v1", http_client=http)
    reply = client.chat.completions.create(model="gpt-4o", messages=MSG)
    assert reply.choices[0].message.content == "hello"
    with httpx.Client(transport=GuardedTransport(breaker, "openai")) as plain:
        r = plain.post(llm.url + "/v1/chat/completions", json={"model": "broken"})
        assert r.status_code == 500 and r.json() == OPENAI_500  # the body is intact
        assert r.elapsed.total_seconds() >= 0
    assert breaker.state(Target("openai", "gpt-4o")).success_count == 1
    assert breaker.state(Target("openai", "broken")).last_error_kind == "server_error"


def test_transport_errors_are_recorded_and_raised(breaker: Breaker) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    http = httpx.Client(transport=GuardedTransport(breaker, "local"))
    with pytest.raises(httpx.ConnectError):
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m"})
    assert breaker.state(Target("local", "m")).last_error_kind == "connection"


# --------------------------------------------------------------------------- refusals


def test_openai_does_not_retry_a_refusal(redis_url: str, prefix: str, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(500, OPENAI_500)]
    rejections = Rejections()
    settings = _settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings, hooks=[rejections]) as breaker:
        client = openai_client(breaker, llm, max_retries=2)
        # The 500 opens the target; the SDK's own retry of it is refused once and stops.
        with pytest.raises(CircuitOpenError) as first:
            client.chat.completions.create(model="gpt-4o", messages=MSG)
        assert isinstance(first.value, openai.OpenAIError)
        assert llm.calls("gpt-4o") == 1 and len(rejections.events) == 1
        with pytest.raises(openai.OpenAIError) as second:  # existing handlers catch it too
            client.chat.completions.create(model="gpt-4o", messages=MSG)
        assert isinstance(second.value, CircuitOpenError)
        assert second.value.retry_after_s > 0
    assert llm.calls("gpt-4o") == 1 and len(rejections.events) == 2


def test_anthropic_does_not_retry_a_refusal(redis_url: str, prefix: str, llm: LLMServer) -> None:
    llm.script["claude-sonnet-4"] = [Reply(529, ANTHROPIC_529)]
    rejections = Rejections()
    settings = _settings(redis_url, prefix, failure_threshold=1)
    with Breaker(settings, hooks=[rejections]) as breaker:
        http = httpx2.Client(transport=GuardedTransport(breaker, "anthropic"))
        client = anthropic.Anthropic(api_key="sk-ant-test", base_url=llm.url, http_client=http)
        for _ in range(2):
            with pytest.raises(CircuitOpenError) as exc:
                client.messages.create(model="claude-sonnet-4", max_tokens=5, messages=MSG)
            assert isinstance(exc.value, anthropic.AnthropicError)
        state = breaker.state(Target("anthropic", "claude-sonnet-4"))
    # Without the AnthropicError base the SDK would wrap each refusal in APIConnectionError
    # and retry it twice: 6 refusals, not 2.
    assert len(rejections.events) == 2 and llm.calls("claude-sonnet-4") == 1
    assert (state.state, state.last_error_kind) == ("open", "overloaded")


async def test_async_anthropic_does_not_retry_a_refusal(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    rejections = Rejections()
    settings = _settings(redis_url, prefix)
    async with AsyncBreaker(settings, hooks=[rejections]) as breaker:
        await breaker.block(Target("anthropic", "claude-sonnet-4"), 60, "incident")
        http = httpx2.AsyncClient(transport=AsyncGuardedTransport(breaker, "anthropic"))
        client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=llm.url, http_client=http)
        with pytest.raises(CircuitOpenError, match="incident"):
            await client.messages.create(model="claude-sonnet-4", max_tokens=5, messages=MSG)
        reply = await client.messages.create(model="claude-haiku", max_tokens=5, messages=MSG)
        await http.aclose()
    assert reply.content[0].text == "hello"
    assert len(rejections.events) == 1 and llm.calls("claude-sonnet-4") == 0


@pytest.fixture(autouse=True)
def _anthropic_answers(llm: LLMServer) -> None:
    for model in ("claude-haiku", "claude-sonnet-4"):
        llm.script.setdefault(model, [Reply(200, anthropic_message(model))])


# --------------------------------------------------------------------------- streams


def test_stream_is_recorded_when_it_ends(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o"))]
    client = openai_client(breaker, llm)
    stream = client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "a"
    assert breaker.state(Target("openai", "gpt-4o")).success_count == 0  # not ended yet
    rest = "".join(c.choices[0].delta.content or "" for c in stream)
    assert rest == "bc"
    assert breaker.state(Target("openai", "gpt-4o")).success_count == 1


def test_stream_failing_mid_way_is_that_failure(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcd"), cut_after=2)]
    client = openai_client(breaker, llm, max_retries=0)
    got: list[str] = []

    def read() -> None:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True):
            got.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        read()
    assert got == ["a", "b"]
    st = breaker.state(Target("openai", "gpt-4o"))
    assert (st.success_count, st.error_count) == (0, 1)
    assert st.last_error_kind == "connection"


def test_stream_closed_early_is_a_success(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    client = openai_client(breaker, llm)
    with client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True) as stream:
        next(iter(stream))
    st = breaker.state(Target("openai", "gpt-4o"))
    assert (st.success_count, st.error_count) == (1, 0)


def test_error_event_inside_a_stream_is_a_failure(breaker: Breaker, llm: LLMServer) -> None:
    events = [*anthropic_stream("claude-sonnet-4")[:3], ANTHROPIC_STREAM_ERROR]
    llm.script["claude-sonnet-4"] = [Reply(events=events)]
    http = httpx2.Client(transport=GuardedTransport(breaker, "anthropic"))
    client = anthropic.Anthropic(
        api_key="sk-ant-test", base_url=llm.url, http_client=http, max_retries=0
    )
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        client.messages.stream(model="claude-sonnet-4", max_tokens=5, messages=MSG) as stream,
    ):
        for _ in stream.text_stream:
            pass
    st = breaker.state(Target("anthropic", "claude-sonnet-4"))
    assert (st.error_count, st.last_error_kind) == (1, "overloaded")


def test_anthropic_stream_success(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["claude-sonnet-4"] = [Reply(events=anthropic_stream("claude-sonnet-4"))]
    http = httpx2.Client(transport=GuardedTransport(breaker, "anthropic"))
    client = anthropic.Anthropic(api_key="sk-ant-test", base_url=llm.url, http_client=http)
    with client.messages.stream(model="claude-sonnet-4", max_tokens=5, messages=MSG) as stream:
        text = "".join(stream.text_stream)
    assert text == "abc"
    assert breaker.state(Target("anthropic", "claude-sonnet-4")).success_count == 1


async def test_async_openai_streams_and_failures(abreaker: AsyncBreaker, llm: LLMServer) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o"))]
    llm.script["cut"] = [Reply(events=openai_stream("cut", "abcd"), cut_after=1)]
    llm.script["broken"] = [Reply(500, OPENAI_500)]
    http = httpx2.AsyncClient(transport=AsyncGuardedTransport(abreaker, "openai"))
    client = openai.AsyncOpenAI(
        api_key="sk-test", base_url=llm.url + "/v1", http_client=http, max_retries=0
    )
    stream = await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "abc"
    cut = await client.chat.completions.create(model="cut", messages=MSG, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await drain(cut)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="broken", messages=MSG)
    await http.aclose()
    ok = await abreaker.state(Target("openai", "gpt-4o"))
    cut_state = await abreaker.state(Target("openai", "cut"))
    bad = await abreaker.state(Target("openai", "broken"))
    assert ok.success_count == 1
    assert (cut_state.error_count, cut_state.last_error_kind) == (1, "connection")
    assert (bad.error_count, bad.last_error_kind) == (1, "server_error")


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_async_stream_cancelled_is_not_a_failure(
    abreaker: AsyncBreaker, llm: LLMServer
) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o", "abcdef"))]
    http = httpx2.AsyncClient(transport=AsyncGuardedTransport(abreaker, "openai"))
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=llm.url + "/v1", http_client=http)
    started = asyncio.Event()

    async def consume() -> None:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
        async for _ in stream:
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await http.aclose()
    st = await abreaker.state(Target("openai", "gpt-4o"))
    assert st.error_count == 0


# --------------------------------------------------------------------------- models in paths


def test_models_from_azure_gemini_and_bedrock_paths(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["my-gpt4o"] = [Reply(200, chat_completion("gpt-4o"))]
    azure = openai.AzureOpenAI(
        api_key="azure-key",
        api_version="2024-10-21",
        azure_endpoint=llm.url,
        azure_deployment="my-gpt4o",
        http_client=httpx2.Client(transport=GuardedTransport(breaker, "azure")),
    )
    azure.chat.completions.create(model="ignored", messages=MSG)
    with httpx2.Client(transport=GuardedTransport(breaker, "google")) as http:
        http.post(llm.url + "/v1beta/models/gemini-2.0-flash:generateContent", json={})
    with httpx2.Client(transport=GuardedTransport(breaker, "bedrock")) as http:
        http.post(llm.url + "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke", json={})
    assert llm.seen[0].path == "/openai/deployments/my-gpt4o/chat/completions"
    targets = {(s.provider, s.model) for s in breaker.states()}
    assert targets == {
        ("azure", "my-gpt4o"),
        ("google", "gemini-2.0-flash"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
    }


# --------------------------------------------------------------------------- endpoint hints

# https://github.com/terricain/aioboto3/issues/352
BEDROCK_ON_DEMAND = {
    "message": "Invocation of model ID anthropic.claude-3-5-sonnet-20241022-v2:0 with on-demand "
    "throughput isn’t supported. Retry your request with the ID or ARN of an inference "
    "profile that contains this model."
}
CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PROFILE_PATH = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"


def test_bedrock_inference_profile_hint_rewrites_the_path(breaker: Breaker, llm: LLMServer) -> None:
    llm.script[CLAUDE] = [Reply(400, BEDROCK_ON_DEMAND)]
    url = llm.url + "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"
    with httpx2.Client(transport=GuardedTransport(breaker, "bedrock")) as http:
        assert http.post(url, json={}, headers={"authorization": "Bearer key"}).status_code == 400
        state = breaker.state(Target("bedrock", CLAUDE))
        assert state.endpoint_hint == "inference-profile:us." + CLAUDE
        assert http.post(url, json={}, headers={"authorization": "Bearer key"}).status_code == 200
        signed = {"authorization": "AWS4-HMAC-SHA256 Credential=x/y, Signature=z"}
        http.post(url, json={}, headers=signed)  # a SigV4 signature covers the path: unchanged
    paths = [s.path for s in llm.seen]
    assert paths[1] == PROFILE_PATH
    assert paths[2] == "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"
    assert breaker.state(Target("bedrock", CLAUDE)).success_count == 1


def test_hints_that_change_the_api_are_not_applied(breaker: Breaker, llm: LLMServer) -> None:
    llm.script["o3-pro"] = [Reply(404, OPENAI_ONLY_RESPONSES)]
    client = openai_client(breaker, llm, max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.NotFoundError, match="only supported in v1/responses"):
            client.chat.completions.create(model="o3-pro", messages=MSG)
    st = breaker.state(Target("openai", "o3-pro"))
    assert {s.path for s in llm.seen} == {"/v1/chat/completions"}
    assert (st.endpoint_hint, st.last_error_kind) == ("/v1/responses", "endpoint_mismatch")
    assert st.state == "closed"  # endpoint_mismatch with a hint to try does not trip


# --------------------------------------------------------------------------- arguments and httpx2


def test_arguments_are_checked(breaker: Breaker, abreaker: AsyncBreaker) -> None:
    with pytest.raises(ValueError, match="provider"):
        GuardedTransport(breaker, "")
    with pytest.raises(TypeError, match="AsyncGuardedTransport"):
        GuardedTransport(abreaker, "openai")
    with pytest.raises(TypeError, match="GuardedTransport with a Breaker"):
        AsyncGuardedTransport(breaker, "openai")
    with pytest.raises(ValueError, match="model"):
        GuardedTransport(breaker, "openai", model="")


def test_fixed_model_and_given_inner_transport(breaker: Breaker, llm: LLMServer) -> None:
    inner = httpx2.HTTPTransport(retries=0)
    transport = GuardedTransport(breaker, "gateway", transport=inner, model="house-model")
    with httpx2.Client(transport=transport) as http:
        assert http.post(llm.url + "/generate", json={"prompt": "x"}).status_code == 200
    assert breaker.state(Target("gateway", "house-model")).success_count == 1


def test_classify_reads_httpx2_responses() -> None:
    from resilience import classify

    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(
        429, headers={"retry-after": "7"}, json=ANTHROPIC_529 | {}, request=request
    )
    assert classify(response).retry_after_s == 7.0
    overloaded = httpx2.Response(529, json=ANTHROPIC_529, request=request)
    error = httpx2.HTTPStatusError("529", request=request, response=overloaded)
    assert classify(overloaded).kind is ErrorKind.OVERLOADED
    assert classify(error).kind is ErrorKind.OVERLOADED
