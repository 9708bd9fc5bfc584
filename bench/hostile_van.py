"""A misbehaving but authenticated van against a real collector: do the good vans keep flowing?

* Collector: a ``dropline collector`` process on a fresh SQLite store, gRPC on loopback with
  mutual TLS from a development PKI made here (``dropline pki`` code: a CA, a collector
  certificate for 127.0.0.1, one certificate per van), or ``--plaintext``.
* Good vans (``--good``, default 2): each on its own stream with its own certificate, sends a
  batch of ``--batch`` fixes, waits for its ack, sends the next, as the uplink does with a window
  of one. Ack latency is send to ack; throughput is fixes acked per second.
* The bad van: its own valid certificate, flooding ``--bad-window`` batches in flight at a time,
  each malformed in turn: random bytes, a batch naming a good van (spoofed), a zlib bomb (4 MiB
  of zeros in a few KiB), a segment with more seqs than bodies, an unknown codec, an unknown
  kind, seq 0 and 2^64-1, and a body that does not decode. Bounded: ``--seconds`` per phase.
* Two phases of equal length, good vans alone, then with the bad van; the figures side by side,
  plus the collector's own view afterwards: every good fix in the store exactly once, nothing
  stored under a good van by the bad one, and what the bad van got back (refusals by reason;
  ``throttled``: past its budget of refused batches, answered unread; ``--no-budget`` runs the
  collector without one, for comparison).

Run: ``.venv/bin/python bench/hostile_van.py [--seconds 10] [--good 2] [--batch 500] [--plaintext]``
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

import grpc

from cloud.grpc_server import stream_method
from dropline_cli import pki
from protocols import wire
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.pipeline_fixtures import Proc, free_port, wait_port

T0 = 1_700_000_000_000
BAD = "van-bad"


@dataclass(slots=True)
class VanResult:
    vehicle: str
    batches: int = 0
    fixes: int = 0
    latencies_s: list[float] = field(default_factory=list)
    replies: Counter[str] = field(default_factory=Counter)


class Link:
    """One van's duplex stream: ``send`` a batch, ``ack`` waits for the next Ack (documents and
    other downlinks are skipped)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._replies: Iterator[pb.Downlink] = stream_method(channel)(iter(self._out.get, None))

    def send(self, data: bytes) -> None:
        self._out.put(data)

    def ack(self) -> pb.Ack:
        for downlink in self._replies:
            if downlink.HasField("ack"):
                return downlink.ack
        raise ConnectionError("stream ended")

    def close(self) -> None:
        self._out.put(None)


def fix_body(seq: int) -> bytes:
    return pb.Fix(
        time_ms=T0 + seq * 1000, mode=3, lat_e7=481_000_000 + seq, lon_e7=115_000_000
    ).SerializeToString()


def good_van(link: Link, vehicle: str, batch: int, first_seq: int, stop: threading.Event) -> VanResult:
    result = VanResult(vehicle)
    seq = first_seq
    while not stop.is_set():
        seqs = list(range(seq, seq + batch))
        data = wire.encode_batch(
            vehicle, seq, segments=[wire.Segment("fix", seqs, [fix_body(s) for s in seqs])]
        )
        sent = time.perf_counter()
        link.send(data)
        ack = link.ack()
        result.latencies_s.append(time.perf_counter() - sent)
        stored = sum(r.last - r.first + 1 for r in ack.stored)
        if ack.rejected or stored != batch:
            raise AssertionError(f"{vehicle}: batch at {seq} not stored in full: {ack}")
        result.batches += 1
        result.fixes += batch
        seq += batch
    return result


def malformed(i: int, victims: list[str], max_bytes: int) -> bytes:
    """The bad van's ``i``-th batch: one of its kinds of malformation, in turn."""
    seqs = [1 + (i * 7) % 50 + k for k in range(20)]
    bodies = [fix_body(s) for s in seqs]
    which = i % 8
    if which == 0:
        return os.urandom(2048)
    if which == 1:  # a good van's name over the bad van's certificate, on seqs ahead of it
        ahead = [s + 10**9 for s in seqs]
        spoofed = wire.Segment("fix", ahead, [fix_body(s + 1) for s in seqs])  # plausible, not theirs
        return wire.encode_batch(victims[i % len(victims)], i, segments=[spoofed])
    if which == 2:  # zlib bomb: max_bytes of zeros in a few KiB
        inner = pb.Batch()
        inner.segments.add(kind="fix", seqs=[1], bodies=[b"\0" * max_bytes])
        packed = zlib.compress(inner.SerializeToString(), 9)
        return pb.Batch(
            vehicle=BAD, batch_id=i, compression=pb.COMPRESSION_ZLIB, packed=packed
        ).SerializeToString()
    batch = pb.Batch(vehicle=BAD, batch_id=i)
    if which == 3:
        batch.segments.add(kind="fix", seqs=seqs, bodies=bodies[:3])
    elif which == 4:
        batch.segments.add(kind="fix", codec=7, seqs=seqs, bodies=bodies)
    elif which == 5:
        batch.segments.add(kind="telepathy", seqs=seqs, bodies=bodies)
    elif which == 6:
        batch.segments.add(kind="fix", seqs=[0, 2**64 - 1], bodies=bodies[:2])
    else:
        batch.segments.add(kind="fix", seqs=seqs, bodies=[b"\xff" * 9] * len(seqs))
    return batch.SerializeToString()


def bad_van(link: Link, victims: list[str], window: int, stop: threading.Event) -> VanResult:
    result = VanResult(BAD)
    max_bytes = 4 * 1024 * 1024
    ready = [malformed(i, victims, max_bytes) for i in range(64)]  # made once: the flood costs
    i = 0  # this process (shared with the good vans) nothing but sending
    in_flight = 0
    while not stop.is_set() or in_flight:
        while in_flight < window and not stop.is_set():
            link.send(ready[i % len(ready)])
            i += 1
            in_flight += 1
        ack = link.ack()
        in_flight -= 1
        result.batches += 1
        result.replies[ack.reason or ("quarantined" if ack.quarantined else "stored")] += 1
    return result


def channel_for(addr: str, certs: dict[str, Path] | None, ca: Path | None) -> grpc.Channel:
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    if certs is None or ca is None:
        return grpc.insecure_channel(addr, options=options)
    creds = grpc.ssl_channel_credentials(
        ca.read_bytes(), certs["key"].read_bytes(), certs["cert"].read_bytes()
    )
    return grpc.secure_channel(addr, creds, options=options)


def run_phase(
    addr: str,
    identities: dict[str, dict[str, Path] | None],
    ca: Path | None,
    first: dict[str, int],
    args: argparse.Namespace,
    hostile: bool,
) -> dict[str, Any]:
    stop = threading.Event()
    results: dict[str, VanResult] = {}
    errors: list[BaseException] = []
    channels: list[grpc.Channel] = []

    def start(vehicle: str, body: Callable[[Link], VanResult]) -> threading.Thread:
        channel = channel_for(addr, identities[vehicle], ca)
        channels.append(channel)

        def go() -> None:
            link = Link(channel)
            try:
                results[vehicle] = body(link)
            except BaseException as exc:
                errors.append(exc)
            finally:
                link.close()

        thread = threading.Thread(target=go, name=vehicle)
        thread.start()
        return thread

    threads = [
        start(v, lambda link, v=v: good_van(link, v, args.batch, first[v], stop))  # type: ignore[misc]
        for v in first
    ]
    good = list(first)
    if hostile:
        threads.append(start(BAD, lambda link: bad_van(link, good, args.bad_window, stop)))
    began = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - began
    for channel in channels:
        channel.close()
    if errors:
        raise errors[0]
    out: dict[str, Any] = {"seconds": round(elapsed, 2)}
    for v in good:
        r = results[v]
        lat = sorted(r.latencies_s)
        out[v] = {
            "fixes_per_s": round(r.fixes / elapsed),
            "batches": r.batches,
            "ack_p50_ms": round(statistics.median(lat) * 1000, 1),
            "ack_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
            "last_seq": first[v] + r.fixes - 1,
        }
    if hostile:
        bad = results[BAD]
        out[BAD] = {
            "batches": bad.batches,
            "per_s": round(bad.batches / elapsed),
            "replies": dict(bad.replies),
        }
    return out


def check_store(db: Path, last_seq: dict[str, int]) -> dict[str, Any]:
    """The collector's store read with sqlite3: each good van holds 1..last seq exactly once,
    every body the one its van sent; the bad van's records and refusals as stored. ``problems``
    lists what is not so (expected only with ``--plaintext``, where nothing proves who a van is)."""
    problems: list[str] = []
    conn = sqlite3.connect(db)
    try:
        for v in last_seq:
            held = conn.execute(
                "SELECT seq, body FROM records WHERE vehicle = ? ORDER BY seq", (v,)
            ).fetchall()
            if [s for s, _ in held] != list(range(1, last_seq[v] + 1)):
                problems.append(f"{v}: {len(held)} seqs held, not exactly 1..{last_seq[v]}")
            wrong = [s for s, b in held if pb.Record.FromString(b).fix != pb.Fix.FromString(fix_body(s))]
            if wrong:
                problems.append(f"{v}: {len(wrong)} bodies its van never sent, first at seq {wrong[0]}")
        (bad_rows,) = conn.execute("SELECT count(*) FROM records WHERE vehicle = ?", (BAD,)).fetchone()
        (quarantined,) = conn.execute("SELECT count(*) FROM quarantine WHERE vehicle = ?", (BAD,)).fetchone()
        others = conn.execute("SELECT DISTINCT vehicle FROM records").fetchall()
        problems += [f"records under {v}" for (v,) in others if v not in {*last_seq, BAD}]
    finally:
        conn.close()
    return {"problems": problems, "bad_van_records": bad_rows, "bad_van_quarantined": quarantined}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--good", type=int, default=2, help="good vans")
    parser.add_argument("--batch", type=int, default=500, help="fixes per good batch")
    parser.add_argument("--bad-window", type=int, default=8, help="bad batches in flight at once")
    parser.add_argument("--plaintext", action="store_true", help="no TLS (loopback only)")
    parser.add_argument(
        "--no-budget", action="store_true", help="collector without its refused-batch budget (before)"
    )
    args = parser.parse_args(argv)
    good = [f"van-{i + 1}" for i in range(args.good)]
    with tempfile.TemporaryDirectory(prefix="hostile-van-") as tmp_name:
        tmp = Path(tmp_name)
        db, port = tmp / "collector.db", free_port()
        addr = f"127.0.0.1:{port}"
        cmd = ["collector", "--db", str(db), "--grpc", addr] + (
            ["--refused-rate", "0"] if args.no_budget else []
        )
        identities: dict[str, dict[str, Path] | None] = {v: None for v in [*good, BAD]}
        ca: Path | None = None
        if not args.plaintext:
            ca = pki.init(tmp / "pki")["ca"]
            server = pki.issue_collector(tmp / "pki", "main", ["127.0.0.1"])
            identities = {v: pki.issue_vehicle(tmp / "pki", v) for v in identities}
            cmd += ["--tls-ca", str(ca), "--tls-cert", str(server["cert"]), "--tls-key", str(server["key"])]
        collector = Proc(cmd, tmp / "collector.log").start()
        try:
            wait_port(port)
            calm = run_phase(addr, identities, ca, {v: 1 for v in good}, args, hostile=False)
            after = {v: calm[v]["last_seq"] + 1 for v in good}
            stormy = run_phase(addr, identities, ca, after, args, hostile=True)
        finally:
            collector.stop()
        report = {
            "transport": "grpc plaintext" if args.plaintext else "grpc mutual TLS",
            "batch": args.batch,
            "collector_budget": "none" if args.no_budget else "default (20 refused batches/s, burst 100)",
            "without_bad_van": calm,
            "with_bad_van": stormy,
        }
        report["store"] = check_store(db, {v: stormy[v]["last_seq"] for v in good})
    print(json.dumps(report, indent=2))
    return 1 if report["store"]["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
