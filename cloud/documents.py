"""Documents pushed to vans over gRPC (``dropline config push --db``): a small durable table.

The collector's gRPC streams send, for the vehicle a stream is bound to, the newest pushed
envelope of each kind when the stream is bound and whenever a newer one is pushed; the van checks
each itself (signature, vehicle, version, expiry), so sending one twice is harmless: a replay is
refused and reported. The table lives in its own SQLite file next to a SQLite store
(``<db>.documents``), written by the push command and read by the collector process, so a push
needs no connection to a running collector; WAL lets both open it at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SUFFIX = ".documents"
POLL_S = 0.5
"""How stale :meth:`PushedDocuments.last_id` may be: how soon an open stream sees a push."""


def path_for(db: Path) -> Path:
    """The pushed-documents file of the SQLite store ``db``."""
    return db.with_name(db.name + SUFFIX)


class PushedDocuments:
    """Pushed envelopes per vehicle and kind; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pushed (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " vehicle TEXT NOT NULL, kind TEXT NOT NULL, envelope BLOB NOT NULL, pushed_at REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS pushed_vehicle ON pushed (vehicle, kind, id)")
        self._last = (0, -1.0)  # id, monotonic time read

    def push(self, vehicle: str, kind: str, envelope: bytes) -> int:
        """Store one envelope for ``vehicle`` (durably: SQLite's commit); its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO pushed (vehicle, kind, envelope, pushed_at) VALUES (?, ?, ?, ?)",
                (vehicle, kind, envelope, time.time()),
            )
            return int(cur.lastrowid or 0)

    def newest(self, vehicle: str) -> list[tuple[int, str, bytes]]:
        """(id, kind, envelope) of the newest push of each kind for ``vehicle``, oldest first."""
        with self._lock:
            rows = self._db.execute(
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
                (value,) = self._db.execute("SELECT coalesce(max(id), 0) FROM pushed").fetchone()
                self._last = last, read_at = int(value), now
            return last

    def close(self) -> None:
        with self._lock:
            self._db.close()
