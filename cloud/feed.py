"""The live event stream's source: the records the shared store holds, in commit order, read by a
cursor, so that every collector's ``/api/v1/events`` shows every record whichever collector
stored it (collectors side by side on one PostgreSQL), once.

Each stored row carries the number of the commit that stored it: SQLite ``records.ingest``
(``max + 1`` under the write lock, so commit order), PostgreSQL ``records.tx`` (the storing
transaction's id, ``pg_current_xact_id()``). Transaction ids are handed out when a transaction
starts, not when it commits, so a reader of PostgreSQL takes only rows of transactions older than
every one still running (``pg_snapshot_xmin``): nothing can later appear behind the cursor. The
price is latency: a long write transaction anywhere holds the stream back until it ends.

A duplicate sent again by a van is not a new row (``ON CONFLICT DO NOTHING``): never streamed twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from itertools import groupby

from cloud.sqldb import SqlDb
from protocols.dropline.v1 import dropline_pb2 as pb

log = logging.getLogger("dropline.collector.feed")

PAGE_ROWS = 5000
"""Rows read per query; a poll reads pages until it is level with the store."""

POLL_S = 0.2
"""How often the store is polled: the stream's added latency."""

Cursor = tuple[int, int]
"""(commit number, seq) of the last row read."""

_SQL = {
    False: (
        "SELECT coalesce(max(ingest), 0) FROM records",
        "SELECT ingest, vehicle, seq, body FROM records WHERE (ingest, seq) > (?, ?)"
        " ORDER BY ingest, seq LIMIT ?",
    ),
    True: (
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1",
        "SELECT tx::text::bigint, vehicle, seq, body FROM records"
        " WHERE (tx, seq) > (?::text::xid8, ?) AND tx < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY tx, seq LIMIT ?",
    ),
}

Publish = Callable[[str, list[pb.Record]], None]


class Feed:
    """Reads the store's new records from a cursor. ``poll`` is not thread-safe (one reader)."""

    def __init__(self, db: SqlDb) -> None:
        self.db = db
        self._head, self._next = _SQL[db.postgres]
        with db.connect() as conn:
            (commit,) = conn.execute(self._head).fetchone()
        self.cursor: Cursor = (int(commit), 2**63 - 1)
        """Starts after everything committed before: the stream is live, not a history."""

    def poll(self) -> list[tuple[str, list[pb.Record]]]:
        """(vehicle, records) of each commit since the last poll, in commit order (a commit read
        over two pages comes as two entries)."""
        out: list[tuple[str, list[pb.Record]]] = []
        with self.db.connect() as conn:
            while True:
                rows = conn.execute(self._next, (*self.cursor, PAGE_ROWS)).fetchall()
                if not rows:
                    return out
                self.cursor = (int(rows[-1][0]), int(rows[-1][2]))
                for (_, vehicle), group in groupby(rows, key=lambda row: (row[0], row[1])):
                    out.append((vehicle, [pb.Record.FromString(bytes(row[3])) for row in group]))
                if len(rows) < PAGE_ROWS:
                    return out


class FeedThread:
    """Polls a :class:`Feed` every :data:`POLL_S` and hands each commit's records to ``publish``
    (the live stream's hub). A failing poll (database restarting) is logged and retried."""

    def __init__(self, feed: Feed, publish: Publish, poll_s: float = POLL_S) -> None:
        self.feed = feed
        self.publish = publish
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                for vehicle, records in self.feed.poll():
                    self.publish(vehicle, records)
            except Exception:  # the stream pauses, the collector goes on; the cursor is kept
                log.exception("live stream: reading the store failed")
