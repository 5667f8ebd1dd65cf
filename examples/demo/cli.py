"""The ``demo`` subcommand.

::

    resilience demo [--duration S] [--workers N] [--seed N] [--no-live] [--no-snapshot]
                    [--metrics-port PORT]
        the whole demo on this machine: fake providers on 127.0.0.1, N worker processes,
        live view, snapshot into Postgres, report and summary (exit 0 when it ran)

    resilience demo provider [--host H] [--port P] [--seed N]
        only the fake providers, until stopped (docker-compose runs it as a service)

    resilience demo worker --provider-url URL [--duration S] [--seed N] [--index I]
                           [--heartbeat-file PATH]
        one worker sending requests to a running fake provider (duration 0: until stopped;
        docker-compose runs several replicas)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
import zlib
from typing import Any

from resilience import Settings

__all__ = ["add_parser", "handle_demo", "handle_provider", "handle_worker", "register"]


def duration(text: str) -> float:
    """A positive number of seconds."""
    value = non_negative_duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def non_negative_duration(text: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 10 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``demo`` (and its ``provider`` / ``worker`` roles) to argparse ``subparsers``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the demo: fake providers, worker processes, live view, report",
        description="Fake OpenAI-compatible providers on 127.0.0.1 with models that fail "
        "like real ones, worker processes routing through AsyncRouter, a live view, a "
        "snapshot into Postgres, the report and a summary with figures.",
    )
    p.add_argument(
        "--duration",
        type=duration,
        default=20.0,
        help="seconds the workers send requests (default 20)",
    )
    p.add_argument("--workers", type=positive_int, default=4, help="worker processes (default 4)")
    p.add_argument("--seed", type=int, default=7, help="seed of the providers and routes (7)")
    p.add_argument(
        "--interval",
        type=non_negative_duration,
        default=0.04,
        help="pause of each worker between requests, seconds (default 0.04)",
    )
    live = p.add_mutually_exclusive_group()
    live.add_argument(
        "--no-live", dest="live", action="store_false", default=None, help="no live view"
    )
    live.add_argument(
        "--live", dest="live", action="store_true", help="live view even without a terminal"
    )
    p.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="skip the snapshot into Postgres and the report",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics of the fleet's state on 127.0.0.1:PORT while running",
    )
    p.set_defaults(func=handle_demo)
    roles = p.add_subparsers(dest="demo_role", metavar="{provider,worker}")

    prov = roles.add_parser("provider", help="serve only the fake providers, until stopped")
    prov.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    prov.add_argument("--port", type=int, default=8080, help="TCP port (8080)")
    prov.add_argument("--seed", type=int, default=7, help="seed of the answers (7)")
    prov.set_defaults(func=handle_provider)

    work = roles.add_parser("worker", help="one worker sending requests to running providers")
    work.add_argument(
        "--provider-url",
        required=True,
        help="base URL of `resilience demo provider` (e.g. http://127.0.0.1:8080)",
    )
    work.add_argument(
        "--duration",
        type=non_negative_duration,
        default=0.0,
        help="seconds to run; 0 runs until SIGTERM/Ctrl-C (default 0)",
    )
    work.add_argument("--seed", type=int, default=7, help="seed of the route choice (7)")
    work.add_argument(
        "--index",
        type=int,
        default=None,
        help="worker number (default: derived from the host name, so replicas differ)",
    )
    work.add_argument(
        "--interval",
        type=non_negative_duration,
        default=0.2,
        help="pause between requests, seconds (default 0.2)",
    )
    work.add_argument(
        "--heartbeat-file",
        default=None,
        help="file touched after every request (for container healthchecks)",
    )
    work.set_defaults(func=handle_worker)
    return p


def register(subparsers: Any) -> None:
    """Adds the ``demo`` subcommand to the CLI's subparsers (``set_defaults(func=handler)``
    with ``handler(args) -> int``, as every command of ``resilience.cli``).

    Handlers read ``Settings()`` from the environment when not given one; a bad setting
    raises ValueError and a Redis or Postgres failure a ResilienceError, which the CLI's
    ``main`` turns into one line and its exit code.
    """
    add_parser(subparsers)


def handle_demo(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``resilience demo``: runs the whole demo; 0 when it ran and every worker finished."""
    from .run import DemoOptions, run_demo

    settings = settings if settings is not None else Settings()
    options = DemoOptions(
        duration_s=args.duration,
        workers=args.workers,
        seed=args.seed,
        interval_s=args.interval,
        live=args.live,
        snapshot=args.snapshot,
        metrics_port=args.metrics_port,
    )
    summary = run_demo(settings, options)
    return 0 if summary.ok else 1


def handle_provider(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``resilience demo provider``: serves the fake providers until stopped."""
    from .provider import FakeProvider

    provider = FakeProvider(seed=args.seed, host=args.host, port=args.port)
    print(f"fake providers on http://{args.host}:{args.port}/<provider>/v1/...", flush=True)
    if threading.current_thread() is threading.main_thread():
        # PID 1 in a container gets no default SIGTERM action: stop like on Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        provider.serve_forever()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _PrintQueue:
    """Stands in for the parent's queue: prints a progress line every ``every_s``."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = 0.0

    def put(self, obj: Any) -> None:
        tag = obj[0]
        if tag == "log":
            print(obj[1], flush=True)
        elif tag == "stats":
            s = obj[1]
            now = time.monotonic()
            if s.done or now - self._last >= self.every_s:
                self._last = now
                calls = sum(c.calls for c in s.targets.values())
                skips = sum(c.skips for c in s.targets.values())
                print(
                    f"worker {s.index}: {s.requests} requests, {s.answered} answered, "
                    f"{calls} calls, {skips} skipped",
                    flush=True,
                )


def handle_worker(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``resilience demo worker``: one worker until ``--duration`` or SIGTERM/Ctrl-C.

    Unlike the all-in-one demo, it keeps the thresholds of the environment's settings
    (``RESILIENCE_*``): it is how docker-compose shows the configured fleet at work."""
    from .worker import WorkerConfig, run_worker

    settings = settings if settings is not None else Settings()
    index = args.index
    if index is None:
        index = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 10_000
    config = WorkerConfig(
        index=index,
        seed=args.seed,
        settings=settings.model_dump(),
        base_url=args.provider_url.rstrip("/"),
        duration_s=args.duration or None,
        interval_s=args.interval,
        heartbeat_file=args.heartbeat_file,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    asyncio.run(run_worker(config, _PrintQueue(), None, stop))
    return 0
