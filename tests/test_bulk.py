"""Bulk reads of target hashes (resilience._bulk) against the real Redis: what they read
equals the breaker's own reads, in pages, with index members whose hash expired dropped; a
read given up half-way or cut by an outage leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

import resilience._bulk as bulk
from resilience import Breaker, ErrorKind, Target
from resilience._bulk import BulkReader, reader_of
from resilience._db import upgrade
from resilience._keys import KeySpace, encode_name
from resilience._snapshot import TARGET_FIELDS, SnapshotError, take_snapshot
from resilience._wire import state_name, to_int
from tests.conftest import PrivateRedis, make_settings

FIELDS = ("error_count", "success_count", "state", "model")


def fill(b: Breaker, n: int) -> list[Target]:
    targets = [Target(f"p{i % 3}", f"model {i}/é") for i in range(n)]  # names to encode
    for i, t in enumerate(targets):
        b.record_success(t)
        if i % 4 == 0:
            b.record_failure(t, ErrorKind.TIMEOUT)
    return targets


def read_all(reader: BulkReader, providers: list[str]) -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for p in providers:
        for batch in reader.read(p, FIELDS):
            assert len(batch.members) == len(batch.values) <= reader.batch
            assert batch.now_ms > 0
            for model, values in zip(batch.models(), batch.values, strict=True):
                assert (p, model) not in out  # each target once
                out[(p, model)] = values
    return out


@pytest.fixture
def b(redis_url: str, prefix: str) -> Iterator[Breaker]:
    with Breaker(make_settings(redis_url, prefix, local_view=False)) as breaker:
        yield breaker


@pytest.mark.parametrize("whole_index", [10_000, 5], ids=["zrange", "zscan"])
@pytest.mark.parametrize("parser", ["hiredis", "redis-py"])
def test_bulk_reads_equal_the_breakers_reads(
    b: Breaker,
    rclient: redis.Redis,
    prefix: str,
    whole_index: int,
    parser: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if parser == "redis-py":
        monkeypatch.setattr(bulk, "hiredis", None)
    targets = fill(b, 40)
    keys = KeySpace(prefix)
    gone = targets[7]
    rclient.delete(keys.target(gone))  # an index member whose hash expired
    reader = BulkReader(rclient, keys, batch=3, whole_index=whole_index)
    got = read_all(reader, b.providers())
    states = {(s.provider, s.model): s for s in b.states()}
    assert set(got) == set(states) == {(t.provider, t.model) for t in targets if t != gone}
    for key, values in got.items():
        s = states[key]
        shown = [to_int(values[0]), to_int(values[1]), state_name(values[2]), values[3]]
        assert shown == [s.error_count, s.success_count, s.state, encode_name(key[1])]
    assert sum(len(page) for page in reader.members("p1")) == 13  # gone's member included
    assert reader_of(b).batch == bulk.BATCH


def test_a_read_given_up_half_way_leaves_the_client_usable(
    b: Breaker, rclient: redis.Redis, prefix: str
) -> None:
    fill(b, 30)
    reader = BulkReader(rclient, KeySpace(prefix), batch=2)
    pages = reader.read("p0", TARGET_FIELDS)
    first = next(pages)  # the next batch is already on its way
    assert len(first.values) == 2
    pages.close()  # its replies are never read: that connection is dropped, not reused
    for _ in range(5):
        assert rclient.ping()
        assert rclient.get(f"{prefix}:nothing") is None
    again = read_all(BulkReader(rclient, KeySpace(prefix), batch=4), ["p0"])
    assert len(again) == 10


def test_an_outage_in_the_middle_of_a_snapshot_writes_nothing(
    private_redis: PrivateRedis,
    prefix: str,
    pg_schema: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = make_settings(private_redis.url, prefix, database_schema=pg_schema, local_view=False)
    upgrade(s)
    with Breaker(s) as breaker:
        fill(breaker, 30)
        real = BulkReader.read

        def read_then_fail(self: BulkReader, *args: Any, **kwargs: Any) -> Iterator[Any]:
            for i, batch in enumerate(real(self, *args, **kwargs)):
                if i == 1:
                    private_redis.stop()  # Redis goes away half-way through
                yield batch

        monkeypatch.setattr(BulkReader, "read", read_then_fail)
        monkeypatch.setattr(bulk, "BATCH", 2)
        with pytest.raises(SnapshotError, match="Redis unavailable while reading states") as info:
            take_snapshot(breaker, s, lock=False)
        assert info.value.service == "redis"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        for table in ("model_compatibility_hints", "model_compatibility_history"):
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            assert row == (0,), table


def test_snapshot_in_small_batches_equals_one_in_large_ones(
    b: Breaker,
    rclient: redis.Redis,
    redis_url: str,
    prefix: str,
    pg_schema: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(b, 25)
    b.block(Target("p1", "model 1/é"), 600, "incident")
    # text PostgreSQL cannot store (NUL) and COPY's own separators (tab, newline)
    odd = "tab\there,\nnul\x00 too"
    rclient.hset(KeySpace(prefix).target(Target("p1", "model 1/é")), "reason", odd)
    b.block_provider("p2", 600, "key revoked")
    s = make_settings(redis_url, prefix, database_schema=pg_schema)
    upgrade(s)

    def state_rows() -> list[Any]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
            return conn.execute(
                "SELECT provider_id, model_id, state, is_blacklisted, blacklisted_until,"
                " error_count, success_count, reason, provider_blocked_until"
                " FROM model_compatibility_hints ORDER BY 1, 2"
            ).fetchall()

    take_snapshot(b, s)
    large = state_rows()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}, {} CASCADE").format(
                sql.Identifier(pg_schema, "model_compatibility_hints"),
                sql.Identifier(pg_schema, "resilience_snapshots"),
            )
        )
    monkeypatch.setattr(bulk, "BATCH", 2)
    monkeypatch.setattr(bulk, "WHOLE_INDEX", 3)
    assert take_snapshot(b, s).targets == 25
    assert state_rows() == large
    by_target = {(r[0], r[1]): r for r in large}
    assert by_target[("p1", "model 1/é")][7] == odd.replace("\x00", "\\x00")
    assert by_target[("p2", "model 2/é")][2:4] == ("open", True)
    assert by_target[("p2", "model 2/é")][7] == "provider: key revoked"
    assert by_target[("p2", "model 2/é")][8] is not None
    states = {(st.provider, st.model): st for st in b.states()}
    for key, row in by_target.items():
        st = states[key]
        assert row[2:7] == (
            st.state,
            st.blacklisted,
            st.open_until if st.blacklisted else None,
            st.error_count,
            st.success_count,
        ), key


def test_a_sliced_index_read_misses_no_member_while_writes_reorder_it(
    b: Breaker, rclient: redis.Redis, prefix: str
) -> None:
    """Writes move members to the newest ranks while the slices are read; a member present
    throughout is still returned (once)."""
    import random
    import threading

    targets = [Target("busy", f"m{i}") for i in range(300)]
    for t in targets:
        b.record_success(t)
    expected = {encode_name(t.model) for t in targets}
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        rng = random.Random(7)
        while not stop.is_set():
            b.record_success(rng.choice(targets))
            writes += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = BulkReader(rclient, KeySpace(prefix), batch=4, whole_index=5)
        rounds, deadline = 0, time.monotonic() + 30
        # at least 5 reads, and on until the writer has reordered the index enough (a loaded
        # machine may starve the writer thread for a while)
        while rounds < 5 or (writes <= 50 and time.monotonic() < deadline):
            got = [m for page in reader.members("busy") for m in page]
            assert len(got) == len(set(got))  # each once
            assert set(got) == expected
            rounds += 1
    finally:
        stop.set()
        thread.join()
    assert writes > 50  # the order really changed meanwhile
