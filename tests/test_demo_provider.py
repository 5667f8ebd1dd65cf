"""The demo's fake provider: real HTTP on loopback, answers shaped like real provider errors,
deterministic from the seed, and classified by the library the way the demo relies on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from examples.demo.provider import CHAT_PATH, RESPONSES_PATH, FakeProvider
from resilience import CompatHint, ErrorKind, classify


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(
        seed=3, overloaded_recover_s=0.4, rate_limit_requests=2, rate_limit_window_s=30.0
    ) as p:
        yield p


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as c:
        yield c


def post(
    client: httpx.Client, p: FakeProvider, provider: str, model: str, path: str = CHAT_PATH
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    return client.post(f"{p.url_for(provider)}{path}", json=body)


def classified(response: httpx.Response) -> tuple[ErrorKind, object, object, str]:
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        c = classify(exc)
        return c.kind, c.endpoint_hint, c.retry_after_s, c.scope
    raise AssertionError(f"expected an error status, got {response.status_code}")


def test_binds_loopback_on_a_free_port(provider: FakeProvider, client: httpx.Client) -> None:
    assert provider.host == "127.0.0.1"
    assert provider.port > 0
    r = client.get(f"{provider.base_url}/health")
    assert (r.status_code, r.text) == (200, "ok\n")
    models = client.get(f"{provider.url_for('together')}/v1/models").json()
    assert {m["id"] for m in models["data"]} == {
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "Qwen/Qwen2.5-72B-Instruct",
    }


def test_healthy_model_answers_both_endpoints(provider: FakeProvider, client: httpx.Client) -> None:
    chat = post(client, provider, "openai", "gpt-4o-mini")
    resp = post(client, provider, "openai", "gpt-4o-mini", RESPONSES_PATH)
    assert chat.status_code == 200
    assert chat.json()["object"] == "chat.completion"
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert resp.status_code == 200
    assert resp.json()["object"] == "response"
    assert resp.json()["output"][0]["content"][0]["type"] == "output_text"
    log = provider.requests("openai", "gpt-4o-mini")
    assert [(r.path, r.status) for r in log] == [(CHAT_PATH, 200), (RESPONSES_PATH, 200)]
    assert all(abs(r.time - time.time()) < 10 for r in log)


def test_retired_model_is_model_not_found(provider: FakeProvider, client: httpx.Client) -> None:
    r = post(client, provider, "openai", "gpt-4-0314")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert classified(r)[0] is ErrorKind.MODEL_NOT_FOUND
    unknown = post(client, provider, "openai", "no-such-model")
    assert unknown.status_code == 404
    assert classified(unknown)[0] is ErrorKind.MODEL_NOT_FOUND


def test_responses_only_model_names_its_endpoint(
    provider: FakeProvider, client: httpx.Client
) -> None:
    chat = post(client, provider, "openai", "o3-pro")
    assert chat.status_code == 404
    assert "only supported in v1/responses" in chat.json()["error"]["message"]
    kind, hint, _, _ = classified(chat)
    assert kind is ErrorKind.ENDPOINT_MISMATCH
    assert hint == "/v1/responses"
    ok = post(client, provider, "openai", "o3-pro", RESPONSES_PATH)
    assert ok.status_code == 200


def chat(
    client: httpx.Client, p: FakeProvider, provider: str, model: str, **params: object
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **params}
    return client.post(f"{p.url_for(provider)}{CHAT_PATH}", json=body)


def test_reasoning_model_refuses_max_tokens_as_openai_does(
    provider: FakeProvider, client: httpx.Client
) -> None:
    refused = chat(client, provider, "openai", "o1", max_tokens=16)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
    c = classify(httpx.HTTPStatusError("400", request=refused.request, response=refused))
    assert c.kind is ErrorKind.BAD_REQUEST  # a caller's error, never a provider failure
    assert c.compat == (
        CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens"),
    )
    ok = chat(client, provider, "openai", "o1", max_completion_tokens=16)
    assert ok.status_code == 200
    assert ok.json()["model"] == "o1"


def test_model_without_tools_says_so_as_ollama_does(
    provider: FakeProvider, client: httpx.Client
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    refused = chat(client, provider, "ollama", "deepseek-r1:14b", tools=tools, max_tokens=16)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "registry.ollama.ai/library/deepseek-r1:14b does not support tools"
    )
    kind, hint, _, scope = classified(refused)
    assert (kind, hint, scope) == (
        ErrorKind.ENDPOINT_MISMATCH,
        "capability:tools-unsupported",
        "target",
    )
    c = classify(httpx.HTTPStatusError("400", request=refused.request, response=refused))
    assert c.compat == (CompatHint("feature_unsupported", feature="tools"),)
    assert chat(client, provider, "ollama", "deepseek-r1:14b", max_tokens=16).status_code == 200
    assert chat(client, provider, "ollama", "deepseek-r1:14b", tools=[]).status_code == 200
    assert [r.status for r in provider.requests("ollama")] == [400, 200, 200]


def test_rate_limited_model_gives_retry_after(provider: FakeProvider, client: httpx.Client) -> None:
    statuses = [post(client, provider, "groq", "llama-3.3-70b-versatile") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 429, 429]
    wait = int(statuses[2].headers["retry-after"])
    assert 1 <= wait <= 30
    kind, _, retry_after, _ = classified(statuses[2])
    assert kind is ErrorKind.RATE_LIMITED
    assert retry_after == pytest.approx(wait, abs=1)


def test_overloaded_model_recovers(provider: FakeProvider, client: httpx.Client) -> None:
    first = post(client, provider, "anthropic", "claude-sonnet-4")
    assert first.status_code == 529
    assert first.json()["error"]["type"] == "overloaded_error"
    assert classified(first)[0] is ErrorKind.OVERLOADED
    time.sleep(0.5)
    assert post(client, provider, "anthropic", "claude-sonnet-4").status_code == 200


def test_quota_provider_is_exhausted_for_every_model(
    provider: FakeProvider, client: httpx.Client
) -> None:
    for model in ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "Qwen/Qwen2.5-72B-Instruct"):
        r = post(client, provider, "together", model)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "insufficient_quota"
        assert "retry-after" not in r.headers
        kind, _, _, scope = classified(r)
        assert kind is ErrorKind.QUOTA_EXHAUSTED
        assert scope == "provider"


def test_flaky_model_is_deterministic_from_the_seed(client: httpx.Client) -> None:
    def statuses(seed: int) -> list[int]:
        with FakeProvider(seed=seed, latency_s=0) as p:
            return [post(client, p, "openai", "gpt-4o").status_code for _ in range(60)]

    a, b, c = statuses(11), statuses(11), statuses(12)
    assert a == b
    assert a != c
    assert set(a) <= {200, 500, 502}
    assert {500, 502} <= set(a)
    assert 8 <= sum(1 for s in a if s != 200) <= 35  # 35% of 60, with room for chance


def test_flaky_errors_look_like_the_real_ones(client: httpx.Client) -> None:
    with FakeProvider(seed=5, flaky_failure_rate=1.0, latency_s=0) as p:
        replies = [post(client, p, "openai", "gpt-4o") for _ in range(20)]
    html = [r for r in replies if r.status_code == 502]
    json_500 = [r for r in replies if r.status_code == 500]
    assert html
    assert json_500
    assert "cloudflare" in html[0].text
    assert html[0].headers["content-type"] == "text/html"
    assert json_500[0].json()["error"]["type"] == "server_error"
    assert {classified(r)[0] for r in replies} == {ErrorKind.SERVER_ERROR}


def test_bad_requests(provider: FakeProvider, client: httpx.Client) -> None:
    url = f"{provider.url_for('openai')}{CHAT_PATH}"
    assert client.post(url, content=b"{not json").status_code == 400
    assert client.post(url, json={"messages": []}).status_code == 400
    assert client.post(f"{provider.url_for('openai')}/v1/embeddings", json={}).status_code == 404
    # Only model calls are logged; the two bad bodies are, with an empty model.
    assert [(r.model, r.status) for r in provider.requests()] == [("", 400), ("", 400)]


def test_stop_frees_the_port(client: httpx.Client) -> None:
    p = FakeProvider().start()
    url = f"{p.base_url}/health"
    assert client.get(url).status_code == 200
    p.stop()
    with pytest.raises(httpx.ConnectError):
        client.get(url)
