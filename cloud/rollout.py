"""Staged rollout of a signed document, as AWS IoT Jobs does it (TUF and Uptane leave it to us).

A rollout pushes one envelope to a deterministic fraction of the named vans first (ordered by
sha256 of the rollout's kind, version and vehicle id, so the same command picks the same vans,
and the next document picks others first), then watches what they report back:
``document_status`` records (applied, or refused with the reason) that the ingest stored, and
their health (any record stored since the push). Each ``advance``:

* counts a target as failed when it refused this kind and version, or sent nothing at all for
  ``silent_after_s`` after its push (a van that stopped talking after a configuration change is
  the failure a rollout exists to catch);
* aborts, for good, once failures exceed ``abort_refusals`` of the targets pushed so far (and at
  least ``min_decided`` targets have an outcome): nothing more is pushed. A van that already
  applied the document keeps it; undoing that takes a newer version signed by the engineers;
* widens when every target of the waves so far has an outcome: the next wave doubles the vans
  pushed so far (AWS IoT Jobs' exponential rate, increment factor 2), until all are pushed;
* completes when every van has an outcome and the rollout did not abort.

State lives in its own SQLite file next to a SQLite store (``<db>.rollouts``), so the CLI, the
API and a later ``advance`` all see one history; pushes go through the collector's
pushed-documents table (``cloud/documents.py``), which its gRPC streams send down.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.documents import PushedDocuments
from cloud.documents import path_for as documents_path
from protocols.dropline.v1 import dropline_pb2 as pb

SUFFIX = ".rollouts"
INCREMENT = 2
"""Each wave doubles the vans pushed so far."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    version        INTEGER NOT NULL,
    envelope       BLOB NOT NULL,
    fraction       REAL NOT NULL,
    abort_refusals REAL NOT NULL,
    silent_after_s REAL NOT NULL,
    min_decided    INTEGER NOT NULL,
    state          TEXT NOT NULL,      -- running | aborted | completed
    reason         TEXT NOT NULL DEFAULT '',
    created_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_targets (
    rollout     INTEGER NOT NULL,
    vehicle     TEXT NOT NULL,
    position    INTEGER NOT NULL,      -- deterministic order: waves take a prefix
    wave        INTEGER,               -- NULL until pushed
    pushed_at   REAL,
    seq_at_push INTEGER,               -- the van's highest stored seq when pushed (health)
    outcome     TEXT NOT NULL DEFAULT 'pending',  -- pending | applied | refused | silent
    reason      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (rollout, vehicle)
);
"""


def path_for(db: Path) -> Path:
    """The rollouts file of the SQLite store ``db``."""
    return db.with_name(db.name + SUFFIX)


def order(kind: str, version: int, vehicles: Sequence[str]) -> list[str]:
    """The vans in rollout order: by sha256 of kind, version and id (stable, spread per document)."""
    return sorted(set(vehicles), key=lambda v: hashlib.sha256(f"{kind}\0{version}\0{v}".encode()).digest())


def first_wave_size(fraction: float, total: int) -> int:
    """At least one van, at most all of them."""
    return max(1, min(total, math.ceil(fraction * total)))


@dataclass(frozen=True, slots=True)
class Report:
    """What a van's store says about one document: its status record, if any, and its max seq."""

    applied: bool | None
    reason: str
    max_seq: int


def read_reports(db: Path, kind: str, version: int, vehicles: Sequence[str]) -> dict[str, Report]:
    """The newest ``document_status`` of this kind and version per van, read from the store."""
    out: dict[str, Report] = {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for vehicle in vehicles:
            row = conn.execute("SELECT max_seq FROM vehicles WHERE vehicle = ?", (vehicle,)).fetchone()
            applied: bool | None = None
            reason = ""
            for (body,) in conn.execute(
                "SELECT body FROM records WHERE vehicle = ? AND kind = 'document_status' ORDER BY seq",
                (vehicle,),
            ):
                status = pb.Record.FromString(body).document_status
                if status.document == kind and status.version == version:
                    applied, reason = status.applied, status.reason
            out[vehicle] = Report(applied, reason, int(row[0]) if row else 0)
    finally:
        conn.close()
    return out


class Rollouts:
    """The rollouts of one collector store; ``clock`` is wall time (push times, silence)."""

    def __init__(self, db: Path, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._conn = sqlite3.connect(path_for(db), isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def start(
        self,
        kind: str,
        version: int,
        envelope: bytes,
        vehicles: Sequence[str],
        *,
        fraction: float,
        abort_refusals: float,
        silent_after_s: float = 600.0,
        min_decided: int = 1,
    ) -> int:
        """Record a rollout over ``vehicles`` and push its first wave; its id."""
        if not vehicles:
            raise ValueError("a rollout needs at least one vehicle")
        if not 0 < fraction <= 1 or not 0 <= abort_refusals <= 1:
            raise ValueError("fraction must be in (0, 1] and abort_refusals in [0, 1]")
        cur = self._conn.execute(
            "INSERT INTO rollouts (kind, version, envelope, fraction, abort_refusals, silent_after_s,"
            " min_decided, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            (kind, version, envelope, fraction, abort_refusals, silent_after_s, min_decided, self._clock()),
        )
        rid = int(cur.lastrowid or 0)
        self._conn.executemany(
            "INSERT INTO rollout_targets (rollout, vehicle, position) VALUES (?, ?, ?)",
            [(rid, v, i) for i, v in enumerate(order(kind, version, vehicles))],
        )
        self._push(rid, first_wave_size(fraction, len(set(vehicles))))
        return rid

    def advance(self, rid: int) -> dict[str, Any]:
        """Take in the vans' reports, then abort, widen or complete (see module doc); the status."""
        r = self._rollout(rid)
        if r["state"] != "running":
            return self.status(rid)
        now = self._clock()
        targets = self._targets(rid)
        pushed = [t for t in targets if t["wave"] is not None]
        reports = read_reports(self.db, r["kind"], r["version"], [t["vehicle"] for t in pushed])
        for t in pushed:
            if t["outcome"] not in ("pending", "silent"):
                continue
            report = reports[t["vehicle"]]
            if report.applied is not None:
                outcome, reason = ("applied", "") if report.applied else ("refused", report.reason)
            elif report.max_seq <= t["seq_at_push"] and now - t["pushed_at"] >= r["silent_after_s"]:
                outcome, reason = "silent", f"no record for {now - t['pushed_at']:.0f} s since the push"
            else:
                outcome, reason = "pending", ""
            self._conn.execute(
                "UPDATE rollout_targets SET outcome = ?, reason = ? WHERE rollout = ? AND vehicle = ?",
                (outcome, reason, rid, t["vehicle"]),
            )
        targets = self._targets(rid)
        pushed = [t for t in targets if t["wave"] is not None]
        failed = [t for t in pushed if t["outcome"] in ("refused", "silent")]
        decided = [t for t in pushed if t["outcome"] != "pending"]
        if len(decided) >= r["min_decided"] and len(failed) > r["abort_refusals"] * len(pushed):
            why = f"{len(failed)} of {len(pushed)} pushed vans failed (threshold {r['abort_refusals']:.0%})"
            self._conn.execute("UPDATE rollouts SET state = 'aborted', reason = ? WHERE id = ?", (why, rid))
        elif len(decided) == len(pushed):
            if len(pushed) == len(targets):
                self._conn.execute("UPDATE rollouts SET state = 'completed' WHERE id = ?", (rid,))
            else:
                self._push(rid, min(len(targets), len(pushed) * INCREMENT))
        return self.status(rid)

    def status(self, rid: int) -> dict[str, Any]:
        """The rollout and its targets as JSON-ready data."""
        r = self._rollout(rid)
        targets = self._targets(rid)
        counts: dict[str, int] = {}
        for t in targets:
            key = t["outcome"] if t["wave"] is not None else "not_pushed"
            counts[key] = counts.get(key, 0) + 1
        r.pop("envelope")
        return {
            **r,
            "waves": max((t["wave"] for t in targets if t["wave"] is not None), default=0),
            "counts": counts,
            "targets": [
                {k: t[k] for k in ("vehicle", "wave", "outcome", "reason")}
                for t in targets
                if t["wave"] is not None
            ],
        }

    def all(self) -> list[dict[str, Any]]:
        """Every rollout's status, newest first."""
        ids = [int(i) for (i,) in self._conn.execute("SELECT id FROM rollouts ORDER BY id DESC")]
        return [self.status(i) for i in ids]

    def _rollout(self, rid: int) -> dict[str, Any]:
        self._conn.row_factory = sqlite3.Row
        try:
            row = self._conn.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        finally:
            self._conn.row_factory = None
        if row is None:
            raise KeyError(f"no rollout {rid}")
        return dict(row)

    def _targets(self, rid: int) -> list[dict[str, Any]]:
        self._conn.row_factory = sqlite3.Row
        try:
            rows = self._conn.execute(
                "SELECT * FROM rollout_targets WHERE rollout = ? ORDER BY position", (rid,)
            ).fetchall()
        finally:
            self._conn.row_factory = None
        return [dict(row) for row in rows]

    def _push(self, rid: int, upto: int) -> None:
        """Push to the first ``upto`` vans in rollout order not pushed yet, as the next wave."""
        r = self._rollout(rid)
        targets = self._targets(rid)
        wave = 1 + max((t["wave"] for t in targets if t["wave"] is not None), default=0)
        fresh = [t["vehicle"] for t in targets[:upto] if t["wave"] is None]
        reports = read_reports(self.db, r["kind"], r["version"], fresh) if self.db.exists() else {}
        documents = PushedDocuments(documents_path(self.db))
        try:
            for vehicle in fresh:
                documents.push(vehicle, r["kind"], r["envelope"])
                seq = reports[vehicle].max_seq if vehicle in reports else 0
                self._conn.execute(
                    "UPDATE rollout_targets SET wave = ?, pushed_at = ?, seq_at_push = ?"
                    " WHERE rollout = ? AND vehicle = ?",
                    (wave, self._clock(), seq, rid, vehicle),
                )
        finally:
            documents.close()
