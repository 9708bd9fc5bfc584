"""The uplink against a real collector (ingest + SQLite store) behind an in-process link whose
faults the test controls: the window, ack matching, resends, splitting, quarantine, documents.

The link stands in only for the network between the two; both ends are the real code. The
collector's acks are held in the link until the test lets them go, so every property is checked
on the state at that moment, with no sleeps deciding the outcome.
"""

from __future__ import annotations

import queue
import random
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.outbox import Outbox, Stored
from agent.uplink import Backoff, Uplink, drain, segments
from cloud.ingest import Ingest
from cloud.store import SqliteStore
from protocols import wire
from protocols.convert import encode_body
from protocols.downlink import Document, Downlink, decode_downlink
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import TransportError
from protocols.records import Fix, Scan
from tests.pipeline_fixtures import wait_until

VAN = "van-1"
T0 = 1_700_000_000.0


class Link:
    """A duplex link to an in-process collector. ``hold`` keeps acks back until ``release``."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.down: queue.Queue[Downlink] = queue.Queue()
        self.held: list[Downlink] = []
        self.hold = False
        self.sent: list[bytes] = []
        self.broken = threading.Event()
        self.lock = threading.Lock()
        self.tamper: Callable[[bytes], bytes] = lambda b: b

    def connect(self, timeout: float) -> None:
        if self.broken.is_set():
            raise TransportError("link down")

    def send(self, batch: bytes) -> None:
        if self.broken.is_set():
            raise TransportError("link down")
        with self.lock:
            self.sent.append(batch)
            ack = decode_downlink(
                pb.Downlink(ack=self.ingest.handle(self.tamper(batch), VAN)).SerializeToString()
            )
            if self.hold:
                self.held.append(ack)
            else:
                self.down.put(ack)

    def receive(self, timeout: float) -> list[Downlink]:
        def check() -> None:
            if self.broken.is_set():
                raise TransportError("link down")

        return drain(self.down, timeout, check)

    def release(self, order: Callable[[list[Downlink]], list[Downlink]] = lambda a: a) -> None:
        with self.lock:
            for ack in order(self.held):
                self.down.put(ack)
            self.held = []

    def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "collector.db")
    yield s
    s.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox(tmp_path / "outbox.db", group_commit_s=0.0)
    yield ob
    ob.close()


def fill(outbox: Outbox, n: int, scan_every: int = 0) -> None:
    for i in range(n):
        if scan_every and i % scan_every == 0:
            outbox.append(Scan(T0 + i, f"00{i:018d}", "sscc"))
        else:
            outbox.append(Fix(T0 + i, 3, 48.1 + i * 1e-5, 11.5))
    outbox.flush()


def stored_seqs(store: SqliteStore) -> list[int]:
    return [r["seq"] for r in store.export("all", VAN)]


@contextmanager
def running(uplink: Uplink) -> Iterator[Uplink]:
    uplink.start()
    try:
        yield uplink
    finally:
        uplink.stop()


def make(outbox: Outbox, link: Link, **kw: object) -> Uplink:
    defaults: dict[str, object] = {"window": 3, "batch_records": 10, "ack_timeout_s": 60.0}
    defaults.update(kw)
    return Uplink(outbox, lambda: link, VAN, backoff=Backoff(0.01, 0.05), **defaults)  # type: ignore[arg-type]


def test_at_most_window_batches_are_unacknowledged(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 100)
    link = Link(Ingest(store))
    link.hold = True
    uplink = make(outbox, link)
    with running(uplink):
        wait_until(lambda: len(link.sent) >= 3, 10, "the window filled")
        assert len(link.sent) == 3 and outbox.unacked_count() == 100  # stored, but no ack seen yet
        link.hold = False
        link.release()
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
    assert stored_seqs(store) == list(range(1, 101))
    assert uplink.stats.batches_sent == 10 and uplink.stats.records_acked == 100


def test_acks_reordered_doubled_or_late_settle_each_record_once(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 60, scan_every=7)
    link = Link(Ingest(store))
    link.hold = True
    uplink = make(outbox, link, window=6)
    with running(uplink):
        wait_until(lambda: len(link.sent) >= 6, 10, "the window filled")
        link.release(lambda acks: list(reversed(acks)) + acks)  # every ack twice, newest first
        link.hold = False
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
    assert uplink.stats.records_acked == 60 and uplink.stats.records_sent == 60
    assert stored_seqs(store) == list(range(1, 61))


def test_unacknowledged_batches_are_resent_after_the_ack_timeout(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 30)
    clock = [0.0]
    link = Link(Ingest(store))
    link.hold = True
    uplink = make(outbox, link, ack_timeout_s=10.0, monotonic=lambda: clock[0])
    with running(uplink):
        wait_until(lambda: len(link.sent) >= 3, 10, "the window filled")
        link.held.clear()  # those acks are lost
        assert uplink.stats.ack_timeouts == 0
        clock[0] = 11.0
        wait_until(lambda: len(link.sent) >= 6, 10, "resent after the timeout")
        link.hold = False
        link.release()
        clock[0] = 30.0
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
    assert uplink.stats.ack_timeouts >= 1
    assert stored_seqs(store) == list(range(1, 31))


def test_a_collector_announcing_itself_gets_the_window_at_once(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 30)
    link = Link(Ingest(store))
    link.hold = True
    uplink = make(outbox, link)
    with running(uplink):
        wait_until(lambda: len(link.sent) >= 3, 10, "the window filled")
        link.held.clear()  # published while no collector listened: the broker dropped them
        link.hold = False
        link.down.put(Downlink(collector_online=True))
        wait_until(lambda: outbox.unacked_count() == 0, 10, "resent without waiting for the timeout")
    assert uplink.stats.ack_timeouts == 0
    assert stored_seqs(store) == list(range(1, 31))


def test_an_absurd_fix_is_quarantined_and_its_neighbours_stored(outbox: Outbox, store: SqliteStore) -> None:
    outbox.append(Fix(T0, 3, 48.1, 11.5))
    outbox.append(Fix(946_000_000.0 - 86400 * 365, 3, 48.1, 11.5))  # 1998: a week-rollover date
    outbox.append(Scan(T0 + 2, "00340123450000000017", "sscc"))
    outbox.append(Fix(T0 + 3, 3, 48.1, 11.5))
    outbox.flush()
    link = Link(Ingest(store))
    told: list[tuple[int, int, str]] = []
    uplink = make(outbox, link, on_quarantined=lambda f, t, why: told.append((f, t, why)))
    with running(uplink):
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything settled")
    assert stored_seqs(store) == [1, 3, 4]
    assert uplink.stats.quarantined == {"bad_time": 1}
    assert told == [(2, 2, "bad_time")]  # the agent turns this into its own records_quarantined alert
    assert uplink.stats.rejected_batches == 0


def test_a_batch_the_collector_cannot_read_is_split_until_the_rest_flows(
    outbox: Outbox, store: SqliteStore
) -> None:
    fill(outbox, 40, scan_every=5)
    link = Link(Ingest(store))
    corrupt_once = [True]

    def tamper(batch: bytes) -> bytes:
        if corrupt_once[0]:
            corrupt_once[0] = False
            return batch[:-3]  # the zlib stream cut short: the collector cannot read the batch
        return batch

    link.tamper = tamper
    uplink = make(outbox, link, window=1)
    with running(uplink):
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
    assert uplink.stats.reject_reasons == {"undecodable": 1}
    assert stored_seqs(store) == list(range(1, 41))


def test_documents_coming_down_reach_the_agent(outbox: Outbox, store: SqliteStore) -> None:
    link = Link(Ingest(store))
    got: list[Document] = []
    uplink = make(outbox, link, on_document=got.append)
    with running(uplink):
        link.down.put(Downlink(document=Document(kind="manifest", envelope=b"signed")))
        wait_until(lambda: got, 10, "the document delivered")
    assert [(d.kind, d.envelope) for d in got] == [("manifest", b"signed")]


def test_a_broken_link_is_reopened_and_nothing_is_lost(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 50)
    link = Link(Ingest(store))
    link.broken.set()
    uplink = make(outbox, link)
    with running(uplink):
        wait_until(lambda: uplink.stats.last_error == "link down", 10, "the failure noticed")
        assert link.sent == []
        link.broken.clear()
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked after the link returned")
    assert stored_seqs(store) == list(range(1, 51))


def test_backoff_grows_to_its_ceiling_with_jitter_and_resets() -> None:
    backoff = Backoff(0.2, 2.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.2 * 2**i) for i in range(12)]
    assert all(0.1 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 1.0 and len(set(delays)) == 12  # it grows, and no two vans agree
    for _ in range(1000):
        assert backoff.next_delay() <= 2.0  # no overflow however long the outage
    backoff.reset()
    assert backoff.next_delay() <= 0.2


def test_segments_group_a_transaction_by_kind_in_upload_order(outbox: Outbox) -> None:
    fill(outbox, 12, scan_every=4)
    tx = outbox.batch(100)
    assert tx is not None

    out = segments(tx.records)
    assert [(s.kind, list(s.seqs)) for s in out] == [
        ("scan", [1, 5, 9]),
        ("fix", [2, 3, 4, 6, 7, 8, 10, 11, 12]),
    ]
    decoded = wire.decode_batch(wire.encode_batch(VAN, 1, segments=out), 1 << 20, 100)
    assert sorted(r.seq for r in decoded.records) == list(range(1, 13))


def test_a_fix_body_the_track_cannot_carry_travels_as_it_is_and_is_stored() -> None:
    """A body protobuf reads but the track could not give back exactly (a field this build does
    not know, a value protobuf would truncate) goes as a message; the collector judges it."""
    bodies = [encode_body(Fix(T0 + i, 3, 48.1, 11.5))[1] for i in range(4)]
    stored = [
        Stored(1, "fix", bodies[0]),
        Stored(2, "fix", bodies[1] + b"\x50\x01"),  # field 10: a later schema's
        Stored(3, "fix", bodies[2]),
        Stored(4, "fix", bodies[3] + b"\x48\x80\x80\x80\x80\x10"),  # sats = 2**32
    ]
    out = segments(stored)
    assert [(s.codec, list(s.seqs), list(s.bodies)) for s in out[1:]] == [
        (wire.CODEC_MESSAGES, [2, 4], [stored[1].body, stored[3].body])
    ]
    assert (out[0].codec, list(out[0].seqs)) == (wire.CODEC_TRACK_V1, [1, 3])
    decoded = wire.decode_batch(wire.encode_batch(VAN, 1, segments=out), 1 << 20, 100)
    assert decoded.unreadable == []
    assert {r.seq: r.fix.time_ms for r in decoded.records} == {
        i + 1: round((T0 + i) * 1000) for i in range(4)
    }


def track_references(batches: list[bytes]) -> list[int | None]:
    """The reference seq of each batch's track segment, read from the bytes sent (None: none)."""
    out: list[int | None] = []
    for data in batches:
        batch = pb.Batch.FromString(data)
        if batch.compression == wire.COMPRESSION_ZLIB:
            batch = pb.Batch.FromString(zlib.decompress(batch.packed))
        track = [s for s in batch.segments if s.codec == wire.CODEC_TRACK_V1]
        assert len(track) == 1
        out.append(track[0].seqs[0] - 1 if track[0].seqs[0] else None)
    return out


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fixes_in(store: SqliteStore) -> list[tuple[int, str, float, float]]:
    return [(r["seq"], r["time"], r["lat"], r["lon"]) for r in store.export("fixes", VAN)]


def test_a_track_starts_from_the_last_fix_the_collector_acked_as_stored(
    outbox: Outbox, store: SqliteStore
) -> None:
    fill(outbox, 50)
    link = Link(Ingest(store))
    uplink = make(outbox, link, window=1)  # one batch at a time: each sees the previous ack
    with running(uplink):
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
        assert uplink.reference is not None and uplink.reference[0] == 50
    # the first batch has no reference; each later one starts from the previous batch's last fix
    assert track_references(link.sent) == [None, 10, 20, 30, 40]
    expected = [(i + 1, iso(T0 + i), 48.1 + i * 1e-5, 11.5) for i in range(50)]
    got = fixes_in(store)
    assert [(s, t) for s, t, _, _ in got] == [(s, t) for s, t, _, _ in expected]
    assert all(abs(a[2] - b[2]) < 1e-7 and a[3] == b[3] for a, b in zip(got, expected, strict=True))
    assert not list(store.export("quarantine", VAN))


def test_a_quarantined_fix_never_becomes_the_reference(outbox: Outbox, store: SqliteStore) -> None:
    outbox.append(Fix(T0, 3, 48.1, 11.5))
    outbox.append(Fix(946_000_000.0 - 86400 * 365, 3, 48.1, 11.5))  # 1998: quarantined as bad_time
    outbox.flush()
    link = Link(Ingest(store))
    uplink = make(outbox, link)
    with running(uplink):
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything settled")
        assert uplink.reference is not None and uplink.reference[0] == 1
        outbox.append(Fix(T0 + 2, 3, 48.2, 11.6))
        outbox.flush()
        wait_until(lambda: outbox.unacked_count() == 0, 10, "the next fix settled")
    assert track_references(link.sent) == [None, 1]
    assert [s for s, *_ in fixes_in(store)] == [1, 3]


def test_a_reference_the_collector_lost_is_sent_again_without_and_nothing_is_lost(
    outbox: Outbox, store: SqliteStore, tmp_path: Path
) -> None:
    fill(outbox, 20)
    link = Link(Ingest(store))
    uplink = make(outbox, link, window=1)
    restored = SqliteStore(tmp_path / "restored.db")  # a store restored from a backup: no fixes
    try:
        with running(uplink):
            wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
            assert uplink.reference is not None and uplink.reference[0] == 20
            with link.lock:
                link.ingest = Ingest(restored)  # same link, so the van keeps its reference
            fill(outbox, 5)
            outbox.append(Scan(T0 + 99, "00340123450000000017", "sscc"))
            outbox.flush()
            wait_until(lambda: outbox.unacked_count() == 0, 10, "the new records acked")
        refs = track_references(link.sent)
        assert refs[:3] == [None, 10, 20] and refs[3:] == [None]  # refused once, then resent bare
        assert link.ingest.stats()["rejects"] == {"track_needs_reference": 1}
        assert [s for s, *_ in fixes_in(restored)] == list(range(21, 26))  # 1..20 are in the backup's gap
        assert [r["seq"] for r in restored.export("all", VAN)] == list(range(21, 27))
        assert not list(restored.export("quarantine", VAN))
        assert uplink.stats.quarantined == {}
    finally:
        restored.close()


def test_a_reconnect_forgets_the_reference(outbox: Outbox, store: SqliteStore) -> None:
    fill(outbox, 10)
    link = Link(Ingest(store))
    uplink = make(outbox, link)
    with running(uplink):
        wait_until(lambda: outbox.unacked_count() == 0, 10, "everything acked")
        assert uplink.reference is not None
        link.broken.set()
        wait_until(lambda: uplink.reference is None, 10, "the reference dropped with the link")
        link.broken.clear()
        fill(outbox, 3)
        wait_until(lambda: outbox.unacked_count() == 0, 10, "acked after the reconnect")
    assert track_references(link.sent)[-1] is None
    assert [s for s, *_ in fixes_in(store)] == list(range(1, 14))
