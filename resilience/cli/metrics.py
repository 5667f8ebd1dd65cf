"""``resilience serve-metrics``: the parser here, the server in :mod:`resilience._metrics`
(loaded only when the command runs, so other commands do not pay for it)."""

from __future__ import annotations

import argparse
from typing import Any

from .base import positive_int

DEFAULT_PORT = 9464
"""Default port of ``resilience serve-metrics`` (the usual port of Prometheus exporters)."""


def add_serve_metrics(subparsers: Any) -> None:
    """Adds the ``serve-metrics`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-metrics",
        help="serve Prometheus metrics of every target's state in Redis",
        description="Serve /metrics with the shared state of every target, read from Redis "
        "at each scrape (run it beside the fleet; needs the 'metrics' extra).",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--addr",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 inside a container)",
    )
    p.add_argument("--provider", default=None, help="only this provider's targets")
    p.add_argument(
        "--max-targets",
        type=positive_int,
        default=1000,
        help="most targets exported per scrape, open and failing ones first (default 1000)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="print the metrics text once and exit (exit 1 when Redis is unreachable)",
    )
    p.set_defaults(func=_serve_metrics)


def _serve_metrics(args: argparse.Namespace, *rest: Any, **kw: Any) -> int:
    from .._metrics import handle_serve_metrics

    return handle_serve_metrics(args, *rest, **kw)
