"""Photos and signatures reassembled from their ``blob_chunk`` records, one file per blob.

The chunks stay stored as records (the van's proof, exported with ``--kind blobs``); this keeps
beside the store (``<db>.blobs``, its own SQLite file, so it never contends with the record
writes; or in the PostgreSQL store's database, shared by every collector) a ``blobs`` table:
vehicle, blob, media_type, delivery, sha256, count, size, complete, reason and, once complete,
the bytes. Parts wait in ``blob_parts`` until the last one arrives.

What a caller may assume: ``take`` is idempotent and order-free (chunks deduped by vehicle, blob
and index; any order, any repetition reassembles the same bytes). A blob is complete only when
every index is held and the joined bytes hash to its sha256; a mismatch (or chunks that disagree
on count, hash, type or delivery) sets ``reason`` and the blob is never served (``get`` returns
None), its parts kept for inspection.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cloud.sqldb import Conn, SqlDb
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

    def __init__(self, db: SqlDb | Path | str, *, readonly: bool = False) -> None:
        """``db``: a SQLite file (:func:`blobs_path`) or what ``SqlDb.beside(".blobs")`` names;
        ``readonly`` opens an existing file for ``get``/``list`` only (sqlite3 errors if absent)."""
        self.db = db if isinstance(db, SqlDb) else SqlDb(db, readonly=readonly)
        self._lock = threading.Lock()
        if not readonly:
            self.db.ensure(_SCHEMA)

    def take(self, vehicle: str, records: Iterable[pb.Record]) -> list[str]:
        """Add the ``blob_chunk`` records among ``records`` (others are ignored); returns the blobs
        this call completed. Raises the database's error if it cannot commit (nothing is then taken)."""
        chunks = [r.blob_chunk for r in records if r.WhichOneof("body") == "blob_chunk"]
        if not chunks:
            return []
        done: list[str] = []
        with self._lock, self.db.connect() as conn, conn.transaction() as db:
            db.lock(f"blobs:{vehicle}")  # another collector taking this van's chunks waits
            touched: set[str] = set()
            for c in chunks:
                if self._add(db, vehicle, c):
                    touched.add(c.blob)
            for blob in sorted(touched):
                if self._finish(db, vehicle, blob):
                    done.append(blob)
        for blob in done:
            log.info("blob %s of %s complete", blob, vehicle)
        return done

    def _add(self, db: Conn, vehicle: str, c: pb.BlobChunk) -> bool:
        """Store one part; True if its blob may now be complete."""
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
            "INSERT INTO blob_parts (vehicle, blob, idx, data) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (vehicle, c.blob, c.index, c.data),
        )
        return True

    def _finish(self, db: Conn, vehicle: str, blob: str) -> bool:
        """Join and verify a blob whose parts are all held; True if it is now complete."""
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
        with self.db.connect() as db:
            row = db.execute(
                "SELECT data FROM blobs WHERE vehicle = ? AND blob = ? AND complete = 1", (vehicle, blob)
            ).fetchone()
        return bytes(row[0]) if row else None

    def list(self, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        """Every blob known (complete or not) with what is known of it, and ``parts`` held."""
        sql = (
            f"SELECT {_COLUMNS}, (SELECT count(*) FROM blob_parts p WHERE p.vehicle = b.vehicle"
            " AND p.blob = b.blob) FROM blobs b"
        )
        params = [] if vehicle is None else [vehicle]
        sql += "" if vehicle is None else " WHERE vehicle = ?"
        with self.db.connect() as db:
            rows = db.execute(sql + " ORDER BY vehicle, time_ms, blob", params).fetchall()
        names = [*_COLUMNS.split(", "), "parts"]
        for row in rows:
            out = dict(zip(names, row, strict=True))
            out["complete"] = bool(out["complete"])
            if out["complete"]:
                out["parts"] = out["count"]
            yield out

    def close(self) -> None:
        self.db.close()
