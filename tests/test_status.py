"""``resilience status`` filtered, sorted and paged in Redis (resilience._status): the same
rows and order as sorting every state, counts over every match, only the page read in full."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from resilience import Breaker, Classification, ErrorKind, Target, TargetState
from resilience._status import SORTS, list_targets
from resilience.cli import main
from tests.conftest import PrivateRedis, make_settings

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)
_ORDER = {"open": 0, "half_open": 1, "closed": 2}

# The orders as they are defined on full states (what `status` sorted by before paging).
REFERENCE: dict[str, Callable[[TargetState], Any]] = {
    "name": lambda s: (s.provider, s.model),
    "state": lambda s: (not s.blacklisted, _ORDER[s.state], s.provider, s.model),
    "errors": lambda s: (-s.error_count, s.provider, s.model),
    "successes": lambda s: (-s.success_count, s.provider, s.model),
    "trips": lambda s: (-s.trips, s.provider, s.model),
    "until": lambda s: (s.open_until is None, s.open_until or _EPOCH, s.provider, s.model),
    "last-error": lambda s: (-(s.last_error_time or _EPOCH).timestamp(), s.provider, s.model),
}


def fill(b: Breaker) -> None:
    hint = Classification(ErrorKind.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses")
    for i in range(36):
        t = Target(f"prov-{i % 4}", f"m{i:02d}" + ("/x y*[1]" if i == 5 else ""))
        for _ in range(i % 5 or 1):
            b.record_success(t)
        if i % 6 == 0:
            for _ in range(5):
                b.record_failure(t, ErrorKind.SERVER_ERROR)  # trips
        elif i % 7 == 0:
            b.record_failure(t, hint)
        elif i % 3 == 0:
            b.record_failure(t, ErrorKind.TIMEOUT)
        if i == 10:
            b.block(t, 600, "manual")
    b.block_provider("prov-3", 600, "key revoked")
    b.record_failure(Target("prov-1", "short"), ErrorKind.RATE_LIMITED)  # a break of ~0 s


@pytest.fixture
def b(redis_url: str, prefix: str) -> Iterator[Breaker]:
    s = make_settings(redis_url, prefix, local_view=False, rate_limit_default_seconds=0.05)
    with Breaker(s) as breaker:
        fill(breaker)
        time.sleep(0.1)  # prov-1/short: its break is over, its probe is due
        yield breaker


def names(states: list[TargetState]) -> list[tuple[str, str]]:
    return [(s.provider, s.model) for s in states]


@pytest.mark.parametrize("sort", SORTS)
def test_every_order_and_every_page_equal_sorting_all_states(b: Breaker, sort: str) -> None:
    everything = sorted(b.states(), key=REFERENCE[sort])
    listing = list_targets(b, sort=sort)
    assert names(listing.states) == names(everything)
    assert listing.complete and listing.matched == len(everything) == 37
    assert listing.blocked == sum(s.blacklisted for s in everything) > 9  # prov-3 and trips
    assert listing.probe_due == 1
    pages: list[TargetState] = []
    for offset in range(0, 40, 8):
        page = list_targets(b, sort=sort, limit=8, offset=offset)
        assert (page.matched, page.blocked, page.offset) == (37, listing.blocked, offset)
        assert not page.complete
        pages += page.states
    assert names(pages) == names(everything)
    assert pages == listing.states  # the same full states


def test_filters(b: Breaker) -> None:
    every = b.states()
    by_provider = list_targets(b, provider="prov-2")
    assert names(by_provider.states) == sorted(
        (s.provider, s.model) for s in every if s.provider == "prov-2"
    )
    exact = list_targets(b, model="m05/x y*[1]")  # glob characters, taken literally first
    assert names(exact.states) == [("prov-1", "m05/x y*[1]")]
    assert names(list_targets(b, model="m07").states) == [("prov-3", "m07")]
    assert list_targets(b, model="nothing").matched == 0
    glob = list_targets(b, model="m1?")
    assert names(glob.states) == sorted(
        (s.provider, s.model) for s in every if s.model.startswith("m1") and len(s.model) == 3
    )
    blocked = list_targets(b, blocked=True, sort="state")
    assert blocked.matched == blocked.blocked == sum(s.blacklisted for s in every)
    assert all(s.blacklisted for s in blocked.states)
    assert {s.provider for s in blocked.states} >= {"prov-3"}
    with pytest.raises(ValueError, match="unknown sort"):
        list_targets(b, sort="colour")
    with pytest.raises(ValueError, match=">= 0"):
        list_targets(b, limit=-1)


def test_only_the_page_is_read_in_full(private_redis: PrivateRedis, prefix: str) -> None:
    s = make_settings(private_redis.url, prefix, local_view=False)
    with Breaker(s) as breaker:
        for i in range(300):
            breaker.record_success(Target(f"p{i % 3}", f"m{i}"))
        private_redis.reset_stats()
        page = list_targets(breaker, sort="successes", limit=5)
    calls = private_redis.commands()
    assert len(page.states) == 5 and page.matched == 300
    providers = {st.provider for st in page.states}
    # a few fields of each target and provider, then every field of the page and its
    # providers, and nothing else read hash by hash
    assert calls.get("hmget", 0) == (300 + 3) + (5 + len(providers))
    assert calls.get("hgetall", 0) == 0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_status_command_pages(
    b: Breaker,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENCE_REDIS_URL", redis_url)
    monkeypatch.setenv("RESILIENCE_KEY_PREFIX", prefix)
    monkeypatch.setattr("resilience.cli.targets.DEFAULT_LIMIT", 10)
    blocked = sum(s.blacklisted for s in b.states())
    code, out = run(capsys, "status", "--sort", "errors")
    assert code == 0
    lines = out.splitlines()
    assert len([ln for ln in lines if ln.startswith("prov-")]) == 10 + 1  # + provider-wide row
    assert f"37 targets, {blocked} blocked, 1 probe due; rows 1-10 shown" in out
    code, out = run(capsys, "status", "--offset", "30", "--limit", "10")
    assert "rows 31-37 shown" in out and "(provider-wide)" not in out
    code, out = run(capsys, "status", "--limit", "0")
    assert f"37 targets, {blocked} blocked, 1 probe due;" in out and "shown" not in out
    code, out = run(capsys, "status", "--format", "json")
    assert len(json.loads(out)) == 37 + 1  # JSON: every row unless --limit
    code, out = run(capsys, "status", "--format", "json", "--limit", "3", "--sort", "name")
    assert [r["model"] for r in json.loads(out)] == [None, "m00", "m04", "m08"]
    assert run(capsys, "status", "--limit", "-1")[0] == 2


def test_status_shows_what_the_fleet_learned(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilience import Classification, CompatHint

    monkeypatch.setenv("RESILIENCE_REDIS_URL", redis_url)
    monkeypatch.setenv("RESILIENCE_KEY_PREFIX", prefix)
    renamed = CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens")
    with Breaker(make_settings(redis_url, prefix)) as b:
        b.record_failure(
            Target("openai", "o1"),
            Classification(
                ErrorKind.BAD_REQUEST, message="use max_completion_tokens", compat=(renamed,)
            ),
        )
        b.record_failure(
            Target("openai", "o3-pro"),
            Classification(ErrorKind.ENDPOINT_MISMATCH, endpoint_hint="/v1/responses"),
        )
    code, out = run(capsys, "status")
    assert code == 0
    [o1] = [ln for ln in out.splitlines() if " o1 " in ln]
    assert o1.rstrip().endswith("max_tokens -> max_completion_tokens")
    assert "/v1/responses" in out and "hints" in out.splitlines()[0]
    code, out = run(capsys, "status", "--format", "json", "--model", "o1")
    [row] = json.loads(out)
    assert row["compat"] == [renamed.encode()]
    assert row["compat_text"] == ["max_tokens -> max_completion_tokens"]
    assert row["compat_message"] == "use max_completion_tokens" and row["compat_at"]
