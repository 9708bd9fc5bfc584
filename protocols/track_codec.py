# mypy: disable-error-code="untyped-decorator"
"""The compacted track: error-bounded online simplification of GPS fixes, and a columnar codec
for a batch of the fixes kept (``CODEC_TRACK_V1`` segments).

Reconstruction, the contract both sides share: a position at time ``t`` between two consecutive
kept fixes ``a`` and ``b`` (``a.time < t < b.time``) is their linear interpolation in time, in
degrees of latitude and longitude, longitude the short way round (across the antimeridian when
that is shorter). ``TrackSimplifier`` drops a fix only when that reconstruction at the fix's own
time is within ``max_error_m`` metres of great-circle distance (time-synchronised distance, SED)
of the fix as received, and a kept fix is moved (quantised) by less than that bound too. With
``max_error_m = 0`` every fix is kept, exactly (1e-7 degree, 1 ms): the codec is lossless.

The codec is lossless for what it is given (every field of ``dropline.v1.Fix``): it finds the
coarsest grid the coordinates and times already sit on, and the simplifier puts kept fixes on a
grid derived from the bound, so a lossy track costs fewer bits per coordinate.

The van reads its outbox's ``Fix`` bodies straight into columns (``fix_columns``), without the
protobuf runtime; only the collector's side (``decode``, ``fixes_of``) builds protobuf messages,
importing the generated code when first called.

Compiled by Cython (pure-Python mode) in the van's build; runs unchanged as plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cython
import zstandard
from cython.cimports.libc.math import cos, sin, sqrt

from protocols.errors import WireError
from protocols.records import Fix

if TYPE_CHECKING:
    from protocols.dropline.v1 import dropline_pb2 as pb

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG), the sphere every distance here is measured on."""
M_PER_E7: cython.double = EARTH_RADIUS_M * math.pi / 180.0 / 1e7
QUANTUM_SHARE = 0.5
"""Share of ``max_error_m`` a kept fix may be moved by quantisation (the rest is left for the
fixes dropped around it)."""
_DEG: cython.double = math.pi / 180.0

# -- simplification ------------------------------------------------------------------------------


def quantum_e7(max_error_m: float) -> int:
    """The grid (in 1e-7 degree) kept fixes are put on for a bound: the largest whose rounding
    moves a point by at most ``QUANTUM_SHARE * max_error_m`` (half a cell diagonal), at least 1."""
    if max_error_m <= 0:
        return 1
    return max(1, int(QUANTUM_SHARE * max_error_m / (M_PER_E7 * math.sqrt(0.5))))


def _hav_limit(limit_m: float) -> float:
    """The haversine term ``h`` of a distance of ``limit_m`` (compare ``h`` instead of metres)."""
    s = math.sin(min(limit_m, math.pi * EARTH_RADIUS_M) / (2.0 * EARTH_RADIUS_M))
    return s * s * (1.0 - 1e-9)


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _hav(lat1: cython.double, lon1: cython.double, lat2: cython.double, lon2: cython.double) -> cython.double:
    s1: cython.double = sin((lat2 - lat1) * _DEG * 0.5)
    s2: cython.double = sin((lon2 - lon1) * _DEG * 0.5)
    return s1 * s1 + cos(lat1 * _DEG) * cos(lat2 * _DEG) * s2 * s2


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine, on ``EARTH_RADIUS_M``)."""
    h: cython.double = _hav(lat1, lon1, lat2, lon2)
    return 2.0 * EARTH_RADIUS_M * math.asin(sqrt(min(1.0, max(0.0, h))))


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _short_dlon(dlon: cython.double) -> cython.double:
    if dlon > 180.0:
        return dlon - 360.0
    if dlon < -180.0:
        return dlon + 360.0
    return dlon


@cython.cfunc
@cython.locals(
    n=cython.Py_ssize_t,
    i=cython.Py_ssize_t,
    span=cython.double,
    dlat=cython.double,
    dlon=cython.double,
    r=cython.double,
    t=cython.double,
)
def _window_ok(
    times: list[float],
    lats: list[float],
    lons: list[float],
    a_t: cython.double,
    a_lat: cython.double,
    a_lon: cython.double,
    e_t: cython.double,
    e_lat: cython.double,
    e_lon: cython.double,
    hmax: cython.double,
) -> cython.bint:
    """Whether every fix of the window is reconstructed within the bound by a -> e."""
    n = len(times)
    span = e_t - a_t
    dlat = e_lat - a_lat
    dlon = _short_dlon(e_lon - a_lon)
    for i in range(n):
        t = times[i]
        r = (t - a_t) / span
        if _hav(a_lat + dlat * r, a_lon + dlon * r, lats[i], lons[i]) > hmax:
            return False
    return True


class TrackSimplifier:
    """Online simplification with a guaranteed SED bound (an opening window, as in Meratnia and
    de By's OPW-TR), with bounded hold and optional dead-reckoning for the live position.

    ``push`` each fix in arrival order; it returns the fixes decided kept now (quantised copies),
    in order. A fix is decided (kept or dropped) within ``max_hold_s`` of event time as long as
    events keep coming (``tick`` on other events). With ``live_error_m > 0`` a fix is also kept at
    once when the extrapolation from the last two kept fixes (what a collector can predict) would
    be off by more than ``live_error_m``. ``flush`` keeps the undecided fix (shutdown, end of file).
    """

    def __init__(self, max_error_m: float, max_hold_s: float = 60.0, live_error_m: float = 0.0) -> None:
        if not (max_error_m >= 0 and max_hold_s >= 0 and live_error_m >= 0):
            raise ValueError("max_error_m, max_hold_s and live_error_m must be >= 0")
        self.max_error_m = max_error_m
        self.max_hold_s = max_hold_s
        self.live_error_m = live_error_m
        self.quantum = quantum_e7(max_error_m)
        self._hmax = _hav_limit(max_error_m)
        self._hlive = _hav_limit(live_error_m)
        self._anchor: Fix | None = None  # the last kept fix (quantised)
        self._before: Fix | None = None  # the kept fix before it
        self._window: list[Fix] = []  # fixes after the anchor, all reconstructed by anchor -> last
        self._times: list[float] = []
        self._lats: list[float] = []
        self._lons: list[float] = []

    def quantise(self, fix: Fix) -> Fix:
        """``fix`` on the grid (and time on the millisecond) it will have on the wire."""
        q = self.quantum
        return replace(
            fix,
            time=round(fix.time * 1000) / 1000,
            lat=round(fix.lat * 1e7 / q) * q / 1e7,
            lon=round(fix.lon * 1e7 / q) * q / 1e7,
        )

    @property
    def pending(self) -> int:
        """Fixes not decided yet."""
        return len(self._window)

    def push(self, fix: Fix) -> list[Fix]:
        kept: list[Fix] = []
        if self.max_error_m <= 0:  # lossless: every fix as received (the wire keeps 1e-7 deg, 1 ms)
            self._keep(fix, kept)
            return kept
        if self._anchor is None:
            self._keep(self.quantise(fix), kept)
            return kept
        if self._window and fix.time - self._window[0].time >= self.max_hold_s:
            self._close(kept)
        self._add(fix, kept)
        window = self._window
        if self.live_error_m > 0 and window and window[len(window) - 1] is fix and self._predicted_off(fix):
            self._close(kept)
        return kept

    def tick(self, now: float) -> list[Fix]:
        """Decide the window if its oldest fix has waited ``max_hold_s`` by event time ``now``."""
        kept: list[Fix] = []
        if self._window and now - self._window[0].time >= self.max_hold_s:
            self._close(kept)
        return kept

    def flush(self) -> list[Fix]:
        kept: list[Fix] = []
        if self._window:
            self._close(kept)
        return kept

    def _add(self, fix: Fix, kept: list[Fix]) -> None:
        anchor = self._anchor
        assert anchor is not None
        window = self._window
        if window:
            last = window[len(window) - 1]
            if fix.time < last.time:  # time went back: end the window, keep this one as it is
                self._close(kept)
                self._keep(self.quantise(fix), kept)
                return
            q = self.quantum
            if _window_ok(
                self._times, self._lats, self._lons, anchor.time, anchor.lat, anchor.lon,
                round(fix.time * 1000) / 1000, round(fix.lat * 1e7 / q) * q / 1e7,
                round(fix.lon * 1e7 / q) * q / 1e7, self._hmax,
            ):  # fmt: skip
                self._append(fix)
                return
            self._close(kept)
            anchor = self._anchor
            assert anchor is not None
        if fix.time > anchor.time:
            self._append(fix)
        elif fix.time == anchor.time and _hav(anchor.lat, anchor.lon, fix.lat, fix.lon) <= self._hmax:
            return  # a repeated epoch the kept fix already stands for
        else:
            self._keep(self.quantise(fix), kept)

    def _append(self, fix: Fix) -> None:
        self._window.append(fix)
        self._times.append(fix.time)
        self._lats.append(fix.lat)
        self._lons.append(fix.lon)

    def _close(self, kept: list[Fix]) -> None:
        """Keep the window's last fix; every fix before it is dropped (reconstructed)."""
        last = self._window[len(self._window) - 1]
        self._window = []
        self._times = []
        self._lats = []
        self._lons = []
        self._keep(self.quantise(last), kept)

    def _keep(self, fix: Fix, kept: list[Fix]) -> None:
        self._before = self._anchor
        self._anchor = fix
        kept.append(fix)

    def _predicted_off(self, fix: Fix) -> bool:
        """Whether the dead-reckoned position from the last two kept fixes misses ``fix`` by more
        than ``live_error_m`` (one kept fix: the van is predicted to stand still)."""
        a, b = self._before, self._anchor
        assert b is not None
        lat, lon = b.lat, b.lon
        if a is not None and b.time > a.time:
            r = (fix.time - b.time) / (b.time - a.time)
            lat = b.lat + (b.lat - a.lat) * r
            lon = b.lon + _short_dlon(b.lon - a.lon) * r
        return bool(_hav(lat, lon, fix.lat, fix.lon) > self._hlive)


def simplify(fixes: Sequence[Fix], max_error_m: float, max_hold_s: float = 60.0) -> list[Fix]:
    """The fixes ``TrackSimplifier`` keeps of a whole track (flushed at its end)."""
    simplifier = TrackSimplifier(max_error_m, max_hold_s)
    kept: list[Fix] = []
    for fix in fixes:
        kept += simplifier.push(fix)
    return kept + simplifier.flush()


# -- the columnar codec --------------------------------------------------------------------------

OPTIONAL = ("alt_msl_cm", "speed_cms", "track_cdeg", "hdop_c", "sats")
"""The optional ``Fix`` fields, in column order; each is a column only when some fix has it."""
RAW, ZSTD, ZSTD_DICT = 0, 1, 2
"""First byte of a track blob: how the columns that follow are packed."""
_DELTA, _DOD, _CONST = 1, 2, 3
MAX_ORDER = 63
_CONST_INLINE = 63
"""Largest exp-Golomb order a column may use (residuals of 64-bit values fit in 67 bits)."""
_MAX_ZEROS = 70
REFERENCED = 1 << 5
"""Mask bit: the first time and position are deltas from a reference fix both sides know."""
_INT32 = 1 << 31
_INT64 = 1 << 63
_UINT32 = 1 << 32
DICTIONARY_PATH = Path(__file__).with_name("track_dictionary.zdict")


@dataclass(slots=True)
class TrackColumns:
    """A batch of fixes by column: the integers of ``dropline.v1.Fix``, ``None`` where a fix
    lacks an optional field."""

    time_ms: list[int]
    mode: list[int]
    lat_e7: list[int]
    lon_e7: list[int]
    optional: dict[str, list[int | None]]

    def __len__(self) -> int:
        return len(self.time_ms)


def columns_of(fixes: Sequence[pb.Fix]) -> TrackColumns:
    optional: dict[str, list[int | None]] = {name: [] for name in OPTIONAL}
    for f in fixes:
        for name in OPTIONAL:
            optional[name].append(getattr(f, name) if f.HasField(name) else None)  # type: ignore[arg-type]
    return TrackColumns(
        [f.time_ms for f in fixes],
        [f.mode for f in fixes],
        [f.lat_e7 for f in fixes],
        [f.lon_e7 for f in fixes],
        optional,
    )


def fixes_of(columns: TrackColumns) -> list[pb.Fix]:
    from protocols.dropline.v1 import dropline_pb2 as pb  # the collector's side only

    out: list[pb.Fix] = []
    opt = [(name, values) for name, values in columns.optional.items() if any(v is not None for v in values)]
    for i in range(len(columns.time_ms)):
        fix = pb.Fix(
            time_ms=columns.time_ms[i],
            mode=columns.mode[i],
            lat_e7=columns.lat_e7[i],
            lon_e7=columns.lon_e7[i],
        )
        for name, values in opt:
            value = values[i]
            if value is not None:
                setattr(fix, name, value)
        out.append(fix)
    return out


_FIX_FIELDS = 9
"""Field numbers 1..9 of ``dropline.v1.Fix``, every one a varint."""
_U64: cython.ulonglong = 0xFFFFFFFFFFFFFFFF


@cython.cfunc
@cython.locals(v=cython.ulonglong)
def _put_u64(out: bytearray, value: cython.ulonglong) -> cython.void:
    """Append ``value`` as a protobuf varint (at most ten bytes)."""
    v = value
    while v >= 0x80:
        out.append(cython.cast(cython.int, (v & 0x7F) | 0x80))
        v >>= 7
    out.append(cython.cast(cython.int, v))


@cython.cfunc
@cython.locals(v=cython.longlong)
def _put_sint32(out: bytearray, value: cython.longlong) -> cython.void:
    """Append an int32 as protobuf's ``sint32`` (zigzag) varint."""
    v = value
    if v >= 0:
        _put_u64(out, v * 2)
    else:
        _put_u64(out, -v * 2 - 1)


@cython.locals(
    i=cython.Py_ssize_t,
    n=cython.Py_ssize_t,
    t=cython.longlong,
    mode=cython.ulonglong,
    lat=cython.longlong,
    lon=cython.longlong,
)
def record_bodies(seqs: Sequence[int], columns: TrackColumns) -> list[bytes]:
    """Per fix, ``dropline.v1.Record(seq=seqs[i], fix=<fix i>)`` serialised byte for byte as
    protobuf serialises it (fields in number order, zero scalars left out, the optional fields
    written when present, even at zero; a seq of 0 left out), without building a message. The
    columns must hold values in their ``Fix`` fields' ranges, as ``decode_columns`` gives them."""
    n = len(columns.time_ms)
    if len(seqs) != n:
        raise ValueError("record_bodies: one seq per fix")
    times = columns.time_ms
    modes = columns.mode
    lats = columns.lat_e7
    lons = columns.lon_e7
    opt: list[tuple[int, list[int | None]]] = []
    for field_number, name in enumerate(OPTIONAL, start=5):  # Fix fields 5..9
        values = columns.optional.get(name, [])
        if any(v is not None for v in values):
            opt.append((field_number, values))
    out: list[bytes] = []
    fix = bytearray()
    for i in range(n):
        del fix[:]
        t = times[i]
        if t:
            fix.append(0x08)
            _put_u64(fix, t & _U64)  # int64: two's complement, ten bytes when negative
        mode = modes[i]
        if mode:
            fix.append(0x10)
            _put_u64(fix, mode)
        lat = lats[i]
        if lat:
            fix.append(0x18)
            _put_sint32(fix, lat)
        lon = lons[i]
        if lon:
            fix.append(0x20)
            _put_sint32(fix, lon)
        for field_number, values in opt:
            value = values[i]
            if value is not None:
                fix.append(field_number << 3)
                if field_number == 5:  # alt_msl_cm, the one signed optional field
                    _put_sint32(fix, value)
                else:
                    _put_u64(fix, value)
        record = bytearray()
        seq = seqs[i]
        if seq:
            record.append(0x08)
            _put_u64(record, seq)
        record.append(0x52)  # Record field 10 (fix), length-delimited
        _put_u64(record, len(fix))
        record += fix
        out.append(bytes(record))
    return out


@cython.cfunc
@cython.locals(
    n=cython.Py_ssize_t,
    pos=cython.Py_ssize_t,
    start=cython.Py_ssize_t,
    b=cython.uint,
    shift=cython.int,
    value=cython.ulonglong,
    field=cython.int,
    have=cython.int,
    signed=cython.longlong,
    mode=cython.ulonglong,
    lat=cython.longlong,
    lon=cython.longlong,
    alt=cython.longlong,
    speed=cython.ulonglong,
    track=cython.ulonglong,
    hdop=cython.ulonglong,
    sats=cython.ulonglong,
)
def _read_fix(body: bytes, out: list[list[int | None]]) -> None:
    """Append the fields of one ``Fix`` body to ``out`` (time, mode, lat, lon, then the optional
    columns in ``OPTIONAL`` order, None where absent), all or nothing. WireError for anything the
    columns could not give back exactly: a truncated or over-long varint, a wire type other than
    varint, a field the schema does not have, a value outside its field's range."""
    n = len(body)
    pos = 0
    field = 0  # the field whose value comes next; 0: a tag comes next
    have = 0  # bit i: optional field i is present
    time_ms: int = 0
    mode = lat = lon = alt = speed = track = hdop = sats = 0
    while pos < n:
        start = pos
        value = 0
        shift = 0
        while True:
            if pos >= n:
                raise WireError("fix_truncated")
            b = body[pos]
            pos += 1
            if shift == 63 and b > 1:  # the tenth byte may only hold bit 63
                raise WireError("fix_bad_varint" if b >= 0x80 else "fix_out_of_range")
            value |= cython.cast(cython.ulonglong, b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        if field == 0:
            if pos - start > 5:
                raise WireError("fix_bad_varint")
            if value & 7:
                raise WireError("fix_wire_type")
            if value >> 3 == 0 or value >> 3 > _FIX_FIELDS:
                raise WireError("fix_unknown_field")
            field = cython.cast(cython.int, value >> 3)
            continue
        if field == 1:  # int64: two's complement
            time_ms = value if value >> 63 == 0 else -cython.cast(cython.longlong, value ^ _U64) - 1
        elif value >> 32:  # every other field is 32 bits wide
            raise WireError("fix_out_of_range")
        elif field == 2:
            mode = value
        elif field <= 5:  # sint32: zigzag
            signed = cython.cast(cython.longlong, value >> 1)
            if value & 1:
                signed = -signed - 1
            if field == 3:
                lat = signed
            elif field == 4:
                lon = signed
            else:
                alt = signed
                have |= 1
        elif field == 6:
            speed = value
            have |= 2
        elif field == 7:
            track = value
            have |= 4
        elif field == 8:
            hdop = value
            have |= 8
        else:
            sats = value
            have |= 16
        field = 0
    if field:
        raise WireError("fix_truncated")
    out[0].append(time_ms)
    out[1].append(mode)
    out[2].append(lat)
    out[3].append(lon)
    out[4].append(alt if have & 1 else None)
    out[5].append(speed if have & 2 else None)
    out[6].append(track if have & 4 else None)
    out[7].append(hdop if have & 8 else None)
    out[8].append(sats if have & 16 else None)


def _columns(out: list[list[int | None]]) -> TrackColumns:
    fixed: list[list[int]] = out[:4]  # type: ignore[assignment]  # never None: no presence
    return TrackColumns(fixed[0], fixed[1], fixed[2], fixed[3], dict(zip(OPTIONAL, out[4:], strict=True)))


@cython.locals(i=cython.Py_ssize_t)
def fix_columns(bodies: Sequence[bytes]) -> tuple[TrackColumns, list[int]]:
    """The ``dropline.v1.Fix`` bodies that ``decode_fix`` reads, as columns in their order, and the
    indexes of the others (which travel as they are, for the collector to judge)."""
    out: list[list[int | None]] = [[] for _ in range(_FIX_FIELDS)]
    bad: list[int] = []
    for i in range(len(bodies)):
        try:
            _read_fix(bodies[i], out)
        except WireError:
            bad.append(i)
    return _columns(out), bad


def decode_fix(body: bytes) -> TrackColumns:
    """One ``Fix`` body as columns of one fix, the values protobuf would parse from it; WireError
    (naming why) for a body that is not exactly a Fix: truncated, a varint over ten bytes, another
    wire type, an unknown field, a value outside its field's range (protobuf would truncate it)."""
    out: list[list[int | None]] = [[] for _ in range(_FIX_FIELDS)]
    _read_fix(body, out)
    return _columns(out)


@cython.cfunc
def _put(out: bytearray, value: object) -> cython.void:
    """Append ``value`` (an int >= 0) as a varint."""
    v = value
    while v >= 0x80:  # type: ignore[operator]
        out.append((v & 0x7F) | 0x80)  # type: ignore[operator]
        v >>= 7  # type: ignore[operator]
    out.append(v)  # type: ignore[arg-type]


def _zz(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzz(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def _grid(values: Sequence[int]) -> int:
    g = 0
    for v in values:
        g = math.gcd(g, v)
        if g == 1:
            return 1
    return g or 1


_FAST_BITS = 62
"""Residuals below ``2**_FAST_BITS`` (every real track) are coded in C integers; larger ones
(hostile or synthetic extremes of int64 times) take the arbitrary-precision path, same bytes."""


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
@cython.locals(n=cython.int)
def _bit_length(x: cython.ulonglong) -> cython.int:
    n = 0
    while x:
        x >>= 1
        n += 1
    return n


@cython.locals(
    n=cython.Py_ssize_t, i=cython.Py_ssize_t, a=cython.longlong, b=cython.longlong, c=cython.longlong
)
def _residuals(values: list[int], predictor: int) -> list[int]:
    """Zigzagged residuals after the first value (which the caller writes absolute)."""
    n = len(values)
    out: list[int] = []
    if n < 2:
        return out
    if min(values) >= -(1 << 59) and max(values) < 1 << 59:  # differences fit a C long long
        a, b = values[0], values[1]
        out.append(_zz_c(b - a))
        for i in range(2, n):
            c = values[i]
            out.append(_zz_c(c - b) if predictor == _DELTA else _zz_c(c - 2 * b + a))
            a, b = b, c
        return out
    out.append(_zz(values[1] - values[0]))
    for i in range(2, n):
        if predictor == _DELTA:
            out.append(_zz(values[i] - values[i - 1]))
        else:
            out.append(_zz(values[i] - 2 * values[i - 1] + values[i - 2]))
    return out


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _zz_c(value: cython.longlong) -> cython.ulonglong:
    if value >= 0:
        return cython.cast(cython.ulonglong, value) * 2
    return cython.cast(cython.ulonglong, -value) * 2 - 1


@cython.locals(bits=cython.longlong, i=cython.Py_ssize_t, v=cython.ulonglong, kk=cython.int)
def _bit_cost(values: list[int]) -> int:
    """Total bit length of ``values`` (>= 0): which predictor leaves the smaller residuals."""
    if not values or max(values) >= 1 << _FAST_BITS:
        return sum(r.bit_length() for r in values)
    bits = 0
    for i in range(len(values)):
        v = values[i]
        bits += _bit_length(v)
    return bits


@cython.locals(bits=cython.longlong, i=cython.Py_ssize_t, v=cython.ulonglong, kk=cython.int)
def _eg_cost(values: list[int], k: int) -> int:
    """Bits of ``values`` in exp-Golomb codes of order ``k``."""
    if values and max(values) < 1 << _FAST_BITS:
        kk = k
        bits = 0
        for i in range(len(values)):
            v = values[i]
            bits += 2 * _bit_length((v >> kk) + 1) - 1 + kk
        return bits
    slow = 0
    for w in values:
        slow += 2 * ((w >> k) + 1).bit_length() - 1 + k
    return slow


def _eg_order(values: list[int]) -> int:
    """The exp-Golomb order that codes ``values`` in the fewest bits, searched around the order
    their mean suggests (cost is convex in k)."""
    k = min(MAX_ORDER, max(0, (sum(values) // len(values)).bit_length() - 1))
    cost = _eg_cost(values, k)
    while k > 0:
        lower = _eg_cost(values, k - 1)
        if lower > cost:
            break
        k, cost = k - 1, lower
    while k < MAX_ORDER:
        higher = _eg_cost(values, k + 1)
        if higher >= cost:
            break
        k, cost = k + 1, higher
    return k


def _put_bits(out: bytearray, values: list[int], k: int) -> None:
    """``values`` (>= 0) as exp-Golomb codes of order ``k``, MSB first, zero-padded to a byte:
    ``(v >> k) + 1`` in binary behind as many zeros as it has bits after the first, then the
    low ``k`` bits of ``v``."""
    if values and max(values) < 1 << _FAST_BITS:
        _put_bits_c(out, values, k)
        return
    parts: list[str] = []
    low = (1 << k) - 1
    suffix = f"0{k}b"
    for v in values:
        head = format((v >> k) + 1, "b")
        parts.append("0" * (len(head) - 1))
        parts.append(head)
        if k:
            parts.append(format(v & low, suffix))
    text = "".join(parts)
    nbytes = (len(text) + 7) // 8
    if nbytes:
        out += (int(text, 2) << (nbytes * 8 - len(text))).to_bytes(nbytes, "big")


@cython.cfunc
@cython.locals(
    i=cython.Py_ssize_t,
    v=cython.ulonglong,
    head=cython.ulonglong,
    low=cython.ulonglong,
    piece=cython.ulonglong,
    value=cython.ulonglong,
    acc=cython.ulonglong,
    nacc=cython.int,
    hb=cython.int,
    kk=cython.int,
    part=cython.int,
    left=cython.int,
    chunk=cython.int,
)
def _put_bits_c(out: bytearray, values: list[int], k: int) -> cython.void:
    """``_put_bits`` for values below ``2**_FAST_BITS``: the bits gathered in a 64-bit word and
    written a byte at a time (at most 7 bits wait in ``acc`` between pieces)."""
    kk = k
    low = (cython.cast(cython.ulonglong, 1) << kk) - 1
    acc = 0
    nacc = 0
    for i in range(len(values)):
        v = values[i]
        head = (v >> kk) + 1
        hb = _bit_length(head)
        for part in range(3):  # the zeros, the head, the low k bits
            if part == 0:
                value, left = 0, hb - 1
            elif part == 1:
                value, left = head, hb
            else:
                value, left = v & low, kk
            while left > 0:
                chunk = left if left < 56 else 56
                left -= chunk
                piece = (value >> left) & ((cython.cast(cython.ulonglong, 1) << chunk) - 1)
                acc = (acc << chunk) | piece
                nacc += chunk
                while nacc >= 8:
                    nacc -= 8
                    out.append(cython.cast(cython.int, (acc >> nacc) & 0xFF))
                acc &= (cython.cast(cython.ulonglong, 1) << nacc) - 1
    if nacc:
        out.append(cython.cast(cython.int, (acc << (8 - nacc)) & 0xFF))


def _put_series(out: bytearray, values: Sequence[int], first_ref: int = 0, grid_before: int = 0) -> int:
    """One byte of predictor (delta or delta-of-delta, whichever is smaller; or constant) and
    exp-Golomb order (for a constant: its zigzag value when below 63, else 63 and a varint), the
    grid, the first value and the other residuals on the grid in exp-Golomb codes. The grid is
    written as 0 when it is ``grid_before`` (the previous column's), and the first value as its
    distance in grid steps from ``first_ref`` rounded down to the grid.
    Returns the grid (0 for a constant)."""
    if not values:
        return 0
    if all(v == values[0] for v in values):
        z = _zz(values[0] - first_ref)
        if z < _CONST_INLINE:  # small constants (a fix mode) in the head byte itself
            out.append(_CONST | z << 2)
        else:
            out.append(_CONST | _CONST_INLINE << 2)
            _put(out, z)
        return 0
    grid = _grid(values)
    scaled = [v // grid for v in values] if grid > 1 else list(values)
    best: list[int] = []
    best_predictor = _DELTA
    best_cost = -1
    for predictor in (_DELTA, _DOD):
        res = _residuals(scaled, predictor)
        cost = _bit_cost(res)
        if best_cost < 0 or cost < best_cost:
            best, best_predictor, best_cost = res, predictor, cost
    k = _eg_order(best)
    out.append(best_predictor | k << 2)
    _put(out, 0 if grid == grid_before else grid)
    _put(out, _zz(scaled[0] - (first_ref - first_ref % grid) // grid))
    _put_bits(out, best, k)
    return grid


Reference = tuple[int, int, int]
"""``(time_ms, lat_e7, lon_e7)`` of a fix both sides hold (the previous batch's last, acked)."""


def encode_columns(columns: TrackColumns, reference: Reference | None = None) -> bytes:
    """The uncompressed columns: count, a mask of optional columns, then each column; with a
    ``reference`` the first time and position are written as deltas from it."""
    n = len(columns.time_ms)
    out = bytearray()
    _put(out, n)
    present = [name for name in OPTIONAL if any(v is not None for v in columns.optional.get(name, ()))]
    mask = 0
    for i, name in enumerate(OPTIONAL):
        if name in present:
            mask |= 1 << i
    ref = (0, 0, 0)
    if reference is not None and n:
        mask |= REFERENCED
        ref = reference
    _put(out, mask)
    if n == 0:
        return bytes(out)
    _put_series(out, columns.time_ms, ref[0])
    grid = _put_series(out, columns.lat_e7, ref[1])
    _put_series(out, columns.lon_e7, ref[2], grid)
    _put_series(out, columns.mode)
    for name in present:
        values = columns.optional[name]
        have = [v for v in values if v is not None]
        if len(have) == n:
            out.append(1)
        else:
            out.append(0)
            bits = bytearray((n + 7) // 8)
            for i, v in enumerate(values):
                if v is not None:
                    bits[i >> 3] |= 1 << (i & 7)
            out += bits
        _put_series(out, [int(v) for v in have])
    return bytes(out)


class _Reader:
    """Bounds-checked reading of an untrusted blob: every fault is a WireError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.grid = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise WireError("track_truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise WireError("track_truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while shift < 70:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        raise WireError("track_bad_varint")

    def bits(self, count: int, k: int) -> list[int]:
        """``count`` exp-Golomb codes of order ``k`` from here; the stream ends on a byte."""
        if k > MAX_ORDER:
            raise WireError("track_bad_column")
        start = self.pos
        longest = (count * (2 * _MAX_ZEROS + 1 + k) + 7) // 8
        chunk = self.data[start : start + longest]
        width = len(chunk) * 8
        text = format(int.from_bytes(chunk, "big"), "b").zfill(width) if chunk else ""
        out: list[int] = []
        pos = 0
        for _ in range(count):
            one = text.find("1", pos, pos + _MAX_ZEROS + 1)
            if one < 0:
                raise WireError("track_truncated" if pos + _MAX_ZEROS >= width else "track_bad_varint")
            end = one + (one - pos) + 1
            if end + k > width:
                raise WireError("track_truncated")
            value = (int(text[one:end], 2) - 1) << k
            if k:
                value |= int(text[end : end + k], 2)
            out.append(value)
            pos = end + k
        self.pos = start + (pos + 7) // 8
        return out

    def series(self, count: int, low: int, high: int, first_ref: int = 0) -> list[int]:
        """``count`` values, each checked to lie in ``[low, high)``; ``self.grid`` is left at the
        column's grid (0 for a constant) for the next column."""
        grid_before, self.grid = self.grid, 0
        if count == 0:
            return []
        head = self.byte()
        predictor, k = head & 3, head >> 2
        if predictor == _CONST:
            v = _unzz(k if k < _CONST_INLINE else self.varint()) + first_ref
            if not low <= v < high:
                raise WireError("track_out_of_range")
            return [v] * count
        grid = self.varint() or grid_before
        if grid == 0 or predictor not in (_DELTA, _DOD):
            raise WireError("track_bad_column")
        self.grid = grid
        first = (_unzz(self.varint()) + (first_ref - first_ref % grid) // grid) * grid
        if not low <= first < high:
            raise WireError("track_out_of_range")
        residuals = self.bits(count - 1, k) if count > 1 else []
        values = [first // grid]
        prev2, prev = 0, first // grid
        for i, z in enumerate(residuals):
            r = _unzz(z)
            v = prev + r if i == 0 or predictor == _DELTA else 2 * prev - prev2 + r
            if not low <= v * grid < high:
                raise WireError("track_out_of_range")
            values.append(v)
            prev2, prev = prev, v
        return [v * grid for v in values] if grid > 1 else values


def decode_columns(raw: bytes, max_fixes: int, reference: Reference | None = None) -> TrackColumns:
    """Columns from ``encode_columns`` bytes; WireError for anything else, never a crash
    (``track_needs_reference`` when the blob was written against a reference not given)."""
    reader = _Reader(raw)
    n = reader.varint()
    if n > max_fixes:
        raise WireError("track_too_many")
    mask = reader.varint()
    if mask >> (len(OPTIONAL) + 1):
        raise WireError("track_bad_column")
    ref = (0, 0, 0)
    if mask & REFERENCED:
        if reference is None:
            raise WireError("track_needs_reference")
        ref = reference
    names = [name for i, name in enumerate(OPTIONAL) if mask >> i & 1]
    time_ms = reader.series(n, -_INT64, _INT64, ref[0])
    lat = reader.series(n, -_INT32, _INT32, ref[1])
    lon = reader.series(n, -_INT32, _INT32, ref[2])
    mode = reader.series(n, 0, _UINT32)
    optional: dict[str, list[int | None]] = {}
    for name in names:
        flag = reader.byte()
        if flag == 1:
            have = [True] * n
        elif flag == 0:
            bits = reader.take((n + 7) // 8)
            have = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(n)]
        else:
            raise WireError("track_bad_column")
        values = iter(
            reader.series(
                sum(have), -_INT32 if name == "alt_msl_cm" else 0, _INT32 if name == "alt_msl_cm" else _UINT32
            )
        )
        optional[name] = [next(values) if h else None for h in have]
    if reader.pos != len(raw):
        raise WireError("track_trailing_bytes")
    return TrackColumns(time_ms, mode, lat, lon, optional)


def _dictionary() -> zstandard.ZstdCompressionDict | None:
    global _DICT
    if _DICT is None and DICTIONARY_PATH.exists():
        _DICT = zstandard.ZstdCompressionDict(DICTIONARY_PATH.read_bytes())
    return _DICT


_DICT: zstandard.ZstdCompressionDict | None = None
_LEVEL = 9


def _params() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        _LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
        write_dict_id=False,
    )  # fmt: skip


def pack(raw: bytes, use_dictionary: bool = True) -> bytes:
    """The smallest of: raw, zstd, zstd with the shipped dictionary; behind a one-byte tag."""
    best = bytes([RAW]) + raw
    candidates: list[tuple[int, zstandard.ZstdCompressionDict | None]] = [(ZSTD, None)]
    dictionary = _dictionary() if use_dictionary else None
    if dictionary is not None:
        candidates.append((ZSTD_DICT, dictionary))
    for tag, d in candidates:
        packed = zstandard.ZstdCompressor(compression_params=_params(), dict_data=d).compress(raw)
        if len(packed) + 1 < len(best):
            best = bytes([tag]) + packed
    return best


def unpack(data: bytes, max_bytes: int) -> bytes:
    """The raw columns of a blob; WireError for an unknown tag or a bad or oversized frame."""
    if not data:
        raise WireError("track_empty")
    tag = data[0]
    if tag == RAW:
        return bytes(data[1:])
    if tag not in (ZSTD, ZSTD_DICT):
        raise WireError("track_unknown_packing")
    dictionary = _dictionary() if tag == ZSTD_DICT else None
    if tag == ZSTD_DICT and dictionary is None:
        raise WireError("track_no_dictionary")
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    try:
        return decompressor.decompress(bytes(data[1:]), max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise WireError("track_bad_compression") from exc


def reference_of(fix: pb.Fix) -> Reference:
    return (fix.time_ms, fix.lat_e7, fix.lon_e7)


def columns_reference(columns: TrackColumns, i: int = -1) -> Reference:
    """The reference a track may start from: fix ``i`` of ``columns``."""
    return (columns.time_ms[i], columns.lat_e7[i], columns.lon_e7[i])


def encode(fixes: Sequence[pb.Fix], use_dictionary: bool = True, reference: Reference | None = None) -> bytes:
    """A ``CODEC_TRACK_V1`` blob of ``fixes``, in their order; decodes to equal messages (given
    the same ``reference``)."""
    return pack(encode_columns(columns_of(fixes), reference), use_dictionary)


def decode(
    data: bytes, max_fixes: int, max_bytes: int = 16 << 20, reference: Reference | None = None
) -> list[pb.Fix]:
    """The fixes of a blob, in order; WireError for anything not made by ``encode``."""
    return fixes_of(decode_columns(unpack(data, max_bytes), max_fixes, reference))
