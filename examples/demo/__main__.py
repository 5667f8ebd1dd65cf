"""``python -m examples.demo``: the demo's command line (the same as ``resilience demo``)."""

from __future__ import annotations

import argparse
import sys

from .cli import register


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["demo", *sys.argv[1:]])
    from resilience import Settings

    return int(args.func(args, Settings()))


if __name__ == "__main__":
    sys.exit(main())
