"""Fail-open: Redis down, black-holed or restarting never breaks a provider call."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from resilience import (
    AsyncBreaker,
    Breaker,
    CircuitOpenError,
    ErrorKind,
    Settings,
    StoreUnavailableError,
    Target,
)
from resilience._types import Denial
from tests.conftest import PrivateRedis, subscribed

T = Target("openai", "gpt-4o")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quick(url: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": url,
        "key_prefix": "failopen",
        "redis_socket_timeout": 0.1,
        "redis_connect_timeout": 0.1,
        "store_retry_seconds": 0.2,
        "failure_threshold": 3,
        "open_seconds": 30,
        "jitter": 0.0,
    }
    values.update(kw)
    return Settings(**values)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"
    stop.set()
    th.join()
    for c in conns:
        c.close()
    srv.close()


class Errors:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_store_error(self, e: Any) -> None:
        self.events.append(e)


@pytest.mark.parametrize("where", ["refused", "black_hole"])
def test_calls_go_ahead_when_redis_is_unreachable(where: str, black_hole: str) -> None:
    url = black_hole if where == "black_hole" else f"redis://127.0.0.1:{free_port()}/0"
    errors = Errors()
    with Breaker(quick(url), hooks=[errors]) as b:

        @b.guard("openai", "gpt-4o")
        def call(x: int) -> int:
            return x

        assert [call(i) for i in range(50)] == list(range(50))
        # after a failure Redis is left alone for store_retry_seconds: far fewer store
        # attempts (each one a timeout or a refusal) than calls
        assert 1 <= len(errors.events) < 25
        assert errors.events[0].operation in ("allow", "record")
        with pytest.raises(StoreUnavailableError):
            b.state(T)


def test_provider_exception_is_never_replaced(black_hole: str) -> None:
    with Breaker(quick(black_hole)) as b:

        class Boom(Exception):
            pass

        @b.guard("openai", "gpt-4o")
        def call() -> None:
            raise Boom("provider said no")

        with pytest.raises(Boom, match="provider said no"):
            call()


def test_in_process_breaker_protects_while_redis_is_down() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with Breaker(quick(url)) as b:
        for _ in range(3):
            assert b.allow(T)
            b.record_failure(T, ErrorKind.SERVER_ERROR)
        assert not b.allow(T)  # tripped in memory
        assert b.allow(Target("openai", "other"))


def test_strict_mode_denies_when_redis_is_down() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with Breaker(quick(url, fail_mode="closed")) as b:

        @b.guard("openai", "gpt-4o")
        def call() -> int:
            return 1

        with pytest.raises(CircuitOpenError, match="store unavailable"):
            call()


async def test_async_calls_go_ahead_when_redis_is_unreachable(black_hole: str) -> None:
    async with AsyncBreaker(quick(black_hole)) as b:

        @b.guard("openai", "gpt-4o")
        async def call(x: int) -> int:
            return x

        assert [await call(i) for i in range(20)] == list(range(20))


def test_recovers_after_redis_restart(private_redis: PrivateRedis) -> None:
    s = quick(private_redis.url, failure_threshold=2)
    with Breaker(s) as b:
        b.record_failure(T, ErrorKind.SERVER_ERROR)
        assert b.state(T).error_count == 1

        private_redis.stop()
        for _ in range(5):  # calls keep going, nothing raises
            assert b.allow(T) in (True, False)
            b.record_success(T)

        private_redis.start()  # empty: the scripts are gone too (NOSCRIPT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            b.record_failure(T, ErrorKind.SERVER_ERROR)
            try:
                if b.state(T).error_count >= 2:
                    break
            except StoreUnavailableError:
                pass
            time.sleep(0.1)
        st = b.state(T)
        assert st.error_count >= 2 and st.state == "open"
        assert not b.allow(T)


def test_subscription_recovers_after_restart(private_redis: PrivateRedis) -> None:
    s = quick(private_redis.url, local_view_max_age_seconds=60)
    with Breaker(s) as a, Breaker(s) as b:
        assert b.allow(T)  # starts b's subscriber
        wait_for(lambda: subscribed(b))
        private_redis.stop()
        wait_for(lambda: not b._engine.view.subscribed)
        private_redis.start()
        wait_for(lambda: subscribed(b))
        assert b.allow(T)  # healthy again, cached locally
        a.block(T, 60, "after restart")
        # only the pub/sub message can tell b: its entry is trusted for 60 s
        wait_for(lambda: isinstance(b._engine.view.decide(T), Denial))
        assert not b.allow(T)


def wait_for(cond: Any, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")
