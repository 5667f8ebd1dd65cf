"""The scale-out path: the same breaker on a real 3-node Redis Cluster on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from resilience import AsyncBreaker, Breaker, ErrorKind, Settings, Target
from resilience._keys import KeySpace
from tests.conftest import asubscribed, subscribed


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        # cluster bus ports are port + 10000: keep them below 65536
        ports = [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
    if any(p + 10000 > 65535 for p in ports):
        return free_ports(n)
    return ports


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is needed to create the test cluster")
    base: Path = tmp_path_factory.mktemp("cluster")
    ports = free_ports(3)
    procs = []
    for port in ports:
        d = base / str(port)
        d.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--dir", str(d), "--save", "", "--appendonly", "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    try:
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).ping())
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for port in ports:
            _wait(lambda p=port: _cluster_ok(p))
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER INFO")
    return "cluster_state:ok" in str(info) or (
        isinstance(info, dict) and info.get("cluster_state") == "ok"
    )


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the test cluster did not come up")


CLUSTER_EXTRA = ["+command", "+cluster|slots"]

PROVIDERS = ["openai", "anthropic", "gemini", "groq", "mistral", "bedrock"]


def test_keys_of_a_provider_share_a_slot_and_providers_spread() -> None:
    keys = KeySpace("pfx")
    slots = set()
    for provider in PROVIDERS:
        own = {key_slot(k.encode()) for k in keys.script_keys(Target(provider, "m/x:y{z}"))}
        assert len(own) == 1
        slots |= own
    assert len(slots) == len(PROVIDERS)


def test_breaker_on_a_cluster(cluster_url: str) -> None:
    s = Settings(redis_url=cluster_url, redis_cluster=True, key_prefix="cl1", open_seconds=30)
    with Breaker(s) as b:
        for provider in PROVIDERS:
            t = Target(provider, "model")
            for _ in range(5):
                b.record_failure(t, ErrorKind.SERVER_ERROR)
            assert b.state(t).state == "open"
            assert not b.allow(t)
        states = b.states()
        assert {x.provider for x in states} == set(PROVIDERS)
        assert all(x.state == "open" and x.error_count == 5 for x in states)
        assert sorted(b.providers()) == sorted(PROVIDERS)
        assert len(b.events()) == len(PROVIDERS)
        b.unblock(Target("openai", "model"))
        assert b.allow(Target("openai", "model"))

        @b.guard("gemini", "healthy")
        def call() -> int:
            return 1

        assert call() == 1
        _wait(lambda: subscribed(b))
        assert b.state(Target("gemini", "healthy")).success_count == 1
    client = RedisCluster.from_url(cluster_url)
    for key in client.scan_iter(match="cl1:*"):
        client.delete(key)
    client.close()


def test_probe_and_pubsub_on_a_cluster(cluster_url: str) -> None:
    s = Settings(
        redis_url=cluster_url,
        redis_cluster=True,
        key_prefix="cl2",
        failure_threshold=1,
        open_seconds=0.3,
        local_view_max_age_seconds=60,
    )
    t = Target("anthropic", "claude")
    with Breaker(s) as a, Breaker(s) as b:
        assert b.allow(t)
        _wait(lambda: subscribed(b))
        assert b.allow(t)
        a.record_failure(t, ErrorKind.OVERLOADED)
        _wait(lambda: not b.allow(t), timeout=2.0)  # the announcement reached b
        time.sleep(0.35)
        answers = [a.allow(t), b.allow(t), a.allow(t)]
        assert answers.count(True) == 1


async def test_async_breaker_on_a_cluster(cluster_url: str) -> None:
    s = Settings(redis_url=cluster_url, redis_cluster=True, key_prefix="cl3")
    async with AsyncBreaker(s) as b:
        for provider in PROVIDERS:
            await b.record_failure(Target(provider, "m"), ErrorKind.TIMEOUT)
        states = await b.states()
        assert {x.provider for x in states} == set(PROVIDERS)

        @b.guard("openai", "m")
        async def call() -> int:
            return 2

        assert await call() == 2
        assert (await b.state(Target("openai", "m"))).success_count == 1
        for _ in range(300):
            if await asubscribed(b):
                break
            await asyncio.sleep(0.01)
        assert b._engine.view.subscribed


def test_doctor_on_a_cluster(cluster_url: str) -> None:
    from resilience.cli.doctor import run_checks

    prefix = f"doc-{time.monotonic_ns() % 10**8}"
    settings = Settings(redis_url=cluster_url, redis_cluster=True, key_prefix=prefix)
    with Breaker(settings) as b:
        b.record_success(Target("openai", "gpt-4o"))
    checks = {c.name: c for c in run_checks(settings)}
    for name in ("Redis reachable", "Redis version", "eviction policy", "scripts", "pub/sub"):
        assert checks[name].status == "ok", checks[name]
    assert checks["learning"].status == "ok"
    client = RedisCluster.from_url(cluster_url)
    try:
        everywhere = RedisCluster.ALL_NODES
        assert list(client.scan_iter(match=f"{prefix}:*", target_nodes=everywhere))  # scan works
        left = list(client.scan_iter(match=f"{prefix}.doctor-*", target_nodes=everywhere))
    finally:
        client.close()
    assert left == []  # the scratch keys are gone from every node


def test_the_guides_acl_user_on_a_cluster(cluster_url: str) -> None:
    """The ACL line of docs/managed-redis.md, with what cluster mode adds."""
    from tests.test_acl import APP_PASSWORD, GUIDE, acl_line

    assert f"`{' '.join(CLUSTER_EXTRA)}`" in GUIDE.read_text()
    prefix = f"aclc{time.monotonic_ns() % 10**8}"
    line = [*acl_line(prefix, APP_PASSWORD).split(), *CLUSTER_EXTRA]
    admin = RedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        for node in admin.get_nodes():
            c = admin.get_redis_connection(node)
            c.execute_command("ACL", "DELUSER", "resilience")
            c.execute_command(*line)
            c.execute_command("ACL", "LOG", "RESET")
        port = int(cluster_url.rsplit(":", 1)[1].split("/")[0])
        url = f"redis://resilience:{APP_PASSWORD}@127.0.0.1:{port}/0"
        s = Settings(redis_url=url, redis_cluster=True, key_prefix=prefix)
        with Breaker(s) as a, Breaker(s) as b:
            for provider in PROVIDERS:
                a.record_failure(Target(provider, "m"), ErrorKind.SERVER_ERROR)
            assert {x.provider for x in a.states()} == set(PROVIDERS)
            assert b.allow(Target("openai", "healthy"))
            _wait(lambda: subscribed(b))
            a.block(Target("openai", "healthy"), 60, "acl")
            _wait(lambda: not b.allow(Target("openai", "healthy")), timeout=2.0)
        refused = []
        for node in admin.get_nodes():
            refused += admin.get_redis_connection(node).execute_command("ACL", "LOG")
        assert refused == [], refused
    finally:
        for node in admin.get_nodes():
            admin.get_redis_connection(node).execute_command("ACL", "DELUSER", "resilience")
        for key in admin.scan_iter(match=f"{prefix}:*", target_nodes=RedisCluster.ALL_NODES):
            admin.delete(key)
        admin.close()


def test_the_snapshot_lock_on_a_cluster(cluster_url: str) -> None:
    from resilience._snapshot import LeaderLock

    s = Settings(redis_url=cluster_url, redis_cluster=True, key_prefix="lock-cl")
    with LeaderLock(s) as a, LeaderLock(s) as b:
        assert a.acquire()
        assert not b.acquire()
        a.release()
        assert b.acquire()


def test_snapshot_on_a_cluster(cluster_url: str, pg_schema: str) -> None:
    from resilience._db import upgrade
    from resilience._snapshot import take_snapshot

    s = Settings(
        redis_url=cluster_url,
        redis_cluster=True,
        key_prefix="cl-snap",
        database_schema=pg_schema,
        local_view=False,
    )
    upgrade(s)
    try:
        with Breaker(s) as b:
            for i, provider in enumerate(PROVIDERS):
                for m in range(3):
                    b.record_success(Target(provider, f"model-{m}"))
                    if m == i % 3:
                        for _ in range(5):
                            b.record_failure(Target(provider, f"model-{m}"), ErrorKind.TIMEOUT)
            first = take_snapshot(b, s)  # the leader lock and the reads go through the cluster
            assert first.written and first.keyframe
            assert (first.targets, first.history_rows, first.transitions) == (18, 18, 6)
            b.record_success(Target("openai", "model-1"))
            second = take_snapshot(b, s)
            assert (second.targets, second.history_rows, second.hint_rows) == (18, 1, 1)
            expected = {(x.provider, x.model): (x.state, x.error_count) for x in b.states()}
            from resilience._status import list_targets

            page = list_targets(b, sort="errors", limit=4, offset=2)  # status, paged
            assert (page.matched, page.blocked, len(page.states)) == (18, 6, 4)
            assert [x.error_count for x in page.states] == [5, 5, 5, 5]
        import psycopg
        from psycopg import sql

        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
            rows = conn.execute(
                "SELECT provider_id, model_id, state, error_count FROM model_compatibility_hints"
            ).fetchall()
        assert {(p, m): (st, e) for p, m, st, e in rows} == expected
    finally:
        client = RedisCluster.from_url(cluster_url)
        for key in client.scan_iter(match="cl-snap:*"):
            client.delete(key)
        client.close()
