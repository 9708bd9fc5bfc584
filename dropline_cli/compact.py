"""``dropline compact encode|decode|stats``: the track codec on a trace file, and its bytes per fix.

``encode`` simplifies a trace within ``--max-error-m`` and writes the kept fixes as track blobs,
one per ``--batch-s`` of fix time (each blob preceded by its length as a varint); ``decode``
prints their fixes; ``stats`` prints what a trace costs, ``wire_bytes`` as defined in README.md
("Compacted telemetry"): each batch as the uplink sends it plus ``HEADER_BYTES`` per message.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import sys
import time
from pathlib import Path

from dropline_cli.output import input_file
from firmware_bridge.gps.tpv import read_trace
from protocols import topics, track_codec, wire
from protocols.convert import encode_body
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import UsageError, WireError
from protocols.records import Fix, iso_time

VEHICLE = "van-0001"
HEADER_BYTES = 20 + 32 + 22 + (2 + 2 + len(topics.topic(VEHICLE, topics.TELEMETRY)) + 2)
"""Per message: IPv4 (20), TCP with timestamps (32), a TLS 1.3 record (22: header, tag, type),
an MQTT 3.1.1/5 QoS 1 PUBLISH (fixed header, topic, packet id) for an 8-character vehicle id."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="FILE", help="TRACE (encode, stats) or OUT (decode)")
    parser.add_argument("--max-error-m", type=float, default=0.0, help="SED bound in metres (0 = lossless)")
    parser.add_argument("--max-hold-s", type=float, default=60.0, help="longest a fix waits for its fate")
    parser.add_argument("--batch-s", type=float, default=60.0, help="seconds of fixes per batch")
    parser.add_argument("--json", action="store_true", help="stats as one JSON object")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="stats: every batch absolute",
    )
    parser.add_argument("-o", "--output", type=Path, help="encoded file to write (encode)")


def batches(fixes: list[Fix], kept: list[Fix], batch_s: float) -> list[list[Fix]]:
    """Kept fixes grouped by ``batch_s`` windows of fix time from the first fix."""
    out: dict[int, list[Fix]] = {}
    start = fixes[0].time if fixes else 0.0
    for f in kept:
        out.setdefault(int((f.time - start) // batch_s), []).append(f)
    return list(out.values())


def _pb(fixes: list[Fix]) -> list[pb.Fix]:
    return [pb.Fix.FromString(encode_body(f)[1]) for f in fixes]


def max_sed_m(fixes: list[Fix], kept: list[Fix]) -> float:
    """The largest distance from a fix to ``kept`` interpolated at the fix's time, in metres:
    where time goes back, the nearest of the kept segments spanning that time."""
    worst = 0.0
    times = [k.time for k in kept]
    pairs = list(itertools.pairwise(kept)) or [(k, k) for k in kept]
    ordered = times == sorted(times)
    for f in fixes if kept else ():
        if ordered:
            lo = max(0, min(len(pairs) - 1, bisect.bisect_left(times, f.time) - 1))
            hi = max(lo, min(len(pairs) - 1, bisect.bisect_right(times, f.time) - 1))
            spans = pairs[lo : hi + 1]
        else:
            spans = [(a, b) for a, b in pairs if a.time <= f.time <= b.time] or pairs
        best = math.inf
        for a, b in spans:
            r = 0.0 if b.time <= a.time else min(1.0, max(0.0, (f.time - a.time) / (b.time - a.time)))
            dlon = b.lon - a.lon
            dlon = dlon - 360 if dlon > 180 else dlon + 360 if dlon < -180 else dlon
            lat, lon = a.lat + (b.lat - a.lat) * r, a.lon + dlon * r
            best = min(best, track_codec.distance_m(f.lat, f.lon, lat, lon))
        worst = max(worst, best)
    return worst


def stats(
    fixes: list[Fix], max_error_m: float, batch_s: float, max_hold_s: float = 60.0, reference: bool = True
) -> dict[str, float]:
    """What ``fixes`` cost as the uplink sends them; with ``reference`` every batch but the first
    starts from the previous batch's last fix (the van's last acked fix)."""
    started = time.perf_counter()
    kept = track_codec.simplify(fixes, max_error_m, max_hold_s)
    groups = [_pb(g) for g in batches(fixes, kept, batch_s)]
    segments: list[wire.Segment] = []
    seq = 1
    for g in groups:
        ref = (seq - 1, groups[len(segments) - 1][-1]) if reference and segments else None
        segments.append(wire.track_segment(range(seq, seq + len(g)), g, ref))
        seq += len(g)
    encode_s = time.perf_counter() - started
    payload = sum(len(s.data) for s in segments)
    sent = sum(
        len(wire.encode_batch(VEHICLE, 1, compress=True, segments=[s])) + HEADER_BYTES for s in segments
    )
    worst = max_sed_m(fixes, kept)
    n = max(1, len(fixes))
    return {
        "fixes": len(fixes),
        "kept": len(kept),
        "batches": len(segments),
        "payload_bytes": payload,
        "wire_bytes": sent,
        "bytes_per_fix": round(payload / n, 4),
        "wire_bytes_per_fix": round(sent / n, 4),
        "max_sed_m": round(worst, 3),
        "encode_fixes_per_s": round(len(fixes) / encode_s) if encode_s > 0 else 0,
    }


def run(args: argparse.Namespace) -> int:
    action = args._path[1]
    path = input_file(args.path)
    if action == "decode":
        data, pos, out = path.read_bytes(), 0, sys.stdout
        while pos < len(data):
            size, pos = wire._read_varint(data, pos)
            if size < 0 or pos + size > len(data):
                raise UsageError(f"{path}: byte {pos}: truncated blob")
            try:
                decoded = track_codec.decode(data[pos : pos + size], 1 << 24)
            except WireError as exc:
                raise UsageError(f"{path}: byte {pos}: {exc}") from exc
            pos += size
            for f in decoded:
                row = {"time": iso_time(f.time_ms / 1000), "lat": f.lat_e7 / 1e7, "lon": f.lon_e7 / 1e7}
                out.write(json.dumps(row) + "\n")
        return 0
    fixes = list(read_trace(path))
    if action == "stats":
        print(
            json.dumps(stats(fixes, args.max_error_m, args.batch_s, args.max_hold_s, not args.no_reference))
        )
        return 0
    if args.output is None:
        raise UsageError("compact encode: -o OUT is required")
    kept = track_codec.simplify(fixes, args.max_error_m, args.max_hold_s)
    with args.output.open("wb") as fh:
        for group in batches(fixes, kept, args.batch_s):
            blob = track_codec.encode(_pb(group))
            fh.write(wire.varint(len(blob)) + blob)
    return 0
