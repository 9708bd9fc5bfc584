"""Moves committed records from the outbox to the collector and marks them stored on its ack.

The outbox, not the transport, is the source of truth: on any reconnect or ack timeout the
uplink rewinds the outbox and sends every unacknowledged record again (the collector drops the
duplicates). It keeps at most ``window`` batches unacknowledged, so a slow collector slows the
van's upload instead of filling memory, and it never relies on a transport's own session or
retry state (paho keeps its session in memory and overruns its in-flight limit on reconnect).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.outbox import Outbox
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import TransportError

log = logging.getLogger("dropline.uplink")


class Transport(Protocol):
    """One connection to the collector. Called from the uplink thread only."""

    def connect(self, timeout: float) -> None:
        """Open the link; raise TransportError if the collector cannot be reached in time."""

    def send(self, batch: bytes) -> None:
        """Queue one encoded Batch; may block briefly under back-pressure; TransportError if down."""

    def acks(self, timeout: float) -> list[pb.Ack]:
        """Acks received so far, waiting up to ``timeout`` for the first; TransportError if down."""

    def collector_restarted(self) -> bool:
        """True once after a collector (re)appeared behind the link while it stayed up: batches
        in flight may never have reached one, so they are resent now, not on ack timeout."""

    def close(self) -> None:
        """Release the link; must not raise."""


def drain(q: queue.Queue[pb.Ack], timeout: float, check: Callable[[], None]) -> list[pb.Ack]:
    """Whatever a transport's reader thread has queued, waiting up to ``timeout`` for the first;
    when nothing came, ``check`` raises TransportError if the link died meanwhile."""
    out: list[pb.Ack] = []
    try:
        out.append(q.get(timeout=timeout))
        while True:
            out.append(q.get_nowait())
    except queue.Empty:
        if not out:
            check()
        return out


class Backoff:
    """Exponential backoff with full jitter, so a depot of vans does not reconnect in lockstep."""

    def __init__(self, initial_s: float = 0.2, max_s: float = 2.0, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2**self._attempt)
        self._attempt += 1
        return self._rng.uniform(self.initial_s / 2, ceiling)

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
    last_error: str = ""
    reject_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _InFlight:
    sent_at: float
    first: int
    last: int
    count: int


class Uplink:
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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self._connect = connect
        self.vehicle = vehicle
        self.window = window
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.compress = compress
        self.ack_timeout_s = ack_timeout_s
        self.backoff = backoff or Backoff()
        self._monotonic = monotonic
        self._inflight: dict[int, _InFlight] = {}
        self._batch_id = 0
        self.stats = UplinkStats()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
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
                if transport is not None:
                    transport.close()
            self._stop.wait(self.backoff.next_delay())

    def _resend_all(self) -> None:
        """Offer every unacked record again; the collector makes the duplicates harmless."""
        self.outbox.rewind()
        self._inflight.clear()

    def _pump(self, transport: Transport) -> None:
        self._resend_all()
        while not self._stop.is_set():
            self._fill_window(transport)
            for ack in transport.acks(timeout=0.05 if self._inflight else 0.2):
                self._on_ack(ack)
            if transport.collector_restarted() and self._inflight:
                log.info("a collector (re)subscribed: resending %d unacked batches", len(self._inflight))
                self._resend_all()
            oldest = min((f.sent_at for f in self._inflight.values()), default=None)
            if oldest is not None and self._monotonic() - oldest > self.ack_timeout_s:
                self.stats.ack_timeouts += 1
                log.warning(
                    "no ack for %.0f s: resending %d unacked batches", self.ack_timeout_s, len(self._inflight)
                )
                self._resend_all()

    def _fill_window(self, transport: Transport) -> None:
        while len(self._inflight) < self.window:
            rows = self.outbox.next_batch(self.batch_records, self.batch_bytes)
            if not rows:
                return
            self._batch_id += 1
            payload = wire.encode_batch(
                self.vehicle, self._batch_id, [body for _, body in rows], self.compress
            )
            transport.send(payload)
            seqs = (rows[0][0], rows[-1][0])
            self._inflight[self._batch_id] = _InFlight(self._monotonic(), min(seqs), max(seqs), len(rows))
            self.stats.batches_sent += 1
            self.stats.records_sent += len(rows)
            self.stats.bytes_sent += len(payload)

    def _on_ack(self, ack: pb.Ack) -> None:
        if ack.vehicle and ack.vehicle != self.vehicle:
            log.warning("ignoring ack for another vehicle %r", ack.vehicle)
            return
        sent = self._inflight.pop(ack.batch_id, None)
        if not ack.rejected and ack.reason and not ack.stored:
            # The collector could not store it now (disk full, database locked): send it all
            # again after a pause rather than waiting for the ack timeout.
            log.warning("collector could not store batch %d (%s): retrying", ack.batch_id, ack.reason)
            self._resend_all()
            self._stop.wait(self.backoff.next_delay())
            return
        if ack.rejected:
            self.stats.rejected_batches += 1
            self.stats.reject_reasons[ack.reason] = self.stats.reject_reasons.get(ack.reason, 0) + 1
            log.error("collector rejected batch %d: %s", ack.batch_id, ack.reason)
            if (
                sent is not None
                and ack.reason in ("oversized", "too_many_records")
                and self.batch_records > 1
            ):
                self.batch_records = max(1, self.batch_records // 2)
                self.outbox.rewind()
            elif sent is not None:
                self.outbox.ack([(sent.first, sent.last)], rejected=True)
            return
        self.stats.records_acked += self.outbox.ack((r.first, r.last) for r in ack.stored)
