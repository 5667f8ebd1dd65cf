"""Guarded transports with ``adapt=True``: an unchanged SDK call succeeds after the first
failure anywhere in the fleet, because the learned hint is applied to its JSON body."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from resilience import (
    Breaker,
    Classification,
    CompatHint,
    ErrorKind,
    GuardedTransport,
    Settings,
    Target,
)
from tests.conftest import make_settings
from tests.llm_server import LLMServer, Reply, Seen, chat_completion

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

    def reply_to(self, seen: Seen) -> Reply:
        if seen.model == "o3" and isinstance(seen.body, dict) and "max_tokens" in seen.body:
            return Reply(400, OPENAI_MAX_TOKENS)
        if seen.model in self.script:
            return super().reply_to(seen)
        return Reply(200, chat_completion(seen.model or "o3", "fine"))

    def refused(self) -> int:
        return sum(1 for s in self.seen if isinstance(s.body, dict) and "max_tokens" in s.body)


@pytest.fixture
def llm() -> Iterator[Strict]:
    with Strict() as server:
        yield server


def house_rename(error: object, provider: str | None) -> Classification | None:
    """A user classifier for a gateway's own wording: it reads the decoded error body."""
    text = getattr(getattr(error, "response", error), "text", "") or ""
    if "call it max_new_tokens" in str(text):
        hint = CompatHint("param_renamed", param="max_tokens", to="max_new_tokens")
        return Classification(ErrorKind.BAD_REQUEST, status=400, compat=(hint,))
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
    with Breaker(s) as first, Breaker(s) as elsewhere:
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
    with Breaker(s) as b:
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


def test_a_user_classifier_reads_the_decoded_error_body(
    redis_url: str, prefix: str, llm: Strict
) -> None:
    llm.script["gw-model"] = [Reply(400, {"error": "max_tokens? here we call it max_new_tokens"})]
    with Breaker(make_settings(redis_url, prefix), classifier=house_rename) as b:
        with pytest.raises(openai.BadRequestError):
            client(b, llm.url).chat.completions.create(
                model="gw-model", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
        hint = CompatHint("param_renamed", param="max_tokens", to="max_new_tokens")
        assert b.state(Target("openai", "gw-model")).compat == (hint,)


def _sdk_worker(url: str, llm_url: str, prefix: str, start: Any, failed: Any) -> None:
    with Breaker(Settings(redis_url=url, key_prefix=prefix)) as b:
        c = client(b, llm_url)
        start.wait()
        for _ in range(25):
            try:
                c.chat.completions.create(
                    model="o3", messages=[{"role": "user", "content": "hi"}], max_tokens=64
                )
            except openai.BadRequestError:
                with failed.get_lock():
                    failed.value += 1
            time.sleep(0.002)


def test_one_refusal_per_hint_across_four_processes_of_unchanged_sdk_calls(
    redis_url: str, prefix: str, llm: Strict
) -> None:
    """The SDK call never changes; the classifier reads OpenAI's real wording; only the calls
    already in flight when the first refusal was recorded fail."""
    ctx = mp.get_context("spawn")
    start, failed = ctx.Event(), ctx.Value("i", 0)
    procs = [
        ctx.Process(target=_sdk_worker, args=(redis_url, llm.url, prefix, start, failed))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert 1 <= failed.value <= 4
    assert llm.refused() == failed.value  # every other request went out adapted
    assert len(llm.seen) == 4 * 25
    with Breaker(make_settings(redis_url, prefix)) as b:
        st = b.state(Target("openai", "o3"))
    assert (st.compat, st.error_count) == ((RENAMED,), 0)
