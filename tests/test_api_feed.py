"""The live stream's cursor over the store (``cloud.feed``), on both stores: records come in commit
order, once, starting after what was committed before the feed opened; on PostgreSQL a row of a
transaction still running, or committed after a younger one, is never skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cloud.collector import open_store
from cloud.feed import Feed
from cloud.sqldb import SqlDb
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.postgres import Postgres, run_postgres

T0_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


def fixes(first: int, n: int) -> list[pb.Record]:
    return [
        pb.Record(seq=s, fix=pb.Fix(time_ms=T0_MS + s, mode=3, lat_e7=s)) for s in range(first, first + n)
    ]


def flat(polled: list[tuple[str, list[pb.Record]]]) -> list[tuple[str, int]]:
    return [(vehicle, r.seq) for vehicle, records in polled for r in records]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_commit_order_once_and_only_what_is_new(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db: str | Path = tmp_path / "c.db"
    if kind == "postgres":
        db = request.getfixturevalue("postgres").new_store_url("feed")
    store = open_store(db)
    try:
        store.write("van-1", fixes(1, 3))  # before the feed: not streamed
        feed = Feed(SqlDb(db))
        assert feed.poll() == []
        store.write("van-2", fixes(1, 2))
        store.write("van-1", fixes(10, 2))
        store.write("van-1", fixes(4, 1))  # an older seq, committed later: comes later
        store.write("van-1", fixes(1, 3))  # a resend of held records: not new rows
        assert flat(feed.poll()) == [("van-2", 1), ("van-2", 2), ("van-1", 10), ("van-1", 11), ("van-1", 4)]
        assert feed.poll() == []
    finally:
        store.close()


def test_postgres_never_skips_a_transaction_that_commits_late(postgres: Postgres) -> None:
    """Transaction ids come at a transaction's start: a younger one committing first must wait
    in the feed until the older one ends, or the older one's rows would fall behind the cursor."""
    url = postgres.new_store_url("late")
    store = open_store(url)
    insert = "INSERT INTO records (vehicle, seq, kind, time_ms, body) VALUES (%s, %s, 'fix', %s, %s)"
    try:
        feed = Feed(SqlDb(url))
        with psycopg.connect(url) as slow:
            with slow.transaction():
                (r,) = fixes(1, 1)
                slow.execute(insert, ("van-slow", 1, r.fix.time_ms, r.SerializeToString()))  # older xid
                store.write("van-fast", fixes(1, 2))  # younger, committed first
                assert feed.poll() == []  # held back while the older one may still commit
            assert flat(feed.poll()) == [("van-slow", 1), ("van-fast", 1), ("van-fast", 2)]
        assert feed.poll() == []
    finally:
        store.close()
