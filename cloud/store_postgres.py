"""The collector's PostgreSQL store: the ``Store`` of ``cloud.store`` for more than one collector
and more than one machine (``--db postgresql://...``).

The same rules as ``SqliteStore``: records unique on (vehicle, seq), a second body for a held seq
quarantined as a conflict, progress kept as merged ranges (``cloud.spans``) mirrored in ``spans``.
What differs, and why:

* **Batched.** A batch's records go in with one statement, arrays bound as parameters
  (``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING seq``): one round trip
  and one plan whatever the batch size, and ``RETURNING`` names exactly the seqs inserted, so
  only the others are read back for the conflict check. Changed ranges are written the same way.
* **Several collectors at once.** Each write takes a transaction-scoped advisory lock on its
  vehicle (``pg_advisory_xact_lock``): writes for one vehicle are serialised across every
  collector, writes for different vehicles run in parallel. Each commit bumps the vehicle's
  ``version``; a collector whose cached ranges are of another version reloads them under the
  lock, so no collector overwrites progress another one made (no lost update).
* **Durable when acknowledged.** ``write`` returns after COMMIT, which PostgreSQL makes durable
  (``synchronous_commit`` on, its default; a server configured otherwise weakens the ack).
* **Migrated on start.** ``schema_version`` lists the migrations applied; opening a store applies
  the missing ones under a session advisory lock, so collectors starting together do it once. A
  database of a newer schema than this build knows is refused rather than written.
"""

from __future__ import annotations

import base64
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from cloud.spans import Spans, runs
from cloud.store import (
    CONFLICT,
    PROGRESS_COLUMNS,
    QUARANTINE,
    SEQ_MAX,
    Quarantine,
    Storable,
    VehicleProgress,
    WriteResult,
    _same_record,
    export_bodies,
    export_row,
    prepare,
    progress_of,
    write_result,
)
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.records import iso_time
from protocols.wire import TrackFix

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE records (
        vehicle text   NOT NULL,
        seq     bigint NOT NULL,
        kind    text   NOT NULL,
        time_ms bigint,
        body    bytea  NOT NULL,      -- the serialised dropline.v1.Record, as the van sent it
        PRIMARY KEY (vehicle, seq)
    );
    CREATE TABLE spans (              -- merged seq ranges per vehicle: 's' held, 'x' explained by
        vehicle text   NOT NULL,      -- gaps, 'q' quarantined
        what    "char" NOT NULL,
        first   bigint NOT NULL,
        last    bigint NOT NULL,
        PRIMARY KEY (vehicle, what, first)
    );
    CREATE TABLE vehicles (
        vehicle     text PRIMARY KEY,
        records     bigint NOT NULL,
        contiguous  bigint NOT NULL,
        max_seq     bigint NOT NULL,
        version     bigint NOT NULL,  -- bumped by every commit: other collectors reload their ranges
        fix_seq     bigint,           -- latest position: the fix with the greatest time
        fix_time_ms bigint,
        lat_e7      integer,
        lon_e7      integer
    );
    CREATE TABLE quarantine (
        vehicle     text   NOT NULL,
        seq         bigint,           -- NULL for a seq outside 1..2^63-1 (it is still in the body)
        kind        text   NOT NULL,
        reason      text   NOT NULL,
        body        bytea  NOT NULL,  -- the serialised Record if it decoded, else the bytes as received
        received_ms bigint NOT NULL,
        UNIQUE (vehicle, seq)
    );
    """,
    # 2: the ingest cursor of the live event stream (cloud/feed.py): each record carries the id of
    # the transaction that stored it; a reader takes rows of finished transactions only.
    """
    ALTER TABLE records ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
    CREATE INDEX records_by_tx ON records (tx, seq);
    """,
)
"""Schema migrations in order; ``schema_version`` holds the number of the last one applied.
Append new ones; never edit one that has shipped."""

_MIGRATION_LOCK = 0x64726F706C696E65  # 'dropline': one collector migrates at a time

_INSERT = (
    "INSERT INTO records (vehicle, seq, kind, time_ms, body)"
    " SELECT %s, * FROM unnest(%b::bigint[], %b::text[], %b::bigint[], %b::bytea[])"
    " ON CONFLICT DO NOTHING RETURNING seq"  # arrays sent binary: no escaping of each body
)
_QUARANTINE = (
    "INSERT INTO quarantine (vehicle, seq, kind, reason, body, received_ms)"
    " SELECT %s, *, %s FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bytea[])"
    " ON CONFLICT DO NOTHING"
)
_QUARANTINE_NO_SEQ = (  # no unique key to dedupe on: the same bytes again are the same record again
    "INSERT INTO quarantine (vehicle, seq, kind, reason, body, received_ms) SELECT %s, NULL, %s, %s, %s, %s"
    " WHERE NOT EXISTS (SELECT 1 FROM quarantine WHERE vehicle = %s AND seq IS NULL AND body = %s)"
)
_SPANS_DELETE = (
    'DELETE FROM spans s USING unnest(%s::"char"[], %s::bigint[]) AS d(what, first)'
    " WHERE s.vehicle = %s AND s.what = d.what AND s.first = d.first"
)
_SPANS_UPSERT = (
    "INSERT INTO spans (vehicle, what, first, last)"
    ' SELECT %s, * FROM unnest(%s::"char"[], %s::bigint[], %s::bigint[])'
    " ON CONFLICT (vehicle, what, first) DO UPDATE SET last = EXCLUDED.last"
)
_VEHICLE_UPSERT = (
    "INSERT INTO vehicles (vehicle, records, contiguous, max_seq, version) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (vehicle) DO UPDATE SET records = EXCLUDED.records, contiguous = EXCLUDED.contiguous,"
    " max_seq = EXCLUDED.max_seq, version = EXCLUDED.version"
)
_POSITION = (
    "UPDATE vehicles SET fix_seq = %s, fix_time_ms = %s, lat_e7 = %s, lon_e7 = %s WHERE vehicle = %s"
    " AND (fix_time_ms IS NULL OR fix_time_ms < %s OR (fix_time_ms = %s AND fix_seq < %s))"
)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class SchemaError(RuntimeError):
    """The database is not a collector store this build can use (missing, or a newer schema)."""


def _lock_key(vehicle: str) -> int:
    """A signed 64-bit advisory-lock key for a vehicle (two vehicles may share one: harmless)."""
    return zlib.crc32(vehicle.encode()) | 0x5644_0000_0000  # 'VD' tag keeps it off other keys


@dataclass(slots=True)
class _Vehicle:
    held: Spans = field(default_factory=Spans)
    explained: Spans = field(default_factory=Spans)
    quarantined: Spans = field(default_factory=Spans)
    covered: Spans = field(default_factory=Spans)  # held | explained | quarantined
    records: int = 0
    version: int = 0  # the ``vehicles.version`` these ranges reflect; 0: no row yet

    def spans(self, what: str) -> Spans:
        return self.held if what == "s" else self.explained if what == "x" else self.quarantined


@dataclass(slots=True)
class _SpanChanges:
    """The rows of ``spans`` one transaction deletes and upserts, written in two statements."""

    deleted: set[tuple[str, int]] = field(default_factory=set)
    upserted: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, state: _Vehicle, what: str, first: int, last: int) -> None:
        state.covered.add(first, last)
        change = state.spans(what).add(first, last)
        if change is None:
            return
        replaced, (new_first, new_last) = change
        for f in replaced:
            if f != new_first:
                self.deleted.add((what, f))
                self.upserted.pop((what, f), None)
        self.deleted.discard((what, new_first))
        self.upserted[(what, new_first)] = new_last


def migrate(db: psycopg.Connection[Any]) -> int:
    """Apply the migrations ``db`` lacks (idempotent; safe with collectors starting together) and
    return the schema version now in force. Raises SchemaError for a newer schema."""
    db.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        with db.transaction():
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
        row = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        if current > len(MIGRATIONS):
            raise SchemaError(f"schema version {current} is newer than this build knows ({len(MIGRATIONS)})")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with db.transaction():
                db.execute(MIGRATIONS[version - 1].encode())
                db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


class PostgresStore:
    """The store in a PostgreSQL database. Thread-safe: up to ``writers`` writes run at once, each
    on its own connection; reads (``vehicles``, ``export``) open their own connection and see
    what every collector committed."""

    def __init__(
        self,
        url: str,
        *,
        readonly: bool = False,
        writers: int = 4,
        connect_timeout_s: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Connect to ``url`` and migrate its schema (``readonly``: check it is a store of a schema
        this build reads, and write nothing). Raises psycopg.OperationalError when the server
        cannot be reached, SchemaError when the database is not a usable store."""
        self.url = url
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        with self._connect() as db:
            if readonly:
                found = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
                if not found or not found[0]:
                    raise SchemaError("no collector store there (no schema_version table)")
                row = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
                version = int(row[0]) if row else 0
                if not 1 <= version <= len(MIGRATIONS):
                    raise SchemaError(f"schema version {version}; this build reads 1..{len(MIGRATIONS)}")
            else:
                migrate(db)
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(writers)
        self._cache: dict[str, _Vehicle] = {}
        self._closed = False

    def _connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.url,
            autocommit=autocommit,
            connect_timeout=self._connect_timeout_s,
            application_name="dropline",
        )

    def _writer(self) -> psycopg.Connection[Any]:
        """A write connection: an idle one, or a new one; at most ``writers`` in use at once."""
        self._slots.acquire()
        try:
            if self._closed:
                raise psycopg.InterfaceError("the store is closed")
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                return self._connect(autocommit=False)
        except BaseException:
            self._slots.release()
            raise

    def _give_back(self, db: psycopg.Connection[Any]) -> None:
        """Keep a healthy connection for the next write; a broken one is dropped (a new one is
        opened when needed, so a restarted server costs one failed write, not a stuck store)."""
        if db.closed or self._closed:
            db.close()
        else:
            self._idle.put(db)
        self._slots.release()

    # -- writing --------------------------------------------------------------------------------

    def write(
        self, vehicle: str, records: Sequence[Storable], quarantine: Sequence[Quarantine] = ()
    ) -> WriteResult:
        batch = prepare(records, quarantine)
        aside = batch.aside
        db = self._writer()
        try:
            try:
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(vehicle),))
                    state = self._state(db, vehicle)
                    inserted_seqs: set[int] = set()
                    if batch.seqs:
                        params = (vehicle, batch.seqs, batch.kinds, batch.times, batch.bodies)
                        cur = db.execute(_INSERT, params)
                        inserted_seqs = {row[0] for row in cur.fetchall()}
                    inserted = len(inserted_seqs)
                    held_seqs = sorted(batch.body_of)
                    if inserted < len(batch.seqs):  # some seqs were held already: same body, or a conflict?
                        known = [s for s in batch.seqs if s not in inserted_seqs]
                        clashing = self._conflicts(db, vehicle, known, batch.body_of)
                        for seq in sorted(clashing):
                            aside.append(Quarantine(seq, batch.kind_of[seq], CONFLICT, batch.body_of[seq]))
                        held_seqs = [s for s in held_seqs if s not in clashing]
                    state.records += inserted
                    changes = _SpanChanges()
                    for first, last in runs(sorted(batch.body_of)):
                        changes.add(state, "s", first, last)
                    for first, last in batch.gaps:
                        changes.add(state, "x", first, last)
                    self._quarantine(db, vehicle, state, aside, changes)
                    covered = state.covered
                    self._save(db, vehicle, state, changes, covered.prefix(), covered.end(), batch.best)
            except BaseException:
                self._cache.pop(vehicle, None)  # the ranges may hold changes that were not committed
                raise
        finally:
            self._give_back(db)
        return write_result(len(records), held_seqs, inserted, aside, state.covered)

    def _state(self, db: psycopg.Connection[Any], vehicle: str) -> _Vehicle:
        """The vehicle's ranges as committed: the cached ones if no other writer has committed
        since (same version), else reloaded. Called under the vehicle's advisory lock."""
        row = db.execute("SELECT records, version FROM vehicles WHERE vehicle = %s", (vehicle,)).fetchone()
        version = int(row[1]) if row else 0
        state = self._cache.get(vehicle)
        if state is not None and state.version == version:
            return state
        state = _Vehicle(version=version)
        if row is not None:
            state.records = int(row[0])
            for what, first, last in db.execute(
                "SELECT what, first, last FROM spans WHERE vehicle = %s ORDER BY first", (vehicle,)
            ):
                state.spans(what).add(first, last)
                state.covered.add(first, last)
        self._cache[vehicle] = state
        return state

    def _conflicts(
        self, db: psycopg.Connection[Any], vehicle: str, seqs: list[int], bodies: dict[int, bytes]
    ) -> set[int]:
        """The seqs (not inserted by this batch) whose held body is not the one it carries."""
        cur = db.execute(
            "SELECT seq, body FROM records WHERE vehicle = %s AND seq = ANY(%s)", (vehicle, seqs)
        )
        return {seq for seq, held in cur if not _same_record(held, bodies[seq])}

    def _quarantine(
        self,
        db: psycopg.Connection[Any],
        vehicle: str,
        state: _Vehicle,
        aside: list[Quarantine],
        changes: _SpanChanges,
    ) -> None:
        """Keep the records set aside; the ones with a usable seq count as explained."""
        if not aside:
            return
        now_ms = round(self._clock() * 1000)
        keyed: list[Quarantine] = []
        unkeyed: list[Quarantine] = []
        for q in aside:
            (keyed if 1 <= q.seq <= SEQ_MAX else unkeyed).append(q)
        if keyed:
            db.execute(
                _QUARANTINE,
                (
                    vehicle,
                    now_ms,
                    [q.seq for q in keyed],
                    [q.kind for q in keyed],
                    [q.reason for q in keyed],
                    [q.body for q in keyed],
                ),
            )
        for q in unkeyed:
            db.execute(_QUARANTINE_NO_SEQ, (vehicle, q.kind, q.reason, q.body, now_ms, vehicle, q.body))
        for first, last in runs(sorted(q.seq for q in keyed if q.reason != CONFLICT)):
            changes.add(state, "q", first, last)

    def _save(
        self,
        db: psycopg.Connection[Any],
        vehicle: str,
        state: _Vehicle,
        changes: _SpanChanges,
        contiguous: int,
        max_seq: int,
        best: TrackFix | None,
    ) -> None:
        """Write the changed ranges and the vehicle's row, bumping its version."""
        if changes.deleted:
            deleted = sorted(changes.deleted)
            db.execute(_SPANS_DELETE, ([w for w, _ in deleted], [f for _, f in deleted], vehicle))
        if changes.upserted:
            upserted = sorted(changes.upserted.items())
            db.execute(
                _SPANS_UPSERT,
                (
                    vehicle,
                    [w for (w, _), _ in upserted],
                    [f for (_, f), _ in upserted],
                    [v for _, v in upserted],
                ),
            )
        state.version += 1
        db.execute(_VEHICLE_UPSERT, (vehicle, state.records, contiguous, max_seq, state.version))
        if best is not None:
            t = best.time_ms
            db.execute(_POSITION, (best.seq, t, best.lat_e7, best.lon_e7, vehicle, t, t, best.seq))

    # -- reading --------------------------------------------------------------------------------

    def vehicles(self) -> list[VehicleProgress]:
        with self._connect(autocommit=False) as db:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot
            return progress_of(
                db.execute("SELECT vehicle, what, first, last FROM spans ORDER BY vehicle, what, first"),
                db.execute(f'SELECT {PROGRESS_COLUMNS} FROM vehicles ORDER BY vehicle COLLATE "C"'),
            )

    def fix(self, vehicle: str, seq: int) -> pb.Record | None:
        query = "SELECT body FROM records WHERE vehicle = %s AND seq = %s AND kind = 'fix'"
        with self._connect() as db:
            row = db.execute(query, (vehicle, seq)).fetchone()
        return None if row is None else pb.Record.FromString(bytes(row[0]))

    def export(self, kind: str, vehicle: str | None = None) -> Iterator[dict[str, Any]]:
        if kind == QUARANTINE:
            return self._export_quarantine(vehicle)
        return self._export(export_bodies(kind), vehicle)

    def _export(self, bodies: tuple[str, ...] | None, vehicle: str | None) -> Iterator[dict[str, Any]]:
        if bodies == ():
            return
        where: list[str] = []
        params: list[Any] = []
        if bodies is not None:
            where.append("kind = ANY(%s)")
            params.append(list(bodies))
        if vehicle is not None:
            where.append("vehicle = %s")
            params.append(vehicle)
        sql = "SELECT vehicle, body FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY vehicle COLLATE "C", seq'
        with self._connect(autocommit=False) as db, db.cursor(name="export") as cur:
            cur.itersize = 5000  # streamed from a server-side cursor: memory stays flat
            record = pb.Record()
            for vehicle_id, body in cur.execute(sql.encode(), params):
                yield export_row(vehicle_id, body, record)

    def _export_quarantine(self, vehicle: str | None) -> Iterator[dict[str, Any]]:
        """Quarantined records: ``{vehicle, seq, kind, reason, received, body_base64}``."""
        sql = "SELECT vehicle, seq, kind, reason, received_ms, body FROM quarantine"
        params: list[str] = []
        if vehicle is not None:
            sql += " WHERE vehicle = %s"
            params.append(vehicle)
        sql += ' ORDER BY vehicle COLLATE "C", seq NULLS FIRST'
        with self._connect() as db:
            for vehicle_id, seq, kind, reason, received_ms, body in db.execute(sql.encode(), params):
                yield {
                    "vehicle": vehicle_id,
                    "seq": seq,
                    "kind": kind,
                    "reason": reason,
                    "received": iso_time(received_ms / 1000),
                    "body_base64": base64.b64encode(body).decode("ascii"),
                }

    def close(self) -> None:
        """Close the idle write connections; one in use is closed when its write ends."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
