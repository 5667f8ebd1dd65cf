"""Shared fixtures: the real Redis and PostgreSQL of this machine, isolated per test.

Every test gets its own Redis key prefix (never FLUSHALL/FLUSHDB) and every run its own
PostgreSQL schema, dropped afterwards. A test that needs a service fails, never skips, when
the service is down: ``scripts/test`` starts them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from resilience import AsyncBreaker, Breaker, Settings, Target

# LiteLLM fetches its model price list from the internet when imported unless told to use
# the copy it ships; this machine reaches no such host (and tests never need it).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REDIS_URL = os.environ.get("RESILIENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "RESILIENCE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _no_lua_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A Lua error from a healthy Redis is a bug: any test that causes one fails, unless it
    is marked ``lua_error_expected``."""
    from resilience._flow import SCRIPT_ERRORS

    SCRIPT_ERRORS.clear()
    yield
    errors = list(SCRIPT_ERRORS)
    SCRIPT_ERRORS.clear()
    if request.node.get_closest_marker("lua_error_expected") is None:
        assert not errors, f"Lua errors during the test: {errors}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # fail, do not skip: scripts/test starts Redis
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); run scripts/services")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"rt-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


WARM = Target("warm", "up")


def subscribed(b: Breaker) -> bool:
    """Admits one call (the subscriber starts at a process's third admission, or once the
    breaker is a second old) and tells whether the local view's subscription is up."""
    b.allow(WARM)
    return b._engine.view.subscribed


async def asubscribed(b: AsyncBreaker) -> bool:
    """The asyncio twin of :func:`subscribed`."""
    await b.allow(WARM)
    return b._engine.view.subscribed


def make_settings(redis_url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "database_url": DATABASE_URL,
        "jitter": 0.0,
        "redis_socket_timeout": 3.0,
        # The local Redis answers in microseconds; generous bounds only keep a stalled test
        # process (a full collection late in a long run, a busy shared machine) from
        # failing a test that is not about timeouts. Tests of timeouts set their own.
        "redis_connect_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix)


@pytest.fixture
def breaker(settings: Settings) -> Iterator[Breaker]:
    with Breaker(settings) as b:
        yield b


@pytest.fixture
async def abreaker(settings: Settings) -> AsyncIterator[AsyncBreaker]:
    async with AsyncBreaker(settings) as b:
        yield b


@pytest.fixture(scope="session")
def database_url() -> str:
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:  # fail, do not skip: scripts/test starts PostgreSQL
        pytest.fail(f"PostgreSQL at {DATABASE_URL} is not reachable ({exc}); run scripts/services")
    return DATABASE_URL


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A PostgreSQL schema of this test alone, dropped afterwards."""
    name = f"rt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


class PrivateRedis:
    """A redis-server of one test, on a free loopback port: it may be stopped and restarted."""

    def __init__(self, workdir: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                client.ping()
                client.close()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def commands(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT (INFO commandstats)."""
        client = redis.Redis(port=self.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def reset_stats(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.config_resetstat()
        finally:
            client.close()


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[PrivateRedis]:
    server = PrivateRedis(str(tmp_path))
    server.start()
    yield server
    server.stop()
