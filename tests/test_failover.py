"""Failover under load, with real servers on private loopback ports: a master, a replica
and three sentinels (``SENTINEL FAILOVER`` of the live master, ``kill -9`` of the master),
and a Redis Cluster with a replica per master (``CLUSTER FAILOVER``, ``kill -9`` of the
master serving the workers' slot), and a managed service's primary endpoint (a coordinated
``FAILOVER``, the endpoint then moved to the new primary).

Four worker processes (two ``Breaker``, two ``AsyncBreaker``) make guarded calls in a loop
throughout. Each test asserts what callers must never see (an exception other than the
provider's own, a call admitted to the target an operator blocked), that calls are decided
by the new master again within a bound, and how many outcomes the failover lost against
the documented bound (docs/managed-redis.md). ``scripts/failover`` prints the same
measurements as a table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ha import (
    ClusterSet,
    Outcome,
    cluster_scenario,
    endpoint_scenario,
    sentinel_scenario,
)

pytestmark = pytest.mark.slow


def assert_callers_unharmed(o: Outcome) -> None:
    assert o.foreign == 0, o.foreign_names
    assert o.admitted_to_open == 0
    assert o.dropped == 0
    assert o.made > 500  # the fleet really ran through the failover


def assert_lost_at_most(o: Outcome, seconds: float) -> None:
    """Lost: at most ``seconds`` of the fleet's outcomes; counted twice: at most what a
    crash may double (:attr:`Outcome.twice_bound`)."""
    assert -o.twice_bound <= o.lost <= o.made_in(seconds), (o.lost, o.made)


def test_sentinel_failover_of_a_live_master() -> None:
    o = sentinel_scenario("failover")
    assert_callers_unharmed(o)
    # The breakers pause Redis calls from the leading sentinel's announcement until the
    # switch, so the old master takes (almost) nothing it will throw away: without that,
    # every write until the sentinels demote it (about 10 s) would be lost.
    assert_lost_at_most(o, 0.1)
    assert o.recovery_s < 5.0


def test_sentinel_master_killed() -> None:
    o = sentinel_scenario("kill")
    assert_callers_unharmed(o)
    # What the dead master had not sent to its replica is lost (asynchronous
    # replication: on loopback, next to nothing); outcomes decided in-process during the
    # failover are merged into the new master.
    assert_lost_at_most(o, 0.1)
    assert o.redis_failover_s is not None
    assert o.recovery_s < o.redis_failover_s + 2.0  # store_retry_seconds is 0.25 here


def test_failover_behind_a_primary_endpoint() -> None:
    """A managed service's primary endpoint (a name that follows the primary): the
    service runs a coordinated ``FAILOVER`` and moves the name to the new primary, while
    the connections made before stay with the demoted node."""
    o = endpoint_scenario()
    assert_callers_unharmed(o)
    assert o.lost == 0  # FAILOVER waits until the replica has caught up
    # READONLY from the demoted node drops the connection; the next one reaches the new
    # primary through the endpoint
    assert o.recovery_s < 3.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    group = ClusterSet()
    yield group
    group.stop()


def test_cluster_failover(cluster: ClusterSet) -> None:
    o = cluster_scenario(cluster, "failover")
    assert_callers_unharmed(o)
    assert o.lost == 0  # a manual failover waits until the replica has caught up
    assert o.recovery_s < 3.0


def test_cluster_master_killed(cluster: ClusterSet) -> None:
    o = cluster_scenario(cluster, "kill")
    assert_callers_unharmed(o)
    assert_lost_at_most(o, 0.1)
    assert o.redis_failover_s is not None
    assert o.recovery_s < o.redis_failover_s + 2.0
