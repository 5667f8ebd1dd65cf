"""One behaviour suite, two backends: the Lua scripts in Redis and the in-process fallback.

Every state-machine rule is asserted here against both: ``redis`` (a breaker on the real
Redis) and ``memory`` (a breaker whose Redis is unreachable, so every call is decided by the
in-process twin, ``resilience._machine``). The fallback's deliberate differences (per process,
no hooks for its transitions, no event log) are asserted at the end.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from resilience import Breaker, Classification, ErrorKind, Settings, Target, TargetState
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")
K = ErrorKind


class Backend:
    """Makes breakers on one backend and reads their state."""

    def __init__(self, name: str, redis_url: str, prefix: str) -> None:
        self.name = name
        self.redis_url = redis_url
        self.prefix = prefix
        self.made: list[Breaker] = []

    def settings(self, **overrides: Any) -> Settings:
        url = self.redis_url
        if self.name == "memory":
            with socket.socket() as s:  # a port nobody listens on: Redis is unreachable
                s.bind(("127.0.0.1", 0))
                url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
            overrides = {"store_retry_seconds": 3600, "redis_connect_timeout": 0.2, **overrides}
        return make_settings(url, self.prefix, **overrides)

    def breaker(self, hooks: list[object] | None = None, **overrides: Any) -> Breaker:
        b = Breaker(self.settings(**overrides), hooks=hooks or [])
        self.made.append(b)
        return b

    def unblock(self, b: Breaker, target: Target) -> None:
        """An operator's unblock (operator changes raise while Redis is down: the twin's
        ``admin.lua`` is run directly)."""
        if self.name == "redis":
            b.unblock(target)
            return
        e = b._engine
        with e._memory_lock:
            e.memory.run(
                "admin.lua", e.keys.script_keys(target), e.argv(target, ["unblock", "1", ""])
            )

    def state(self, b: Breaker, target: Target = T) -> TargetState:
        if self.name == "memory":
            return b._engine.memory_state(target)
        return b.state(target)


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> Iterator[Backend]:
    be = Backend(request.param, redis_url, prefix)
    yield be
    for b in be.made:
        b.close()


def fail(b: Breaker, n: int, kind: ErrorKind = K.SERVER_ERROR, t: Target = T, **kw: Any) -> None:
    for _ in range(n):
        b.record_failure(t, kind, **kw)


def break_s(st: TargetState) -> float:
    assert st.open_until is not None and st.last_error_time is not None
    return (st.open_until - st.last_error_time).total_seconds()


def left_s(st: TargetState) -> float:
    assert st.open_until is not None
    reference = st.last_error_time or datetime.now(tz=timezone.utc)
    return (st.open_until - reference).total_seconds()


# --------------------------------------------------------------------------- trip rules


def test_trips_after_threshold_consecutive_failures(backend: Backend) -> None:
    b = backend.breaker()
    fail(b, 4)
    st = backend.state(b)
    assert (st.state, st.error_count, st.consecutive_errors) == ("closed", 4, 4)
    assert b.allow(T)
    fail(b, 1)
    st = backend.state(b)
    assert (st.state, st.trips, st.blacklisted, st.error_count) == ("open", 1, True, 5)
    assert break_s(st) == pytest.approx(b.settings.open_seconds, abs=0.01)
    assert st.last_error_kind == "server_error"
    assert not b.allow(T)


def test_success_resets_consecutive_errors(backend: Backend) -> None:
    b = backend.breaker()
    fail(b, 4)
    b.record_success(T, latency_s=0.12)
    fail(b, 4)
    st = backend.state(b)
    assert (st.state, st.consecutive_errors, st.error_count, st.success_count) == (
        "closed",
        4,
        8,
        1,
    )
    assert st.last_success_time is not None


def test_failure_rate_over_window_trips(backend: Backend) -> None:
    b = backend.breaker(min_calls=10, failure_rate_threshold=0.5)
    for _ in range(4):
        b.record_success(T)
        fail(b, 1)
    assert backend.state(b).state == "closed"
    b.record_success(T)
    fail(b, 1)  # 10 calls, 5 failures: rate 0.5
    st = backend.state(b)
    assert (st.state, st.consecutive_errors) == ("open", 1)


def test_failure_rate_needs_min_calls(backend: Backend) -> None:
    b = backend.breaker(min_calls=10, failure_rate_threshold=0.5)
    for _ in range(3):
        fail(b, 1)
        b.record_success(T)
    assert backend.state(b).state == "closed"  # 50% of 6 calls: too few to judge


def test_not_counted_kinds_never_trip(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=2)
    fail(b, 5, K.RATE_LIMITED, t=Target("p", "rl"))
    st = backend.state(b, Target("p", "rl"))
    assert (st.consecutive_errors, st.trips, st.error_count) == (0, 0, 5)


# --------------------------------------------------------------------------- breaks


def test_probe_failure_reopens_with_longer_break(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=1, backoff_factor=3)
    fail(b, 1)
    first = backend.state(b)
    time.sleep(0.3)
    assert b.allow(T)
    fail(b, 1)
    second = backend.state(b)
    assert (second.state, second.trips) == ("open", 2)
    assert break_s(first) == pytest.approx(0.2, abs=0.01)
    assert break_s(second) == pytest.approx(0.6, abs=0.01)


def test_backoff_is_capped_and_jitter_bounded(backend: Backend) -> None:
    b = backend.breaker(open_seconds=10, max_open_seconds=15, jitter=0.2, failure_threshold=1)
    seen = []
    for i in range(12):
        t = Target("p", f"m{i}")
        fail(b, 1, t=t)
        seen.append(break_s(backend.state(b, t)))
    assert all(8.0 - 0.01 <= d <= 12.0 + 0.01 for d in seen)
    assert len({round(d, 3) for d in seen}) > 1  # jitter spreads the breaks


def test_backoff_grows_until_the_cap(backend: Backend) -> None:
    b = backend.breaker(
        open_seconds=0.1, max_open_seconds=0.25, failure_threshold=1, backoff_factor=2
    )
    breaks = []
    for _ in range(3):
        fail(b, 1)
        breaks.append(break_s(backend.state(b)))
        time.sleep(breaks[-1] + 0.05)
        assert b.allow(T)  # the probe
    assert breaks == pytest.approx([0.1, 0.2, 0.25], abs=0.01)


def recover(b: Breaker, st: TargetState) -> None:
    """Waits out the break of ``st``; the probe succeeds and closes the target."""
    time.sleep(left_s(st) + 0.05)
    assert b.allow(T)
    b.record_success(T)


def test_failed_probes_keep_the_break_by_default(backend: Backend) -> None:
    """With one probe per break, a longer break saves at most one call: by default every
    break of an outage is as long as the first, so traffic returns within one break."""
    b = backend.breaker(open_seconds=0.2, failure_threshold=1)
    fail(b, 1)
    breaks = [break_s(backend.state(b))]
    for _ in range(2):
        time.sleep(breaks[-1] + 0.05)
        assert b.allow(T)  # the probe, which fails
        fail(b, 1)
        breaks.append(break_s(backend.state(b)))
    assert breaks == pytest.approx([0.2, 0.2, 0.2], abs=0.01)
    assert backend.state(b).trips == 3


def test_a_flapping_target_is_let_back_in_less_and_less_often(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=2, flap_window_seconds=30)
    breaks = []
    for _ in range(3):
        fail(b, 2)  # healthy again only briefly: trips again soon after closing
        st = backend.state(b)
        assert st.state == "open"
        breaks.append(break_s(st))
        recover(b, st)
        assert backend.state(b).state == "closed"
    assert breaks == pytest.approx([0.2, 0.4, 0.8], abs=0.01)
    # a failed probe of a flapping target keeps its (longer) break
    fail(b, 2)
    st = backend.state(b)
    assert break_s(st) == pytest.approx(1.6, abs=0.01)
    time.sleep(left_s(st) + 0.05)
    assert b.allow(T)
    fail(b, 1)
    assert break_s(backend.state(b)) == pytest.approx(1.6, abs=0.01)


def test_flaps_are_capped_and_their_factor_configurable(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.1, max_open_seconds=0.35, failure_threshold=1, flap_factor=3)
    breaks = []
    for _ in range(3):
        fail(b, 1)
        st = backend.state(b)
        breaks.append(break_s(st))
        recover(b, st)
    assert breaks == pytest.approx([0.1, 0.3, 0.35], abs=0.01)


def test_a_trip_after_a_healthy_spell_starts_afresh(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=1, flap_window_seconds=0.5)
    fail(b, 1)
    recover(b, backend.state(b))
    fail(b, 1)  # within the flap window
    st = backend.state(b)
    assert break_s(st) == pytest.approx(0.4, abs=0.01)
    recover(b, st)
    time.sleep(0.6)  # closed longer than the flap window
    fail(b, 1)
    assert break_s(backend.state(b)) == pytest.approx(0.2, abs=0.01)


def test_the_flap_rule_can_be_turned_off(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=1, flap_window_seconds=0)
    for _ in range(3):
        fail(b, 1)
        st = backend.state(b)
        assert break_s(st) == pytest.approx(0.2, abs=0.01)
        recover(b, st)


def test_unblock_forgets_the_flaps(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=1, flap_window_seconds=30)
    fail(b, 1)
    recover(b, backend.state(b))
    fail(b, 1)
    assert break_s(backend.state(b)) == pytest.approx(0.4, abs=0.01)
    backend.unblock(b, T)
    assert backend.state(b).state == "closed"
    fail(b, 1)
    assert break_s(backend.state(b)) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("kind", [K.SERVER_ERROR, K.OVERLOADED])
def test_a_server_retry_after_ends_the_break_early(backend: Backend, kind: ErrorKind) -> None:
    """A 503 or 529 saying when the service is back sets the break: the probe goes then,
    not after the computed break."""
    b = backend.breaker(open_seconds=30, failure_threshold=2, retry_after_floor_seconds=0.2)
    fail(b, 1, kind)
    b.record_failure(T, Classification(kind, retry_after_s=0.3))
    st = backend.state(b)
    assert (st.state, st.trips, st.reason) == ("open", 1, kind.value)
    assert break_s(st) == pytest.approx(0.3, abs=0.01)
    assert not b.allow(T)
    time.sleep(0.35)
    assert b.allow(T)  # the probe, 29.7 s early
    assert not b.allow(T)  # still only one
    b.record_success(T)
    assert backend.state(b).state == "closed"


def test_a_server_retry_after_within_the_floor_and_the_cap(backend: Backend) -> None:
    b = backend.breaker(
        open_seconds=30,
        max_open_seconds=100,
        retry_after_floor_seconds=4,
        failure_threshold=1,
    )
    cases = {"short": 0.5, "inside": 45.0, "long": 5000.0}
    for name, retry in cases.items():
        b.record_failure(Target("p", name), Classification(K.SERVER_ERROR, retry_after_s=retry))
    assert break_s(backend.state(b, Target("p", "short"))) == pytest.approx(4, abs=0.01)
    assert break_s(backend.state(b, Target("p", "inside"))) == pytest.approx(45, abs=0.01)
    assert break_s(backend.state(b, Target("p", "long"))) == pytest.approx(100, abs=0.01)


def test_a_server_retry_after_from_an_http_response(backend: Backend) -> None:
    b = backend.breaker(open_seconds=30, failure_threshold=2)
    for _ in range(2):
        b.record_failure(T, httpx.Response(503, headers={"retry-after": "12"}, text="busy"))
    assert break_s(backend.state(b)) == pytest.approx(12, abs=0.01)


@pytest.mark.parametrize("kind", [K.TIMEOUT, K.CONNECTION, K.UNKNOWN])
def test_other_trip_kinds_keep_the_computed_break(backend: Backend, kind: ErrorKind) -> None:
    b = backend.breaker(open_seconds=30, failure_threshold=1)
    b.record_failure(T, Classification(kind, retry_after_s=3))
    assert break_s(backend.state(b)) == pytest.approx(30, abs=0.01)


def test_a_failed_probe_follows_its_retry_after(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=1, retry_after_floor_seconds=1)
    fail(b, 1)
    time.sleep(0.25)
    assert b.allow(T)
    b.record_failure(T, Classification(K.OVERLOADED, retry_after_s=7))
    st = backend.state(b)
    assert (st.state, st.trips) == ("open", 2)
    assert break_s(st) == pytest.approx(7, abs=0.01)


def test_rate_limit_opens_for_retry_after_as_a_floor(backend: Backend) -> None:
    b = backend.breaker()
    b.record_failure(T, Classification(K.RATE_LIMITED, retry_after_s=20))
    st = backend.state(b)
    assert (st.state, st.trips, st.consecutive_errors) == ("open", 0, 0)
    first_until = st.open_until
    assert first_until is not None
    b.record_failure(T, Classification(K.RATE_LIMITED, retry_after_s=2))
    assert backend.state(b).open_until == first_until  # never shortened
    b.record_failure(T, Classification(K.RATE_LIMITED, retry_after_s=60))
    later = backend.state(b).open_until
    assert later is not None and later > first_until


@pytest.mark.parametrize(
    "retry_after",
    [None, -1.0, 0.0, float("nan"), float("inf"), float("-inf"), 1e308, 1e-9],
)
def test_rate_limit_without_a_usable_retry_after_opens_for_the_default(
    backend: Backend, retry_after: float | None
) -> None:
    b = backend.breaker(rate_limit_default_seconds=7, max_retry_after_seconds=100)
    b.record_failure(T, Classification(K.RATE_LIMITED, retry_after_s=retry_after))
    st = backend.state(b)
    assert st.state == "open"
    if retry_after == 1e308:
        assert left_s(st) == pytest.approx(100, abs=0.01)  # capped
    elif retry_after == 1e-9:
        assert left_s(st) == pytest.approx(0.001, abs=0.002)  # tiny but usable
    else:
        assert left_s(st) == pytest.approx(7, abs=0.01)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "-1"},
        {"retry-after": "NaN"},
        {"retry-after": "inf"},
        {"retry-after": "1e308"},
        {"retry-after": "abc"},
        {"retry-after": ""},
        {"retry-after-ms": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {},
    ],
)
def test_429_with_any_retry_after_header_is_recorded(
    backend: Backend, headers: dict[str, str]
) -> None:
    b = backend.breaker(rate_limit_default_seconds=5)
    c = b.record_failure(T, httpx.Response(429, headers=headers, text="slow down"))
    assert c.kind is K.RATE_LIMITED
    st = backend.state(b)
    assert st.state == "open" and st.error_count == 1
    assert 0 < left_s(st) <= 86400


def test_rate_limit_with_retry_after_from_an_http_response(backend: Backend) -> None:
    b = backend.breaker()
    b.record_failure(T, httpx.Response(429, headers={"retry-after": "7"}, text="slow down"))
    assert left_s(backend.state(b)) == pytest.approx(7, abs=0.01)


# --------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("kind", [K.AUTH, K.QUOTA_EXHAUSTED])
def test_provider_wide_block(backend: Backend, kind: ErrorKind) -> None:
    b = backend.breaker()
    other_model = Target("openai", "gpt-4o-mini")
    b.record_failure(T, Classification(kind, scope="provider", message="bad key"))
    assert not b.allow(T)
    assert not b.allow(other_model)
    assert b.allow(Target("anthropic", "claude"))
    st = backend.state(b, other_model)
    assert st.blacklisted and st.provider_blocked_until is not None
    assert st.reason == f"provider: {kind.value}"


def test_provider_block_takes_a_longer_retry_after(backend: Backend) -> None:
    b = backend.breaker(provider_block_seconds=60)
    b.record_failure(T, Classification(K.QUOTA_EXHAUSTED, scope="provider", retry_after_s=7200))
    st = backend.state(b, Target("openai", "x"))
    assert st.provider_blocked_until is not None
    left = (st.provider_blocked_until - datetime.now(tz=timezone.utc)).total_seconds()
    assert 7100 < left <= 7201


def test_permission_on_one_model_blocks_only_that_model(backend: Backend) -> None:
    b = backend.breaker(provider_block_seconds=1234)
    b.record_failure(T, Classification(K.PERMISSION))
    assert not b.allow(T)
    assert b.allow(Target("openai", "gpt-4o-mini"))
    assert left_s(backend.state(b)) == pytest.approx(1234, abs=0.01)


def test_provider_block_ends_with_one_provider_probe(backend: Backend) -> None:
    b = backend.breaker(provider_block_seconds=0.2)
    b.record_failure(T, Classification(K.AUTH, scope="provider"))
    assert not b.allow(Target("openai", "other"))
    time.sleep(0.3)
    assert b.allow(Target("openai", "other"))  # the provider probe
    assert not b.allow(T)  # only one
    b.record_success(Target("openai", "other"))
    assert b.allow(T)


def test_a_timeout_does_not_prove_the_provider_reachable(backend: Backend) -> None:
    b = backend.breaker(provider_block_seconds=0.2, failure_threshold=10)
    b.record_failure(T, Classification(K.AUTH, scope="provider"))
    time.sleep(0.3)
    probe = b.acquire(T)
    assert probe.probe
    b.record_failure(T, K.TIMEOUT, permit=probe)
    probe = b.acquire(T)  # still half open; the lease was freed: the next caller probes
    assert probe.probe
    assert not b.allow(Target("openai", "x"))
    b.record_failure(T, K.SERVER_ERROR, permit=probe)  # an answer: the key works
    assert not b.acquire(Target("openai", "x")).probe  # closed: no probe any more
    assert b.allow(Target("openai", "y"))


def test_model_not_found_blacklists_after_low_threshold(backend: Backend) -> None:
    b = backend.breaker(model_not_found_open_seconds=21600)
    fail(b, 1, K.MODEL_NOT_FOUND)
    assert b.allow(T)
    fail(b, 1, K.MODEL_NOT_FOUND)
    st = backend.state(b)
    assert (st.state, st.reason) == ("open", "model_not_found")
    assert break_s(st) == pytest.approx(21600, abs=0.01)


def test_a_model_not_found_probe_failure_blacklists_again(backend: Backend) -> None:
    b = backend.breaker(model_not_found_open_seconds=0.2, model_not_found_threshold=1)
    fail(b, 1, K.MODEL_NOT_FOUND)
    time.sleep(0.3)
    assert b.allow(T)
    fail(b, 1, K.MODEL_NOT_FOUND)
    assert break_s(backend.state(b)) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("kind", [K.CONTEXT_LENGTH, K.CONTENT_POLICY, K.BAD_REQUEST, K.CANCELLED])
def test_caller_errors_and_cancellation_are_never_recorded(
    backend: Backend, kind: ErrorKind
) -> None:
    b = backend.breaker()
    fail(b, 10, kind)
    st = backend.state(b)
    assert (st.error_count, st.state, st.since) == (0, "closed", None)


# --------------------------------------------------------------------------- endpoint hints


def test_endpoint_hint_learned_then_dropped_when_it_fails_the_same_way(backend: Backend) -> None:
    b = backend.breaker()
    c = Classification(K.ENDPOINT_MISMATCH, endpoint_hint="/v1/completions")
    b.record_failure(T, c)
    st = backend.state(b)
    assert (st.endpoint_hint, st.state, st.consecutive_errors) == ("/v1/completions", "closed", 0)
    # the hinted endpoint fails the same way: the hint was wrong, drop it
    b.record_failure(T, c, endpoint="/v1/completions")
    assert backend.state(b).endpoint_hint is None
    # the same wrong hint is not learned again; the failure now counts
    b.record_failure(T, c)
    st = backend.state(b)
    assert st.endpoint_hint is None and st.consecutive_errors >= 1
    # a different hint is still learned
    b.record_failure(T, Classification(K.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses"))
    assert backend.state(b).endpoint_hint == "/v1/responses"
    b.record_success(T, endpoint="/v1/responses")
    assert backend.state(b).endpoint_hint == "/v1/responses"


def test_endpoint_mismatch_with_no_endpoint_left_counts_toward_a_trip(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=3)
    fail(b, 3, K.ENDPOINT_MISMATCH)
    st = backend.state(b)
    assert (st.state, st.consecutive_errors, st.reason) == ("open", 3, "endpoint_mismatch")


# --------------------------------------------------------------------------- half open


def test_half_open_single_probe_then_close(backend: Backend) -> None:
    b = backend.breaker(open_seconds=0.2, failure_threshold=2)
    fail(b, 2)
    assert not b.allow(T)
    time.sleep(0.3)
    answers = [b.allow(T), b.allow(T), b.allow(T)]
    assert answers == [True, False, False]
    assert backend.state(b).state == "half_open"
    b.record_success(T)
    st = backend.state(b)
    assert (st.state, st.blacklisted, st.consecutive_errors) == ("closed", False, 0)
    assert b.allow(T)


def test_half_open_needs_configured_probe_successes(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=1, open_seconds=0.1, half_open_successes=3)
    fail(b, 1)
    time.sleep(0.15)
    for _ in range(2):
        assert b.allow(T)
        b.record_success(T)
        assert backend.state(b).state == "half_open"
    assert b.allow(T)
    b.record_success(T)
    assert backend.state(b).state == "closed"


def test_only_the_probe_holder_closes(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=1, open_seconds=0.1)
    before = b.acquire(T)
    fail(b, 1)
    time.sleep(0.15)
    probe = b.acquire(T)
    b.record_success(T, permit=before)  # a late success of an older call
    assert backend.state(b).state == "half_open"
    b.record_success(T, permit=probe)
    assert backend.state(b).state == "closed"


def test_cancelled_probe_frees_the_lease(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=1, open_seconds=0.1)
    fail(b, 1)
    time.sleep(0.15)
    probe = b.acquire(T)
    assert not b.allow(T)
    b.record_failure(T, K.CANCELLED, permit=probe)
    assert b.allow(T)  # the next caller probes at once


def test_lease_of_a_dead_caller_expires(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=1, open_seconds=0.1, probe_lease_seconds=0.3)
    fail(b, 1)
    time.sleep(0.15)
    assert b.allow(T)  # takes the probe and "dies" without answering
    assert not b.allow(T)
    time.sleep(0.35)
    assert b.allow(T)


def test_stale_generation_failures_update_counters_but_do_not_trip(backend: Backend) -> None:
    b = backend.breaker(failure_threshold=2, open_seconds=0.1)
    early = [b.acquire(T) for _ in range(3)]  # admitted while closed
    fail(b, 2)  # trips
    time.sleep(0.15)
    probe = b.acquire(T)
    assert probe.probe
    b.record_success(T, permit=probe)  # closes
    assert backend.state(b).state == "closed"
    for permit in early:  # late failures of calls admitted before the trip
        b.record_failure(T, K.TIMEOUT, permit=permit)
    st = backend.state(b)
    assert (st.state, st.consecutive_errors, st.error_count) == ("closed", 3, 5)


# --------------------------------------------------------------------------- differences


def test_the_fallback_is_per_process_and_fires_no_transition_hooks(
    redis_url: str, prefix: str
) -> None:
    """Deliberate differences of the fallback, asserted: its state is per process, and its
    transitions are logged but not reported to ``on_transition`` hooks (those hear each
    fleet transition exactly once)."""
    be = Backend("memory", redis_url, prefix)
    seen: list[Any] = []

    class Hook:
        def on_transition(self, e: Any) -> None:
            seen.append(e)

    try:
        a = be.breaker(hooks=[Hook()], failure_threshold=1)
        other = be.breaker(failure_threshold=1)
        fail(a, 1)
        assert not a.allow(T)
        assert other.allow(T)  # nothing shared between processes (or breakers)
        assert seen == []
    finally:
        for b in be.made:
            b.close()


def test_backends_agree_on_a_long_random_sequence(redis_url: str, prefix: str) -> None:
    """Differential check: the same operations on both backends end in the same states."""
    import random

    rng = random.Random(7)
    kinds = [k for k in ErrorKind if k is not K.CANCELLED]
    targets = [Target("p", f"m{i}") for i in range(4)] + [Target("q", "m0")]
    backends = [Backend(n, redis_url, f"{prefix}-{n}") for n in ("redis", "memory")]
    breakers = [be.breaker(failure_threshold=3, min_calls=6) for be in backends]
    steps: list[Callable[[Breaker], object]] = []
    for _ in range(300):
        t = rng.choice(targets)
        roll = rng.random()
        if roll < 0.4:
            steps.append(lambda b, t=t: b.record_success(t))
        elif roll < 0.9:
            kind = rng.choice(kinds)
            c = Classification(
                kind,
                retry_after_s=rng.choice([None, 3.0, 3600.0]),
                endpoint_hint=rng.choice([None, "/v1/responses"]),
                scope=rng.choice(["target", "target", "provider"]),  # type: ignore[arg-type]
            )
            steps.append(lambda b, t=t, c=c: b.record_failure(t, c))
        else:
            steps.append(lambda b, t=t: b.allow(t))
    try:
        for step in steps:
            for b in breakers:
                step(b)
        for t in targets:
            a, m = (be.state(b, t) for be, b in zip(backends, breakers, strict=True))
            assert (a.state, a.error_count, a.success_count, a.consecutive_errors) == (
                m.state,
                m.error_count,
                m.success_count,
                m.consecutive_errors,
            ), t
            assert (a.trips, a.blacklisted, a.endpoint_hint, a.reason) == (
                m.trips,
                m.blacklisted,
                m.endpoint_hint,
                m.reason,
            ), t
    finally:
        for be in backends:
            for b in be.made:
                b.close()


# --------------------------------------------------------------------------- compatibility


def test_compatibility_hints_are_learned_replaced_and_dropped(backend: Backend) -> None:
    from resilience import CompatHint

    b = backend.breaker(failure_threshold=1)
    renamed = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")
    small, large = (CompatHint("context_window", tokens=n) for n in (8192, 128000))
    b.record_failure(T, Classification(K.BAD_REQUEST, compat=(renamed, small)))
    st = backend.state(b)
    assert (st.compat, st.error_count, st.state) == ((renamed, small), 0, "closed")
    b.record_failure(T, Classification(K.CONTEXT_LENGTH, compat=(large,)))
    assert backend.state(b).compat == (renamed, large)  # one window, the newest
    permit = b.acquire(T)
    assert permit.hints == (renamed, large)
    # applied, and refused again the same way: wrong, dropped, never learned again
    b._gate_sync.finish(
        T, permit, Classification(K.BAD_REQUEST, compat=(renamed,)), None, None, (renamed,)
    )
    assert backend.state(b).compat == (large,)
    b.record_failure(T, Classification(K.BAD_REQUEST, compat=(renamed,)))
    assert backend.state(b).compat == (large,)
    assert backend.state(b).state == "closed"  # never a failure, never a trip
