"""Documents pushed to vans over gRPC (``dropline config push --db``): a small durable table.

The collector's gRPC streams send, for the vehicle a stream is bound to, the newest pushed
envelope of each kind when the stream is bound and whenever a newer one is pushed; the van checks
each itself (signature, vehicle, version, expiry), so sending one twice is harmless: a replay is
refused and reported. The table lives in its own SQLite file next to a SQLite store
(``<db>.documents``), or in the PostgreSQL store's database, written by the push command and read
by the collector processes, so a push needs no connection to a running collector.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cloud.sqldb import SqlDb

SUFFIX = ".documents"
POLL_S = 0.5
"""How stale :meth:`PushedDocuments.last_id` may be: how soon an open stream sees a push."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushed (id INTEGER PRIMARY KEY AUTOINCREMENT,
    vehicle TEXT NOT NULL, kind TEXT NOT NULL, envelope BLOB NOT NULL, pushed_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pushed_vehicle ON pushed (vehicle, kind, id);
"""


def path_for(db: Path) -> Path:
    """The pushed-documents file of the SQLite store ``db``."""
    return db.with_name(db.name + SUFFIX)


class PushedDocuments:
    """Pushed envelopes per vehicle and kind; thread-safe (a connection per call)."""

    def __init__(self, db: SqlDb | Path) -> None:
        """``db``: a SQLite file of its own (:func:`path_for`), or the database a
        ``SqlDb.beside(SUFFIX)`` names (PostgreSQL: the store's, shared by every collector)."""
        self.db = db if isinstance(db, SqlDb) else SqlDb(db)
        self.db.ensure(_SCHEMA)
        self._lock = threading.Lock()
        self._last = (0, -1.0)  # id, monotonic time read

    def push(self, vehicle: str, kind: str, envelope: bytes) -> int:
        """Store one envelope for ``vehicle`` (durably: the commit); its id."""
        with self.db.connect() as db:
            row = db.execute(
                "INSERT INTO pushed (vehicle, kind, envelope, pushed_at) VALUES (?, ?, ?, ?) RETURNING id",
                (vehicle, kind, envelope, time.time()),
            ).fetchone()
        return int(row[0])

    def newest(self, vehicle: str) -> list[tuple[int, str, bytes]]:
        """(id, kind, envelope) of the newest push of each kind for ``vehicle``, oldest first."""
        with self.db.connect() as db:
            rows = db.execute(
                "SELECT id, kind, envelope FROM pushed WHERE id IN"
                " (SELECT max(id) FROM pushed WHERE vehicle = ? GROUP BY kind) ORDER BY id",
                (vehicle,),
            ).fetchall()
        return [(int(i), str(k), bytes(e)) for i, k, e in rows]

    def last_id(self) -> int:
        """The newest id of any push, read at most every :data:`POLL_S` (streams poll this)."""
        with self._lock:
            last, read_at = self._last
            now = time.monotonic()
            if now - read_at >= POLL_S:
                with self.db.connect() as db:
                    (value,) = db.execute("SELECT coalesce(max(id), 0) FROM pushed").fetchone()
                self._last = last, read_at = int(value), now
            return last

    def close(self) -> None:
        self.db.close()
