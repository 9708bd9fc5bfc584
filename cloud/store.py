"""The collector's store: records unique on (vehicle, seq), and per-vehicle delivery progress.

Progress (which seqs are held, which were explained away by the van's gap records, the highest
contiguous seq) is kept as merged ranges, in memory and mirrored in the same transaction as the
records, so a batch costs one ``executemany`` plus a few range rows whatever the vehicle's size.
``Store`` is the interface the ingest uses, so a PostgreSQL store can take ``SqliteStore``'s place.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import iso_time

SEQ_MAX = 2**63 - 1
"""SQLite integers are signed 64-bit: seqs (and gap bounds) above this cannot be stored."""

EXPORT_KINDS: dict[str, tuple[str, ...] | None] = {
    **{name: (body,) for body, name in convert.KINDS.items()},
    "events": (),  # record kinds of later issues: accepted, nothing stored under them yet
    "deliveries": (),
    "all": None,
}
"""``dropline export --kind`` name -> the record body kinds it prints (None: every kind)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    vehicle TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    time_ms INTEGER,
    body    BLOB NOT NULL,          -- the serialised dropline.v1.Record, as the van sent it
    PRIMARY KEY (vehicle, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spans (  -- merged seq ranges per vehicle: 's' held, 'x' explained by gaps
    vehicle TEXT NOT NULL,
    what    TEXT NOT NULL,
    first   INTEGER NOT NULL,
    last    INTEGER NOT NULL,
    PRIMARY KEY (vehicle, what, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vehicles (
    vehicle     TEXT PRIMARY KEY,
    records     INTEGER NOT NULL,
    contiguous  INTEGER NOT NULL,
    max_seq     INTEGER NOT NULL,
    fix_seq     INTEGER,            -- latest position: the fix with the greatest time
    fix_time_ms INTEGER,
    lat_e7      INTEGER,
    lon_e7      INTEGER
) WITHOUT ROWID;
"""


_INSERT = "INSERT OR IGNORE INTO records (vehicle, seq, kind, time_ms, body) VALUES (?, ?, ?, ?, ?)"


class Spans:
    """Sorted, disjoint, non-touching closed ranges of integers; ``add`` merges in O(log n)."""

    __slots__ = ("firsts", "lasts")

    def __init__(self, ranges: Sequence[tuple[int, int]] = ()) -> None:
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        for first, last in sorted(ranges):
            self.add(first, last)

    def add(self, first: int, last: int) -> tuple[list[int], tuple[int, int]] | None:
        """Merge [first, last] in; return (firsts of the ranges it replaced, the new range), or None
        when it was already covered, so the caller can mirror exactly that change elsewhere."""
        firsts, lasts = self.firsts, self.lasts
        i = bisect_left(lasts, first - 1)
        j = bisect_right(firsts, last + 1)
        if i < j:
            if j == i + 1 and firsts[i] <= first and last <= lasts[i]:
                return None
            first = min(first, firsts[i])
            last = max(last, lasts[j - 1])
        replaced = firsts[i:j]
        firsts[i:j] = [first]
        lasts[i:j] = [last]
        return replaced, (first, last)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.firsts, self.lasts, strict=True))

    def prefix(self) -> int:
        """The highest c such that every integer in [1, c] is covered (0 if 1 is not)."""
        return self.lasts[0] if self.firsts and self.firsts[0] <= 1 else 0

    def hole_count(self, upto: int) -> int:
        """How many uncovered runs lie in [1, upto], given that ``upto`` itself is covered."""
        k = bisect_right(self.firsts, upto)
        if k == 0:
            return 0
        return k - 1 + (1 if self.firsts[0] > 1 else 0)

    def holes(self, upto: int, limit: int | None = None) -> list[tuple[int, int]]:
        """The uncovered runs in [1, upto], lowest first, at most ``limit`` of them."""
        out: list[tuple[int, int]] = []
        expect = 1
        for first, last in zip(self.firsts, self.lasts, strict=True):
            if first > upto or (limit is not None and len(out) >= limit):
                break
            if first > expect:
                out.append((expect, first - 1))
            expect = last + 1
        if expect <= upto and (limit is None or len(out) < limit):
            out.append((expect, upto))
        return out

    def minus(self, other: Spans) -> list[tuple[int, int]]:
        """The parts of these ranges that ``other`` does not cover."""
        out: list[tuple[int, int]] = []
        for first, last in zip(self.firsts, self.lasts, strict=True):
            lo = first
            j = bisect_left(other.lasts, first)
            while lo <= last:
                if j >= len(other.firsts) or other.firsts[j] > last:
                    out.append((lo, last))
                    break
                if other.firsts[j] > lo:
                    out.append((lo, other.firsts[j] - 1))
                lo = other.lasts[j] + 1
                j += 1
        return out


def runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted integers (repeats allowed) as inclusive (first, last) runs."""
    if not seqs:
        return []
    out: list[tuple[int, int]] = []
    first = prev = seqs[0]
    for s in seqs:
        if s > prev + 1:
            out.append((first, prev))
            first = s
        prev = s
    out.append((first, prev))
    return out


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did. ``stored_ranges`` covers every seq of the batch: each one is
    in the store now, inserted by this batch or already there."""

    stored_ranges: list[tuple[int, int]]
    contiguous: int
    inserted: int
    duplicates: int
    max_seq: int = 0
    open_gap_count: int = 0
    first_open_gap: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class VehicleProgress:
    """One vehicle's delivery state: every seq <= ``contiguous`` is held or explained by a gap;
    ``open_gaps`` are missing, unexplained runs below ``max_seq`` (still on their way, or lost);
    ``explained_gaps`` are missing runs the van said it dropped on purpose."""

    vehicle: str
    contiguous: int
    max_seq: int
    records: int
    open_gaps: list[tuple[int, int]]
    explained_gaps: list[tuple[int, int]]
    position: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vehicle": self.vehicle,
            "contiguous": self.contiguous,
            "max_seq": self.max_seq,
            "records": self.records,
            "open_gaps": [list(r) for r in self.open_gaps],
            "explained_gaps": [list(r) for r in self.explained_gaps],
        }
        if self.position is not None:
            out["position"] = self.position
        return out


class Store(Protocol):
    """Where the collector keeps records. Every method may be called from any thread."""

    def write(self, vehicle: str, records: Sequence[pb.Record]) -> WriteResult:
        """Insert the records (ignoring any (vehicle, seq) already held) and update the vehicle's
        progress, in one durable transaction: when this returns, the result may be acknowledged.
        Callers pass validated records: seq in 1..SEQ_MAX, gap bounds within 1..seq-1."""
        ...

    def vehicles(self) -> list[VehicleProgress]:
        """Progress of every vehicle, ordered by vehicle id, as committed (by any process)."""
        ...

    def export(self, kind: str, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored records of an ``EXPORT_KINDS`` kind, by vehicle then seq, in export JSON form
        with ``vehicle`` and ``seq``."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Vehicle:
    held: Spans = field(default_factory=Spans)
    explained: Spans = field(default_factory=Spans)
    covered: Spans = field(default_factory=Spans)  # held | explained
    records: int = 0
    known: bool = False  # a row exists in `vehicles`


def _connect(path: Path, readonly: bool = False, busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if readonly:
        db.execute("PRAGMA query_only=1")
    return db


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, fsync'd at every commit (synchronous=FULL)
    because an ack promises the records survive a power cut. One writer at a time (a lock); reads
    (``vehicles``, ``export``) use their own connections and never wait for the writer. Several
    processes may share the file: a commit by another one is noticed and the cached ranges reloaded.
    """

    def __init__(
        self, path: Path | str, *, cache_mib: int = 64, readonly: bool = False, busy_timeout_ms: int = 30_000
    ) -> None:
        """Open (creating if needed) the store at ``path``; ``readonly`` opens an existing store for
        ``vehicles``/``export`` only and raises sqlite3.DatabaseError if the file is not one.
        ``busy_timeout_ms``: how long a write waits for another process's lock before failing."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = _connect(self.path, readonly, busy_timeout_ms)
        if readonly:
            found = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {row[0] for row in found}
            if not {"records", "spans", "vehicles"} <= tables:
                self._db.close()
                raise sqlite3.DatabaseError(f"{self.path} is not a collector store")
        else:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=67108864")  # WAL shrinks back after checkpoints
            self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
        self._cache: dict[str, _Vehicle] = {}
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    # -- writing --------------------------------------------------------------------------------

    def write(self, vehicle: str, records: Sequence[pb.Record]) -> WriteResult:
        rows: list[tuple[str, int, str, int | None, bytes]] = []
        append = rows.append
        seqs: list[int] = []
        add_seq = seqs.append
        gaps: list[tuple[int, int]] = []
        best: pb.Record | None = None
        best_t = -(2**63)
        t: int | None
        kind: str | None
        for r in records:
            seq = r.seq
            kind = r.WhichOneof("body")
            if kind == "fix":
                t = r.fix.time_ms
                if t >= best_t:
                    best_t, best = t, r
            elif kind is None:
                kind, t = "unknown", None  # a body this build does not know: kept as sent
            elif kind == "gap":
                gaps.append((r.gap.from_seq, r.gap.to_seq))
                t = None
            else:
                t = getattr(r, kind).time_ms
            append((vehicle, seq, kind, t, r.SerializeToString()))
            add_seq(seq)
        seqs.sort()
        batch_runs = runs(seqs)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._notice_other_writers()
                state = self._state(vehicle)
                before = db.total_changes
                db.executemany(_INSERT, rows)
                inserted = db.total_changes - before
                state.records += inserted
                for first, last in batch_runs:
                    self._add_span(vehicle, "s", state.held, first, last)
                    state.covered.add(first, last)
                for first, last in gaps:
                    self._add_span(vehicle, "x", state.explained, first, last)
                    state.covered.add(first, last)
                contiguous = state.covered.prefix()
                max_seq = state.held.lasts[-1] if state.held.lasts else 0
                self._save_vehicle(vehicle, state, contiguous, max_seq, best)
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            holes = state.covered.hole_count(max_seq)
            first_hole = state.covered.holes(max_seq, limit=1) if holes else []
        return WriteResult(
            stored_ranges=batch_runs,
            contiguous=contiguous,
            inserted=inserted,
            duplicates=len(rows) - inserted,
            max_seq=max_seq,
            open_gap_count=holes,
            first_open_gap=first_hole[0] if first_hole else None,
        )

    def _rollback(self) -> None:
        """Undo the transaction and forget the cached ranges, which may hold its changes."""
        self._cache.clear()
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (disk full)
            self._db.execute("ROLLBACK")

    def _notice_other_writers(self) -> None:
        """Inside the write transaction nobody else can commit, and our own commits do not change
        data_version: a change since the last look means another process wrote the file."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    def _state(self, vehicle: str) -> _Vehicle:
        state = self._cache.get(vehicle)
        if state is not None:
            return state
        state = _Vehicle()
        row = self._db.execute("SELECT records FROM vehicles WHERE vehicle = ?", (vehicle,)).fetchone()
        if row is not None:
            state.records, state.known = int(row[0]), True
            for what, first, last in self._db.execute(
                "SELECT what, first, last FROM spans WHERE vehicle = ? ORDER BY first", (vehicle,)
            ):
                (state.held if what == "s" else state.explained).add(first, last)
                state.covered.add(first, last)
        self._cache[vehicle] = state
        return state

    def _add_span(self, vehicle: str, what: str, spans: Spans, first: int, last: int) -> None:
        change = spans.add(first, last)
        if change is None:
            return
        replaced, (new_first, new_last) = change
        gone = [(vehicle, what, f) for f in replaced if f != new_first]
        if gone:
            self._db.executemany("DELETE FROM spans WHERE vehicle = ? AND what = ? AND first = ?", gone)
        self._db.execute(
            "INSERT OR REPLACE INTO spans (vehicle, what, first, last) VALUES (?,?,?,?)",
            (vehicle, what, new_first, new_last),
        )

    def _save_vehicle(
        self, vehicle: str, state: _Vehicle, contiguous: int, max_seq: int, best: pb.Record | None
    ) -> None:
        db = self._db
        if not state.known:
            db.execute(
                "INSERT INTO vehicles (vehicle, records, contiguous, max_seq) VALUES (?,?,?,?)",
                (vehicle, state.records, contiguous, max_seq),
            )
            state.known = True
        else:
            db.execute(
                "UPDATE vehicles SET records = ?, contiguous = ?, max_seq = ? WHERE vehicle = ?",
                (state.records, contiguous, max_seq, vehicle),
            )
        if best is not None:
            f = best.fix
            db.execute(
                "UPDATE vehicles SET fix_seq = ?, fix_time_ms = ?, lat_e7 = ?, lon_e7 = ? WHERE vehicle = ?"
                " AND (fix_time_ms IS NULL OR fix_time_ms < ? OR (fix_time_ms = ? AND fix_seq < ?))",
                (best.seq, f.time_ms, f.lat_e7, f.lon_e7, vehicle, f.time_ms, f.time_ms, best.seq),
            )

    # -- reading --------------------------------------------------------------------------------

    def vehicles(self) -> list[VehicleProgress]:
        db = _connect(self.path, readonly=True)
        try:
            db.execute("BEGIN")  # one snapshot for both tables
            spans: dict[str, tuple[Spans, Spans]] = {}
            for vehicle, what, first, last in db.execute(
                "SELECT vehicle, what, first, last FROM spans ORDER BY vehicle, what, first"
            ):
                held, explained = spans.setdefault(vehicle, (Spans(), Spans()))
                (held if what == "s" else explained).add(first, last)
            out = []
            for vehicle, records, contiguous, max_seq, fix_seq, fix_time_ms, lat_e7, lon_e7 in db.execute(
                "SELECT vehicle, records, contiguous, max_seq, fix_seq, fix_time_ms, lat_e7, lon_e7"
                " FROM vehicles ORDER BY vehicle"
            ):
                held, explained = spans.get(vehicle, (Spans(), Spans()))
                covered = Spans(held.ranges() + explained.ranges())
                position = None
                if fix_seq is not None:
                    position = {
                        "seq": fix_seq,
                        "time": iso_time(fix_time_ms / 1000),
                        "lat": lat_e7 / 1e7,
                        "lon": lon_e7 / 1e7,
                    }
                out.append(
                    VehicleProgress(
                        vehicle=vehicle,
                        contiguous=contiguous,
                        max_seq=max_seq,
                        records=records,
                        open_gaps=covered.holes(max_seq),
                        explained_gaps=explained.minus(held),
                        position=position,
                    )
                )
            db.execute("COMMIT")
            return out
        finally:
            db.close()

    def export(self, kind: str, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        if kind in EXPORT_KINDS:
            bodies = EXPORT_KINDS[kind]
        elif kind in convert.KINDS or kind == "unknown":
            bodies = (kind,)
        else:
            raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(EXPORT_KINDS)}")
        return self._export(bodies, vehicle)

    def _export(self, bodies: tuple[str, ...] | None, vehicle: str | None) -> Iterator[dict[str, Any]]:
        if bodies == ():
            return
        where: list[str] = []
        params: list[str] = []
        if bodies is not None:
            where.append(f"kind IN ({','.join('?' * len(bodies))})")
            params.extend(bodies)
        if vehicle is not None:
            where.append("vehicle = ?")
            params.append(vehicle)
        sql = "SELECT vehicle, body FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY vehicle, seq"
        db = _connect(self.path, readonly=True)
        try:
            record = pb.Record()
            for vehicle_id, body in db.execute(sql, params):
                record.Clear()
                record.ParseFromString(body)
                yield {"vehicle": vehicle_id, **convert.to_json(record)}
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()
