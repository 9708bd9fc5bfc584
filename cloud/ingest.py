"""The one write path both transports share: bytes of a Batch in, an end-to-end Ack out.

Every record is judged on its own. A batch is refused as a whole (``rejected`` with a counted
reason, naming its batch id) only when it cannot be read as a whole: undecodable, oversized,
bad compression, a bad vehicle id, or a vehicle other than the one the transport vouches for.
Otherwise its good records are stored and the rest quarantined, in one transaction, and the Ack
says which seqs are stored (``stored``) and which are quarantined with their reason
(``quarantined``): the van may forget both, and no bad record sinks the good ones around it.

Quarantine reasons: ``undecodable`` (a body that does not parse), ``unknown_kind`` /
``unknown_codec`` / ``bad_segment`` (a segment this build cannot read), ``bad_seq`` (outside
1..2^63-1), ``bad_time`` (a fix before 2000 or from 2100 on, e.g. a GPS week rollover; any other
record before 1970 or from 2100 on), ``bad_position``, ``bad_gap`` (bounds not within
1..seq-1), ``no_body``, ``non_finite`` (a signal value that is NaN or infinite: JSON has no such
number, so such a value is never stored, and ``dropline export`` stays strict JSON), and
``conflict`` (a seq already held, or repeated in the batch, with another body; the first body
stays stored, the other is kept in quarantine and counted).

Duplicates with the same body are harmless: acknowledged as stored. ``handle`` never raises, so
one bad van cannot break a stream or a worker.

One bad van cannot starve the fleet either: each sender (the vehicle the transport vouches for,
or the peer address of an unauthenticated sender) has a :class:`Budget` of refused or
quarantined batches, a token bucket. Past it, that sender's batches are answered ``throttled``
(``rejected=False``, nothing stored) without being decoded, until the bucket refills: the van
sends them again later, so a good van caught by it loses nothing, and a flooder costs the
collector one header peek per batch.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cloud.blobs import Blobs
from cloud.sqldb import SqlDb
from cloud.store import CONFLICT, SEQ_MAX, Quarantine, Storable, Store, WriteResult
from protocols import convert, topics, wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError
from protocols.rejects import Rejects
from protocols.wire import TrackFix

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

NEEDS_REFERENCE = "track_needs_reference"
"""Ack reason: a track segment starts from a reference fix this store does not hold (restored
from a backup, another collector's store). Its seqs are neither stored nor quarantined, so the
van sends them again, without a reference; the rest of the batch is judged as usual."""

REFERENCE_CACHE = 4
"""Fixes remembered per vehicle (the last ones stored) so a track's reference is rarely read."""

THROTTLED = "throttled"
"""Ack reason with ``rejected=False`` and nothing stored: this sender spent its :class:`Budget` of
refused and quarantined batches; the batch was not read. Send it again later."""

THROTTLE_LOG_S = 60.0
"""A sender's throttling is logged when it starts, at most this often per sender."""

MAX_SENDERS = 10_000
"""Budgets remembered before the full ones (a sender refilled to ``burst``, as if unseen) are
forgotten, so senders cycling through peer addresses cannot grow the table without bound."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = MAX_BATCH_BYTES
    max_records: int = MAX_BATCH_RECORDS


@dataclass(frozen=True, slots=True)
class Budget:
    """Refused or quarantined batches a sender may send: ``burst`` at once, then ``rate`` per
    second (a token bucket; a good van spends none). Throttled batches cost nothing, so a sender
    that stops misbehaving is read again within ``1 / rate`` s."""

    rate: float = 20.0
    burst: float = 100.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError(f"budget: rate must be > 0 and burst >= 1 (got {self.rate}, {self.burst})")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    logged_at: float = -math.inf


def check_fix(seq: int, time_ms: int, lat_e7: int, lon_e7: int) -> str | None:
    """Why this fix cannot be stored (its quarantine reason), or None if it can."""
    if seq < 1 or seq > SEQ_MAX:
        return "bad_seq"
    if not MIN_FIX_TIME_MS <= time_ms < MAX_TIME_MS:
        return "bad_time"
    if not (-900_000_000 <= lat_e7 <= 900_000_000 and -1_800_000_000 <= lon_e7 <= 1_800_000_000):
        return "bad_position"
    return None


def check_record(r: Storable) -> str | None:
    """Why this record cannot be stored (its quarantine reason), or None if it can; a track's
    fix is judged exactly as the same fix sent as a record."""
    if isinstance(r, TrackFix):
        return check_fix(r.seq, r.time_ms, r.lat_e7, r.lon_e7)
    seq = r.seq
    kind = r.WhichOneof("body")
    if kind == "fix":
        f = r.fix
        return check_fix(seq, f.time_ms, f.lat_e7, f.lon_e7)
    if seq < 1 or seq > SEQ_MAX:
        return "bad_seq"
    if kind == "gap":
        g = r.gap
        if not 1 <= g.from_seq <= g.to_seq < seq:
            return "bad_gap"
    elif kind is None:
        if r.ByteSize() == pb.Record(seq=seq).ByteSize():
            return "no_body"  # nothing but a seq; a body of a newer kind is kept opaque instead
    else:
        if not 0 <= getattr(r, kind).time_ms < MAX_TIME_MS:
            return "bad_time"
        if kind == "signal" and not math.isfinite(r.signal.value):
            return "non_finite"
    return None


def _kind(r: Storable) -> str | None:
    """The record's body kind (None: a kind this build does not know)."""
    return "fix" if isinstance(r, TrackFix) else r.WhichOneof("body")


def _message(r: Storable) -> pb.Record:
    """The record as a message (a track's fix parsed from its body, the bytes it is stored as)."""
    return pb.Record.FromString(r.body) if isinstance(r, TrackFix) else r


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
        budget: Budget | None = None,
    ) -> None:
        """``budget``: per sender (None: no throttling; the collector process passes one);
        ``monotonic`` also drives its refill."""
        self.store = store
        self.limits = limits
        self.rejects = Rejects("collector", log)
        self.quarantine = Rejects("collector quarantine", log)
        self.counts: Counter[str] = Counter()
        self._after_commit = after_commit
        self._progress_log_s = progress_log_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._logged: dict[str, tuple[int, int, float]] = {}  # vehicle -> (contiguous, open gaps, when)
        self.budget = budget
        self._buckets: dict[str, _Bucket] = {}  # sender -> its budget, once it spent some
        sql = SqlDb.for_store(store)
        self.blobs = Blobs(sql.beside(".blobs")) if sql is not None else None
        """Photos reassembled from stored chunks after each commit (beside a SQLite store, or in
        the PostgreSQL store's database)."""
        self._recent: dict[str, dict[int, Storable]] = {}  # vehicle -> last fixes stored, by seq
        self.listeners: list[Callable[[str, list[pb.Record]], None]] = []
        """Called after each commit with the batch's records now stored (duplicates included: at
        least once), on the ingest's thread: the live event stream and webhooks. Must not block."""

    def reject(self, reason: str, detail: object = "") -> None:
        """Count a refusal (also for transport-level refusals such as an MQTT topic not ours)."""
        with self._lock:
            self.rejects.reject(reason, detail)

    def handle(self, data: bytes, topic_vehicle: str | None, *, peer: str | None = None) -> pb.Ack:
        """Store one serialised Batch and say what is stored. ``topic_vehicle`` is the vehicle the
        transport vouches for (MQTT topic, gRPC stream binding); the batch must name the same one.
        ``peer``: the sender's address when nothing authenticates it (plaintext); its budget is
        then the peer's, so a sender cannot spend a named van's budget by claiming its name."""
        sender = peer if peer is not None else topic_vehicle or ""
        if self._throttled(sender):
            self.reject(THROTTLED, sender)
            return pb.Ack(
                vehicle=_ack_vehicle(topic_vehicle or ""),
                batch_id=wire.peek_header(data)[1],
                reason=THROTTLED,
            )
        try:
            ack = self._handle(data, topic_vehicle)
        except Exception as exc:  # a bug must not take a stream or the MQTT worker down with it
            log.exception("collector: batch from %s could not be handled", topic_vehicle)
            self.reject("internal_error", exc)
            return pb.Ack(vehicle=_ack_vehicle(topic_vehicle or ""), reason="internal_error")
        if ack.rejected or len(ack.quarantined):
            self._spend(sender)
        return ack

    def _refill(self, bucket: _Bucket, now: float) -> None:
        assert self.budget is not None
        bucket.tokens = min(self.budget.burst, bucket.tokens + (now - bucket.at) * self.budget.rate)
        bucket.at = now

    def _throttled(self, sender: str) -> bool:
        """Whether ``sender`` has spent its budget (logged when it starts, rate-limited)."""
        if self.budget is None:
            return False
        with self._lock:
            bucket = self._buckets.get(sender)
            if bucket is None:
                return False
            now = self._monotonic()
            self._refill(bucket, now)
            if bucket.tokens >= 1:
                return False
            first = now - bucket.logged_at >= THROTTLE_LOG_S
            if first:
                bucket.logged_at = now
        if first:
            log.warning(
                "collector: throttling %s: over %g refused or quarantined batches (then %g/s);"
                " its batches are answered %r unread",
                sender or "unidentified senders",
                self.budget.burst,
                self.budget.rate,
                THROTTLED,
            )
        return True

    def _spend(self, sender: str) -> None:
        """One refused or quarantined batch off ``sender``'s budget."""
        if self.budget is None:
            return
        with self._lock:
            now = self._monotonic()
            bucket = self._buckets.get(sender)
            if bucket is None:
                if len(self._buckets) >= MAX_SENDERS:
                    for key, b in list(self._buckets.items()):
                        self._refill(b, now)
                        if b.tokens >= self.budget.burst:
                            del self._buckets[key]
                bucket = self._buckets[sender] = _Bucket(self.budget.burst, now)
            self._refill(bucket, now)
            bucket.tokens -= 1

    def _handle(self, data: bytes, topic_vehicle: str | None) -> pb.Ack:
        ack_vehicle = _ack_vehicle(topic_vehicle or "")
        try:
            batch = wire.decode_rows(
                data, self.limits.max_bytes, self.limits.max_records, references=self._reference
            )
        except WireError as exc:
            batch_id = wire.peek_header(data)[1]  # every ack names its batch, even this one
            return self._refuse(str(exc), ack_vehicle, batch_id, f"{len(data)} bytes from {topic_vehicle}")
        vehicle = batch.vehicle
        if not topics.valid_vehicle(vehicle):
            return self._refuse("bad_vehicle", ack_vehicle, batch.batch_id, vehicle)
        if topic_vehicle is not None and vehicle != topic_vehicle:
            detail = f"{vehicle} on {topic_vehicle}"
            return self._refuse("vehicle_mismatch", ack_vehicle, batch.batch_id, detail)
        good: list[Storable] = []
        unreadable = [u for u in batch.unreadable if u.reason != NEEDS_REFERENCE]
        aside = [Quarantine(u.seq, u.kind, u.reason, u.body) for u in unreadable]
        resend = len(unreadable) < len(batch.unreadable)
        for r in batch.records:
            reason = check_record(r)
            if reason is None:
                good.append(r)
            elif isinstance(r, TrackFix):
                aside.append(Quarantine(r.seq, "fix", reason, r.body))
            else:
                aside.append(Quarantine(r.seq, convert.kind_of(r), reason, r.SerializeToString()))
        ack = pb.Ack(vehicle=vehicle, batch_id=batch.batch_id, reason=NEEDS_REFERENCE if resend else "")
        if resend:
            self.reject(NEEDS_REFERENCE, f"{vehicle} batch {batch.batch_id}")
        if not good and not aside:
            with self._lock:
                self.counts["batches"] += 1
            return ack
        try:
            result = self.store.write(vehicle, good, aside)
        except Exception as exc:  # disk full, database locked too long, I/O error: retry later
            log.error("collector: store write failed for %s batch %d: %s", vehicle, batch.batch_id, exc)
            self.reject(STORE_UNAVAILABLE, exc)
            ack.reason = STORE_UNAVAILABLE
            return ack
        self._remember(vehicle, good, result)
        if self._after_commit is not None:
            self._after_commit(vehicle, result)
        chunks = [] if self.blobs is None else [r for r in good if isinstance(r, pb.Record)]
        if self.blobs is not None and any(r.WhichOneof("body") == "blob_chunk" for r in chunks):
            try:  # chunks conflicting with a held seq were quarantined, not stored: left out
                held = [r for r in chunks if any(a <= r.seq <= b for a, b in result.stored_ranges)]
                self.blobs.take(vehicle, held)
            except Exception as exc:  # stored but not reassembled: no ack, so the van sends again
                log.error("collector: blobs of %s batch %d: %s", vehicle, batch.batch_id, exc)
                self.reject(STORE_UNAVAILABLE, exc)
                ack.reason = STORE_UNAVAILABLE
                return ack
        if self.listeners:
            self._notify(vehicle, good, result)
        for first, last in result.stored_ranges:
            ack.stored.add(first=first, last=last)
        for first, last, reason in result.quarantined:
            ack.quarantined.add(first=first, last=last, reason=reason)
        ack.contiguous = result.contiguous
        with self._lock:
            self.counts["batches"] += 1
            self.counts["records"] += len(good) + len(aside)
            self.counts["inserted"] += result.inserted
            self.counts["duplicates"] += result.duplicates
            self.counts["conflicts"] += result.conflicts
            for first, last, reason in result.quarantined:
                self.counts["quarantined"] += last - first + 1
                detail = f"{vehicle} seq {first}..{last} (batch {batch.batch_id})"
                if reason == CONFLICT:
                    detail += ": a different body than the one held"
                self.quarantine.reject(reason, detail)
        self._log_progress(vehicle, result)
        return ack

    def _reference(self, vehicle: str, seq: int) -> pb.Fix | None:
        """A track's reference: a fix stored at ``seq`` (recent ones from memory, else the store)."""
        with self._lock:
            recent = self._recent.get(vehicle, {}).get(seq)
        record = self.store.fix(vehicle, seq) if recent is None else _message(recent)
        return None if record is None else record.fix

    def _remember(self, vehicle: str, good: list[Storable], result: WriteResult) -> None:
        """Keep the last ``REFERENCE_CACHE`` fixes of the batch that are now stored."""
        fixes: list[Storable] = []
        for r in reversed(good):
            if _kind(r) == "fix":
                fixes.append(r)
                if len(fixes) == REFERENCE_CACHE:
                    break
        held = [r for r in reversed(fixes) if any(a <= r.seq <= b for a, b in result.stored_ranges)]
        if not held:
            return
        with self._lock:
            recent = self._recent.setdefault(vehicle, {})
            for r in held:
                recent[r.seq] = r
            for seq in sorted(recent)[:-REFERENCE_CACHE]:
                del recent[seq]

    def _notify(self, vehicle: str, good: list[Storable], result: WriteResult) -> None:
        """Tell the listeners which records are stored (not the ones quarantined as conflicts), as
        messages (a track's fixes parsed from their bodies)."""
        spans = sorted(result.stored_ranges)
        firsts = [first for first, _ in spans]

        def held(seq: int) -> bool:
            i = bisect.bisect_right(firsts, seq) - 1
            return i >= 0 and seq <= spans[i][1]

        stored = [_message(r) for r in good if held(r.seq)]
        for listener in self.listeners:
            try:
                listener(vehicle, stored)
            except Exception:  # a listener's bug must not cost the van its ack
                log.exception("collector: a listener failed on %s", vehicle)

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
        """Counters for logs and tests: batches, records, inserted, duplicates, conflicts,
        quarantined; batch refusals by reason (``rejects``) and quarantined records by reason."""
        with self._lock:
            return {
                **self.counts,
                "rejects": self.rejects.as_dict(),
                "quarantine": self.quarantine.as_dict(),
            }
