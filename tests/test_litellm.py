"""LiteLLMCallback with the real litellm package and its Router, against a local
OpenAI-compatible provider: outcomes recorded per deployment call, open deployments
filtered out fleet-wide, the half-open probe, streams, and the sync Router path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import litellm
import pytest

from resilience import AsyncBreaker, Breaker, LiteLLMCallback, Settings, Target
from tests.conftest import make_settings
from tests.llm_server import OPENAI_500, LLMServer, Reply, openai_stream

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        server.script["broken"] = [Reply(500, OPENAI_500)]
        yield server


_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@pytest.fixture(autouse=True)
def _litellm_globals() -> Iterator[None]:
    """LiteLLM copies callbacks into module-level lists: start each test without ours and
    restore the lists afterwards."""
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


def deployment(llm: LLMServer, group: str, model: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_base": llm.url + "/v1",
            "api_key": "sk-x",
        },
        "model_info": {"id": f"{group}-{model}"},
    }


def router(llm: LLMServer, **kw: Any) -> litellm.Router:
    """A primary group of one broken deployment, falling back to a healthy one."""
    return litellm.Router(
        model_list=[deployment(llm, "primary", "broken"), deployment(llm, "backup", "gpt-4o")],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=0,
        **kw,
    )


async def eventually(breaker: AsyncBreaker, t: Target, **want: Any) -> Any:
    """The target's state once it has the wanted fields: LiteLLM runs its success and failure
    callbacks in the background after the call returned."""
    deadline = time.monotonic() + 5
    while True:
        state = await breaker.state(t)
        if all(getattr(state, k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.02)


def target(llm: LLMServer, model: str) -> Target:
    return Target(f"openai@{llm.url.removeprefix('http://')}", model)


def test_litellm_alone_keeps_calling_a_broken_single_deployment(llm: LLMServer) -> None:
    """The claim the README makes: LiteLLM never cools down a group of one deployment on a
    500, so every request pays the failed call first."""
    r = router(llm)
    for _ in range(3):
        assert r.completion(model="primary", messages=MSG).choices[0].message.content == "hello"
    assert llm.calls("broken") == 3


def test_litellm_recooling_keeps_the_first_shorter_deadline(llm: LLMServer) -> None:
    """The README's claim (BerriAI/litellm issue #40130), checked on the installed release: a
    1 s cooldown followed by a 60 s one ends after about 1 s."""
    r = litellm.Router(
        model_list=[deployment(llm, "g", "a"), deployment(llm, "g", "b")], num_retries=0
    )
    cooldowns = r.health().cooldowns
    cooldowns.add_deployment_to_cooldown("g-a", Exception("429"), 429, 1.0)
    cooldowns.add_deployment_to_cooldown("g-a", Exception("429 again"), 429, 60.0)
    assert [m for m, _ in cooldowns.get_active_cooldowns(["g-a"], None)] == ["g-a"]
    time.sleep(1.5)
    assert cooldowns.get_active_cooldowns(["g-a"], None) == []


async def test_outcomes_are_recorded_and_open_deployments_skipped(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1)
    async with AsyncBreaker(settings) as breaker:
        litellm.callbacks = [LiteLLMCallback(breaker)]
        r = router(llm)
        for n in range(3):
            reply = await r.acompletion(model="primary", messages=MSG)
            assert reply.choices[0].message.content == "hello"
            if n == 0:  # the failure is recorded by a callback running after the call
                await eventually(breaker, target(llm, "broken"), state="open")
        broken = await breaker.state(target(llm, "broken"))
        healthy = await eventually(breaker, target(llm, "gpt-4o"), success_count=3)
    assert llm.calls("broken") == 1  # opened by the first failure, skipped afterwards
    assert (broken.state, broken.error_count, broken.last_error_kind) == ("open", 1, "server_error")
    assert healthy.success_count == 3


def test_sync_router_skips_a_target_another_process_opened(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    settings = make_settings(redis_url, prefix)
    with Breaker(settings) as other_process:
        other_process.block(target(llm, "broken"), 60, "opened elsewhere")
    with Breaker(settings) as breaker:
        litellm.callbacks = [LiteLLMCallback(breaker)]
        r = router(llm)
        for _ in range(2):
            assert r.completion(model="primary", messages=MSG).choices[0].message.content == "hello"
        deadline = time.monotonic() + 15  # LiteLLM runs sync callbacks in a background thread
        while breaker.state(target(llm, "gpt-4o")).success_count < 2:
            assert time.monotonic() < deadline, "LiteLLM's callback thread never recorded"
            time.sleep(0.02)
        assert breaker.state(target(llm, "gpt-4o")).success_count == 2
    assert llm.calls("broken") == 0


async def test_one_half_open_probe_closes_the_target(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    settings = make_settings(redis_url, prefix, failure_threshold=1, open_seconds=0.3)
    async with AsyncBreaker(settings) as breaker:
        litellm.callbacks = [LiteLLMCallback(breaker)]
        r = router(llm)
        await r.acompletion(model="primary", messages=MSG)  # broken -> open
        await eventually(breaker, target(llm, "broken"), state="open")
        llm.script["broken"] = [Reply(200, {**_completion("broken")})]  # it recovers
        await r.acompletion(model="primary", messages=MSG)  # skipped while open
        assert llm.calls("broken") == 1
        await asyncio.sleep(0.4)
        await r.acompletion(model="primary", messages=MSG)  # the probe
        state = await eventually(breaker, target(llm, "broken"), state="closed")
    assert llm.calls("broken") == 2
    assert (state.state, state.success_count) == ("closed", 1)


def _completion(model: str) -> dict[str, Any]:
    from tests.llm_server import chat_completion

    return chat_completion(model, "recovered")


async def test_streams_are_recorded_when_they_end_or_fail(
    redis_url: str, prefix: str, llm: LLMServer
) -> None:
    llm.script["gpt-4o"] = [Reply(events=openai_stream("gpt-4o"))]
    llm.script["cut"] = [Reply(events=openai_stream("cut", "abcd"), cut_after=2)]
    settings = make_settings(redis_url, prefix)
    async with AsyncBreaker(settings) as breaker:
        litellm.callbacks = [LiteLLMCallback(breaker)]
        r = litellm.Router(
            model_list=[deployment(llm, "g", "gpt-4o"), deployment(llm, "c", "cut")],
            num_retries=0,
        )
        stream = await r.acompletion(model="g", messages=MSG, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == "abc"
        with pytest.raises(Exception, match=r"(?i)connection|stream"):
            await _drain(await r.acompletion(model="c", messages=MSG, stream=True))
        ok = await eventually(breaker, target(llm, "gpt-4o"), success_count=1)
        cut = await eventually(breaker, target(llm, "cut"), error_count=1)
    assert ok.success_count == 1
    assert cut.error_count == 1 and cut.success_count == 0


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def test_targets_and_arguments(redis_url: str, prefix: str) -> None:
    from resilience.integrations._litellm import deployment_target

    azure = {"litellm_params": {"model": "azure/gpt-4o", "api_base": "https://eastus.example.com/"}}
    assert deployment_target(azure) == Target("azure@eastus.example.com", "gpt-4o")
    assert deployment_target({"litellm_params": {"model": "gpt-4o"}}) == Target("openai", "gpt-4o")
    bedrock = {"litellm_params": {"model": "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0"}}
    assert deployment_target(bedrock) == Target(
        "bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"
    )
    with pytest.raises(TypeError, match="Breaker"):
        LiteLLMCallback(object())  # type: ignore[arg-type]
    settings: Settings = make_settings(redis_url, prefix)
    with Breaker(settings) as breaker:
        custom = LiteLLMCallback(breaker, target=lambda d: Target("house", d["model_name"]))
        assert custom.target_of({"model_name": "g", "model_info": {"id": "x"}}) == Target(
            "house", "g"
        )
