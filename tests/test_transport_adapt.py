"""Guarded transports with ``adapt=True``: an unchanged SDK call succeeds after the first
failure anywhere in the fleet, because the learned hint is applied to its JSON body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from resilience import Breaker, Classification, CompatHint, ErrorKind, GuardedTransport, Target
from tests.conftest import make_settings
from tests.llm_server import LLMServer, Reply, chat_completion

# https://github.com/sipeed/picoclaw/issues/16
OPENAI_MAX_TOKENS = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}
RENAMED = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")


class Strict(LLMServer):
    """o3 refuses max_tokens, as OpenAI's reasoning models do."""

    def next_reply(self, model: str | None) -> Reply:
        body = self.seen[-1].body if self.seen else None
        if model == "o3" and isinstance(body, dict) and "max_tokens" in body:
            return Reply(400, OPENAI_MAX_TOKENS)
        return Reply(200, chat_completion(model or "o3", "fine"))


@pytest.fixture
def llm() -> Iterator[Strict]:
    with Strict() as server:
        yield server


def renamed_hint(error: object, provider: str | None) -> Classification | None:
    """Until classification reads this wording, the test teaches it (the point here is the
    transport: what it stores, applies and reports)."""
    text = getattr(getattr(error, "response", error), "text", "") or ""
    if "Use 'max_completion_tokens' instead" in str(text):
        return Classification(ErrorKind.BAD_REQUEST, status=400, compat=(RENAMED,))
    return None


def client(breaker: Breaker, url: str) -> openai.OpenAI:
    transport: Any = GuardedTransport(breaker, "openai", adapt=True)
    return openai.OpenAI(
        api_key="sk-test",
        base_url=url + "/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def test_an_unchanged_sdk_call_succeeds_after_the_first_failure(
    redis_url: str, prefix: str, llm: Strict
) -> None:
    s = make_settings(redis_url, prefix)
    msgs = [{"role": "user", "content": "hi"}]
    with Breaker(s, classifier=renamed_hint) as first, Breaker(s) as elsewhere:
        with pytest.raises(openai.BadRequestError):
            client(first, llm.url).chat.completions.create(
                model="o3", messages=msgs, max_tokens=100
            )
        assert first.state(Target("openai", "o3")).compat == (RENAMED,)
        # another worker of the fleet, the same unchanged call: adapted, answered
        answer = client(elsewhere, llm.url).chat.completions.create(
            model="o3", messages=msgs, max_tokens=100
        )
        assert answer.choices[0].message.content == "fine"
        sent = llm.seen[-1].body
        assert sent["max_completion_tokens"] == 100 and "max_tokens" not in sent
        st = elsewhere.state(Target("openai", "o3"))
        assert (st.error_count, st.compat) == (0, (RENAMED,))


def test_without_adapt_the_body_is_sent_as_written(
    redis_url: str, prefix: str, llm: Strict
) -> None:
    s = make_settings(redis_url, prefix)
    with Breaker(s, classifier=renamed_hint) as b:
        b.record_failure(
            Target("openai", "o3"), Classification(ErrorKind.BAD_REQUEST, compat=(RENAMED,))
        )
        plain: Any = GuardedTransport(b, "openai")
        c = openai.OpenAI(
            api_key="sk-test", base_url=llm.url + "/v1", max_retries=0,
            http_client=httpx2.Client(transport=plain),
        )  # fmt: skip
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(
                model="o3", messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
