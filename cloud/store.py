"""The collector's store: records unique on (vehicle, seq), a quarantine beside them, and
per-vehicle delivery progress.

Records the ingest could not accept (an absurd time, a body that does not decode, a body that
contradicts the one already held for its seq) go to the ``quarantine`` table with their reason
and the bytes as received, unique on (vehicle, seq): kept, never silently dropped, and counted as
explained in the vehicle's progress so they leave no open gap.

Progress (which seqs are held, explained away by the van's gap records, or quarantined; the
highest contiguous seq; how many open gaps) is kept as merged ranges (``cloud.spans.Spans``), in
memory and mirrored in the same transaction as the records, so a batch costs one
``executemany`` plus O(log n) per range of seqs, whatever the vehicle's size and arrival order.
``Store`` is the interface the ingest uses, so a PostgreSQL store can take ``SqliteStore``'s place.
"""

from __future__ import annotations

import base64
import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from cloud.spans import Spans, runs
from protocols import convert
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import iso_time
from protocols.wire import TrackFix

SEQ_MAX = 2**63 - 1
"""SQLite integers are signed 64-bit: seqs (and gap bounds) above this cannot be stored."""

Storable: TypeAlias = pb.Record | TrackFix
"""What a store writes: a decoded record, or a track segment's fix as ``wire.decode_rows`` gives it
(stored with the same kind, time and body as the equal ``pb.Record``)."""

QUARANTINE = "quarantine"
"""The ``export`` kind that prints quarantined records."""

CONFLICT = "conflict"
"""Quarantine reason: a second body for a seq already held (in the store or earlier in the batch)."""

EXPORT_KINDS: dict[str, tuple[str, ...] | None] = {
    **{name: (body,) for body, name in convert.KINDS.items()},
    "events": ("fence_event", "stop_update"),  # what happened on the route
    "all": None,
}
"""``dropline export --kind`` name -> the record body kinds it prints (None: every kind); the
kind ``quarantine`` prints the quarantine instead."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    vehicle TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    time_ms INTEGER,
    body    BLOB NOT NULL,          -- the serialised dropline.v1.Record, as the van sent it
    PRIMARY KEY (vehicle, seq)
) WITHOUT ROWID;
-- The control tower reads a van's records of one kind over a time range (tracks, alerts).
CREATE INDEX IF NOT EXISTS records_by_time ON records (vehicle, kind, time_ms);
CREATE TABLE IF NOT EXISTS spans (  -- merged seq ranges per vehicle: 's' held, 'x' explained by
    vehicle TEXT NOT NULL,          -- gaps, 'q' quarantined
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
CREATE TABLE IF NOT EXISTS quarantine (
    vehicle     TEXT NOT NULL,
    seq         INTEGER,            -- NULL for a seq outside 1..2^63-1 (it is still in the body)
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    body        BLOB NOT NULL,      -- the serialised Record if it decoded, else the bytes as received
    received_ms INTEGER NOT NULL,
    UNIQUE (vehicle, seq)
);
"""


_INSERT = (
    "INSERT OR IGNORE INTO records (vehicle, seq, kind, time_ms, body, ingest) VALUES (?, ?, ?, ?, ?, ?)"
)
_INGEST_CURSOR = (  # added to stores made before it; NULL in rows written before (not streamed)
    "ALTER TABLE records ADD COLUMN ingest INTEGER",  # the commit that stored the row: 1, 2, ...
    "CREATE INDEX IF NOT EXISTS records_by_ingest ON records (ingest, seq)",
)
_QUARANTINE = (
    "INSERT OR IGNORE INTO quarantine (vehicle, seq, kind, reason, body, received_ms) VALUES (?,?,?,?,?,?)"
)
_QUARANTINE_NO_SEQ = (  # no unique key to dedupe on: the same bytes again are the same record again
    "INSERT INTO quarantine (vehicle, seq, kind, reason, body, received_ms) SELECT ?, NULL, ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM quarantine WHERE vehicle = ? AND seq IS NULL AND body = ?)"
)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A record set aside: its seq (as sent, maybe out of range), kind, reason and bytes."""

    seq: int
    kind: str
    reason: str
    body: bytes


def _same_record(a: bytes, b: bytes) -> bool:
    """Equal bytes, or the same message serialised differently (map entries in another order)."""
    if a == b:
        return True
    try:
        return pb.Record.FromString(a) == pb.Record.FromString(b)
    except Exception:  # upb's DecodeError: bytes that do not parse are not the same record
        return False


def reason_ranges(entries: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """(seq, reason) pairs as (first, last, reason) runs of consecutive seqs with one reason."""
    out: list[tuple[int, int, str]] = []
    for seq, reason in sorted(set(entries)):
        if out and out[-1][2] == reason and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq, reason)
        else:
            out.append((seq, seq, reason))
    return out


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did. ``stored_ranges`` covers every seq of the batch that is in the
    store now with the body the batch carried (inserted by it or already there); ``quarantined``
    covers the others, with their reason. ``duplicates``: records already held with that body."""

    stored_ranges: list[tuple[int, int]]
    contiguous: int
    inserted: int
    duplicates: int
    max_seq: int = 0
    open_gap_count: int = 0
    first_open_gap: tuple[int, int] | None = None
    quarantined: list[tuple[int, int, str]] = field(default_factory=list)
    conflicts: int = 0


@dataclass(slots=True)
class Prepared:
    """A batch sorted out before anything is written, the same for every store: one row per
    distinct seq (columns ``seqs``, ``kinds``, ``times``, ``bodies``), a seq repeated in the batch
    with another body set ``aside`` as a conflict, the gap ranges, and the newest fix (the one
    with the greatest time, the last of them on a tie) as a ``TrackFix`` whatever it came as."""

    seqs: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    times: list[int | None] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    body_of: dict[int, bytes] = field(default_factory=dict)
    kind_of: dict[int, str] = field(default_factory=dict)
    aside: list[Quarantine] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    best: TrackFix | None = None


def export_bodies(kind: str) -> tuple[str, ...] | None:
    """The record body kinds ``dropline export --kind`` prints (None: every kind); ValueError for
    a name no store knows."""
    if kind in EXPORT_KINDS:
        return EXPORT_KINDS[kind]
    if kind in convert.KINDS or kind == "unknown":
        return (kind,)
    names = ", ".join([*EXPORT_KINDS, QUARANTINE])
    raise ValueError(f"unknown kind {kind!r}: use one of {names}")


def export_row(vehicle: str, body: bytes, record: pb.Record) -> dict[str, Any]:
    """One stored record in export form with its ``vehicle``; ``record`` is a scratch message the
    caller reuses across rows. A non-finite signal value (stored before the ingest quarantined
    such values) is exported as ``null`` with ``non_finite``: JSON has no NaN."""
    record.Clear()
    record.ParseFromString(body)
    out = {"vehicle": vehicle, **convert.to_json(record)}
    value = out.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        out["value"], out["non_finite"] = None, str(value)
    return out


def prepare(records: Sequence[Storable], quarantine: Sequence[Quarantine]) -> Prepared:
    out = Prepared(aside=list(quarantine))
    body_of = out.body_of
    best_t = -(2**63)
    best: Storable | None = None
    t: int | None
    kind: str | None
    for r in records:
        seq = r.seq
        if isinstance(r, TrackFix):  # a track's fix: checked and encoded already, no message
            kind, body, t = "fix", r.body, r.time_ms
        else:
            kind = r.WhichOneof("body")
            body = r.SerializeToString()
            t = r.fix.time_ms if kind == "fix" else None
        earlier = body_of.get(seq)
        if earlier is not None:  # the same seq twice in one batch
            if not _same_record(earlier, body):
                out.aside.append(Quarantine(seq, kind or "unknown", CONFLICT, body))
            continue
        body_of[seq] = body
        if kind == "fix":
            assert t is not None
            if t >= best_t:
                best_t, best = t, r
        elif kind is None:
            kind = "unknown"  # a body this build does not know: kept as sent
        elif kind == "gap":
            assert isinstance(r, pb.Record)
            out.gaps.append((r.gap.from_seq, r.gap.to_seq))
        else:
            assert isinstance(r, pb.Record)
            t = getattr(r, kind).time_ms
        out.kind_of[seq] = kind
        out.seqs.append(seq)
        out.kinds.append(kind)
        out.times.append(t)
        out.bodies.append(body)
    if isinstance(best, pb.Record):
        f = best.fix
        best = TrackFix(best.seq, f.time_ms, f.lat_e7, f.lon_e7, body_of[best.seq])
    out.best = best
    return out


def write_result(
    records: int, held_seqs: list[int], inserted: int, aside: list[Quarantine], covered: Spans
) -> WriteResult:
    """The WriteResult of a committed batch of ``records`` records, from the vehicle's ranges."""
    conflicts = sum(1 for q in aside if q.reason == CONFLICT)
    return WriteResult(
        stored_ranges=runs(held_seqs),
        contiguous=covered.prefix(),
        inserted=inserted,
        duplicates=records - inserted - conflicts,
        max_seq=covered.end(),
        open_gap_count=covered.hole_count(),
        first_open_gap=covered.first_hole(),
        quarantined=reason_ranges([(q.seq, q.reason) for q in aside]),
        conflicts=conflicts,
    )


@dataclass(frozen=True, slots=True)
class VehicleProgress:
    """One vehicle's delivery state: every seq <= ``contiguous`` is held, explained by a gap or
    quarantined; ``max_seq`` is the highest seq held or quarantined; ``open_gaps`` are missing,
    unexplained runs below it (still on their way, or lost); ``explained_gaps`` are missing runs
    the van said it dropped on purpose; ``quarantined`` runs are held aside (``export --kind
    quarantine``)."""

    vehicle: str
    contiguous: int
    max_seq: int
    records: int
    open_gaps: list[tuple[int, int]]
    explained_gaps: list[tuple[int, int]]
    position: dict[str, Any] | None = None
    quarantined: list[tuple[int, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vehicle": self.vehicle,
            "contiguous": self.contiguous,
            "max_seq": self.max_seq,
            "records": self.records,
            "open_gaps": [list(r) for r in self.open_gaps],
            "explained_gaps": [list(r) for r in self.explained_gaps],
            "quarantined": [list(r) for r in self.quarantined],
        }
        if self.position is not None:
            out["position"] = self.position
        return out


class Store(Protocol):
    """Where the collector keeps records. Every method may be called from any thread."""

    def write(
        self, vehicle: str, records: Sequence[Storable], quarantine: Sequence[Quarantine] = ()
    ) -> WriteResult:
        """Insert the records (a (vehicle, seq) already held with the same body is a duplicate,
        with another body a conflict, quarantined) and the quarantined ones, and update the
        vehicle's progress, in one durable transaction: when this returns, the result may be
        acknowledged. Callers pass validated records: seq in 1..SEQ_MAX, gap bounds within
        1..seq-1; quarantined seqs may be anything."""
        ...

    def vehicles(self) -> list[VehicleProgress]:
        """Progress of every vehicle, ordered by vehicle id, as committed (by any process)."""
        ...

    def export(self, kind: str, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored records of an ``EXPORT_KINDS`` kind (or the quarantine), by vehicle then seq, in
        export JSON form with ``vehicle`` and ``seq``."""
        ...

    def fix(self, vehicle: str, seq: int) -> pb.Record | None:
        """The stored fix record at ``seq`` (a track's reference), or None when no fix is stored
        there (never held, quarantined, or another kind)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Vehicle:
    held: Spans = field(default_factory=Spans)
    explained: Spans = field(default_factory=Spans)
    quarantined: Spans = field(default_factory=Spans)
    covered: Spans = field(default_factory=Spans)  # held | explained | quarantined
    records: int = 0
    known: bool = False  # a row exists in `vehicles`

    def spans(self, what: str) -> Spans:
        return self.held if what == "s" else self.explained if what == "x" else self.quarantined


PROGRESS_COLUMNS = "vehicle, records, contiguous, max_seq, fix_seq, fix_time_ms, lat_e7, lon_e7"
"""The ``vehicles`` table's columns :func:`progress_of` reads, in its order."""


def progress_of(
    span_rows: Iterable[Sequence[Any]], vehicle_rows: Iterable[Sequence[Any]]
) -> list[VehicleProgress]:
    """Every vehicle's progress from the rows of ``spans`` (vehicle, what, first, last) and of
    ``vehicles`` (:data:`PROGRESS_COLUMNS`), read in one snapshot: the same for every store."""
    spans: dict[str, _Vehicle] = {}
    for vehicle, what, first, last in span_rows:
        spans.setdefault(vehicle, _Vehicle()).spans(what).add(first, last)
    out = []
    for vehicle, records, contiguous, max_seq, fix_seq, fix_time_ms, lat_e7, lon_e7 in vehicle_rows:
        state = spans.get(vehicle, _Vehicle())
        covered = Spans([*state.held, *state.explained, *state.quarantined])
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
                explained_gaps=Spans(state.explained.minus(state.held)).minus(state.quarantined),
                position=position,
                quarantined=state.quarantined.minus(state.held),
            )
        )
    return out


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
        self,
        path: Path | str,
        *,
        cache_mib: int = 64,
        readonly: bool = False,
        busy_timeout_ms: int = 30_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating if needed) the store at ``path``; ``readonly`` opens an existing store for
        ``vehicles``/``export`` only and raises sqlite3.DatabaseError if the file is not one.
        ``busy_timeout_ms``: how long a write waits for another process's lock before failing.
        ``clock`` stamps quarantined records with their arrival (wall clock, seconds)."""
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = _connect(self.path, readonly, busy_timeout_ms)
        found = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        self._tables = {row[0] for row in found}
        if readonly:
            if not {"records", "spans", "vehicles"} <= self._tables:
                self._db.close()
                raise sqlite3.DatabaseError(f"{self.path} is not a collector store")
        else:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=67108864")  # WAL shrinks back after checkpoints
            self._db.executescript(_SCHEMA)
            self._tables.add(QUARANTINE)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
            for sql in _INGEST_CURSOR[0 if "ingest" not in columns else 1 :]:
                self._db.execute(sql)
        self._db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
        self._cache: dict[str, _Vehicle] = {}
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    # -- writing --------------------------------------------------------------------------------

    def write(
        self, vehicle: str, records: Sequence[Storable], quarantine: Sequence[Quarantine] = ()
    ) -> WriteResult:
        batch = prepare(records, quarantine)
        aside = batch.aside
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                # the live stream's cursor (cloud/feed.py): one number per commit, increasing in
                # commit order because the write lock is held from here to COMMIT
                (ingest,) = db.execute("SELECT coalesce(max(ingest), 0) + 1 FROM records").fetchone()
                rows = list(
                    zip(repeat(vehicle), batch.seqs, batch.kinds, batch.times, batch.bodies, repeat(ingest))
                )
                self._notice_other_writers()
                state = self._state(vehicle)
                before = db.total_changes
                db.executemany(_INSERT, rows)
                inserted = db.total_changes - before
                held_seqs = sorted(batch.body_of)
                if inserted < len(rows):  # some seqs were held already: the same body, or a conflict?
                    clashing = self._conflicts(vehicle, held_seqs, batch.body_of)
                    for seq in sorted(clashing):
                        aside.append(Quarantine(seq, batch.kind_of[seq], CONFLICT, batch.body_of[seq]))
                    held_seqs = [s for s in held_seqs if s not in clashing]
                state.records += inserted
                for first, last in runs(sorted(batch.body_of)):
                    self._add_span(vehicle, "s", state, first, last)
                for first, last in batch.gaps:
                    self._add_span(vehicle, "x", state, first, last)
                self._quarantine(vehicle, state, aside)
                self._save_vehicle(vehicle, state, state.covered.prefix(), state.covered.end(), batch.best)
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return write_result(len(records), held_seqs, inserted, aside, state.covered)

    def _conflicts(self, vehicle: str, seqs: list[int], bodies: dict[int, bytes]) -> set[int]:
        """The seqs whose held body is not the one this batch carries (one range scan per run)."""
        out: set[int] = set()
        query = "SELECT seq, body FROM records WHERE vehicle = ? AND seq BETWEEN ? AND ?"
        for first, last in runs(seqs):
            for seq, held in self._db.execute(query, (vehicle, first, last)):
                if not _same_record(held, bodies[seq]):
                    out.add(seq)
        return out

    def _quarantine(self, vehicle: str, state: _Vehicle, aside: list[Quarantine]) -> None:
        """Keep the records set aside; the ones with a usable seq count as explained."""
        if not aside:
            return
        now_ms = round(self._clock() * 1000)
        keyed: list[Quarantine] = []
        unkeyed: list[Quarantine] = []
        for q in aside:
            (keyed if 1 <= q.seq <= SEQ_MAX else unkeyed).append(q)
        self._db.executemany(_QUARANTINE, [(vehicle, q.seq, q.kind, q.reason, q.body, now_ms) for q in keyed])
        self._db.executemany(
            _QUARANTINE_NO_SEQ,
            [(vehicle, q.kind, q.reason, q.body, now_ms, vehicle, q.body) for q in unkeyed],
        )
        for first, last in runs(sorted(q.seq for q in keyed if q.reason != CONFLICT)):
            self._add_span(vehicle, "q", state, first, last)

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
                state.spans(what).add(first, last)
                state.covered.add(first, last)
        self._cache[vehicle] = state
        return state

    def _add_span(self, vehicle: str, what: str, state: _Vehicle, first: int, last: int) -> None:
        """Add [first, last] to one kind of range, mirror the change in ``spans``, and to covered."""
        state.covered.add(first, last)
        change = state.spans(what).add(first, last)
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
        self, vehicle: str, state: _Vehicle, contiguous: int, max_seq: int, best: TrackFix | None
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
            t = best.time_ms
            db.execute(
                "UPDATE vehicles SET fix_seq = ?, fix_time_ms = ?, lat_e7 = ?, lon_e7 = ? WHERE vehicle = ?"
                " AND (fix_time_ms IS NULL OR fix_time_ms < ? OR (fix_time_ms = ? AND fix_seq < ?))",
                (best.seq, t, best.lat_e7, best.lon_e7, vehicle, t, t, best.seq),
            )

    # -- reading --------------------------------------------------------------------------------

    def vehicles(self) -> list[VehicleProgress]:
        db = _connect(self.path, readonly=True)
        try:
            db.execute("BEGIN")  # one snapshot for both tables
            out = progress_of(
                db.execute("SELECT vehicle, what, first, last FROM spans ORDER BY vehicle, what, first"),
                db.execute(f"SELECT {PROGRESS_COLUMNS} FROM vehicles ORDER BY vehicle"),
            )
            db.execute("COMMIT")
            return out
        finally:
            db.close()

    def fix(self, vehicle: str, seq: int) -> pb.Record | None:
        query = "SELECT body FROM records WHERE vehicle = ? AND seq = ? AND kind = 'fix'"
        with self._lock:
            row = self._db.execute(query, (vehicle, seq)).fetchone()
        return None if row is None else pb.Record.FromString(row[0])

    def export(self, kind: str, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        if kind == QUARANTINE:
            return self._export_quarantine(vehicle)
        return self._export(export_bodies(kind), vehicle)

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
                yield export_row(vehicle_id, body, record)
        finally:
            db.close()

    def _export_quarantine(self, vehicle: str | None) -> Iterator[dict[str, Any]]:
        """Quarantined records: ``{vehicle, seq, kind, reason, received, body_base64}``, ``seq``
        null where the van sent one outside 1..2^63-1."""
        if QUARANTINE not in self._tables:  # a store written before the quarantine existed
            return
        sql = "SELECT vehicle, seq, kind, reason, received_ms, body FROM quarantine"
        params: list[str] = []
        if vehicle is not None:
            sql += " WHERE vehicle = ?"
            params.append(vehicle)
        sql += " ORDER BY vehicle, seq"
        db = _connect(self.path, readonly=True)
        try:
            for vehicle_id, seq, kind, reason, received_ms, body in db.execute(sql, params):
                yield {
                    "vehicle": vehicle_id,
                    "seq": seq,
                    "kind": kind,
                    "reason": reason,
                    "received": iso_time(received_ms / 1000),
                    "body_base64": base64.b64encode(body).decode("ascii"),
                }
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()
