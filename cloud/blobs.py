"""Photos and signatures reassembled from their ``blob_chunk`` records, one file per blob.

The chunks stay stored as records (the van's proof, exported with ``--kind blobs``); this keeps
beside the store (``<db>.blobs``, its own SQLite file, so it never contends with the record
writes) a ``blobs`` table: vehicle, blob, media_type, delivery, sha256, count, size, complete,
reason and, once complete, the bytes. Parts wait in ``blob_parts`` until the last one arrives.

What a caller may assume: ``take`` is idempotent and order-free (chunks deduped by vehicle, blob
and index; any order, any repetition reassembles the same bytes). A blob is complete only when
every index is held and the joined bytes hash to its sha256; a mismatch (or chunks that disagree
on count, hash, type or delivery) sets ``reason`` and the blob is never served (``get`` returns
None), its parts kept for inspection.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from protocols.dropline.v1 import dropline_pb2 as pb

log = logging.getLogger("dropline.collector.blobs")

SHA256_MISMATCH = "sha256_mismatch"
INCONSISTENT = "inconsistent_chunk"
"""``reason`` values: the joined bytes do not match the sha256; a chunk disagreed with the first
one seen (count, sha256, media type, delivery) or had an index outside 0..count-1."""

MAX_CHUNKS = 1 << 20
"""More chunks than this in one blob is not a photo: refused as inconsistent."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    vehicle    TEXT NOT NULL,
    blob       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    delivery   TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    count      INTEGER NOT NULL,
    time_ms    INTEGER NOT NULL,
    size       INTEGER,             -- bytes, once complete
    complete   INTEGER NOT NULL DEFAULT 0,
    reason     TEXT NOT NULL DEFAULT '',
    data       BLOB,                -- the verified bytes, once complete
    PRIMARY KEY (vehicle, blob)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_parts (
    vehicle TEXT NOT NULL,
    blob    TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (vehicle, blob, idx)
) WITHOUT ROWID;
"""

_COLUMNS = "vehicle, blob, media_type, delivery, sha256, count, time_ms, size, complete, reason"


def blobs_path(db: Path | str) -> Path:
    """Where the blobs of the SQLite store at ``db`` are kept."""
    return Path(f"{db}.blobs")


class Blobs:
    """The reassembly of one collector's blobs. Thread-safe (one writer lock)."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        """``readonly`` opens an existing file for ``get``/``list`` only (sqlite3 errors if absent)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        if not readonly:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def take(self, vehicle: str, records: Iterable[pb.Record]) -> list[str]:
        """Add the ``blob_chunk`` records among ``records`` (others are ignored); returns the blobs
        this call completed. Raises sqlite3.Error if it cannot commit (nothing is then taken)."""
        chunks = [r.blob_chunk for r in records if r.WhichOneof("body") == "blob_chunk"]
        if not chunks:
            return []
        done: list[str] = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                touched: set[str] = set()
                for c in chunks:
                    if self._add(vehicle, c):
                        touched.add(c.blob)
                for blob in sorted(touched):
                    if self._finish(vehicle, blob):
                        done.append(blob)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        for blob in done:
            log.info("blob %s of %s complete", blob, vehicle)
        return done

    def _add(self, vehicle: str, c: pb.BlobChunk) -> bool:
        """Store one part; True if its blob may now be complete."""
        db = self._db
        row = db.execute(
            "SELECT count, sha256, media_type, delivery, complete, reason FROM blobs"
            " WHERE vehicle = ? AND blob = ?",
            (vehicle, c.blob),
        ).fetchone()
        if row is None:
            bad = not (0 < c.count <= MAX_CHUNKS and 0 <= c.index < c.count)
            db.execute(
                "INSERT INTO blobs (vehicle, blob, media_type, delivery, sha256, count, time_ms, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vehicle,
                    c.blob,
                    c.media_type,
                    c.delivery,
                    c.sha256,
                    c.count,
                    c.time_ms,
                    INCONSISTENT if bad else "",
                ),
            )
            if bad:
                log.warning("blob %s of %s: chunk %d of %d is impossible", c.blob, vehicle, c.index, c.count)
                return False
        else:
            count, sha256, media_type, delivery, complete, reason = row
            if complete or reason:
                return False  # a duplicate of a finished blob, or one already set aside
            if (count, sha256, media_type, delivery) != (c.count, c.sha256, c.media_type, c.delivery) or not (
                0 <= c.index < count
            ):
                log.warning(
                    "blob %s of %s: chunk %d disagrees with the first one seen", c.blob, vehicle, c.index
                )
                db.execute(
                    "UPDATE blobs SET reason = ? WHERE vehicle = ? AND blob = ?",
                    (INCONSISTENT, vehicle, c.blob),
                )
                return False
        db.execute(
            "INSERT OR IGNORE INTO blob_parts (vehicle, blob, idx, data) VALUES (?, ?, ?, ?)",
            (vehicle, c.blob, c.index, c.data),
        )
        return True

    def _finish(self, vehicle: str, blob: str) -> bool:
        """Join and verify a blob whose parts are all held; True if it is now complete."""
        db = self._db
        count, sha256 = db.execute(
            "SELECT count, sha256 FROM blobs WHERE vehicle = ? AND blob = ?", (vehicle, blob)
        ).fetchone()
        held = db.execute("SELECT count(*) FROM blob_parts WHERE vehicle = ? AND blob = ?", (vehicle, blob))
        if held.fetchone()[0] < count:
            return False
        parts = db.execute(
            "SELECT data FROM blob_parts WHERE vehicle = ? AND blob = ? ORDER BY idx", (vehicle, blob)
        )
        data = b"".join(bytes(p[0]) for p in parts)
        if hashlib.sha256(data).hexdigest() != sha256:
            log.error(
                "blob %s of %s: the %d joined bytes do not match sha256 %s", blob, vehicle, len(data), sha256
            )
            db.execute(
                "UPDATE blobs SET reason = ? WHERE vehicle = ? AND blob = ?", (SHA256_MISMATCH, vehicle, blob)
            )
            return False
        db.execute(
            "UPDATE blobs SET complete = 1, size = ?, data = ? WHERE vehicle = ? AND blob = ?",
            (len(data), data, vehicle, blob),
        )
        db.execute("DELETE FROM blob_parts WHERE vehicle = ? AND blob = ?", (vehicle, blob))
        return True

    def get(self, vehicle: str, blob: str) -> bytes | None:
        """The verified bytes of a complete blob; None while incomplete, set aside, or unknown."""
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM blobs WHERE vehicle = ? AND blob = ? AND complete = 1", (vehicle, blob)
            ).fetchone()
        return bytes(row[0]) if row else None

    def list(self, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        """Every blob known (complete or not) with what is known of it, and ``parts`` held."""
        sql = (
            f"SELECT {_COLUMNS}, (SELECT count(*) FROM blob_parts p WHERE p.vehicle = b.vehicle"
            " AND p.blob = b.blob) FROM blobs b WHERE ? IS NULL OR vehicle = ?"
            " ORDER BY vehicle, time_ms, blob"
        )
        with self._lock:
            rows = self._db.execute(sql, (vehicle, vehicle)).fetchall()
        names = [*_COLUMNS.split(", "), "parts"]
        for row in rows:
            out = dict(zip(names, row, strict=True))
            out["complete"] = bool(out["complete"])
            if out["complete"]:
                out["parts"] = out["count"]
            yield out

    def close(self) -> None:
        with self._lock:
            self._db.close()
