"""Real Redis topologies under load, shared by the failover and replay tests and by
``scripts/failover`` (which prints the same measurements as a table).

* :class:`Node`: one ``redis-server`` (or sentinel) of its own on a free loopback port.
* :class:`SentinelSet`: a master, a replica and three sentinels.
* :class:`ClusterSet`: a Redis Cluster of three masters with a replica each.
* :func:`run_fleet`: worker processes (half with ``Breaker``, half with ``AsyncBreaker``)
  making guarded calls in a loop (a healthy target, a failing one that never trips, one an
  operator blocked for the whole run) while a fault is injected, and what they saw.

Nothing here is mocked: the servers are real, and so are the processes and failovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from resilience import AsyncBreaker, Breaker, CircuitOpenError, Settings, Target

PROVIDER = "ha"
HEALTHY = Target(PROVIDER, "healthy")
FAILING = Target(PROVIDER, "failing")
BLOCKED = Target(PROVIDER, "blocked")
PREFIX = "ha-"
"""Each run's key prefix starts so (and ends with a random part)."""
MASTER = "mymaster"


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is valid too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536:
            return port


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``cond`` every 20 ms until it returns something true (Redis errors count as
    not yet); raises ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            value = cond()
            if value:
                return value
        time.sleep(0.02)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def self_signed(directory: Path) -> Path:
    """Makes ``cert.pem`` and ``key.pem`` for 127.0.0.1 in ``directory`` (the certificate is
    its own CA); returns ``directory``."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make a test certificate")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return directory


class Node:
    """One redis-server of its own (loopback, a free port, its own directory).

    Args:
        base: the directory to make the node's directory in.
        args: extra ``redis-server`` arguments.
        sentinel: run as a sentinel with this configuration (the port line is added).
        aof: keep an append-only file (``appendfsync always``) so a restart after
            :meth:`kill` finds the data again.
        auth: the (user, password) :meth:`client` logs in with.
        tls: a certificate made by :func:`self_signed`: the node then speaks TLS only
            (clients and replication).
    """

    def __init__(
        self,
        base: Path,
        *args: str,
        sentinel: str | None = None,
        aof: bool = False,
        auth: tuple[str | None, str] | None = None,
        tls: Path | None = None,
    ) -> None:
        self.auth = auth
        self.tls = tls
        self.port = free_port()
        self.dir = base / str(self.port)
        self.dir.mkdir(parents=True)
        self.args = list(args)
        self.sentinel = sentinel
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _ports(self) -> list[str]:
        if self.tls is None:
            return ["port", str(self.port)]
        return [
            "port", "0", "tls-port", str(self.port),
            "tls-cert-file", str(self.tls / "cert.pem"), "tls-key-file", str(self.tls / "key.pem"),
            "tls-ca-cert-file", str(self.tls / "cert.pem"), "tls-auth-clients", "no",
            "tls-replication", "yes",
        ]  # fmt: skip

    def start(self) -> None:
        ports = self._ports()
        if self.sentinel is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # a restart keeps what the sentinel rewrote
                lines = [f"{k} {v}" for k, v in zip(ports[::2], ports[1::2], strict=True)]
                conf.write_text("\n".join([*lines, "bind 127.0.0.1", self.sentinel]))
            argv = ["redis-server", str(conf), "--sentinel"]
        else:
            argv = [
                "redis-server", *[f"--{p}" if i % 2 == 0 else p for i, p in enumerate(ports)],
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always", "--dir", str(self.dir),
                "--repl-diskless-sync-delay", "0", *self.args,
            ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: self.client().ping(), 10, f"redis-server on port {self.port} started")

    def client(self, socket_timeout: float = 2.0) -> redis.Redis:
        user, password = self.auth or (None, None)
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls / "cert.pem")}
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=user,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            decode_responses=True,
            **tls,
        )

    def holds(self, key: str) -> bool:
        """Whether this node has ``key`` (a cluster replica is asked with READONLY)."""
        c = self.client()
        try:
            with contextlib.suppress(redis.ResponseError):  # not a cluster node
                c.execute_command("READONLY")
            return bool(c.exists(key))
        finally:
            c.close()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no save."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def wipe(self) -> None:
        """Removes the node's data (a restart then starts empty)."""
        for path in self.dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != "sentinel.conf":
                path.unlink()

    def calls(self, command: str = "evalsha") -> int:
        """How often this node ran ``command`` (INFO commandstats); -1 when unreachable."""
        c = self.client(socket_timeout=0.5)
        try:
            stats = c.info("commandstats")
            return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        except redis.RedisError:
            return -1
        finally:
            c.close()


USER, PASSWORD = "worker", "w0rker-Pa55"
"""The ACL user of the master and replica of ``SentinelSet(auth=True)``."""
SENTINEL_PASSWORD = "s3ntinel-Pa55"
"""The sentinels' ``requirepass`` with ``SentinelSet(auth=True)``."""


class SentinelSet:
    """A master, one replica and three sentinels (quorum 2, a master is down after 1 s).

    With ``auth``, the master and replica accept only the ACL user :data:`USER` and the
    sentinels require :data:`SENTINEL_PASSWORD` (their default user's); ``sentinel_users``
    are more ``user ...`` lines for the sentinels' configuration.
    """

    def __init__(self, *, auth: bool = False, sentinel_users: tuple[str, ...] = ()) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="resilience-sentinel-"))
        self.auth = auth
        args: list[str] = []
        conf = ""
        if auth:
            args = ["--user", "default", "off", "--user", USER, "on", f">{PASSWORD}", "~*", "&*"]
            args += ["+@all", "--masteruser", USER, "--masterauth", PASSWORD]
            conf = f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
        conf += "".join(f"{line}\n" for line in sentinel_users)
        data = (USER, PASSWORD) if auth else None
        try:
            self.master = Node(self.base, *args, auth=data)
            self.replica = Node(
                self.base, "--replicaof", "127.0.0.1", str(self.master.port), *args, auth=data
            )
            conf += (
                f"dir {self.base}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            if auth:
                conf += (
                    f"sentinel auth-user {MASTER} {USER}\nsentinel auth-pass {MASTER} {PASSWORD}\n"
                )
            secret = (None, SENTINEL_PASSWORD) if auth else None
            self.sentinels = [Node(self.base, sentinel=conf, auth=secret) for _ in range(3)]
            wait_for(self._ready, 30, "the sentinels agreeing on a master and a replica")
        except BaseException:
            self.stop()
            raise

    @property
    def nodes(self) -> list[Node]:
        return [self.master, self.replica]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        user = f"{USER}:{PASSWORD}@" if self.auth else ""
        return f"redis+sentinel://{user}{hosts}/{MASTER}/0"

    def _ready(self) -> bool:
        for s in self.sentinels:
            c = s.client()
            try:
                m = c.execute_command("SENTINEL", "MASTER", MASTER)
                state = dict(zip(m[::2], m[1::2], strict=True)) if isinstance(m, list) else m
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
                replicas = c.execute_command("SENTINEL", "REPLICAS", MASTER)
                if not any("master-link-status" in str(r) and "ok" in str(r) for r in replicas):
                    return False
            finally:
                c.close()
        return True

    def master_address(self) -> tuple[str, int] | None:
        """What the first sentinel that answers says the master is."""
        for s in self.sentinels:
            c = s.client(socket_timeout=0.5)
            try:
                host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                return str(host), int(port)
            except (redis.RedisError, TypeError, ValueError):
                continue
            finally:
                c.close()
        return None

    def node(self, address: tuple[str, int] | None) -> Node | None:
        return next((n for n in self.nodes if n.address == address), None)

    def current_master(self) -> Node:
        node = self.node(self.master_address())
        assert node is not None, "the sentinels name no known master"
        return node

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: the sentinels promote the replica of a live master."""
        c = self.sentinels[0].client()
        try:
            c.execute_command("SENTINEL", "FAILOVER", MASTER)
        finally:
            c.close()

    def stop(self) -> None:
        for node in [*getattr(self, "sentinels", []), *self.nodes_started()]:
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def nodes_started(self) -> list[Node]:
        return [n for n in (getattr(self, "master", None), getattr(self, "replica", None)) if n]


class ClusterSet:
    """A Redis Cluster of three masters with one replica each (node timeout 1 s)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="resilience-cluster-"))
        self.all: list[Node] = []
        try:
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "1000"]
            for _ in range(6):
                self.all.append(Node(self.base, *args))
            subprocess.run(
                ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.all],
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
            wait_for(self._ready, 30, "the cluster being ok with a replica per master")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for node in self.all:
            info = node.client().execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" not in str(info):
                return False
        roles = [str(n.client().execute_command("ROLE")[0]) for n in self.all]
        replicas = [n for n in self.all if n.client().execute_command("ROLE")[0] == "slave"]
        linked = all(
            n.client().info("replication").get("master_link_status") == "up" for n in replicas
        )
        return roles.count("master") == 3 and roles.count("slave") == 3 and linked

    @property
    def slot(self) -> int:
        from redis.cluster import key_slot

        return int(key_slot(f"{{{PROVIDER}}}".encode()))

    def owner(self) -> Node:
        """The master serving the provider's slot now."""
        for node in self.all:
            with contextlib.suppress(redis.RedisError):
                c = node.client(socket_timeout=0.5)
                try:
                    for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                        if int(start) <= self.slot <= int(end):
                            return self.by_port(int(master[1]))
                finally:
                    c.close()
        raise RuntimeError("no node answers CLUSTER SLOTS")

    def by_port(self, port: int) -> Node:
        return next(n for n in self.all if n.port == port)

    def replica_of(self, master: Node) -> Node:
        for n in self.all:
            if n is master or n.proc is None:
                continue
            role = n.client().execute_command("ROLE")
            if role[0] == "slave" and int(role[2]) == master.port:
                return n
        raise RuntimeError(f"no replica of {master.port}")

    def url_avoiding(self, *avoid: Node) -> str:
        """A node URL to start from that is none of ``avoid``."""
        node = next(n for n in self.all if n not in avoid and n.proc is not None)
        return node.url

    def client(self) -> Any:
        from redis.cluster import RedisCluster

        start = next(n for n in self.all if n.proc is not None)
        return RedisCluster(host="127.0.0.1", port=start.port, decode_responses=True)

    def stop(self) -> None:
        for node in self.all:
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class Endpoint:
    """A TCP name for "the primary", like a managed service's primary endpoint: a proxy
    whose new connections go to :attr:`upstream` (anything with a ``port``: a :class:`Node`,
    a benchmark's server), while a connection made before it moved stays with the node it
    reached (as a TCP connection outlives a DNS change). While :attr:`black` is set it
    black-holes: accepts and reads, never answers."""

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.black = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            port = self.upstream.port
            threading.Thread(target=self._pipe, args=(client, port), daemon=True).start()

    def _pipe(self, client: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            client.close()
            return
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if not self.black.is_set():
                        pair[s].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


# --------------------------------------------------------------------------- the fleet


class ProviderError(Exception):
    """The provider's own error (a 500)."""

    status_code = 500


@dataclass
class Counts:
    """What one worker saw. ``phase`` 0 is before the fault, 1 from the fault on."""

    successes: list[int] = field(default_factory=lambda: [0, 0])
    failures: list[int] = field(default_factory=lambda: [0, 0])
    refused_blocked: int = 0
    admitted_to_open: int = 0
    foreign: int = 0
    foreign_names: list[str] = field(default_factory=list)
    last_in_process: float = 0.0  # time.monotonic() of the last call decided in-process
    dropped: int = 0  # outcomes the bounded outage sums dropped
    store_errors: dict[str, int] = field(default_factory=dict)  # "operation kind": count

    def on_store_error(self, e: Any) -> None:  # a hook of the worker's breaker
        key = f"{e.operation} {e.kind}"
        self.store_errors[key] = self.store_errors.get(key, 0) + 1


def _unfollowed(follow: bool) -> None:
    """Unless ``follow``, breakers ignore the sentinels' announcements (redis-py's
    Sentinel support alone), for comparison."""
    if not follow:
        from resilience._io import AsyncIO, SyncIO

        SyncIO._follow = AsyncIO._follow = lambda self: None  # type: ignore[method-assign]


def _settings(url: str, cluster: bool, prefix: str) -> Settings:
    return Settings(
        redis_url=url,
        redis_cluster=cluster,
        key_prefix=prefix,
        failure_threshold=10**6,
        failure_rate_threshold=1.0,
        min_calls=10**6,
        redis_socket_timeout=0.25,
        redis_connect_timeout=0.25,
        store_retry_seconds=0.25,
    )


class _Tally:
    def __init__(self, counts: Counts, fault: Any, breaker: Any) -> None:
        self.c = counts
        self.fault = fault
        self.engine = breaker._engine

    def done(self, what: str, outcome: str | BaseException | None, in_process: bool) -> None:
        c = self.c
        phase = 1 if self.fault.is_set() else 0
        if in_process:
            c.last_in_process = time.monotonic()
        if isinstance(outcome, ProviderError):
            c.failures[phase] += 1
        elif isinstance(outcome, CircuitOpenError):
            if what == "blocked":
                c.refused_blocked += 1
            else:
                c.foreign += 1
                c.foreign_names.append(f"CircuitOpenError for the {what} target")
        elif isinstance(outcome, BaseException):
            c.foreign += 1
            c.foreign_names.append(type(outcome).__name__)
        elif what == "blocked":
            c.admitted_to_open += 1
        else:
            c.successes[phase] += 1

    def in_process(self) -> bool:
        return self.engine.health.down_since is not None


def _sync_worker(
    url: str, cluster: bool, prefix: str, follow: bool, stop: Any, fault: Any, out: Any, ready: Any
) -> None:
    _unfollowed(follow)
    counts = Counts()
    with Breaker(_settings(url, cluster, prefix), hooks=[counts]) as b:
        tally = _Tally(counts, fault, b)

        @b.guard(HEALTHY.provider, HEALTHY.model)
        def healthy() -> int:
            return 1

        @b.guard(FAILING.provider, FAILING.model)
        def failing() -> int:
            raise ProviderError("upstream 500")

        @b.guard(BLOCKED.provider, BLOCKED.model)
        def blocked() -> int:
            return 1

        calls = [(healthy, "healthy"), (failing, "failing"), (blocked, "blocked")]
        i = 0
        while not stop.is_set():
            fn, what = calls[i % 3]
            i += 1
            if i == 4:
                ready.put(1)  # every target seen once: the worker knows what Redis knows
            outcome: Any = None
            try:
                fn()
            except Exception as exc:
                outcome = exc
            tally.done(what, outcome, tally.in_process())
            time.sleep(0.002)
        counts.dropped = b._engine.pending.dropped
    out.put(counts)


def _async_worker(
    url: str, cluster: bool, prefix: str, follow: bool, stop: Any, fault: Any, out: Any, ready: Any
) -> None:
    _unfollowed(follow)
    counts = Counts()

    async def main() -> None:
        async with AsyncBreaker(_settings(url, cluster, prefix), hooks=[counts]) as b:
            tally = _Tally(counts, fault, b)

            @b.guard(HEALTHY.provider, HEALTHY.model)
            async def healthy() -> int:
                return 1

            @b.guard(FAILING.provider, FAILING.model)
            async def failing() -> int:
                raise ProviderError("upstream 500")

            @b.guard(BLOCKED.provider, BLOCKED.model)
            async def blocked() -> int:
                return 1

            calls = [(healthy, "healthy"), (failing, "failing"), (blocked, "blocked")]
            i = 0
            while not stop.is_set():
                fn, what = calls[i % 3]
                i += 1
                if i == 4:
                    ready.put(1)
                outcome: Any = None
                try:
                    await fn()
                except Exception as exc:
                    outcome = exc
                tally.done(what, outcome, tally.in_process())
                await asyncio.sleep(0.002)
            counts.dropped = b._engine.pending.dropped

    asyncio.run(main())
    out.put(counts)


@dataclass
class Outcome:
    """What a fleet run under one fault measured."""

    workers: list[Counts]
    fault_at: float  # time.monotonic() when the fault was injected
    ended_at: float  # when the fault's injection returned (a restarted server answers)
    switched_at: float | None  # when Redis (sentinels, cluster) named the new master
    old_master_last_write: float | None  # last script the old master ran (it stayed up)
    recorded: int  # outcomes the counters in Redis hold at the end
    recorded_at_fault: int | None = None  # what Redis held when the fault began
    stopped_at: float = 0.0  # when the workers were told to stop

    @property
    def made(self) -> int:
        return sum(sum(w.successes) + sum(w.failures) for w in self.workers)

    @property
    def made_after_fault(self) -> int:
        return sum(w.successes[1] + w.failures[1] for w in self.workers)

    @property
    def lost(self) -> int:
        return self.made - self.recorded

    @property
    def foreign(self) -> int:
        return sum(w.foreign for w in self.workers)

    @property
    def foreign_names(self) -> list[str]:
        return sorted({n for w in self.workers for n in w.foreign_names})

    @property
    def admitted_to_open(self) -> int:
        return sum(w.admitted_to_open for w in self.workers)

    @property
    def dropped(self) -> int:
        return sum(w.dropped for w in self.workers)

    @property
    def redis_failover_s(self) -> float | None:
        """From the fault until Redis named the new master (s)."""
        return None if self.switched_at is None else self.switched_at - self.fault_at

    @property
    def recovery_s(self) -> float:
        """From the fault until calls are decided by the new master again: its promotion,
        and the last call decided otherwise (in-process, or by the old master) (s)."""
        last = max(
            [w.last_in_process for w in self.workers]
            + [self.old_master_last_write or 0.0, self.switched_at or 0.0]
        )
        return max(0.0, last - self.fault_at)

    @property
    def back_s(self) -> float:
        """From the end of the fault (a restarted server answering) until the last call
        decided in-process (s)."""
        last = max(w.last_in_process for w in self.workers)
        return max(0.0, last - self.ended_at)

    @property
    def run_s(self) -> float:
        """How long the workers ran from the fault on (s)."""
        return self.stopped_at - self.fault_at

    def made_in(self, seconds: float) -> int:
        """The outcomes the fleet made in ``seconds`` after the fault, at its average rate."""
        return int(self.made_after_fault / max(self.run_s, 0.001) * seconds) + 1

    @property
    def twice_bound(self) -> int:
        """Most outcomes a crash may count twice (a write applied whose reply was lost): one
        round trip per process, its calls and at most one merge of one flush interval
        (``success_flush_seconds``, 1 s here) of its successes."""
        return self.made_in(1.0) + len(self.workers)


def counts_in(client: Any, prefix: str) -> int:
    """The outcomes the Redis counters of ``prefix`` hold (successes of the healthy target,
    failures of the failing one)."""
    key = f"{prefix}:{{{PROVIDER}}}:t:"
    healthy = client.hget(key + HEALTHY.model, "success_count")
    failing = client.hget(key + FAILING.model, "error_count")
    return int(healthy or 0) + int(failing or 0)


class _Watcher:
    """Polls, in a thread, who the master is (``switched``) and when the old master last
    ran a script (it may stay up: a failover of a live master)."""

    def __init__(self, new_master: Callable[[], bool], old: Node | None) -> None:
        self.new_master = new_master
        self.old = old
        self.switched_at: float | None = None
        self.last_write: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        calls = self.old.calls() if self.old is not None else -1
        while not self._stop.wait(0.02):
            if self.switched_at is None:
                with contextlib.suppress(redis.RedisError, OSError):
                    if self.new_master():
                        self.switched_at = time.monotonic()
            if self.old is not None and self.old.proc is not None:
                now = self.old.calls()
                if now > calls >= 0:
                    self.last_write = time.monotonic()
                calls = now if now >= 0 else calls

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _kind(i: int) -> str:
    only = os.environ.get("RESILIENCE_TEST_WORKERS", "")
    return only or ("sync" if i % 2 == 0 else "async")


def run_fleet(
    url: str,
    fault: Callable[[], None],
    read_counts: Callable[[str], int],
    *,
    cluster: bool = False,
    workers: int = 4,
    new_master: Callable[[], bool] | None = None,
    old_master: Node | None = None,
    before_fault: Callable[[str], int] | None = None,
    replicas: Callable[[], list[Node]] = lambda: [],
    follow: bool = True,
    warm_s: float = 1.0,
    after_s: float = 2.0,
) -> Outcome:
    """Runs ``workers`` processes (even ones ``Breaker``, odd ones ``AsyncBreaker``) against
    ``url``, injects ``fault`` after ``warm_s`` and lets them run ``after_s`` more once it
    returned; then stops them (each closes its breaker, writing what it summed) and reads
    what Redis holds with ``read_counts(prefix)`` (the run's own key prefix). With
    ``new_master`` (whether Redis names the new master yet), ``after_s`` counts from the
    switch.

    ``before_fault(prefix)`` runs just before the fault and returns what Redis held then;
    ``old_master`` is watched for the last script it ran; the workers start once the
    ``replicas()`` have the operator's block. ``follow=False``: the workers ignore the
    sentinels' announcements (for comparison).
    """
    prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    with Breaker(_settings(url, cluster, prefix).model_copy(update={"local_view": False})) as admin:
        admin.block(BLOCKED, 3600, "blocked for the whole run")
    key = f"{prefix}:{{{PROVIDER}}}:t:{BLOCKED.model}"
    for node in replicas():  # the block is on the replicas too before anything fails over
        wait_for(lambda n=node: n.holds(key), 10, f"the replica on port {node.port} replicating")
    # A fork server that imported this module once forks the workers in milliseconds, with
    # nothing of this (threaded) process in them.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    stop, fault_set, out, ready = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_sync_worker if _kind(i) == "sync" else _async_worker,
            args=(url, cluster, prefix, follow, stop, fault_set, out, ready),
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    results: list[Counts] = []
    watcher: _Watcher | None = None
    at_fault: int | None = None
    try:
        for _ in procs:
            ready.get(timeout=60)
        time.sleep(warm_s)
        if before_fault is not None:
            at_fault = before_fault(prefix)
        fault_at = time.monotonic()
        fault_set.set()
        watcher = _Watcher(new_master or (lambda: False), old_master)
        fault()
        ended_at = time.monotonic()
        if new_master is not None:
            wait_for(lambda: watcher.switched_at, 30, "Redis naming a new master")
        time.sleep(after_s)
    finally:
        stopped_at = time.monotonic()
        stop.set()
        for _ in procs:
            with contextlib.suppress(Exception):
                results.append(out.get(timeout=60))
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        if watcher is not None:
            watcher.stop()
    assert len(results) == workers, "a worker process did not report"
    return Outcome(
        results,
        fault_at,
        ended_at,
        watcher.switched_at if watcher else None,
        watcher.last_write if watcher else None,
        read_counts(prefix),
        at_fault,
        stopped_at,
    )


@contextlib.contextmanager
def sentinel_set() -> Iterator[SentinelSet]:
    group = SentinelSet()
    try:
        yield group
    finally:
        group.stop()


@contextlib.contextmanager
def cluster_set() -> Iterator[ClusterSet]:
    group = ClusterSet()
    try:
        yield group
    finally:
        group.stop()


def sentinel_counts(group: SentinelSet, prefix: str) -> int:
    c = group.current_master().client()
    try:
        return counts_in(c, prefix)
    finally:
        c.close()


def cluster_counts(group: ClusterSet, prefix: str) -> int:
    c = group.client()
    try:
        counts: tuple[int] = wait_for(lambda: (counts_in(c, prefix),), 10, "the cluster answering")
        return counts[0]
    finally:
        c.close()


# --------------------------------------------------------------------------- the scenarios


def sentinel_scenario(fault: str, *, follow: bool = True, workers: int = 4) -> Outcome:
    """A fresh :class:`SentinelSet` under load; ``fault``: ``"failover"`` (``SENTINEL
    FAILOVER`` of the live master) or ``"kill"`` (``kill -9`` of the master)."""
    group = SentinelSet()
    try:
        old = group.current_master()

        def inject() -> None:
            if fault == "failover":
                group.failover()
            else:
                old.kill()

        return run_fleet(
            group.url,
            inject,
            lambda prefix: sentinel_counts(group, prefix),
            workers=workers,
            new_master=lambda: group.master_address() not in (None, old.address),
            old_master=old if fault == "failover" else None,
            replicas=lambda: [n for n in group.nodes if n is not old],
            follow=follow,
        )
    finally:
        group.stop()


def endpoint_scenario(*, workers: int = 4) -> Outcome:
    """A managed service's primary endpoint under load: a coordinated ``FAILOVER``, then
    the name moved to the new primary (connections made before stay with the old one)."""
    base = Path(tempfile.mkdtemp(prefix="resilience-endpoint-"))
    old = Node(base)
    new = Node(base, "--replicaof", "127.0.0.1", str(old.port))
    endpoint = Endpoint(old)

    def inject() -> None:
        old.client().execute_command("FAILOVER")
        wait_for(lambda: new.client().execute_command("ROLE")[0] == "master", 10, "promotion")
        endpoint.upstream = new

    try:
        wait_for(lambda: new.client().info("replication")["master_link_status"] == "up", 10, "")
        return run_fleet(
            endpoint.url,
            inject,
            lambda prefix: counts_in(new.client(), prefix),
            workers=workers,
            new_master=lambda: endpoint.upstream is new,
            old_master=old,
            replicas=lambda: [new],
        )
    finally:
        endpoint.close()
        old.kill()
        new.kill()
        shutil.rmtree(base, ignore_errors=True)


def cluster_scenario(group: ClusterSet, fault: str, *, workers: int = 4) -> Outcome:
    """``group`` under load; ``fault``: ``"failover"`` (``CLUSTER FAILOVER`` on the replica
    of the master serving the workers' slot) or ``"kill"`` (``kill -9`` of that master)."""
    old = group.owner()
    replica = group.replica_of(old)
    wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", 20, "")

    def inject() -> None:
        if fault == "failover":
            replica.client().execute_command("CLUSTER", "FAILOVER")
        else:
            old.kill()

    return run_fleet(
        group.url_avoiding(old),
        inject,
        lambda prefix: cluster_counts(group, prefix),
        cluster=True,
        workers=workers,
        new_master=lambda: bool(replica.client(0.5).execute_command("ROLE")[0] == "master"),
        old_master=old if fault == "failover" else None,
        replicas=lambda: [replica],
    )


def replay_scenario(*, empty: bool, workers: int = 4) -> Outcome:
    """A private redis-server (append-only file, fsync always) under load, ``kill -9``
    and restarted after 2 s with its data, or ``empty``. Empty, writes are paused just
    before the kill, so ``recorded_at_fault`` is exactly what the crash erases."""
    node = Node(Path(tempfile.mkdtemp(prefix="resilience-replay-")), aof=True)

    def restart() -> None:
        node.kill()
        if empty:
            node.wipe()
        time.sleep(2.0)
        node.start()

    def held_at_crash(prefix: str) -> int:
        # a paused call never runs: its caller times out and sums it in-process
        node.client().execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        return counts_in(node.client(), prefix)

    try:
        return run_fleet(
            node.url,
            restart,
            lambda prefix: counts_in(node.client(), prefix),
            workers=workers,
            before_fault=held_at_crash if empty else None,
        )
    finally:
        node.kill()
        shutil.rmtree(node.dir.parent, ignore_errors=True)
