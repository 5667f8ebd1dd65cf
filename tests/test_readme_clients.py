"""The README's client snippets run as written (the OpenAI SDK with the transport, a streamed
answer through Router.stream, a LiteLLM Router with the callback, the router policies),
against a local provider named by the SDKs' own environment variables; and `import
resilience` loads none of the optional packages."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import litellm
import pytest

from resilience import Breaker, Target
from tests.conftest import make_settings
from tests.llm_server import (
    OPENAI_500,
    OPENAI_CONTEXT,
    LLMServer,
    Reply,
    anthropic_message,
    chat_completion,
    openai_stream,
)

ROOT = Path(__file__).resolve().parent.parent


def snippet(heading: str, prefix: str, redis_url: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None, heading
    return (
        code.group(1)
        .replace('"quickstart"', repr(prefix))
        .replace("redis://127.0.0.1:6379/0", redis_url)
    )


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


def test_openai_transport_snippet(
    redis_url: str,
    prefix: str,
    llm: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url + "/v1")
    llm.script["gpt-4o"] = [
        Reply(200, chat_completion("gpt-4o", "a reply")),
        Reply(events=openai_stream("gpt-4o", ["stre", "amed"])),
    ]
    code = snippet("### The OpenAI SDK, guarded by its transport", prefix, redis_url)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["a reply", "streamed"]
    with Breaker(make_settings(redis_url, prefix)) as breaker:
        assert breaker.state(Target("openai", "gpt-4o")).success_count == 2

    # Once the fleet opened gpt-4o, the same code sends nothing and says so.
    with Breaker(make_settings(redis_url, prefix)) as breaker:
        breaker.block(Target("openai", "gpt-4o"), 30, "test")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("gpt-4o skipped, retry in ")
    assert llm.calls("gpt-4o") == 2


def test_router_stream_snippet(
    redis_url: str,
    prefix: str,
    llm: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url + "/v1")
    llm.script["gpt-4o"] = [
        Reply(500, OPENAI_500),  # before the first chunk: falls over
        Reply(events=openai_stream("gpt-4o", ["par", "tial"]), cut_after=1),  # mid-answer
    ]
    llm.script["gpt-4o-mini"] = [Reply(events=openai_stream("gpt-4o-mini", ["stre", "amed"]))]
    code = snippet("### A streamed answer through `Router.stream`", prefix, redis_url)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == "streamed\n"
    with Breaker(make_settings(redis_url, prefix)) as breaker:
        assert breaker.state(Target("openai", "gpt-4o")).error_count == 1
        assert breaker.state(Target("openai", "gpt-4o-mini")).success_count == 1

    import openai

    with pytest.raises(openai.APIConnectionError):  # a broken answer is raised, not switched
        exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == "par"
    assert llm.calls("gpt-4o-mini") == 1


def test_router_policies_snippet(
    redis_url: str,
    prefix: str,
    llm: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url + "/v1")
    llm.script["gpt-4o-mini"] = [Reply(400, OPENAI_CONTEXT)]
    llm.script["gemini-2.5-pro"] = [Reply(200, chat_completion("gemini-2.5-pro", "long read"))]
    code = snippet("### Policies", prefix, redis_url)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == "long read\n"
    # the context-window fallback: straight to the listed larger model
    assert [llm.calls(m) for m in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-pro")] == [
        1,
        0,
        1,
    ]


def test_litellm_snippet(
    redis_url: str,
    prefix: str,
    llm: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url + "/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_API_BASE", llm.url)
    monkeypatch.setattr(litellm, "callbacks", [])
    monkeypatch.setattr(litellm, "_async_success_callback", [])
    monkeypatch.setattr(litellm, "_async_failure_callback", [])
    monkeypatch.setattr(litellm, "success_callback", [])
    monkeypatch.setattr(litellm, "failure_callback", [])
    llm.script["gpt-4o"] = [Reply(500, OPENAI_500)]
    llm.script["claude-sonnet-4-5"] = [Reply(200, anthropic_message("claude-sonnet-4-5", "hi"))]
    code = snippet("### A LiteLLM Router, sharing the fleet's state", prefix, redis_url)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "hi"  # gpt-4o failed, the fallback answered
    assert llm.calls("claude-sonnet-4-5") == 1


def test_import_resilience_stays_light() -> None:
    code = (
        "import sys, resilience\n"
        "heavy = ('prometheus_client', 'litellm', 'httpx2', 'openai', 'anthropic',\n"
        "         'resilience.integrations._otel', 'resilience.integrations._litellm')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
