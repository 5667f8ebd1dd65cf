"""What the benchmark and fault scripts share: a private redis-server on loopback.

Not part of the package; imported by the scripts next to it (``python scripts/x.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of one script alone (loopback, a free port, its own directory), so
    INFO commandstats counts exactly what the script causes, and faults harm nobody else.

    Args:
        aof: keep an append-only file (``appendfsync always``) so a restart after ``kill``
            finds the data again.
    """

    def __init__(self, *, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="resilience-redis-")
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                self.client().ping()
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no save."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def wipe(self) -> None:
        """Removes the data directory's content (a restart then starts empty)."""
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def commands(self) -> dict[str, int]:
        """Calls per command since the last :meth:`reset_stats` (INFO commandstats)."""
        c = self.client()
        try:
            stats = c.info("commandstats")
        finally:
            c.close()
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def usec(self) -> dict[str, int]:
        """Server microseconds per command since the last :meth:`reset_stats`."""
        c = self.client()
        try:
            stats = c.info("commandstats")
        finally:
            c.close()
        return {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()}

    def reset_stats(self) -> None:
        c = self.client()
        try:
            c.config_resetstat()
        finally:
            c.close()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
