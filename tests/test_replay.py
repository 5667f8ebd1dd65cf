"""No outcome lost to an outage: ``kill -9`` of Redis under load from four worker
processes, restarted after 2 s with its data (append-only file, fsync always) or empty.

While Redis is down the workers' in-process breakers decide, and each sums the outcomes it
saw; when Redis answers again the sums are merged as counts (``merge.lua``). With its data,
the counters then hold every outcome made. Empty, what Redis held before the crash is gone,
and the counters hold exactly what the workers saw from the crash on.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.ha import Node, counts_in, run_fleet

pytestmark = pytest.mark.slow


def restart(node: Node, *, empty: bool) -> None:
    node.kill()
    if empty:
        node.wipe()
    time.sleep(2.0)
    node.start()


def counts(node: Node, prefix: str) -> int:
    c = node.client()
    try:
        return counts_in(c, prefix)
    finally:
        c.close()


def test_restart_with_its_data_keeps_every_outcome() -> None:
    node = Node(Path(tempfile.mkdtemp(prefix="resilience-replay-")), aof=True)
    try:
        o = run_fleet(
            node.url, lambda: restart(node, empty=False), lambda prefix: counts(node, prefix)
        )
    finally:
        node.kill()
    assert o.foreign == 0, o.foreign_names
    assert o.admitted_to_open == 0  # the fallback kept the blocked target refused
    assert o.dropped == 0
    assert o.made_after_fault > 300  # the outage and the recovery were under load
    # Nothing lost. More than made only if a write Redis had applied (and fsynced) lost
    # its reply to the crash: that outcome is counted twice (at most one round trip per
    # process: a pipeline of script calls and one merge of summed successes).
    assert o.recorded >= o.made, (o.recorded, o.made)
    assert o.recorded - o.made <= 4 * 150, (o.recorded, o.made)
    assert o.back_s < 2.0


def test_empty_restart_keeps_what_the_outage_saw() -> None:
    node = Node(Path(tempfile.mkdtemp(prefix="resilience-replay-")), aof=True)

    def held_at_crash(prefix: str) -> int:
        # Writes are paused first, so what Redis holds here is exactly what the crash
        # erases: a paused call never runs, its caller times out and sums it in-process.
        node.client().execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        return counts(node, prefix)

    try:
        o = run_fleet(
            node.url,
            lambda: restart(node, empty=True),
            lambda prefix: counts(node, prefix),
            before_fault=held_at_crash,
        )
    finally:
        node.kill()
    assert o.foreign == 0, o.foreign_names
    assert o.dropped == 0
    assert o.recorded_at_fault is not None and o.recorded_at_fault > 0
    assert o.made_after_fault > 300
    # Everything made minus what the crash erased: the outcomes summed in-process at the
    # crash (batched successes, the outage's outcomes) and everything after it.
    assert o.recorded == o.made - o.recorded_at_fault, (o.recorded, o.made, o.recorded_at_fault)
    assert o.back_s < 2.0
