"""Redis Sentinel: the ``redis+sentinel://`` URL and its settings, breakers through real
sentinels with ACL credentials, and what follows the master through a failover (the
pub/sub subscription, the script cache)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilience import AsyncBreaker, Breaker, ErrorKind, Settings, SettingsError, Target
from resilience._io import announcement
from resilience._redact import redact_url
from resilience._settings import SENTINEL_PORT, parse_sentinel_url, sentinel_address
from resilience._types import Denial
from tests.conftest import asubscribed, subscribed
from tests.ha import (
    MASTER,
    PASSWORD,
    SENTINEL_PASSWORD,
    USER,
    Node,
    SentinelSet,
    self_signed,
    wait_for,
)

T = Target("openai", "gpt-4o")
SECRET = "hunter2-Pa55"


# --------------------------------------------------------------------------- the URL


def test_sentinel_url_forms() -> None:
    a = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:26381/my%20master/3"
        "?ssl_cert_reqs=none&socket_keepalive=true"
    )
    assert a.sentinels == (("10.0.0.1", 26380), ("sentinel-b", SENTINEL_PORT), ("::1", 26381))
    assert a.master == "my master"
    assert not a.tls
    assert a.options["username"] == "app" and a.options["password"] == "p@ss"
    assert a.options["db"] == 3
    assert a.options["socket_keepalive"] is True
    assert "p@ss" not in repr(a)
    b = parse_sentinel_url("rediss+sentinel://:pw@s1:1/m")
    assert b.tls and b.options["db"] == 0 and b.options["password"] == "pw"
    assert "username" not in b.options
    assert sentinel_address(Settings(redis_url="redis+sentinel://s1/m")) is not None
    assert sentinel_address(Settings(redis_url="redis://localhost/0")) is None


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis+sentinel:///m", "names no sentinel"),
        ("redis+sentinel://s1", "names no master"),
        ("redis+sentinel://s1/", "names no master"),
        ("redis+sentinel://s1/m/x", "/master-name/db"),
        ("redis+sentinel://s1/m/0/1", "/master-name/db"),
        ("redis+sentinel://s1:0/m", "1-65535"),
        ("redis+sentinel://s1:x/m", "1-65535"),
        ("redis+sentinel://::1/m", "IPv6 address in brackets"),
        ("redis+sentinel://s1/m?db=x", "Invalid value for"),
        ("sentinel://s1/m", "redis+sentinel://"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, needle: str) -> None:
    secret_url = url.replace("://", f"://u:{SECRET}@", 1)
    with pytest.raises(SettingsError) as info:
        Settings(redis_url=secret_url)
    text = str(info.value)
    assert "RESILIENCE_REDIS_URL" in text
    assert needle in text
    assert SECRET not in text


def test_sentinel_settings_that_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="RESILIENCE_REDIS_CLUSTER"):
        Settings(redis_url="redis+sentinel://s1/m", redis_cluster=True)
    with pytest.raises(SettingsError, match="RESILIENCE_REDIS_SENTINEL_PASSWORD") as info:
        Settings(redis_url="redis://localhost/0", redis_sentinel_password=SECRET)
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError, match="redis\\+sentinel://"):
        Settings(redis_sentinel_username="admin")


def test_sentinel_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_REDIS_SENTINEL_PASSWORD", SECRET)
    s = Settings(redis_url=f"redis+sentinel://app:{SECRET}@s1:26379,s2:26379/m/0")
    assert s.redis_sentinel_password.get_secret_value() == SECRET
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert redact_url(s.redis_url) == "redis+sentinel://app:***@s1:26379,s2:26379/m/0"
    assert redact_url("redis+sentinel://s1:26379,s2/m") == "redis+sentinel://s1:26379,s2/m"


def test_announcements() -> None:
    assert announcement(MASTER, "+switch-master", f"{MASTER} 10.0.0.1 6379 10.0.0.2 6379") == (
        "switched"
    )
    promoting = f"slave 10.0.0.2:6379 10.0.0.2 6379 @ {MASTER} 10.0.0.1 6379"
    assert announcement(MASTER, "+failover-state-send-slaveof-noone", promoting) == "promoting"
    assert announcement("other", "+failover-state-send-slaveof-noone", promoting) is None
    aborted = f"master {MASTER} 10.0.0.1 6379"
    assert announcement(MASTER, "-failover-abort-slave-timeout", aborted) == "aborted"
    assert announcement(MASTER, "+sdown", aborted) is None
    assert announcement(MASTER, "+switch-master", "") is None


# --------------------------------------------------------------------------- real sentinels


async def until(cond: Any, timeout_s: float = 10.0) -> Any:
    """Awaits until ``cond()`` (a coroutine function or a plain one) returns something
    true; returns it (fails the test after ``timeout_s``)."""
    for _ in range(int(timeout_s / 0.05)):
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {timeout_s} s")


SENTINEL_USER_PASSWORD = "s3ntinel-us3r-Pa55"


def sentinel_user_line() -> str:
    """The sentinels' ``user`` line of docs/managed-redis.md, with a password."""
    from tests.test_acl import GUIDE

    found = re.search(r"^\s*user resilience-sentinel .*$", GUIDE.read_text(), flags=re.M)
    assert found, "docs/managed-redis.md has no user line for the sentinels"
    return found.group(0).strip().replace("<password>", SENTINEL_USER_PASSWORD)


@pytest.fixture(scope="module")
def secured() -> Iterator[SentinelSet]:
    """Sentinels requiring a password (and the guide's user for the library), in front of a
    master that accepts one ACL user."""
    group = SentinelSet(auth=True, sentinel_users=(sentinel_user_line(),))
    yield group
    group.stop()


def secured_settings(group: SentinelSet, **kw: Any) -> Settings:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
    values: dict[str, Any] = {
        "redis_url": f"redis+sentinel://{USER}:{PASSWORD}@{hosts}/{MASTER}/2",
        "redis_sentinel_username": "resilience-sentinel",
        "redis_sentinel_password": SENTINEL_USER_PASSWORD,
        "key_prefix": f"sen{time.monotonic_ns() % 10**8}",
        "local_view_max_age_seconds": 60,
    }
    values.update(kw)
    return Settings(**values)


def test_a_breaker_through_authenticated_sentinels(secured: SentinelSet) -> None:
    s = secured_settings(secured)
    with Breaker(s) as a, Breaker(s) as b:
        a.record_failure(T, ErrorKind.SERVER_ERROR)
        assert a.state(T).error_count == 1
        assert b.allow(T)
        wait_for(lambda: subscribed(b), 5, "the subscription")
        a.block(T, 60, "incident")
        wait_for(lambda: isinstance(b._engine.view.decide(T), Denial), 2, "the announcement")
        assert [x.model for x in b.states()] == [T.model]
    master = secured.current_master().client()
    try:
        master.select(2)
        assert master.exists(f"{s.key_prefix}:{{openai}}:t:gpt-4o") == 1
    finally:
        master.close()

    from resilience.cli.doctor import run_checks

    checks = {c.name: c for c in run_checks(s)}
    for name in ("Redis reachable", "Redis version", "eviction policy", "scripts", "pub/sub"):
        assert checks[name].status in ("ok", "warn"), checks[name]
    assert checks["scripts"].status == "ok" and checks["pub/sub"].status == "ok"
    for node in secured.sentinels:  # the guide's sentinel user was refused nothing
        assert node.client().execute_command("ACL", "LOG") == []


def test_an_ephemeral_breaker_through_sentinels_starts_no_thread(secured: SentinelSet) -> None:
    def ours() -> set[str]:
        return {f"{t.name}-{t.ident}" for t in threading.enumerate() if "resilience" in t.name}

    before = ours()
    with Breaker.ephemeral(secured_settings(secured)) as b:
        for _ in range(5):
            b.record_failure(T, ErrorKind.SERVER_ERROR)
            b.allow(T)
        assert b.state(T).error_count == 5
        assert ours() - before == set()  # no subscriber, no flusher, no sentinel listener


def test_a_password_only_sentinel(secured: SentinelSet) -> None:
    s = secured_settings(
        secured, redis_sentinel_username="", redis_sentinel_password=SENTINEL_PASSWORD
    )
    with Breaker(s) as b:
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        assert b.state(T).error_count == 1


async def test_an_async_breaker_through_authenticated_sentinels(secured: SentinelSet) -> None:
    s = secured_settings(secured)
    async with AsyncBreaker(s) as b:
        await b.record_failure(T, ErrorKind.TIMEOUT)
        assert (await b.state(T)).error_count == 1

        @b.guard("openai", "gpt-4o")
        async def call() -> int:
            return 2

        assert await call() == 2
        assert await until(lambda: asubscribed(b), 5.0)


def test_a_wrong_sentinel_password_is_an_outage_that_never_shows_it(
    secured: SentinelSet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = secured_settings(secured, redis_sentinel_password=f"{SECRET}-wrong")
    with Breaker(s) as b:

        @b.guard("openai", "gpt-4o")
        def call() -> int:
            return 7

        assert call() == 7
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unavailable" in text
    assert SECRET not in text and PASSWORD not in text


def test_rediss_sentinel_is_tls_to_the_master_and_the_sentinels(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    master = Node(tmp_path, tls=tls)
    conf = f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
    sentinel = Node(tmp_path, sentinel=conf, tls=tls)
    try:
        url = f"rediss+sentinel://127.0.0.1:{sentinel.port}/{MASTER}/0?ssl_ca_certs={tls}/cert.pem"
        with Breaker(Settings(redis_url=url, key_prefix="tls")) as b:
            b.record_failure(T, ErrorKind.SERVER_ERROR)
            assert b.state(T).error_count == 1
            assert b.allow(T)
            wait_for(lambda: subscribed(b), 5, "the subscription over TLS")
            # the breaker's subscription to the sentinel's announcements, over TLS too
            wait_for(
                lambda: "sub=3" in str(sentinel.client().execute_command("CLIENT", "LIST")),
                5,
                "the announcements subscription",
            )
        assert master.client().hget("tls:{openai}:t:gpt-4o", "error_count") == "1"
    finally:
        sentinel.kill()
        master.kill()


# --------------------------------------------------------------------------- failovers


def subscribers(node: Any, channel: str) -> int:
    c = node.client()
    try:
        return int(dict(c.pubsub_numsub(channel))[channel])
    finally:
        c.close()


CHANNEL = "fo:transitions"


def test_a_failover_moves_the_subscription_and_reloads_the_scripts() -> None:
    group = SentinelSet()
    try:
        s = Settings(
            redis_url=group.url, key_prefix="fo", local_view_max_age_seconds=60, jitter=0.0
        )
        old = group.current_master()
        with Breaker(s) as b, Breaker(s) as other:
            assert b.allow(T) and other.allow(T)
            wait_for(
                lambda: subscribed(b) and subscribed(other) and subscribers(old, CHANNEL) == 2,
                5,
                "the subscriptions",
            )
            b.record_failure(T, ErrorKind.SERVER_ERROR)
            group.failover()
            new = wait_for(
                lambda: (
                    group.node(group.master_address()) not in (None, old) and group.current_master()
                ),
                10,
                "the new master",
            )
            # the subscriptions moved at the switch, long before the old master is demoted
            wait_for(lambda: subscribers(new, CHANNEL) == 2, 5, "subscriptions moved")
            assert subscribers(old, CHANNEL) == 0
            new.client().script_flush()  # the new master's script cache is empty

            def recorded() -> bool:
                b.record_failure(T, ErrorKind.SERVER_ERROR)
                return int(new.client().hget("fo:{openai}:t:gpt-4o", "error_count") or 0) >= 2

            wait_for(recorded, 5, "an outcome recorded on the new master")
            healthy = Target("openai", "healthy")
            assert b.allow(healthy)
            other.block(healthy, 60, "incident")
            wait_for(lambda: isinstance(b._engine.view.decide(healthy), Denial), 2, "announced")
    finally:
        group.stop()


async def test_an_async_breaker_follows_a_failover() -> None:
    group = SentinelSet()
    try:
        s = Settings(redis_url=group.url, key_prefix="afo", local_view_max_age_seconds=60)
        old = group.current_master()
        async with AsyncBreaker(s) as b:
            assert await b.allow(T)
            await until(lambda: asubscribed(b))
            await b.record_failure(T, ErrorKind.SERVER_ERROR)
            group.failover()
            new = await until(lambda: group.node(group.master_address()) not in (None, old))
            new = group.current_master()
            new.client().script_flush()  # the new master's script cache is empty

            async def recorded() -> bool:
                await b.record_failure(T, ErrorKind.SERVER_ERROR)
                return int(new.client().hget("afo:{openai}:t:gpt-4o", "error_count") or 0) >= 2

            await until(recorded)
            await until(lambda: subscribers(new, "afo:transitions") == 1)
            assert subscribers(old, "afo:transitions") == 0
    finally:
        group.stop()
