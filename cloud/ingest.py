"""The one write path both transports share: bytes of a Batch in, an end-to-end Ack out.

A batch is checked whole before anything is written (limits, vehicle, every record), so a bad
one is refused as a whole with a counted reason and never half-stored; a good one is written in
one transaction and acknowledged only after it committed. Duplicates are harmless: they are
acknowledged as stored. ``handle`` never raises, so one bad van cannot break a stream or a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloud.store import SEQ_MAX, Store, WriteResult
from protocols import topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError
from protocols.rejects import Rejects

log = logging.getLogger("dropline.collector")

MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Largest batch accepted, on the wire and again after inflating ``packed``."""

MAX_BATCH_RECORDS = 20_000
"""Most records in one batch. Vans send about 1,000-5,000."""

MIN_FIX_TIME_MS = 946_684_800_000
"""2000-01-01: a GNSS fix dated earlier is a receiver without a date, not a position."""

MAX_TIME_MS = 4_102_444_800_000
"""2100-01-01: any record time beyond this (or below 0) is absurd."""

STORE_UNAVAILABLE = "store_unavailable"
"""Ack reason with ``rejected=False`` and nothing stored: a transient failure, send again later."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = MAX_BATCH_BYTES
    max_records: int = MAX_BATCH_RECORDS


def check_records(records: Sequence[pb.Record]) -> str | None:
    """The reason the first unacceptable record makes the batch unacceptable, or None if all pass."""
    for r in records:
        seq = r.seq
        if seq < 1 or seq > SEQ_MAX:
            return "bad_seq"
        kind = r.WhichOneof("body")
        if kind == "fix":
            f = r.fix
            if not MIN_FIX_TIME_MS <= f.time_ms < MAX_TIME_MS:
                return "bad_time"
            if not (-900_000_000 <= f.lat_e7 <= 900_000_000 and -1_800_000_000 <= f.lon_e7 <= 1_800_000_000):
                return "bad_position"
        elif kind == "gap":
            g = r.gap
            if not 1 <= g.from_seq <= g.to_seq < seq:
                return "bad_gap"
        elif kind is None:
            if r.ByteSize() == pb.Record(seq=seq).ByteSize():
                return "no_body"  # nothing but a seq; a body of a newer kind is kept opaque instead
        elif not 0 <= getattr(r, kind).time_ms < MAX_TIME_MS:
            return "bad_time"
    return None


def _ack_vehicle(vehicle: str) -> str:
    return vehicle if topics.valid_vehicle(vehicle) else ""


class Ingest:
    """Validates, stores and acknowledges batches from any transport; counts every outcome.

    Thread-safe: gRPC streams and the MQTT worker call ``handle`` concurrently; the store
    serialises the writes. ``after_commit`` (for fault tests) runs after a commit, before the ack
    is returned: a test can kill the process there to prove duplicates are harmless.
    """

    def __init__(
        self,
        store: Store,
        limits: Limits = Limits(),
        *,
        after_commit: Callable[[str, WriteResult], None] | None = None,
        progress_log_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limits = limits
        self.rejects = Rejects("collector", log)
        self.counts: Counter[str] = Counter()
        self._after_commit = after_commit
        self._progress_log_s = progress_log_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._logged: dict[str, tuple[int, int, float]] = {}  # vehicle -> (contiguous, open gaps, when)

    def reject(self, reason: str, detail: object = "") -> None:
        """Count a refusal (also for transport-level refusals such as an MQTT topic not ours)."""
        with self._lock:
            self.rejects.reject(reason, detail)

    def handle(self, data: bytes, topic_vehicle: str | None) -> pb.Ack:
        """Store one serialised Batch and say what is stored. ``topic_vehicle`` is the vehicle the
        transport vouches for (MQTT topic, gRPC stream binding); the batch must name the same one."""
        try:
            return self._handle(data, topic_vehicle)
        except Exception as exc:  # a bug must not take a stream or the MQTT worker down with it
            log.exception("collector: batch from %s could not be handled", topic_vehicle)
            self.reject("internal_error", exc)
            return pb.Ack(vehicle=_ack_vehicle(topic_vehicle or ""), reason="internal_error")

    def _handle(self, data: bytes, topic_vehicle: str | None) -> pb.Ack:
        ack_vehicle = _ack_vehicle(topic_vehicle or "")
        try:
            batch = wire.decode_batch(data, self.limits.max_bytes, self.limits.max_records)
        except WireError as exc:
            batch_id = wire.peek_header(data)[1]  # every ack names its batch, even this one
            return self._refuse(str(exc), ack_vehicle, batch_id, f"{len(data)} bytes from {topic_vehicle}")
        vehicle = batch.vehicle
        if not topics.valid_vehicle(vehicle):
            return self._refuse("bad_vehicle", ack_vehicle, batch.batch_id, vehicle)
        if topic_vehicle is not None and vehicle != topic_vehicle:
            detail = f"{vehicle} on {topic_vehicle}"
            return self._refuse("vehicle_mismatch", ack_vehicle, batch.batch_id, detail)
        reason = check_records(batch.records)
        if reason is not None:
            return self._refuse(reason, vehicle, batch.batch_id, f"batch {batch.batch_id} of {vehicle}")
        ack = pb.Ack(vehicle=vehicle, batch_id=batch.batch_id)
        if not batch.records:
            with self._lock:
                self.counts["batches"] += 1
            return ack
        try:
            result = self.store.write(vehicle, batch.records)
        except Exception as exc:  # disk full, database locked too long, I/O error: retry later
            log.error("collector: store write failed for %s batch %d: %s", vehicle, batch.batch_id, exc)
            self.reject(STORE_UNAVAILABLE, exc)
            ack.reason = STORE_UNAVAILABLE
            return ack
        if self._after_commit is not None:
            self._after_commit(vehicle, result)
        for first, last in result.stored_ranges:
            ack.stored.add(first=first, last=last)
        ack.contiguous = result.contiguous
        with self._lock:
            self.counts["batches"] += 1
            self.counts["records"] += len(batch.records)
            self.counts["inserted"] += result.inserted
            self.counts["duplicates"] += result.duplicates
        self._log_progress(vehicle, result)
        return ack

    def _refuse(self, reason: str, vehicle: str, batch_id: int, detail: object) -> pb.Ack:
        self.reject(reason, detail)
        return pb.Ack(vehicle=vehicle, batch_id=batch_id, rejected=True, reason=reason)

    def _log_progress(self, vehicle: str, result: WriteResult) -> None:
        """INFO when a vehicle's open gaps change (or it first appears), else at most every
        ``progress_log_s`` per vehicle while its contiguous seq advances; DEBUG otherwise."""
        now = self._monotonic()
        with self._lock:
            last = self._logged.get(vehicle)
            changed = last is None or last[1] != result.open_gap_count
            due = last is None or (last[0] != result.contiguous and now - last[2] >= self._progress_log_s)
            if changed or due:
                self._logged[vehicle] = (result.contiguous, result.open_gap_count, now)
        level = logging.INFO if changed or due else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "vehicle %s: contiguous %d, max seq %d, %d open gap(s)%s; batch +%d new, %d duplicate",
                vehicle,
                result.contiguous,
                result.max_seq,
                result.open_gap_count,
                f", first {list(result.first_open_gap)}" if result.first_open_gap else "",
                result.inserted,
                result.duplicates,
            )

    def stats(self) -> dict[str, object]:
        """Counters for logs and tests: batches, records, inserted, duplicates, and refusals by reason."""
        with self._lock:
            return {**self.counts, "rejects": self.rejects.as_dict()}
