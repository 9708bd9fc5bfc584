"""The track codec's guarantee, checked against an independent reconstruction: every original
fix is within the bound (great-circle metres, haversine written here) of the position the kept
fixes give at its own time, by linear interpolation in time (longitude the short way round).
Plus: the columnar codec is lossless, hostile blobs are a WireError or a valid result, and the
wire decodes track segments back into the fixes the outbox held, seq by seq."""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import Stored
from agent.uplink import segments
from firmware_bridge.gps.serial_nmea import iter_fixes_from_file
from firmware_bridge.gps.tpv import read_trace
from protocols import track_codec, wire
from protocols.convert import encode_body
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError
from protocols.records import Fix
from tests.pipeline_fixtures import load_barefoot, load_gpx

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
R = 6371008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * R * math.asin(math.sqrt(min(1.0, h)))


def worst_sed(original: list[Fix], kept: list[Fix]) -> float:
    """The largest distance of an original fix from the kept track at the fix's own time."""
    times = [k.time for k in kept]
    ordered = times == sorted(times)
    worst = 0.0
    for f in original:
        i = bisect.bisect_right(times, f.time) - 1
        candidates = [k for k in kept if k.time == f.time]
        # where time went back in the input, any kept segment spanning the time may stand for it
        pairs = [i] if ordered else range(len(kept) - 1)
        for j in pairs:
            if not (0 <= j < len(kept) - 1 and kept[j].time < f.time < kept[j + 1].time):
                continue
            a, b = kept[j], kept[j + 1]
            r = (f.time - a.time) / (b.time - a.time)
            dlon = b.lon - a.lon
            dlon = dlon - 360 if dlon > 180 else dlon + 360 if dlon < -180 else dlon
            candidates.append(Fix(f.time, 2, a.lat + (b.lat - a.lat) * r, a.lon + dlon * r))
        assert candidates, f"fix at {f.time} lies outside the kept track"
        worst = max(worst, min(haversine_m(f.lat, f.lon, c.lat, c.lon) for c in candidates))
    return worst


def staged_traces() -> dict[str, list[Fix]]:
    traces = {p.name: load_barefoot(p) for p in sorted((DATA / "traces/barefoot_munich").glob("*.json"))}
    traces |= {p.name: load_gpx(p) for p in sorted((DATA / "traces/gpsbabel").glob("*.gpx"))}
    traces["munich-drive.jsonl"] = list(read_trace(ROOT / "examples/munich-drive.jsonl"))
    return traces


def gpsd_logs() -> dict[str, list[Fix]]:
    return {p.name: list(iter_fixes_from_file(p)) for p in sorted((DATA / "nmea/gpsd").glob("*.log"))}


BOUNDS = (0.0, 2.0, 5.0, 10.0)


@pytest.mark.parametrize("bound", BOUNDS)
def test_bound_holds_on_every_staged_trace_and_gpsd_log(bound: float) -> None:
    tracks = staged_traces() | gpsd_logs()
    assert len(tracks) >= 20
    for name, fixes in tracks.items():
        if not fixes:
            continue
        kept = track_codec.simplify(fixes, bound, max_hold_s=60.0)
        assert worst_sed(fixes, kept) <= bound + 1e-6, name
        if bound == 0:
            assert kept == fixes, name


def test_simplification_drops_most_fixes_of_a_real_drive() -> None:
    """Not a guarantee, a sanity floor: a 5 m bound on the Munich drive keeps well under a third."""
    fixes = staged_traces()["munich-drive.jsonl"]
    assert len(track_codec.simplify(fixes, 5.0)) < len(fixes) / 3


@st.composite
def tracks(draw: st.DrawFn) -> list[Fix]:
    """Random walks with stops, U-turns, gaps, repeated epochs, near the poles or the antimeridian."""
    lat = draw(st.sampled_from([0.0, 48.1, -33.9, 89.9995, -89.9995, 65.0]))
    lon = draw(st.sampled_from([11.5, 179.9995, -179.9995, 0.0]))
    t = 1.7e9
    heading = draw(st.floats(0, 2 * math.pi))
    out = []
    for step in draw(
        st.lists(
            st.tuples(st.integers(0, 9), st.floats(0, 40), st.floats(-math.pi, math.pi)),
            min_size=1,
            max_size=150,
        )
    ):
        kind, speed, turn = step
        dt = 1.0
        if kind == 0:
            speed = 0.0  # stop
        elif kind == 1:
            heading += math.pi  # U-turn
        elif kind == 2:
            dt = draw(st.sampled_from([0.0, 0.0, 30.0, 90.0]))  # repeated epoch or gap
        heading += turn / 8
        d = speed * max(dt, 1.0) / R
        lat = max(-90.0, min(90.0, lat + math.degrees(d * math.cos(heading))))
        c = max(math.cos(math.radians(lat)), 1e-6)
        lon = (lon + math.degrees(d * math.sin(heading) / c) + 180.0) % 360.0 - 180.0
        t += dt
        out.append(Fix(round(t, 3), 3, round(lat, 7), round(lon, 7)))
    return out


@settings(max_examples=150, deadline=None)
@given(tracks(), st.sampled_from([0.5, 2.0, 5.0, 25.0]), st.sampled_from([5.0, 60.0]))
def test_bound_holds_on_generated_tracks(fixes: list[Fix], bound: float, hold: float) -> None:
    kept = track_codec.simplify(fixes, bound, hold)
    assert worst_sed(fixes, kept) <= bound + 1e-6


@settings(max_examples=60, deadline=None)
@given(tracks(), st.sampled_from([2.0, 10.0]))
def test_no_fix_waits_longer_than_the_hold(fixes: list[Fix], hold: float) -> None:
    simplifier = track_codec.TrackSimplifier(5.0, hold)
    pending: list[float] = []
    for f in fixes:
        simplifier.push(f)
        pending.append(f.time)
        if simplifier.pending == 0:
            pending.clear()
        else:
            pending = pending[-simplifier.pending :]
            assert f.time - pending[0] < hold + 1e-9


def test_live_error_keeps_the_dead_reckoned_position_within_bound() -> None:
    fixes = staged_traces()["munich-drive.jsonl"]
    simplifier = track_codec.TrackSimplifier(5.0, 60.0, live_error_m=30.0)
    kept: list[Fix] = []
    for f in fixes:
        kept += simplifier.push(f)
        a, b = (kept[-2], kept[-1]) if len(kept) > 1 else (kept[-1], kept[-1])
        r = (f.time - b.time) / (b.time - a.time) if b.time > a.time else 0.0
        predicted = (b.lat + (b.lat - a.lat) * r, b.lon + (b.lon - a.lon) * r)
        assert haversine_m(f.lat, f.lon, *predicted) <= 30.0 + 1e-6


def as_pb(fixes: list[Fix]) -> list[pb.Fix]:
    out = []
    for f in fixes:
        msg = pb.Fix()
        msg.ParseFromString(encode_body(f)[1])
        out.append(msg)
    return out


def test_codec_is_lossless_on_real_fixes_with_every_field() -> None:
    for name, fixes in gpsd_logs().items():
        msgs = as_pb(fixes)
        assert track_codec.decode(track_codec.encode(msgs), len(msgs)) == msgs, name


optional_u32 = st.none() | st.integers(0, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            pb.Fix,
            time_ms=st.integers(-(2**63), 2**63 - 1),
            mode=st.integers(0, 2**32 - 1),
            lat_e7=st.integers(-(2**31), 2**31 - 1),
            lon_e7=st.integers(-(2**31), 2**31 - 1),
            alt_msl_cm=st.none() | st.integers(-(2**31), 2**31 - 1),
            speed_cms=optional_u32,
            track_cdeg=optional_u32,
            hdop_c=optional_u32,
            sats=optional_u32,
        ),
        max_size=40,
    )
)
def test_codec_round_trips_any_fixes(fixes: list[pb.Fix]) -> None:
    assert track_codec.decode(track_codec.encode(fixes), len(fixes)) == fixes


def exp_golomb(values: list[int], k: int) -> bytes:
    """Exp-Golomb codes of order ``k`` written from the definition (ITU-T H.264 9.1 generalised
    to order k): ``v + 2**k`` in binary with ``len - k - 1`` leading zeros; MSB first, zero pad."""
    text = ""
    for v in values:
        body = bin(v + (1 << k))[2:]
        text += "0" * (len(body) - k - 1) + body
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i : i + 8], 2) for i in range(0, len(text), 8))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 63).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(
                st.integers(0, 1 << 6) | st.integers(0, (1 << 62) - 1) | st.integers(0, 1 << 70), max_size=30
            ),
        )
    )
)
def test_bit_writer_writes_exp_golomb_codes(case: tuple[int, list[int]]) -> None:
    """Both bit writers (C words below 2**62, arbitrary precision above) against the definition."""
    k, values = case
    out = bytearray(b"x")
    track_codec._put_bits(out, values, k)
    assert bytes(out) == b"x" + exp_golomb(values, k)
    assert track_codec._eg_cost(values, k) == sum(2 * ((v >> k) + 1).bit_length() - 1 + k for v in values)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(
        lambda b, i: b[:i], st.just(track_codec.encode(as_pb(gpsd_logs()["bt451.log"]))), st.integers(0, 400)
    )
)
def test_hostile_blobs_are_a_wire_error_or_a_valid_result(blob: bytes) -> None:
    try:
        fixes = track_codec.decode(blob, 1000, 1 << 16)
    except WireError:
        return
    assert len(fixes) <= 1000
    assert track_codec.decode(track_codec.encode(fixes), 1000) == fixes


def test_track_segments_decode_to_the_outbox_records_and_bad_blobs_are_quarantined() -> None:
    fixes = staged_traces()["munich-drive.jsonl"][:120]
    stored = [Stored(10 + 2 * i, *encode_body(f)) for i, f in enumerate(fixes)]
    stored.insert(3, Stored(11, "signal", encode_body_signal()))
    segs = segments(stored)
    assert [s.codec for s in segs] == [pb.CODEC_TRACK_V1, pb.CODEC_MESSAGES]
    decoded = wire.decode_batch(wire.encode_batch("van-1", 1, segments=segs, compress=True), 1 << 20, 1000)
    got = {
        r.seq: (r.WhichOneof("body"), getattr(r, r.WhichOneof("body") or "").SerializeToString())
        for r in decoded.records
    }
    assert got == {s.seq: (s.kind, s.body) for s in stored}
    assert decoded.unreadable == []
    broken = wire.Segment("fix", [1, 2], codec=pb.CODEC_TRACK_V1, data=segs[0].data[:-3])
    bad = wire.decode_batch(wire.encode_batch("van-1", 2, segments=[broken, segs[1]]), 1 << 20, 1000)
    assert [u.seq for u in bad.unreadable] == [1, 2]
    assert [r.seq for r in bad.records] == [11]


def encode_body_signal() -> bytes:
    from protocols.records import Signal

    return encode_body(Signal(1.0, "Vehicle.Speed", 3.0))[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=50), st.none() | st.integers(0, 2**62))
def test_seq_runs_round_trip_any_seqs(seqs: list[int], reference: int | None) -> None:
    runs = wire.seq_runs(seqs, reference)
    assert wire.expand_runs(runs, len(seqs)) == (reference, seqs)


def test_consecutive_seqs_cost_a_few_bytes_and_bad_runs_are_refused() -> None:
    assert wire.seq_runs(list(range(1000, 1600)), 999) == [1000, 2000, 600]
    # 5-6: 5 from 0 (zigzag 10), 2 long; 9: 2 after 7 (4); 3: 7 back from 10 (13)
    assert wire.seq_runs([5, 6, 9, 3]) == [0, 10, 2, 4, 1, 13, 1]
    for bad in ([], [0, 2], [0, 1, 0], [0, 2000, 600]):
        with pytest.raises(WireError):
            wire.expand_runs(bad, 100)


def test_a_batch_referencing_the_previous_fix_decodes_only_with_it() -> None:
    msgs = as_pb(simplify_munich(5.0))
    first, second = msgs[:20], msgs[20:40]
    seg = wire.track_segment(range(21, 41), second, (20, first[-1]))
    absolute = wire.track_segment(range(21, 41), second)
    assert len(seg.data) < len(absolute.data)
    data = wire.encode_batch("van-1", 2, segments=[seg], compress=True)
    stored = {("van-1", 20): first[-1]}
    decoded = wire.decode_batch(data, 1 << 20, 100, lambda v, s: stored.get((v, s)))
    assert [(r.seq, r.fix) for r in decoded.records] == list(zip(range(21, 41), second, strict=True))
    lost = wire.decode_batch(data, 1 << 20, 100, lambda v, s: None)
    assert lost.records == []
    assert {(u.seq, u.reason) for u in lost.unreadable} == {
        (s, "track_needs_reference") for s in range(21, 41)
    }


def simplify_munich(bound: float) -> list[Fix]:
    return track_codec.simplify(staged_traces()["munich-drive.jsonl"], bound)
