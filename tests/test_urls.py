"""Any redis-py URL works: ACL users and passwords, a database number, rediss:// TLS; no
password ever reaches a log line."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from resilience import Breaker, ErrorKind, Settings, Target
from tests.ha import self_signed

T = Target("openai", "gpt-4o")
SECRET = "s3cr3t-Pa55word"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], check: redis.Redis) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            check.ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    check = redis.Redis(port=port, username="worker", password=SECRET, socket_timeout=1)
    proc = start(
        [
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
            "--user", "default", "off",
            "--user", "worker", "on", f">{SECRET}", "~*", "&*", "+@all",
        ],
        check,
    )  # fmt: skip
    yield port
    proc.kill()
    proc.wait()


def test_acl_user_password_and_database_number(
    acl_redis: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://worker:{SECRET}@127.0.0.1:{acl_redis}/3"
    with Breaker(Settings(redis_url=url, key_prefix="acl")) as b:
        b.record_failure(T, ErrorKind.TIMEOUT)
        assert b.state(T).error_count == 1
    client = redis.Redis(port=acl_redis, username="worker", password=SECRET, db=3)
    assert client.exists("acl:{openai}:t:gpt-4o") == 1
    assert redis.Redis(port=acl_redis, username="worker", password=SECRET, db=0).dbsize() == 0

    # a wrong password: calls go on, and the warning shows no password
    bad = f"redis://worker:{SECRET}-wrong@127.0.0.1:{acl_redis}/3"
    with Breaker(Settings(redis_url=bad, key_prefix="acl")) as b:

        @b.guard("openai", "gpt-4o")
        def call() -> int:
            return 7

        assert call() == 7
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unavailable" in text
    assert SECRET not in text
    assert repr(Settings(redis_url=bad)).count(SECRET) == 0


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert = self_signed(tmp_path) / "cert.pem"
    key = tmp_path / "key.pem"
    port = free_port()
    check = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert), socket_timeout=1
    )
    proc = start(
        [
            "--port", "0", "--tls-port", str(port), "--dir", str(tmp_path),
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        ],
        check,
    )  # fmt: skip
    yield port, cert
    proc.kill()
    proc.wait()


def test_rediss_tls(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    with Breaker(Settings(redis_url=url, key_prefix="tls")) as b:
        for _ in range(5):
            b.record_failure(T, ErrorKind.SERVER_ERROR)
        st = b.state(T)
        assert st.state == "open" and st.error_count == 5
        assert not b.allow(T)
