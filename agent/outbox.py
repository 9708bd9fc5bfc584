"""The van's store-and-forward buffer: every record, numbered and committed to SQLite before
anyone else sees it, kept until the collector says it has stored it.

Guarantees a caller may rely on:

* ``append`` gives each record the next per-vehicle sequence number. Numbers only grow, across
  restarts and even across a corrupt file being replaced (see ``SeqMark``).
* Priority records (scans, alerts, gaps) are durable (fsync'd) when ``append`` returns.
  Telemetry (fixes, signals) is group-committed: it is durable once ``tick`` has run with the
  oldest pending record ``group_commit_s`` old, so at most about that much is lost on power loss.
* Only committed records are handed to the uplink (``next_batch``); a record is marked sent-and-
  stored by ``ack`` with ranges from the collector; acked rows are kept as local history (up to
  ``retain_acked`` rows) and are the first to go when space is needed.
* Over the disk budget, acked rows go first, then the oldest unacked telemetry, each run of
  evicted telemetry reported by a ``Gap`` record. Priority records are never evicted.
* A corrupt or unreadable file is moved aside, a new one started, and an ``outbox_reset`` alert
  plus a gap covering every earlier number are queued for the collector.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocols import convert
from protocols.records import Alert, Gap, Record, is_priority

log = logging.getLogger("dropline.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq      INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    acked    INTEGER NOT NULL DEFAULT 0,
    body     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

SEQ_BLOCK = 100_000
"""How far ahead the seq mark file reserves numbers: one fsync'd write per this many records."""


class SeqMark:
    """A small file outside the database recording a seq bound no committed record exceeds.

    When the database is lost (corrupt, deleted), numbering restarts above this mark, so new
    records can never collide with (and be dropped by the collector as duplicates of) old ones.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.value = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            self.value = 0

    def reserve_through(self, seq: int) -> None:
        if seq <= self.value:
            return
        value = seq + SEQ_BLOCK
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.value = value


@dataclass
class OutboxStats:
    appended: int = 0
    committed: int = 0
    acked: int = 0
    evicted: int = 0
    resets: int = 0
    last_commit_latency_s: float = 0.0
    gaps: list[tuple[int, int]] = field(default_factory=list)


class Outbox:
    """One vehicle's outbox. Thread-safe: the core appends, the uplink reads and acks."""

    def __init__(
        self,
        path: Path | str,
        *,
        disk_budget_bytes: int = 256 * 1024 * 1024,
        group_commit_s: float = 1.0,
        retain_acked: int = 100_000,
        newest_first: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.disk_budget_bytes = disk_budget_bytes
        self.group_commit_s = group_commit_s
        self.retain_acked = retain_acked
        self.newest_first = newest_first
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.RLock()
        self._pending: list[tuple[int, int, bytes]] = []
        self._pending_bytes = 0
        # One group commit must not overshoot a small budget by much.
        self._max_pending_bytes = max(4096, min(4 << 20, disk_budget_bytes // 8))
        self._pending_since: float | None = None
        self._mark = SeqMark(self.path.with_name(self.path.name + ".seq"))
        self.stats = OutboxStats()
        self._db = self._open_or_reset()
        self._next_seq = self._load_next_seq()
        self._acked = self._db_count_acked()
        self._started = False
        self._sent_lo = self._sent_hi = 0  # band of seqs handed out since the last rewind

    # -- opening and recovery ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file: evictions shrink it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # The WAL is part of the footprint: checkpoint and truncate it well inside the budget.
        wal_limit = min(4 << 20, self.disk_budget_bytes // 4)
        db.execute(f"PRAGMA journal_size_limit={wal_limit}")
        db.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_limit // 4096)}")
        db.executescript(_SCHEMA)
        return db

    def _open_or_reset(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                db.close()
                raise sqlite3.DatabaseError(f"quick_check: {verdict}")
            return db
        except sqlite3.DatabaseError as exc:
            return self._reset(exc)

    def _reset(self, cause: Exception) -> sqlite3.Connection:
        """Move the unusable file aside, start a new one numbering above the seq mark, report it."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._wall_clock())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        log.error("outbox %s unusable (%s): moved to %s, starting a new one", self.path, cause, aside)
        self.stats.resets += 1
        db = self._connect()
        floor = self._mark.value
        now = self._wall_clock()
        notes: list[Record] = [
            Alert(
                now,
                "outbox_reset",
                "critical",
                f"outbox unusable ({cause}); moved to {aside.name}",
                {"moved_to": str(aside), "cause": str(cause)[:200]},
            ),
        ]
        if floor > 0:
            notes.insert(0, Gap(now, 1, floor, "outbox_reset"))
        self._mark.reserve_through(floor + len(notes))
        db.execute("BEGIN IMMEDIATE")
        for i, note in enumerate(notes, start=floor + 1):
            db.execute(
                "INSERT INTO records (seq, priority, body) VALUES (?, 1, ?)", (i, convert.encode(i, note))
            )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (floor + len(notes),))
        db.execute("COMMIT")
        return db

    def _load_next_seq(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        top = self._db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0
        return max(row[0] if row else 0, top) + 1

    # -- appending -----------------------------------------------------------------------------

    def append(self, record: Record) -> int:
        """Number and buffer one record; priority records are committed before this returns."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            priority = is_priority(record)
            body = convert.encode(seq, record)
            self._pending.append((seq, int(priority), body))
            self._pending_bytes += len(body) + 16
            self.stats.appended += 1
            if self._pending_since is None:
                self._pending_since = self._monotonic()
            if priority or len(self._pending) >= 10_000 or self._pending_bytes >= self._max_pending_bytes:
                self.flush()
            return seq

    def tick(self) -> None:
        """Group commit: called often by the shell; commits when the oldest pending record is due."""
        with self._lock:
            since = self._pending_since
            if since is not None and self._monotonic() - since >= self.group_commit_s:
                self.flush()

    def flush(self) -> None:
        """Commit everything pending in one transaction, then enforce the disk budget."""
        with self._lock:
            if not self._pending:
                return
            started = self._monotonic()
            rows, self._pending, self._pending_since = self._pending, [], None
            self._pending_bytes = 0
            self._mark.reserve_through(rows[-1][0])
            try:
                self._commit(rows)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                log.warning("disk full while committing %d records: evicting telemetry", len(rows))
                self._evict(target=max(0, self._used_bytes() // 2))
                self._commit(rows)
            except sqlite3.DatabaseError as exc:
                self._db.close()
                self._db = self._reset(exc)
                self._next_seq = self._load_next_seq()
                renumbered = [self._renumber(body, prio) for _, prio, body in rows]
                self._commit(renumbered)
                self.rewind()
            self.stats.committed += len(rows)
            self.stats.last_commit_latency_s = self._monotonic() - started
            self._enforce_budget()

    def _renumber(self, body: bytes, priority: int) -> tuple[int, int, bytes]:
        from protocols.dropline.v1 import dropline_pb2 as pb

        message = pb.Record.FromString(body)
        message.seq = self._next_seq
        self._next_seq += 1
        return message.seq, priority, message.SerializeToString()

    def _commit(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO records (seq, priority, body) VALUES (?, ?, ?)", rows)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (rows[-1][0],))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- disk budget ---------------------------------------------------------------------------

    def _used_bytes(self) -> int:
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def _enforce_budget(self) -> None:
        excess = self._acked - self.retain_acked
        if excess > 0:
            oldest_acked = "SELECT seq FROM records WHERE acked != 0 ORDER BY seq LIMIT ?"
            self._db.execute(f"DELETE FROM records WHERE seq IN ({oldest_acked})", (excess,))
            self._acked -= excess
        if self._used_bytes() > self.disk_budget_bytes:
            self._evict(target=int(self.disk_budget_bytes * 0.9))

    def _db_count_acked(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records WHERE acked != 0").fetchone()[0])

    def _evict(self, target: int) -> None:
        """Free space down to ``target`` bytes: acked history first, then the oldest telemetry,
        reported as one gap (priority records inside its range are kept and still sent)."""
        self._db.execute("DELETE FROM records WHERE acked != 0")
        self._acked = 0
        first = last = 0
        while self._used_bytes() > target:
            seqs = [
                r[0]
                for r in self._db.execute(
                    "SELECT seq FROM records WHERE priority = 0 ORDER BY seq LIMIT 2000"
                )
            ]
            if not seqs:
                log.error("outbox over budget with only priority records left (%d bytes)", self._used_bytes())
                break
            self._db.execute(
                "DELETE FROM records WHERE priority = 0 AND seq BETWEEN ? AND ?", (seqs[0], seqs[-1])
            )
            self.stats.evicted += len(seqs)
            first, last = first or seqs[0], seqs[-1]
        if first:
            self._record_gap(first, last)
        self._db.execute("PRAGMA incremental_vacuum")

    def _record_gap(self, first: int, last: int) -> None:
        """Report evicted telemetry; merges with the previous gap when nothing was kept between."""
        seq = self._next_seq
        self._next_seq += 1
        self._mark.reserve_through(seq)
        gap = Gap(self._wall_clock(), first, last, "disk_budget")
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT INTO records (seq, priority, body) VALUES (?, 1, ?)", (seq, convert.encode(seq, gap))
        )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (seq,))
        self._db.execute("COMMIT")
        self.stats.gaps.append((first, last))
        log.warning("disk budget: evicted telemetry seq %d..%d, reported as gap record %d", first, last, seq)

    # -- the uplink's side ---------------------------------------------------------------------

    def rewind(self) -> None:
        """Forget what was handed out: everything unacked will be offered again (after a
        reconnect or an ack timeout; the collector makes the duplicates harmless)."""
        with self._lock:
            self._started = False

    def next_batch(self, max_records: int, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Committed, unacked records not handed out since the last rewind, in upload order.

        Oldest-first walks up from the oldest record. Newest-first sends whatever arrived since
        the last batch first, then walks the backlog downwards: live position before history.
        """
        with self._lock:
            if not self._started:  # the band [lo, hi] of handed-out seqs starts empty at one end
                top = self._db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0
                self._sent_hi, self._sent_lo = (top, top + 1) if self.newest_first else (0, 1)
                self._started = True
            rows = self._select("seq > ? AND acked = 0 ORDER BY seq", self._sent_hi, max_records)
            if not rows and self.newest_first:
                rows = self._select("seq < ? AND acked = 0 ORDER BY seq DESC", self._sent_lo, max_records)
            rows = _cap_bytes(rows, max_bytes)
            if rows:
                self._sent_hi = max(self._sent_hi, rows[0][0], rows[-1][0])
                self._sent_lo = min(self._sent_lo, rows[0][0], rows[-1][0])
            return rows

    def _select(self, where: str, bound: int, limit: int) -> list[tuple[int, bytes]]:
        sql = f"SELECT seq, body FROM records WHERE {where} LIMIT ?"
        return [(int(s), bytes(b)) for s, b in self._db.execute(sql, (bound, limit))]

    def ack(self, ranges: Iterable[tuple[int, int]], rejected: bool = False) -> int:
        """Mark records the collector has stored; idempotent, any order. Returns rows newly acked.

        ``rejected`` marks records the collector refused for good (acked = 2): they stay here for
        inspection but are not offered again, so one bad record cannot stall the van's upload."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            n = 0
            for first, last in ranges:
                if first > last or last >= self._next_seq:
                    log.warning("ignoring ack for seq %d..%d (never given out)", first, last)
                    continue
                n += db.execute(
                    "UPDATE records SET acked = ? WHERE seq BETWEEN ? AND ? AND acked = 0",
                    (2 if rejected else 1, first, last),
                ).rowcount
            db.execute("COMMIT")
            self.stats.acked += n
            self._acked += n
            return n

    # -- inspection ----------------------------------------------------------------------------

    def unacked_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM records WHERE acked = 0").fetchone()[0])

    def rows(self) -> list[tuple[int, int, bytes]]:
        """Every committed row (seq, acked, body): what this van has committed and still holds."""
        with self._lock:
            return [
                (int(s), int(a), bytes(b))
                for s, a, b in self._db.execute("SELECT seq, acked, body FROM records ORDER BY seq")
            ]

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()


def _cap_bytes(rows: list[tuple[int, bytes]], max_bytes: int) -> list[tuple[int, bytes]]:
    total = 0
    for i, (_, body) in enumerate(rows):
        total += len(body) + 4
        if total > max_bytes and i > 0:
            return rows[:i]
    return rows
