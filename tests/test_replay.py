"""No outcome lost to an outage: ``kill -9`` of Redis under load from four worker
processes, restarted after 2 s with its data (append-only file, fsync always) or empty.

While Redis is down the workers' in-process breakers decide, and each sums the outcomes it
saw; when Redis answers again the sums are merged as counts (``merge.lua``). With its data,
the counters then hold every outcome made. Empty, what Redis held before the crash is gone,
and the counters hold exactly what the workers saw from the crash on.
"""

from __future__ import annotations

import pytest

from tests.ha import replay_scenario

pytestmark = pytest.mark.slow


def test_restart_with_its_data_keeps_every_outcome() -> None:
    o = replay_scenario(empty=False)
    assert o.foreign == 0, o.foreign_names
    assert o.admitted_to_open == 0  # the fallback kept the blocked target refused
    assert o.dropped == 0
    assert o.made_after_fault > 300  # the outage and the recovery were under load
    # Nothing lost. More than made only if a write Redis had applied (and fsynced) lost
    # its reply to the crash: those outcomes are counted twice, at most one round trip per
    # process (a call, and one merge of up to success_flush_seconds of its successes).
    assert o.made <= o.recorded <= o.made + o.twice_bound, (o.recorded, o.made)
    assert o.back_s < 2.0


def test_empty_restart_keeps_what_the_outage_saw() -> None:
    o = replay_scenario(empty=True)
    assert o.foreign == 0, o.foreign_names
    assert o.dropped == 0
    assert o.recorded_at_fault is not None and o.recorded_at_fault > 0
    assert o.made_after_fault > 300
    # Everything made minus what the crash erased: the outcomes summed in-process at the
    # crash (batched successes, the outage's outcomes) and everything after it.
    assert o.recorded == o.made - o.recorded_at_fault, (o.recorded, o.made, o.recorded_at_fault)
    assert o.back_s < 2.0
