"""Compatibility hints: learned from the first error anywhere in the fleet, used on the next
call (adapted or routed away), checked rather than trusted, never counted as failures."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest

from resilience import (
    AllTargetsFailedError,
    AsyncBreaker,
    AsyncRouter,
    Attempt,
    Breaker,
    Classification,
    CompatHint,
    ErrorKind,
    Needs,
    Router,
    Settings,
    Target,
)
from tests.conftest import make_settings

A = Target("openai", "o3")
B = Target("anthropic", "claude-sonnet-4")
RENAMED = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")
NO_TEMPERATURE = CompatHint("param_unsupported", param="temperature")
NO_TOOLS = CompatHint("feature_unsupported", feature="tools")


class Refused(Exception):
    """A provider's 400 that teaches something (classified by the test's classifier)."""

    def __init__(self, *hints: CompatHint, kind: ErrorKind = ErrorKind.BAD_REQUEST) -> None:
        super().__init__(", ".join(map(str, hints)))
        self.c = Classification(kind, status=400, message=str(self), compat=hints)


def teach(error: object, provider: str | None) -> Classification | None:
    return error.c if isinstance(error, Refused) else None


def test_a_hint_is_learned_and_never_counted(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, failure_threshold=1)
    with Breaker(s, classifier=teach) as b:
        for _ in range(3):
            b.record_failure(A, Refused(RENAMED))
        st = b.state(A)
        assert st.compat == (RENAMED,)
        assert (st.state, st.error_count, st.consecutive_errors) == ("closed", 0, 0)
        assert b.acquire(A).hints == (RENAMED,)


def test_limits_replace_each_other_and_reset_forgets(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix)
    with Breaker(s, classifier=teach) as b:
        b.record_failure(A, Refused(CompatHint("context_window", tokens=8192)))
        b.record_failure(A, Refused(CompatHint("context_window", tokens=128000), NO_TOOLS))
        assert b.state(A).compat == (CompatHint("context_window", tokens=128000), NO_TOOLS)
        b.block(A, 60)
        b.unblock(A)
        assert len(b.state(A).compat) == 2  # block and unblock keep them
        b.reset(A)
        assert b.state(A).compat == ()


def test_a_hint_applied_that_fails_the_same_way_is_dropped_for_good(
    redis_url: str, prefix: str
) -> None:
    s = make_settings(redis_url, prefix)
    with Breaker(s, classifier=teach) as b:
        b.record_failure(A, Refused(NO_TEMPERATURE))
        permit = b.acquire(A)
        attempt = Attempt(A, hints=permit.hints)
        assert attempt.adapt({"temperature": 0.2, "model": "o3"}) == {"model": "o3"}
        # ...and the provider still says the same: the hint was wrong
        b._gate_sync.fail(A, permit, Refused(NO_TEMPERATURE), 0.1, None, attempt.applied)
        assert b.state(A).compat == ()
        b.record_failure(A, Refused(NO_TEMPERATURE))
        assert b.state(A).compat == ()  # not learned again


def test_adapt() -> None:
    a = Attempt(
        A,
        hints=(
            RENAMED,
            NO_TEMPERATURE,
            CompatHint("param_unsupported", param="response_format", value="json_schema"),
            CompatHint("max_output", tokens=4096),
        ),
    )
    params = {
        "model": "o3",
        "max_tokens": 10_000,
        "temperature": 0.3,
        "response_format": {"type": "json_schema", "json_schema": {}},
    }
    assert a.adapt(params) == {"model": "o3", "max_completion_tokens": 4096}
    assert params["max_tokens"] == 10_000  # the caller's dict is left alone
    assert set(a.applied) == set(a.hints)
    b = Attempt(A, hints=(CompatHint("param_unsupported", param="response_format", value="x"),))
    kept = {"response_format": {"type": "json_object"}}
    assert b.adapt(kept) == kept and b.applied == ()


def test_needs_match_the_hint_vocabulary_and_its_combinations() -> None:
    from resilience._compat import unmet

    both = [CompatHint("feature_unsupported", feature="streaming+tools")]
    assert unmet(Needs(tools=True), both) is None  # each alone is fine
    assert unmet(Needs(tools=True, streaming=True), both) == "no streaming+tools"
    json = [CompatHint("feature_unsupported", feature="json_mode")]
    assert unmet(Needs(json_mode=True), json) == "no json_mode"
    assert unmet(Needs(json_schema=True), json) is None
    window = [CompatHint("context_window", tokens=8192)]
    assert unmet(Needs(input_tokens=8000, output_tokens=500), window) == (
        "context window 8192 < 8500 tokens"
    )
    assert unmet(Needs(input_tokens=8000), window) is None
    assert unmet(None, both + json + window) is None


def test_the_router_retries_once_adapted_and_the_next_call_adapts_at_once(
    redis_url: str, prefix: str
) -> None:
    calls: list[dict[str, Any]] = []

    def provider(params: dict[str, Any]) -> str:
        calls.append(params)
        if "max_tokens" in params:
            raise Refused(RENAMED)
        return "ok"

    with Breaker(make_settings(redis_url, prefix), classifier=teach) as b:
        router = Router(b, [A, B], adapt=True)

        def fn(attempt: Attempt) -> str:
            return provider(attempt.adapt({"model": attempt.target.model, "max_tokens": 50}))

        assert router.call(fn) == "ok"
        assert [("max_tokens" in c) for c in calls] == [True, False]  # one refusal, then adapted
        calls.clear()
        assert router.call(fn) == "ok"
        assert [("max_tokens" in c) for c in calls] == [False]  # learned: adapted at once
        assert b.state(A).error_count == 0


def test_without_adapt_a_compatibility_error_falls_over(redis_url: str, prefix: str) -> None:
    tried: list[Target] = []

    def fn(attempt: Attempt) -> str:
        tried.append(attempt.target)
        if attempt.target == A:
            raise Refused(RENAMED)
        return "ok"

    with Breaker(make_settings(redis_url, prefix), classifier=teach) as b:
        assert Router(b, [A, B]).call(fn) == "ok"
        assert tried == [A, B]


@pytest.mark.parametrize("needs", [Needs(tools=True), Needs(input_tokens=20_000)])
def test_needs_route_around_targets_known_unfit(redis_url: str, prefix: str, needs: Needs) -> None:
    with Breaker(make_settings(redis_url, prefix), classifier=teach) as b:
        b.record_failure(A, Refused(NO_TOOLS, CompatHint("context_window", tokens=8192)))
        called: list[Target] = []

        def fn(attempt: Attempt) -> str:
            called.append(attempt.target)
            return f"answered by {attempt.target}"

        assert Router(b, [A, B]).call(fn, needs=needs) == f"answered by {B}"
        assert called == [B]  # A was not called...
        assert b.state(A).error_count == 0  # ...nor charged
        with pytest.raises(AllTargetsFailedError) as info:
            Router(b, [A]).call(fn, needs=needs)
        [outcome] = info.value.attempts
        assert outcome.skipped and outcome.reason
        assert outcome.reason in str(info.value)
        assert Router(b, [A]).call(fn) == f"answered by {A}"  # a plain request still goes


async def test_async_router_needs_and_adapt(redis_url: str, prefix: str) -> None:
    async with AsyncBreaker(make_settings(redis_url, prefix), classifier=teach) as b:
        await b.record_failure(A, Refused(NO_TOOLS))
        seen: list[dict[str, Any]] = []

        async def fn(attempt: Attempt) -> str:
            params = attempt.adapt({"temperature": 0.5})
            seen.append(params)
            if attempt.target == B and "temperature" in params:
                raise Refused(NO_TEMPERATURE)
            return str(attempt.target)

        router = AsyncRouter(b, [A, B], adapt=True)
        assert await router.call(fn, needs=Needs(tools=True)) == str(B)
        assert seen == [{"temperature": 0.5}, {}]


def _fleet_worker(url: str, prefix: str, start: Any, refused: Any, answered: Any) -> None:
    def provider(params: dict[str, Any]) -> str:
        if "max_tokens" in params or "temperature" in params:
            with refused.get_lock():
                refused.value += 1
            raise Refused(
                *([RENAMED] if "max_tokens" in params else []),
                *([NO_TEMPERATURE] if "temperature" in params else []),
            )
        return "ok"

    s = Settings(redis_url=url, key_prefix=prefix)
    with Breaker(s, classifier=teach) as b:
        router = Router(b, [A], adapt=True)
        start.wait()
        for _ in range(40):
            router.call(lambda a: provider(a.adapt({"max_tokens": 10, "temperature": 0.1, "x": 1})))
            with answered.get_lock():
                answered.value += 1
            time.sleep(0.002)


def test_one_failure_per_hint_fleet_wide(redis_url: str, prefix: str) -> None:
    """Four processes send requests that need two hints. Only the calls already in flight
    when the first failure was recorded are refused; every call after adapts (and no
    caller sees an error: the refused call is retried adapted)."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    refused = ctx.Value("i", 0)
    answered = ctx.Value("i", 0)
    procs = [
        ctx.Process(target=_fleet_worker, args=(redis_url, prefix, start, refused, answered))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert answered.value == 4 * 40
    # at most one refusal per process in flight at the time (both hints were taught at once)
    assert 1 <= refused.value <= 4
    with Breaker(make_settings(redis_url, prefix)) as b:
        st = b.state(A)
    assert set(st.compat) == {RENAMED, NO_TEMPERATURE}
    assert st.error_count == 0


def test_the_adapted_retry_uses_what_the_refusal_taught_even_when_nothing_is_stored(
    redis_url: str, prefix: str
) -> None:
    """With the kill switch (or Redis down) no hint is kept, yet the router's one retry
    applies what the refusal said; the next call pays the refusal again."""
    sent: list[dict[str, Any]] = []

    def fn(attempt: Attempt) -> str:
        params = attempt.adapt({"max_tokens": 5})
        sent.append(params)
        if "max_tokens" in params:
            raise Refused(RENAMED)
        return "ok"

    s = make_settings(redis_url, prefix, enabled=False)
    with Breaker(s, classifier=teach) as b:
        router = Router(b, [A], adapt=True)
        assert router.call(fn) == "ok"
        assert router.call(fn) == "ok"
        assert sent == [{"max_tokens": 5}, {"max_completion_tokens": 5}] * 2
        assert b.state(A).compat == ()
