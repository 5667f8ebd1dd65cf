"""Checked by mypy --strict (scripts/test), never run: the public API's types as users see them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

from resilience import (
    AllTargetsFailedError,
    AsyncBreaker,
    AsyncRouter,
    Attempt,
    Breaker,
    CircuitOpenError,
    Classification,
    ErrorKind,
    Router,
    Settings,
    SettingsError,
    Target,
    TargetState,
    classify,
)

breaker = Breaker(Settings(key_prefix="typing"))
t = Target("openai", "gpt-4o")
assert_type(breaker.allow(t), bool)
assert_type(breaker.state(t), TargetState)
assert_type(breaker.states(), list[TargetState])
assert_type(breaker.record_failure(t, ErrorKind.TIMEOUT), Classification)
assert_type(classify(ValueError("x")), Classification)


@breaker.guard("openai", "gpt-4o")
def sync_call(prompt: str, *, temperature: float = 0.0) -> str:
    return prompt


assert_type(sync_call("hi", temperature=0.5), str)


@breaker.guard("openai", lambda *a, **kw: str(kw["model"]))
async def async_call(prompt: str, *, model: str) -> int:
    return len(prompt)


async def use_async() -> None:
    assert_type(await async_call("hi", model="gpt-4o"), int)
    ab = AsyncBreaker()
    assert_type(await ab.allow(t), bool)
    router = AsyncRouter(ab, [t])

    async def fn(attempt: Attempt) -> str:
        return attempt.target.model

    assert_type(await router.call(fn), str)

    @ab.guard("openai", "gpt-4o")
    async def stream() -> AsyncIterator[str]:
        yield "x"

    async for chunk in stream():
        assert_type(chunk, str)

    async def chunks(attempt: Attempt) -> AsyncIterator[bytes]:
        yield attempt.target.model.encode()

    async def numbers() -> AsyncIterator[int]:
        yield 1

    async def opens(attempt: Attempt) -> AsyncIterator[int]:
        return numbers()  # like `await client.chat.completions.create(..., stream=True)`

    async for piece in router.stream(chunks):
        assert_type(piece, bytes)
    async for number in router.stream(opens):
        assert_type(number, int)


router = Router(
    breaker,
    [Target("openai", "gpt-4o-mini", context_window=128_000), t],
    fallbacks={ErrorKind.CONTENT_POLICY: [Target("mistral", "mistral-large")]},
    retry_within=2.0,
    max_retries=1,
    wait_up_to=5.0,
)
assert_type(router.call(lambda a: a.endpoint), str | None)


def words(attempt: Attempt) -> Iterator[str]:
    yield attempt.target.model


assert_type(router.stream(words), Iterator[str])
assert_type(t.context_window, int | None)

try:
    sync_call("x")
except CircuitOpenError as exc:
    assert_type(exc.retry_after_s, float)
    assert_type(exc.target, Target)
except AllTargetsFailedError as exc2:
    assert_type(exc2.attempts[0].target, Target)

settings = Settings(open_seconds=30.0, fail_mode="closed", _env_file=".env")
assert_type(settings.open_seconds, float)
assert_type(settings.redis_sentinel_password.get_secret_value(), str)
assert_type(settings.model_copy(update={"local_view": False}), Settings)
try:
    Settings(failure_threshold=0)
except SettingsError as exc3:
    assert_type(exc3.problems, tuple[str, ...])
    assert_type(exc3.fields, tuple[str, ...])
