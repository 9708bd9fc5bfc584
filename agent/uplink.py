"""Moves committed records from the outbox to the collector, settles them on its acks, and
hands the documents that come down the same link to the agent.

The outbox, not the transport, is the source of truth: every batch is an outbox transaction,
accepted by the collector's end-to-end ack or released (offered again) on a reconnect, an ack
timeout or a transient failure; the collector drops the duplicates. At most ``window`` batches
are unacknowledged, so a slow collector slows the van's upload instead of filling memory, and the
uplink never relies on a transport's own session or retry state (paho keeps its session in
memory and overruns its in-flight limit on reconnect).

Nothing is discarded because of a neighbour: the collector judges every record on its own and
quarantines the ones it cannot store, and a batch it cannot read as a whole is split in halves
and sent again, so one bad record can only ever hold up itself.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.outbox import Outbox, Stored, Transaction
from protocols import track_codec, wire
from protocols.downlink import Ack, Document, Downlink
from protocols.errors import TransportError, WireError

log = logging.getLogger("dropline.uplink")


class Transport(Protocol):
    """One duplex connection to the collector. Called from the uplink thread only."""

    def connect(self, timeout: float) -> None:
        """Open the link; raise TransportError if the collector cannot be reached in time."""

    def send(self, batch: bytes) -> None:
        """Queue one encoded Batch; may block briefly under back-pressure; TransportError if down."""

    def receive(self, timeout: float) -> list[Downlink]:
        """What came down so far (acks, collector announcements, documents), waiting up to
        ``timeout`` for the first; TransportError if the link is down."""

    def close(self) -> None:
        """Release the link; must not raise."""


def drain(q: queue.Queue[Downlink], timeout: float, check: Callable[[], None]) -> list[Downlink]:
    """Whatever a transport's reader thread has queued, waiting up to ``timeout`` for the first;
    when nothing came, ``check`` raises TransportError if the link died meanwhile."""
    out: list[Downlink] = []
    try:
        out.append(q.get(timeout=timeout))
        while True:
            out.append(q.get_nowait())
    except queue.Empty:
        if not out:
            check()
        return out


class Backoff:
    """Exponential backoff with full jitter, so a depot of vans does not reconnect in lockstep.
    The one backoff of the agent's links (uplink and device drivers)."""

    def __init__(self, initial_s: float = 0.2, max_s: float = 2.0, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(min(self.initial_s / 2, ceiling), ceiling)

    def reset(self) -> None:
        self._attempt = 0


@dataclass
class UplinkStats:
    connects: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    rejected_batches: int = 0
    ack_timeouts: int = 0
    bytes_sent: int = 0
    documents: int = 0
    last_error: str = ""
    reject_reasons: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)


@dataclass
class _InFlight:
    sent_at: float
    tx: Transaction


NEEDS_REFERENCE = "track_needs_reference"
"""Ack reason (cloud/ingest.py): the collector does not hold the track's reference fix; the
seqs it left out of the ack come again, encoded without a reference."""


Reference = tuple[int, track_codec.Reference]
"""Seq, time and position of a fix the collector acknowledged as stored."""


def segments(records: Sequence[Stored], reference: Reference | None = None) -> list[wire.Segment]:
    """The records of a transaction as one segment per kind, each in upload order; fixes as one
    compacted track segment (``CODEC_TRACK_V1``), which the collector decodes to the same fixes,
    starting from ``reference`` if given. A fix body the track cannot carry exactly
    (``track_codec.decode_fix``) travels as it is, for the collector to judge."""
    by_kind: dict[str, tuple[list[int], list[bytes]]] = {}
    for r in records:
        seqs, bodies = by_kind.setdefault(r.kind, ([], []))
        seqs.append(r.seq)
        bodies.append(r.body)
    out: list[wire.Segment] = []
    for kind, (seqs, bodies) in by_kind.items():
        if kind != "fix":
            out.append(wire.Segment(kind, seqs, bodies))
            continue
        columns, odd = track_codec.fix_columns(bodies)
        if odd:
            skip = set(odd)
            track_seqs = [seq for i, seq in enumerate(seqs) if i not in skip]
        else:
            track_seqs = seqs
        if track_seqs:
            out.append(wire.columns_segment(track_seqs, columns, reference))
        if odd:
            out.append(wire.Segment(kind, [seqs[i] for i in odd], [bodies[i] for i in odd]))
    return out


class Uplink:
    """The upload loop, in its own thread: connect, fill the window, settle acks, reconnect."""

    def __init__(
        self,
        outbox: Outbox,
        connect: Callable[[], Transport],
        vehicle: str,
        *,
        window: int = 8,
        batch_records: int = 2000,
        batch_bytes: int = 1 << 20,
        compress: bool = True,
        ack_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        on_document: Callable[[Document], None] | None = None,
        on_quarantined: Callable[[int, int, str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self._connect = connect
        self.vehicle = vehicle
        self.window = window
        self.max_batch_records = batch_records
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.compress = compress
        self.ack_timeout_s = ack_timeout_s
        self.backoff = backoff or Backoff()
        self._on_document = on_document
        self._on_quarantined = on_quarantined
        self._monotonic = monotonic
        self._inflight: dict[int, _InFlight] = {}
        self._batch_id = 0
        self.reference: Reference | None = None
        """The last fix an ack said is stored: where the next track segments start.
        None after a (re)connect, a resend or a collector that lacks it, until an ack says so."""
        self.stats = UplinkStats()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, drain_s: float = 0.0) -> None:
        """Stop the upload loop. With ``drain_s``, a link that is up first gets that long to have
        every committed record acknowledged, so a clean stop uploads what the shutdown flushed
        (the compactor's held fixes); whatever is left goes at the next start, as always."""
        deadline = self._monotonic() + drain_s
        while self.connected.is_set() and self._monotonic() < deadline and self.outbox.unacked_count():
            self._stop.wait(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            transport: Transport | None = None
            try:
                transport = self._connect()
                transport.connect(timeout=3.0)
                self.stats.connects += 1
                self.backoff.reset()
                self.connected.set()
                log.info("uplink connected (%s)", type(transport).__name__)
                self._pump(transport)
            except TransportError as exc:
                self.stats.last_error = str(exc)
                log.warning("uplink down: %s", exc)
            except Exception as exc:  # e.g. the outbox file failing under us: log, back off, go on
                self.stats.last_error = repr(exc)
                log.exception("uplink error; retrying")
            finally:
                self.connected.clear()
                self._release_all()
                if transport is not None:
                    transport.close()
            self._stop.wait(self.backoff.next_delay())

    def _release_all(self) -> None:
        """Offer every unacked record again; the collector makes the duplicates harmless. The
        collector may be another one now (or restored): no reference until it acks a fix."""
        self.reference = None
        self._inflight.clear()
        self.outbox.release_all()

    def _pump(self, transport: Transport) -> None:
        self._release_all()
        while not self._stop.is_set():
            self._fill_window(transport)
            for message in transport.receive(timeout=0.05 if self._inflight else 0.2):
                self._on_downlink(message)
            oldest = min((f.sent_at for f in self._inflight.values()), default=None)
            if oldest is not None and self._monotonic() - oldest > self.ack_timeout_s:
                self.stats.ack_timeouts += 1
                log.warning(
                    "no ack for %.0f s: resending %d unacked batches", self.ack_timeout_s, len(self._inflight)
                )
                self._release_all()

    def _fill_window(self, transport: Transport) -> None:
        while len(self._inflight) < self.window:
            tx = self.outbox.batch(self.batch_records, self.batch_bytes)
            if tx is None:
                return
            self._batch_id += 1
            parts = segments(tx.records, self.reference)
            payload = wire.encode_batch(self.vehicle, self._batch_id, compress=self.compress, segments=parts)
            self._inflight[self._batch_id] = _InFlight(self._monotonic(), tx)
            transport.send(payload)
            self.stats.batches_sent += 1
            self.stats.records_sent += len(tx.records)
            self.stats.bytes_sent += len(payload)

    def _on_downlink(self, message: Downlink) -> None:
        if message.ack is not None:
            self._on_ack(message.ack)
        elif message.collector_online and self._inflight:
            log.info("a collector (re)subscribed: resending %d unacked batches", len(self._inflight))
            self._release_all()
        elif message.document is not None:
            self.stats.documents += 1
            if self._on_document is not None:
                self._on_document(message.document)

    def _on_ack(self, ack: Ack) -> None:
        if ack.vehicle and ack.vehicle != self.vehicle:
            log.warning("ignoring ack for another vehicle %r", ack.vehicle)
            return
        sent = self._inflight.pop(ack.batch_id, None)
        if sent is None:
            return  # a late or doubled ack of a batch already released: its records come again
        tx = sent.tx
        if ack.rejected:
            self._on_rejected(ack, tx)
            return
        if ack.reason == NEEDS_REFERENCE:
            # The collector lacks the reference fix: what it left out is released below and sent
            # again, from no reference (later batches too, until an ack names a stored fix).
            log.warning("collector lacks the track reference of batch %d: resending without", ack.batch_id)
            self.reference = None
        elif ack.reason and not ack.stored and not ack.quarantined:
            # The collector could not store it now (disk full, database locked): send it again
            # after a pause rather than waiting for the ack timeout.
            log.warning("collector could not store batch %d (%s): retrying", ack.batch_id, ack.reason)
            tx.release()
            self._stop.wait(self.backoff.next_delay())
            return
        quarantined = [(q.first, q.last, q.reason) for q in ack.quarantined]
        for first, last, reason in quarantined:
            self.stats.quarantined[reason] = self.stats.quarantined.get(reason, 0) + last - first + 1
            log.warning("collector quarantined seq %d..%d: %s", first, last, reason)
            if self._on_quarantined is not None:
                self._on_quarantined(first, last, reason)
        stored = [(r.first, r.last) for r in ack.stored]
        self.stats.records_acked += tx.accept(stored, quarantined)
        self._take_reference(tx, stored)
        self.batch_records = min(self.max_batch_records, self.batch_records * 2)

    def _take_reference(self, tx: Transaction, stored: list[tuple[int, int]]) -> None:
        """The highest-seq fix of ``tx`` the ack says is stored (quarantined seqs, conflicts
        included, are never in ``stored``) becomes the reference; the collector decoded it to the
        same time and position the van holds."""
        for r in sorted(tx.records, key=lambda r: r.seq, reverse=True):
            if r.kind != "fix" or not any(a <= r.seq <= b for a, b in stored):
                continue
            try:
                fix = track_codec.decode_fix(r.body)
            except WireError:  # not in a track: the collector judged the body by itself
                continue
            self.reference = (r.seq, track_codec.columns_reference(fix))
            return

    def _on_rejected(self, ack: Ack, tx: Transaction) -> None:
        """A batch the collector could not read as a whole: halve the batch size and send its
        records again, so a fault that travels with one record ends up alone in its batch."""
        self.stats.rejected_batches += 1
        self.stats.reject_reasons[ack.reason] = self.stats.reject_reasons.get(ack.reason, 0) + 1
        count = len(tx.records)
        log.error("collector could not read batch %d (%d records): %s", ack.batch_id, count, ack.reason)
        self.batch_records = max(1, min(self.batch_records, count) // 2)
        tx.release()
        if count <= 1:
            self._stop.wait(self.backoff.next_delay())
