"""The van's store-and-forward buffer: every record, numbered and committed to SQLite before
anyone else sees it, kept until the collector says it has stored it.

Guarantees a caller may rely on:

* ``append`` gives each record the next per-vehicle sequence number. Numbers only grow, across
  restarts and even across a corrupt file being replaced (see ``SeqMark``).
* Priority records (scans, alerts, gaps) are durable (fsync'd: WAL, ``synchronous=FULL``) when
  ``append`` returns. Telemetry (fixes, signals) is group-committed: it is durable once ``tick``
  has run with the oldest pending record ``group_commit_s`` old, so at most about that much is
  lost on power loss. One exception, reported: while the file cannot be written (another
  process holds its write lock, the disk is full of our own deliveries, an I/O error), records
  wait in memory, bounded, and ``tick`` retries; the ``outbox_locked`` / ``outbox_disk_full`` /
  ``outbox_unwritable`` alert is committed once writing works again.
* Only committed records are handed to the uplink, as a ``Transaction`` (``batch``). A seq is
  in at most one open transaction. Bulk records (``BULK_KINDS``: photo and signature chunks)
  form a second upload class: a batch takes them only after every other sendable record, so a
  backlog of photos never delays the live position; they are sent oldest first. ``accept``
  marks what the collector holds (stored, or quarantined with a reason: acked either way, never
  offered again); everything else of the transaction, and everything of a released one, is
  offered again. Acked rows are kept as local history (up to ``retain_acked`` rows) and are
  the first to go when space is needed.
* Over the disk budget, or when the filesystem itself is full, acked rows go first, then the
  oldest unacked telemetry, each run of evicted telemetry reported by a ``Gap`` record. Priority
  records are never evicted. A small reserve file (``<path>.reserve``) keeps room for the
  eviction itself (deleting rows needs WAL space too) and is released when the disk fills.
* Only real corruption of the database file (SQLITE_CORRUPT, SQLITE_NOTADB, a failed
  ``quick_check``) moves it aside: a new one is started, and an ``outbox_reset`` alert plus a gap
  covering every earlier number are queued for the collector. A path that cannot hold our file
  (a directory, a parent that cannot be created, no permission) raises ``ConfigError``.
* Each row stores its kind and the encoded body (``protocols.convert.encode_body``), no seq
  inside. A file of the first schema (no kind column, body = a whole ``pb.Record``) is migrated
  in place on open, in small committed steps, so an interrupted migration resumes; an old body
  that does not parse keeps its bytes under kind ``unknown`` (the collector quarantines it).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from protocols import convert
from protocols.errors import ConfigError
from protocols.records import Alert, Gap, Record, is_priority

log = logging.getLogger("dropline.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq      INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    priority INTEGER NOT NULL,
    acked    INTEGER NOT NULL DEFAULT 0,
    body     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_INSERT = "INSERT INTO records (seq, kind, priority, body) VALUES (?, ?, ?, ?)"
_SET_LAST_SEQ = """INSERT INTO meta VALUES ('last_seq', ?)
    ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"""

SEQ_BLOCK = 100_000
"""How far ahead the seq mark file reserves numbers: one fsync'd write per this many records."""

ACKED_STORED = 1
ACKED_QUARANTINED = 2
"""``acked`` values: 0 waiting, 1 stored by the collector, 2 quarantined by it (kept here for
inspection, never offered again)."""

BULK_KINDS = ("blob_chunk",)
"""Kinds uploaded after everything else (large, not urgent); still priority: fsync'd, never evicted."""
_NOT_BULK = f"kind NOT IN ({','.join(repr(k) for k in BULK_KINDS)})"
_BULK = f"kind IN ({','.join(repr(k) for k in BULK_KINDS)})"

_MIGRATE_STEP = 2000
_EVICT_STEP = 500
_RETRY_BUSY_MS = 50
_CACHE_KIB = 512
"""SQLite's page cache for the outbox (its default is 2 MiB). The cache fills over hours, not in
a benchmark's minutes, so its size is part of the van's steady 40 MB: 512 KiB holds the pages the
hot path touches (the tail of the table and of its indexes); the kernel's page cache holds the
rest. Measured: 1.4 MB less resident after 200,000 appends, append rate within noise."""

PendingRow = tuple[int, str, int, bytes]
"""(seq, kind, priority, body) of a record appended but not yet committed."""


class _Stalled(Exception):
    """The file cannot take writes now; ``kind`` names why (the alert code once it clears)."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {cause}")
        self.kind = kind
        self.cause = cause


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", -1) or -1) & 0xFF


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return _code(exc) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and _code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _is_corrupt(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and _code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


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
        """Raises OSError (e.g. ENOSPC) when the mark cannot be written; nothing is reserved then."""
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


@dataclass(frozen=True, slots=True)
class Stored:
    """One committed record as the uplink sends it."""

    seq: int
    kind: str
    """``fix``, ``signal``, ``scan``, ``alert``, ``gap`` (``unknown`` only for an unreadable
    row migrated from the first schema)."""
    body: bytes
    """The encoded body message (``protocols.convert.encode_body``), no seq inside."""


class Transaction:
    """Records handed to the uplink; settled by the collector's ack or released for resending.

    A transaction is open until ``accept``, ``release`` or the outbox's ``release_all``; while
    it is open none of its seqs is handed out again. Both methods are safe to call late or twice.
    """

    __slots__ = ("_bulk", "_outbox", "_seqs", "open", "records")

    def __init__(self, outbox: Outbox, records: list[Stored]) -> None:
        self.records = records
        self._outbox = outbox
        self._seqs = sorted(r.seq for r in records)
        self._bulk = frozenset(r.seq for r in records if r.kind in BULK_KINDS)
        self.open = True

    def accept(
        self, stored: Iterable[tuple[int, int]], quarantined: Iterable[tuple[int, int, str]] = ()
    ) -> int:
        """The collector holds these seqs (stored, or quarantined with a reason): mark them acked
        (quarantined ones acked too, and counted/logged per reason in stats). Any seq of this
        transaction not covered is released (offered again). Returns rows newly acked.

        Ranges are inclusive ``(first, last)``; only seqs of this transaction are marked, so a
        wrong range can never ack a record that was not sent in it."""
        return self._outbox._accept(self, list(stored), list(quarantined))

    def release(self) -> None:
        """Not delivered (reconnect, ack timeout, transient collector failure): offer these again."""
        self._outbox._release(self)

    def _covered(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        out: list[int] = []
        for first, last in ranges:
            lo, hi = bisect.bisect_left(self._seqs, first), bisect.bisect_right(self._seqs, last)
            out.extend(self._seqs[lo:hi])
        return out


@dataclass
class OutboxStats:
    appended: int = 0
    committed: int = 0
    acked: int = 0
    evicted: int = 0
    resets: int = 0
    last_commit_latency_s: float = 0.0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    released: int = 0
    """Transactions released (not delivered) and so offered again."""
    quarantined: dict[str, int] = field(default_factory=dict)
    """Records the collector quarantined, by its reason."""
    stalls: dict[str, int] = field(default_factory=dict)
    """Times writing stopped, by kind (``outbox_locked``, ``outbox_disk_full``, ...)."""
    stalled: str = ""
    """The current stall, empty while writes work."""
    dropped_in_memory: int = 0
    """Telemetry dropped from memory while stalled (reported as gaps)."""
    disk_full: int = 0
    """Times the filesystem itself was full (SQLITE_FULL / ENOSPC)."""


def _merge_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


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
        busy_timeout_s: float = 2.0,
        retry_s: float = 1.0,
        memory_cap_bytes: int = 8 << 20,
        reserve_bytes: int = 256 << 10,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``busy_timeout_s``: how long one commit waits for another process's write lock
        before its records wait in memory (at most ``memory_cap_bytes``) for a retry on ``tick``
        every ``retry_s``. ``reserve_bytes``: room kept on the filesystem for evicting."""
        self.path = Path(path)
        self.disk_budget_bytes = disk_budget_bytes
        self.group_commit_s = group_commit_s
        self.retain_acked = retain_acked
        self.newest_first = newest_first
        self.busy_timeout_s = busy_timeout_s
        self.retry_s = retry_s
        self.memory_cap_bytes = memory_cap_bytes
        self.reserve_bytes = reserve_bytes
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.RLock()
        self._pending: list[PendingRow] = []
        self._pending_bytes = 0
        self._pending_since: float | None = None
        self._check_path()
        # One group commit must not overshoot a small budget (or a small filesystem) by much.
        fs = os.statvfs(self.path.parent)
        self._fs_bytes = fs.f_blocks * fs.f_frsize
        self._max_pending_bytes = max(4096, min(4 << 20, disk_budget_bytes // 8, self._fs_bytes // 16))
        self._reserve = Path(str(self.path) + ".reserve")
        self._mark = SeqMark(self.path.with_name(self.path.name + ".seq"))
        self.stats = OutboxStats()
        self._stall_since = 0.0
        self._retry_at = 0.0
        self._dropped: list[int] = []  # seqs of telemetry dropped from memory, not yet reported
        self._dropped_reason = ""
        self._db = self._open_or_reset()
        self._next_seq = self._load_next_seq()
        self._acked = self._db_count_acked()
        # The uplink's side: the band [lo, hi] of seqs handed out since the last release_all,
        # and the released seqs inside it waiting to be offered again.
        self._started = False
        self._sent_lo = self._sent_hi = 0
        self._reoffer: set[int] = set()
        # Bulk rows have their own cursor (always oldest first) and their own released set.
        self._bulk_hi = 0
        self._reoffer_bulk: set[int] = set()
        self._open_tx: set[Transaction] = set()
        self._keep_reserve()

    # -- opening and recovery ------------------------------------------------------------------

    def _check_path(self) -> None:
        """A wrong path is a configuration error, never a corrupt file to move aside."""
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"outbox.path {self.path}: not a regular file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"outbox.path {self.path}: cannot create its folder ({exc.strerror})") from exc
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"outbox.path {self.path}: its folder is not writable")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_s
        )
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file: evictions shrink it
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            # The WAL is part of the footprint: checkpoint and truncate it well inside the budget.
            wal_limit = min(4 << 20, self.disk_budget_bytes // 4, self._fs_bytes // 16)
            db.execute(f"PRAGMA journal_size_limit={wal_limit}")
            db.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_limit // 4096)}")
            columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
            if columns and "kind" not in columns:
                db.execute("ALTER TABLE records ADD COLUMN kind TEXT")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _open_or_reset(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict == "ok":
                    self._migrate(db)
                    return db
            except BaseException:
                db.close()
                raise
            db.close()
            return self._reset(f"quick_check: {verdict}")
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                return self._reset(str(exc))
            if _code(exc) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
                raise ConfigError(f"outbox.path {self.path}: cannot open ({exc})") from exc
            raise

    def _migrate(self, db: sqlite3.Connection) -> None:
        """First schema -> kind column + body without seq, in small commits (resumable). Only
        such a file loads the protobuf runtime (~5 MB resident the van otherwise never carries)."""
        sql = "SELECT seq, body FROM records WHERE kind IS NULL ORDER BY seq LIMIT ?"
        rows = db.execute(sql, (_MIGRATE_STEP,)).fetchall()
        if not rows:
            return
        from google.protobuf.message import DecodeError

        from protocols.dropline.v1 import dropline_pb2 as pb

        while rows:
            updates = []
            for seq, old in rows:
                kind, body = "unknown", bytes(old)
                with contextlib.suppress(DecodeError):
                    message = pb.Record.FromString(old)
                    name = message.WhichOneof("body")
                    if name is not None:
                        kind, body = name, getattr(message, name).SerializeToString()
                if kind == "unknown":
                    log.error("outbox migration: row %d is unreadable; sent as kind 'unknown'", seq)
                updates.append((kind, body, seq))
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE records SET kind = ?, body = ? WHERE seq = ?", updates)
            db.execute("COMMIT")
            log.info("outbox migration: %d rows up to seq %d converted", len(rows), rows[-1][0])
            rows = db.execute(sql, (_MIGRATE_STEP,)).fetchall()

    def _reset(self, cause: str) -> sqlite3.Connection:
        """Move the corrupt file aside, start a new one numbering above the seq mark, report it."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._wall_clock())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        log.error("outbox %s corrupt (%s): moved to %s, starting a new one", self.path, cause, aside)
        self.stats.resets += 1
        db = self._connect()
        floor = self._mark.value
        now = self._wall_clock()
        notes: list[Record] = [
            Alert(
                now,
                "outbox_reset",
                "critical",
                f"outbox corrupt ({cause}); moved to {aside.name}",
                {"moved_to": str(aside), "cause": cause[:200]},
            ),
        ]
        if floor > 0:
            notes.insert(0, Gap(now, 1, floor, "outbox_reset"))
        self._mark.reserve_through(floor + len(notes))
        db.execute("BEGIN IMMEDIATE")
        for i, note in enumerate(notes, start=floor + 1):
            kind, body = convert.encode_body(note)
            db.execute(_INSERT, (i, kind, 1, body))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (floor + len(notes),))
        db.execute("COMMIT")
        return db

    def _load_next_seq(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        top = self._db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0
        return max(row[0] if row else 0, top) + 1

    # -- appending -----------------------------------------------------------------------------

    def append(self, record: Record) -> int:
        """Number and buffer one record; priority records are committed before this returns
        (unless writing is stalled: then they wait in memory and ``tick`` retries)."""
        with self._lock:
            seq = self._enqueue(record)
            self.stats.appended += 1
            priority = is_priority(record)
            if self.stats.stalled:
                self._cap_memory()
                if self._monotonic() >= self._retry_at:
                    self.flush()
            elif priority or len(self._pending) >= 10_000 or self._pending_bytes >= self._max_pending_bytes:
                self.flush()
            return seq

    def _enqueue(self, record: Record) -> int:
        seq = self._next_seq
        self._next_seq += 1
        kind, body = convert.encode_body(record)
        self._pending.append((seq, kind, int(is_priority(record)), body))
        self._pending_bytes += len(body) + 24
        if self._pending_since is None:
            self._pending_since = self._monotonic()
        return seq

    def tick(self) -> None:
        """Group commit: called often by the shell; commits when the oldest pending record is
        due, and retries a stalled commit every ``retry_s``."""
        with self._lock:
            now = self._monotonic()
            if self.stats.stalled:
                if now >= self._retry_at:
                    self.flush()
                return
            since = self._pending_since
            if since is not None and now - since >= self.group_commit_s:
                self.flush()

    def flush(self) -> None:
        """Commit everything pending in one transaction, then enforce the disk budget. Never
        raises for a full disk, a lock or an I/O error: the records stay pending (reported)."""
        with self._lock:
            stalled = self.stats.stalled
            if not self._pending and not stalled:
                return
            started = self._monotonic()
            try:
                if stalled:
                    self._db.execute(f"PRAGMA busy_timeout={_RETRY_BUSY_MS}")
                self._commit_pending()
                self._note_recovery(stalled)
                try:
                    self._enforce_budget()  # may queue a gap record
                except _Stalled as exc:
                    if exc.kind != "outbox_disk_full":
                        raise
                    self._make_room(self._fs_bytes // 16)
                self._commit_pending()
            except _Stalled as exc:
                self._stall(exc)
                return
            finally:
                if stalled:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            self.stats.last_commit_latency_s = self._monotonic() - started

    def _commit_pending(self) -> None:
        """Commit the pending rows, making room when the filesystem is full; raises _Stalled."""
        while self._pending:
            try:
                self._guarded(self._commit)
            except _Stalled as exc:
                if exc.kind != "outbox_disk_full":
                    raise
                if self._make_room(max(self._pending_bytes * 2, self._fs_bytes // 16)):
                    continue
                if not self._drop_pending_telemetry():
                    raise
                continue
            self.stats.committed += len(self._pending)
            self._pending, self._pending_since, self._pending_bytes = [], None, 0

    def _drop_pending_telemetry(self) -> bool:
        """Nothing left to evict on a full disk: pending telemetry goes (a gap reports it) so
        the scans and alerts beside it can be written. False when there was none."""
        kept = [row for row in self._pending if row[2]]
        dropped = [row[0] for row in self._pending if not row[2]]
        if not dropped:
            return False
        log.error(
            "outbox: disk full of priority records, dropping %d pending telemetry records", len(dropped)
        )
        self._dropped += dropped
        self._dropped_reason = self._dropped_reason or "disk_full"
        self.stats.dropped_in_memory += len(dropped)
        self._pending = kept
        self._pending_bytes = sum(len(r[3]) + 24 for r in kept)
        self._note_recovery("")
        return True

    def _guarded(self, write: Callable[[], None]) -> None:
        """Run one write; turn SQLite/OS failures into _Stalled, and corruption into a reset."""
        try:
            write()
        except (sqlite3.Error, OSError) as exc:
            if self._db.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if _is_corrupt(exc):
                self._recover_from_corruption(str(exc))
                self._guarded(write)
                return
            if _is_full(exc):
                self.stats.disk_full += 1
                raise _Stalled("outbox_disk_full", exc) from exc
            if _is_busy(exc):
                raise _Stalled("outbox_locked", exc) from exc
            raise _Stalled("outbox_unwritable", exc) from exc

    def _commit(self) -> None:
        rows = self._pending
        top = max(r[0] for r in rows)
        self._mark.reserve_through(top)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_INSERT, rows)
        db.execute(_SET_LAST_SEQ, (top,))
        db.execute("COMMIT")

    def _recover_from_corruption(self, cause: str) -> None:
        """The file went bad under us: start a new one and renumber what is pending (body has
        no seq inside, so that is just a new number); everything handed out is offered again."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db = self._reset(cause)
        self._next_seq = self._load_next_seq()
        renumbered = []
        for _, kind, priority, body in self._pending:
            renumbered.append((self._next_seq, kind, priority, body))
            self._next_seq += 1
        self._pending = renumbered
        self._acked = self._db_count_acked()
        self.release_all()

    # -- stalls: a lock, a full disk of priority records, an I/O error -------------------------

    def _stall(self, exc: _Stalled) -> None:
        now = self._monotonic()
        if not self.stats.stalled:
            self.stats.stalled = exc.kind
            self.stats.stalls[exc.kind] = self.stats.stalls.get(exc.kind, 0) + 1
            self._stall_since = now
            log.error(
                "outbox %s cannot be written (%s): keeping %d records in memory, retrying every %.1f s",
                *(self.path, exc, len(self._pending), self.retry_s),
            )
        self._retry_at = now + self.retry_s
        self._cap_memory()

    def _cap_memory(self) -> None:
        """While stalled, keep at most memory_cap_bytes pending: drop the oldest telemetry (a
        gap reports it once writing works), never a scan, alert or gap."""
        if self._pending_bytes <= self.memory_cap_bytes:
            return
        kept: list[PendingRow] = []
        excess = self._pending_bytes - self.memory_cap_bytes
        for row in self._pending:
            if excess > 0 and not row[2]:
                excess -= len(row[3]) + 24
                self._pending_bytes -= len(row[3]) + 24
                self._dropped.append(row[0])
                self._dropped_reason = self._dropped_reason or self.stats.stalled
                self.stats.dropped_in_memory += 1
            else:
                kept.append(row)
        self._pending = kept

    def _note_recovery(self, stalled: str) -> None:
        """After a stall (or dropping on a full disk): queue the gap for what was dropped from
        memory and the alert naming the stall, to go out with the next commit."""
        now = self._wall_clock()
        dropped, self._dropped = self._dropped, []
        reason, self._dropped_reason = self._dropped_reason or stalled, ""
        if dropped:
            self._queue_gap(Gap(now, min(dropped), max(dropped), reason))
        if stalled:
            seconds = self._monotonic() - self._stall_since
            self.stats.stalled = ""
            log.warning("outbox %s writable again after %.1f s (%s)", self.path, seconds, stalled)
            attrs = {"seconds": f"{seconds:.1f}", "dropped": str(len(dropped))}
            message = f"outbox could not be written for {seconds:.1f} s"
            self._enqueue(Alert(now, stalled, "warning", message, attrs))

    def _queue_gap(self, gap: Gap) -> None:
        self.stats.gaps.append((gap.from_seq, gap.to_seq))
        self._enqueue(gap)

    # -- disk budget and full disks ------------------------------------------------------------

    def _used_bytes(self) -> int:
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def _fs_free(self) -> int:
        st = os.statvfs(self.path.parent)
        return int(st.f_bavail * st.f_frsize)

    def _enforce_budget(self) -> None:
        excess = self._acked - self.retain_acked
        if excess > 0:
            oldest_acked = "SELECT seq FROM records WHERE acked != 0 ORDER BY seq LIMIT ?"
            self._write_step(f"DELETE FROM records WHERE seq IN ({oldest_acked})", excess)
            self._acked -= excess
        if self._used_bytes() > self.disk_budget_bytes:
            target = int(self.disk_budget_bytes * 0.9)
            self._evict(lambda: self._used_bytes() <= target, "disk_budget")
        self._keep_reserve()

    def _keep_reserve(self) -> None:
        """Hold reserve_bytes of the filesystem for the next eviction; make room if it is gone."""
        if self.reserve_bytes <= 0 or self._reserve.exists():
            return
        for _ in range(2):
            try:
                fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.reserve_bytes)
                finally:
                    os.close(fd)
                return
            except OSError as exc:
                self._reserve.unlink(missing_ok=True)
                if not _is_full(exc):
                    log.warning("outbox reserve %s: %s", self._reserve, exc)
                    return
                if not self._make_room(self.reserve_bytes * 2, use_reserve=False):
                    return

    def _make_room(self, need: int, use_reserve: bool = True) -> bool:
        """The filesystem is full: release the reserve, then evict acked history and the oldest
        telemetry until ``need`` bytes are free. False when nothing was left to evict."""
        if use_reserve:
            self._reserve.unlink(missing_ok=True)
        try:
            deleted = self._evict(lambda: self._fs_free() >= need + self.reserve_bytes, "disk_full")
        except _Stalled as exc:
            log.error("outbox: evicting on a full disk failed: %s", exc)
            return False
        if not deleted:
            log.error(
                "outbox %s: disk full, nothing left to evict (%d bytes free)", self.path, self._fs_free()
            )
        return deleted > 0

    def _db_count_acked(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records WHERE acked != 0").fetchone()[0])

    def _evict(self, enough: Callable[[], bool], reason: str) -> int:
        """Free space until ``enough()``: acked history first, then the oldest telemetry, in
        small committed steps, reported as one gap record queued for the next commit (priority
        records inside its range are kept and still sent). Returns rows deleted."""
        shrink = reason == "disk_full"
        deleted = 0
        acked = "SELECT seq FROM records WHERE acked != 0 ORDER BY seq LIMIT ?"
        while self._acked > 0 and not enough():
            n = self._write_step(f"DELETE FROM records WHERE seq IN ({acked})", _EVICT_STEP, shrink=shrink)
            deleted += n
            self._acked = self._acked - n if n == _EVICT_STEP else self._db_count_acked()
        first = last = 0
        oldest = "SELECT seq FROM records WHERE priority = 0 AND acked = 0 ORDER BY seq LIMIT ?"
        try:
            while not enough():
                seqs = [r[0] for r in self._db.execute(oldest, (_EVICT_STEP,))]
                if not seqs:
                    log.error("outbox: only priority records left to evict (%d bytes)", self._used_bytes())
                    break
                sql = "DELETE FROM records WHERE priority = 0 AND acked = 0 AND seq BETWEEN ? AND ?"
                n = self._write_step(sql, seqs[0], seqs[-1], shrink=shrink)
                deleted += n
                self.stats.evicted += n
                first, last = first or seqs[0], seqs[-1]
            if deleted and not shrink:
                self._write_step("PRAGMA incremental_vacuum")
        finally:  # a step that failed deleted nothing; what earlier steps deleted is reported
            if first:
                log.warning("%s: evicted telemetry seq %d..%d", reason, first, last)
                self._queue_gap(Gap(self._wall_clock(), first, last, reason))
        return deleted

    def _write_step(self, sql: str, *args: object, shrink: bool = False) -> int:
        """One statement committed on its own; with ``shrink`` the file is then shrunk and the
        WAL truncated, so the freed space returns to the filesystem."""
        n = 0

        def step() -> None:
            nonlocal n
            cursor = self._db.execute(sql, args)
            cursor.fetchall()  # a PRAGMA does its work row by row
            n = cursor.rowcount
            if shrink:
                self._db.execute("PRAGMA incremental_vacuum").fetchall()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        self._guarded(step)
        return max(n, 0)

    # -- the uplink's side ---------------------------------------------------------------------

    def batch(self, max_records: int, max_bytes: int = 1 << 20) -> Transaction | None:
        """Committed, unacked records not in an open transaction, in upload order; None when
        there is nothing to send.

        Released records come first. Then oldest-first walks up from the oldest record;
        newest-first sends whatever arrived since the last batch first, then walks the backlog
        downwards: live position before history. Bulk records (``BULK_KINDS``) fill only the
        room left after all that: released ones first, then oldest first."""
        with self._lock:
            if not self._started:  # the band [lo, hi] of handed-out seqs starts empty at one end
                top = self._db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0
                self._sent_hi, self._sent_lo = (top, top + 1) if self.newest_first else (0, 1)
                self._bulk_hi = 0
                self._started = True
            rows = self._take_reoffered(self._reoffer, max_records)
            reoffered = len(rows)
            if len(rows) < max_records:
                limit = max_records - len(rows)
                live = f"acked = 0 AND {_NOT_BULK} ORDER BY seq"
                fresh = self._select(f"seq > ? AND {live}", self._sent_hi, limit)
                if not fresh and self.newest_first:
                    fresh = self._select(f"seq < ? AND {live} DESC", self._sent_lo, limit)
                rows += fresh
            normal = len(rows)
            rows += self._take_reoffered(self._reoffer_bulk, max_records - len(rows))
            bulk_reoffered = len(rows)
            if len(rows) < max_records:
                rows += self._select(
                    f"seq > ? AND acked = 0 AND {_BULK} ORDER BY seq", self._bulk_hi, max_records - len(rows)
                )
            capped = _cap_bytes(rows, max_bytes)
            kept = len(capped)  # what does not fit goes back to where it came from
            self._reoffer.update(r.seq for r in rows[kept:reoffered])
            self._reoffer_bulk.update(r.seq for r in rows[max(kept, normal) : bulk_reoffered])
            for r in rows[reoffered : min(kept, normal)]:
                self._sent_hi = max(self._sent_hi, r.seq)
                self._sent_lo = min(self._sent_lo, r.seq)
            for r in rows[bulk_reoffered:kept]:
                self._bulk_hi = max(self._bulk_hi, r.seq)
            rows = capped
            if not rows:
                return None
            tx = Transaction(self, rows)
            self._open_tx.add(tx)
            return tx

    def _take_reoffered(self, reoffer: set[int], limit: int) -> list[Stored]:
        if not reoffer or limit <= 0:
            return []
        ordered = sorted(reoffer, reverse=self.newest_first and reoffer is self._reoffer)
        out: list[Stored] = []
        taken = 0
        while taken < len(ordered) and len(out) < limit:
            chunk = ordered[taken : taken + (limit - len(out))]
            taken += len(chunk)
            marks = ",".join("?" * len(chunk))
            found = {
                int(s): Stored(int(s), str(k), bytes(b))
                for s, k, b in self._db.execute(
                    f"SELECT seq, kind, body FROM records WHERE acked = 0 AND seq IN ({marks})", chunk
                )
            }
            out += [found[s] for s in chunk if s in found]
        reoffer.difference_update(ordered[:taken])
        return out

    def _select(self, where: str, bound: int, limit: int) -> list[Stored]:
        sql = f"SELECT seq, kind, body FROM records WHERE {where} LIMIT ?"
        return [Stored(int(s), str(k), bytes(b)) for s, k, b in self._db.execute(sql, (bound, limit))]

    def release_all(self) -> None:
        """Every open transaction released (the uplink reconnected): all unacked is offered again."""
        with self._lock:
            for tx in self._open_tx:
                tx.open = False
            self.stats.released += len(self._open_tx)
            self._open_tx.clear()
            self._reoffer.clear()
            self._reoffer_bulk.clear()
            self._started = False

    def _release(self, tx: Transaction, seqs: Iterable[int] | None = None) -> None:
        with self._lock:
            if not tx.open:
                return
            tx.open = False
            self._open_tx.discard(tx)
            for s in tx._seqs if seqs is None else seqs:
                (self._reoffer_bulk if s in tx._bulk else self._reoffer).add(s)
            self.stats.released += 1

    def _accept(
        self, tx: Transaction, stored: list[tuple[int, int]], quarantined: list[tuple[int, int, str]]
    ) -> int:
        with self._lock:
            marks: list[tuple[int, str, list[int]]] = [(ACKED_STORED, "", tx._covered(stored))]
            for first, last, reason in quarantined:
                marks.append((ACKED_QUARANTINED, reason, tx._covered([(first, last)])))
            covered = {s for _, _, seqs in marks for s in seqs}
            n = 0
            by_reason: dict[str, int] = {}
            if self.stats.stalled:  # do not hold the core up waiting for the lock: resend later
                self._release(tx)
                return 0
            try:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                for value, reason, seqs in marks:
                    for first, last in _merge_runs(seqs):
                        sql = "UPDATE records SET acked = ? WHERE seq BETWEEN ? AND ? AND acked = 0"
                        k = db.execute(sql, (value, first, last)).rowcount
                        n += k
                        if reason:
                            by_reason[reason] = by_reason.get(reason, 0) + k
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                log.warning("outbox: cannot record an ack now (%s): its records will be sent again", exc)
                self._release(tx)
                return 0
            for reason, k in by_reason.items():
                self.stats.quarantined[reason] = self.stats.quarantined.get(reason, 0) + k
                log.warning("collector quarantined %d records (%s)", k, reason)
            self.stats.acked += n
            self._acked += n
            self._release(tx, [s for s in tx._seqs if s not in covered])
            return n

    # -- inspection ----------------------------------------------------------------------------

    def unacked_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM records WHERE acked = 0").fetchone()[0])

    def rows(self) -> list[tuple[int, int, str, bytes]]:
        """Every committed row (seq, acked, kind, body): what this van has committed and holds."""
        with self._lock:
            sql = "SELECT seq, acked, kind, body FROM records ORDER BY seq"
            return [(int(s), int(a), str(k), bytes(b)) for s, a, k, b in self._db.execute(sql)]

    def close(self) -> None:
        """Commit what is pending (waiting up to the busy timeout), then close the file."""
        with self._lock:
            self.stats.stalled = ""
            self.flush()
            if self._pending:
                log.critical("outbox closing with %d records it could not write", len(self._pending))
            self._db.close()


def _cap_bytes(rows: list[Stored], max_bytes: int) -> list[Stored]:
    total = 0
    for i, r in enumerate(rows):
        total += len(r.body) + 8
        if total > max_bytes and i > 0:
            return rows[:i]
    return rows
