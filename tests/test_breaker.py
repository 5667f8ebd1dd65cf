"""Breaker behaviour against the real Redis: trip rules, breaks, probes, policy per kind."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import pytest
import redis

from resilience import Breaker, Classification, ErrorKind, Target, TransitionInfo
from tests.conftest import make_settings

T = Target("openai", "gpt-4o")


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[TransitionInfo] = []
        self.rejected: list[Any] = []
        self.outcomes: list[Any] = []
        self.store_errors: list[Any] = []

    def on_transition(self, e: TransitionInfo) -> None:
        self.transitions.append(e)

    def on_rejected(self, e: Any) -> None:
        self.rejected.append(e)

    def on_outcome(self, e: Any) -> None:
        self.outcomes.append(e)

    def on_store_error(self, e: Any) -> None:
        self.store_errors.append(e)


def fail(b: Breaker, n: int, kind: ErrorKind = ErrorKind.SERVER_ERROR, t: Target = T) -> None:
    for _ in range(n):
        b.record_failure(t, kind)


def now() -> datetime:
    return datetime.now(tz=timezone.utc)


def test_half_open_single_probe_then_close(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, open_seconds=0.2, failure_threshold=2)
    rec = Recorder()
    with Breaker(s, hooks=[rec]) as a, Breaker(s) as b:
        fail(a, 2)
        assert not a.allow(T)
        time.sleep(0.3)
        answers = [a.allow(T), b.allow(T), a.allow(T), b.allow(T)]
        assert answers.count(True) == 1
        assert answers[0] is True
        assert a.state(T).state == "half_open"
        a.record_success(T)
        st = a.state(T)
        assert (st.state, st.blacklisted, st.consecutive_errors) == ("closed", False, 0)
        assert b.allow(T)
    kinds = [(e.from_state, e.to_state) for e in rec.transitions]
    assert kinds == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_stale_generation_failures_update_counters_but_do_not_trip(
    redis_url: str, prefix: str
) -> None:
    s = make_settings(redis_url, prefix, failure_threshold=2, open_seconds=0.1)
    with Breaker(s, hooks=[rec := Recorder()]) as b:
        early = [b.acquire(T) for _ in range(3)]  # admitted while closed, generation 0
        fail(b, 2)  # trips: generation 1
        time.sleep(0.15)
        probe = b.acquire(T)
        assert probe.probe
        b.record_success(T, permit=probe)  # closes: generation 3
        assert b.state(T).state == "closed"
        for permit in early:  # late failures of calls admitted before the trip
            b.record_failure(T, ErrorKind.TIMEOUT, permit=permit)
        st = b.state(T)
        assert st.state == "closed"
        assert st.consecutive_errors == 3 and st.error_count == 5
    assert [e.to_state for e in rec.transitions] == ["open", "half_open", "closed"]


def test_block_unblock_reset(breaker: Breaker) -> None:
    s = breaker.block(T, 3600, "provider incident INC-42")
    assert s.state == "open" and s.manual and s.reason == "provider incident INC-42"
    assert not breaker.allow(T)
    s = breaker.unblock(T)
    assert s.state == "closed" and not s.manual and breaker.allow(T)
    fail(breaker, 3)
    s = breaker.reset(T)
    assert (s.error_count, s.consecutive_errors, s.state) == (0, 0, "closed")
    with pytest.raises(ValueError, match="positive"):
        breaker.block(T, 0)


def test_provider_wide_manual_block(breaker: Breaker) -> None:
    breaker.block(T, 60, "key rotation", provider_wide=True)
    assert not breaker.allow(Target("openai", "anything"))
    breaker.unblock(T, provider_wide=True)
    assert breaker.allow(Target("openai", "anything"))


def test_events_log_every_transition_once(breaker: Breaker) -> None:
    fail(breaker, 5)
    breaker.unblock(T)
    events = breaker.events()
    assert [(e.model, e.from_state, e.to_state, e.kind) for e in events] == [
        ("gpt-4o", "closed", "open", "server_error"),
        ("gpt-4o", "open", "closed", "manual"),
    ]
    assert breaker.events({"openai": events[0].id}) == events[1:]
    assert events[0].open_until is not None


def test_messages_are_redacted_and_truncated(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    s = make_settings(redis_url, prefix, max_message_chars=80)
    key = "sk-proj-" + "A" * 40
    with Breaker(s) as b:
        b.record_failure(
            T,
            Classification(ErrorKind.SERVER_ERROR, message=f"boom with {key} " + "x" * 300),
        )
        msg = b.state(T).last_error_message
    assert msg is not None and key not in msg and len(msg) <= 81
    for k in rclient.scan_iter(match=f"{prefix}:*"):
        if rclient.type(k) == "hash":
            assert key not in str(rclient.hgetall(k))


def test_first_success_logged_once(breaker: Breaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilience")
    breaker.record_success(T)
    breaker.record_success(T)
    lines = [r.getMessage() for r in caplog.records if "First success" in r.getMessage()]
    assert lines == ["[CompatibilityHint] First success for openai/gpt-4o"]


def test_recorded_error_log_line(breaker: Breaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilience")
    fail(breaker, 1)
    assert any(
        r.getMessage().startswith("[CompatibilityHint] Recorded error for openai/gpt-4o")
        for r in caplog.records
    )


def test_states_lists_every_target(breaker: Breaker) -> None:
    targets = [Target("openai", "a"), Target("openai", "b"), Target("gemini", "c")]
    for t in targets:
        breaker.record_success(t)
    assert {s.target for s in breaker.states()} == set(targets)
    assert {s.target for s in breaker.states("openai")} == set(targets[:2])
    assert breaker.providers() == ["gemini", "openai"]


def test_state_of_unknown_target_is_closed(breaker: Breaker) -> None:
    s = breaker.state(Target("x", "y"))
    assert (s.state, s.error_count, s.blacklisted) == ("closed", 0, False)


def test_kill_switch_records_nothing_and_never_blocks(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, enabled=False, failure_threshold=1)
    with Breaker(s) as b:
        fail(b, 5)
        assert b.allow(T)
        assert b.state(T).error_count == 0


def test_shadow_mode_records_but_never_blocks(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, shadow=True, failure_threshold=2)
    rec = Recorder()
    with Breaker(s, hooks=[rec]) as b:
        fail(b, 2)
        assert b.state(T).state == "open"
        assert b.allow(T)
    assert rec.rejected and all(e.shadow for e in rec.rejected)
    assert rec.transitions[0].shadow


def test_provider_block_ends_with_one_provider_probe(redis_url: str, prefix: str) -> None:
    s = make_settings(redis_url, prefix, provider_block_seconds=0.2)
    other = Target("openai", "gpt-4o-mini")
    auth = Classification(ErrorKind.AUTH, scope="provider")
    with Breaker(s) as a, Breaker(s) as b:
        a.record_failure(T, auth)
        st = a.state(other)
        assert st.state == "open" and st.reason == "provider: auth"
        time.sleep(0.3)
        answers = [a.allow(T), b.allow(other), b.allow(T), a.allow(other)]
        assert answers.count(True) == 1
        # the probe fails the same way: blocked again
        a.record_failure(T, auth)
        assert not b.allow(other)
        time.sleep(0.3)
        assert b.allow(other)
        b.record_success(other)  # the key works again: the provider closes
        assert a.allow(T) and a.allow(Target("openai", "third"))
        events = a.events()
    provider_moves = [(e.from_state, e.to_state) for e in events if e.model is None]
    assert provider_moves == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_lease_of_a_dead_worker_expires(redis_url: str, prefix: str) -> None:
    s = make_settings(
        redis_url, prefix, failure_threshold=1, open_seconds=0.1, probe_lease_seconds=1.0
    )
    with Breaker(s) as a, Breaker(s) as b:
        fail(a, 1)
        time.sleep(0.15)
        assert a.allow(T)  # a takes the probe and "dies" without answering
        assert not b.allow(T)
        time.sleep(1.05)
        assert b.allow(T)  # the lease expired: b probes
        b.record_success(T)
        assert b.state(T).state == "closed"


def test_provider_wide_block_is_listed(breaker: Breaker) -> None:
    state = breaker.block_provider("mistral", 60, "incident")
    assert (state.state, state.blocked, state.reason, state.manual) == (
        "open",
        True,
        "incident",
        True,
    )
    assert breaker.states() == []  # no target entry is made for the block
    assert [p.provider for p in breaker.provider_states()] == ["mistral"]
    assert breaker.providers() == ["mistral"]
    st = breaker.state(Target("mistral", "large"))
    assert st.blacklisted and st.reason == "provider: incident"
    assert not breaker.allow(Target("mistral", "large"))
    assert breaker.unblock_provider("mistral").state == "closed"
    assert breaker.allow(Target("mistral", "large"))


def test_provider_block_arguments_are_checked(breaker: Breaker) -> None:
    with pytest.raises(ValueError, match="provider"):
        breaker.block_provider("", 60)
    for bad in (0, -1, float("nan"), float("inf"), 10**12):
        with pytest.raises(ValueError, match="block seconds"):
            breaker.block_provider("mistral", bad)
    assert breaker.provider_states() == []
