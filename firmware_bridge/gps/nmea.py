"""NMEA 0183 sentences to fixes: one ``Fix`` per receiver epoch, as gpsd reports it.

``NmeaDecoder`` is pure and deterministic (no clock, no I/O): lines go in, fixes come out, and the
same lines always give the same fixes. A receiver sends one epoch as a burst of sentences with
the same UTC time (GGA, RMC, GNS, GLL, ZDA carry it; GSA and VTG belong to the burst they follow);
the decoder merges a burst into one ``Fix`` and emits it when the next epoch's time appears or on
:meth:`NmeaDecoder.flush`.

What is taken from whom follows gpsd's NMEA driver (driver_nmea0183.c) and its merge of each
sentence into the cycle's fix (libgpsd_core.c), so that our fixes agree with gpsd's final TPV of
each epoch: the date from RMC (status A/D only: receivers send garbage dates with a warning status)
or ZDA, carried over midnight when a time of day goes back. The mode is gpsd's, sentence by
sentence, the last word winning: GGA and GNS say 2D with a position, 3D when an altitude comes
with 4 or more satellites, and GGA says no fix with fewer than 3; RMC says 2D, or 3D when the last
fix was 3D, when a GSA listed more than 3 satellites or when the epoch already has an altitude
(receivers that send no GSA); GSA says what it says, except a GPGSA once other constellations'
GSAs have been seen (one GSA per constellation: the GN/GL/BD one speaks for the fix); and a 3D
fix is never downgraded by a later sentence of the epoch while a recent fix has an altitude
(a GSA saying 2D next to a GGA with altitude stays 3D). A GNS whose NMEA 4.1 navigational status
is U or V is not used, as gpsd does. A position is only ever taken from a sentence that says it
is valid; an epoch that any of its sentences declares invalid (RMC V, GGA quality 0, GLL V,
GNS N, simulator or manual-input modes) or whose final mode is "no fix" gives no fix.

Checksums are verified in the compiled :mod:`nmea_fields`; a sentence without ``*hh`` is accepted
as gpsd accepts it unless ``require_checksum`` is set. Sentence types that carry nothing a fix
needs (GSV, TXT, GST, GBS, proprietary ``$P...``) are recognised from their tag and skipped
without splitting them, which is why this is faster than handing every line to ``pynmea2.parse``.
The relevant sentences are split once and read at the field positions of pynmea2's own sentence
model (its ``name_to_idx``); no pynmea2 object is built, as its constructor and ``__setattr__``
cost more than all of our merge.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable

import pynmea2

from firmware_bridge.gps import nmea_fields as nf
from firmware_bridge.gps.timebase import GPS_EPOCH, resolve_time
from protocols.records import Fix
from protocols.rejects import Rejects

KNOTS_TO_MPS = 1852.0 / 3600.0
KMH_TO_MPS = 1.0 / 3.6
# two sentences belong to the same epoch when their times differ by less than this (gpsd: 10 ms)
_SAME_EPOCH_S = 0.005
_HALF_DAY_S = 43200.0
_MAX_SANE_DOP = 99.0  # BT-451 and others send 99.99 for "unknown"

_frame = nf.frame
_kind = nf.sentence_kind
_OK = nf.OK
_KIND_OTHER, _KIND_GSA = nf.KIND_OTHER, nf.KIND_GSA
_FRAME_REJECTS = {
    nf.NOT_NMEA: "not_nmea",
    nf.BINARY: "binary",
    nf.BAD_CHECKSUM: "bad_checksum",
    nf.OVERLONG: "overlong",
    nf.TRUNCATED: "truncated",
}


def _idx(cls: type, name: str) -> int:
    """Index of a named field in pynmea2's model of a sentence (its ``data`` list)."""
    return int(cls.name_to_idx[name])  # type: ignore[attr-defined]


_GGA, _RMC, _GLL, _GNS, _VTG, _GSA, _ZDA = (
    pynmea2.GGA,
    pynmea2.RMC,
    pynmea2.GLL,
    pynmea2.GNS,
    pynmea2.VTG,
    pynmea2.GSA,
    pynmea2.ZDA,
)
GGA_TIME, GGA_LAT, GGA_QUAL, GGA_SATS, GGA_HDOP, GGA_ALT = (
    _idx(_GGA, n) for n in ("timestamp", "lat", "gps_qual", "num_sats", "horizontal_dil", "altitude")
)
RMC_TIME, RMC_STATUS, RMC_LAT, RMC_SPEED, RMC_TRACK, RMC_DATE, RMC_MODE = (
    _idx(_RMC, n)
    for n in ("timestamp", "status", "lat", "spd_over_grnd", "true_course", "datestamp", "mode_indicator")
)
GLL_LAT, GLL_TIME, GLL_STATUS, GLL_MODE = (_idx(_GLL, n) for n in ("lat", "timestamp", "status", "faa_mode"))
GNS_TIME, GNS_LAT, GNS_MODE, GNS_SATS, GNS_HDOP, GNS_ALT = (
    _idx(_GNS, n) for n in ("timestamp", "lat", "mode_indicator", "num_sats", "hdop", "altitude")
)
GNS_NAV_STATUS = len(_GNS.fields)  # NMEA 4.1 navigational status, after pynmea2's last field
VTG_TRACK, VTG_KNOTS, VTG_KMH, VTG_MODE = (
    _idx(_VTG, n) for n in ("true_track", "spd_over_grnd_kts", "spd_over_grnd_kmph", "faa_mode")
)
GSA_FIX, GSA_HDOP = _idx(_GSA, "mode_fix_type"), _idx(_GSA, "hdop")
ZDA_TIME, ZDA_DAY, ZDA_MONTH, ZDA_YEAR = (_idx(_ZDA, n) for n in ("timestamp", "day", "month", "year"))

# FAA mode indicators that are not a measured position: N not valid, S simulator, M manual input
_NOT_A_FIX = frozenset("NSM")
# GGA fix quality: 0 invalid, 7 manual input, 8 simulator
_GGA_NOT_A_FIX = frozenset((0, 7, 8))


class _Reject(Exception):
    """A relevant sentence whose fields are unusable; ``args[0]`` is the counted reason."""


def _time_reason(text: str) -> str:
    """``impossible_value`` for a well-formed but impossible time (25:00), else ``unparsable``."""
    head = text[:6]
    return "impossible_value" if len(head) == 6 and head.isdigit() and head.isascii() else "unparsable"


def _number(text: str) -> float | None:
    """An optional numeric field: None when empty, a reject when not a number."""
    if not text:
        return None
    value = nf.decimal(text)
    if value != value:
        raise _Reject("unparsable")
    return value


def _is_ddmm(text: str) -> bool:
    head, dot, tail = text.partition(".")
    return (
        text.isascii() and len(head) >= 3 and head.isdigit() and dot == "." and (not tail or tail.isdigit())
    )


def _position(data: list[str], at: int) -> tuple[float, float] | None:
    """lat, lat_dir, lon, lon_dir at ``data[at:at+4]``; None when empty, a reject when corrupt."""
    lat_text, ns, lon_text, ew = data[at], data[at + 1], data[at + 2], data[at + 3]
    if not lat_text or not lon_text:
        return None
    if ns not in ("N", "S") or ew not in ("E", "W"):
        raise _Reject("unparsable")
    lat = nf.ddmm_to_degrees(lat_text, 90)
    lon = nf.ddmm_to_degrees(lon_text, 180)
    if lat != lat or lon != lon:
        # tell a well-formed impossible value (latitude 95, minutes 61) from garbage
        well_formed = _is_ddmm(lat_text) and _is_ddmm(lon_text)
        raise _Reject("impossible_value" if well_formed else "unparsable")
    return (-lat if ns == "S" else lat, -lon if ew == "W" else lon)


class NmeaDecoder:
    """Lines of NMEA 0183 in, one ``Fix`` per completed receiver epoch out.

    Every line that cannot be used is counted in ``rejects`` under a short reason (``bad_checksum``,
    ``no_checksum``, ``not_nmea``, ``binary``, ``overlong``, ``truncated``, ``unparsable``,
    ``impossible_value``, ``implausible_time``); ``stats`` counts what was used or deliberately
    skipped.

    Every fix's time goes through :func:`timebase.resolve_time`: dates from before ``floor`` are
    moved forward by whole GPS week rollovers, and a time still before it or more than a year
    after ``clock()`` (the host clock) is counted as ``implausible_time`` and dropped. A live
    receiver uses ``floor=BUILD_FLOOR``; decoding a historic log keeps the default, the GPS epoch.
    """

    # the epoch being assembled
    _e_sod: float
    _e_days: int
    _e_invalid: bool
    _e_lat: float
    _e_lon: float
    _e_alt: float | None
    _e_speed: float | None
    _e_track: float | None
    _e_hdop: float | None
    _e_sats: int | None
    _e_mode: int  # gpsd's gpsdata.fix.mode for this epoch: 0 not seen, 1 no fix, 2, 3

    def __init__(
        self,
        rejects: Rejects | None = None,
        *,
        require_checksum: bool = False,
        floor: float = GPS_EPOCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rejects = rejects if rejects is not None else Rejects("nmea")
        self.floor = floor
        self._clock = clock
        self._used = self._skipped = self._no_checksum = self._undated = 0
        self.require_checksum = require_checksum
        # keyed by nmea_fields.sentence_kind()
        self._handlers: dict[int, Callable[[str, list[str]], None]] = {
            nf.KIND_GGA: self._gga,
            nf.KIND_RMC: self._rmc,
            nf.KIND_GLL: self._gll,
            nf.KIND_GNS: self._gns,
            nf.KIND_VTG: self._vtg,
            nf.KIND_GSA: self._gsa,
            nf.KIND_ZDA: self._zda,
        }
        self._out: list[Fix] = []
        # calendar: the last known UTC date (days since 1970) and the time of day it was valid at
        self._days = -1
        self._days_sod = 0.0
        self._open = False  # an epoch has a time; until one arrives, GSA and VTG wait here
        # gpsd's state that outlives an epoch: the last fix (mode, has altitude), the fix before,
        # satellites used by the last GSA run, the previous GSA talker, GSA talkers seen
        self._last_mode = 0
        self._last_alt = False
        self._old_alt = False
        self._sats_used = 0
        self._gsa_talker = ""
        self._seen_gsa: set[str] = set()
        self._reset_epoch(0.0)

    # ---- public API -------------------------------------------------------------------------

    @property
    def stats(self) -> Counter[str]:
        """Sentences used, skipped (types that carry nothing a fix needs), accepted without a
        checksum, and epochs with a fix but no date yet (gpsd reports those without a time)."""
        return Counter(
            used=self._used, skipped=self._skipped, no_checksum=self._no_checksum, undated=self._undated
        )

    def feed(self, line: bytes) -> list[Fix]:
        """Decode one line (with or without its CR LF); return the fixes of epochs it completed."""
        status, body, resume = _frame(line, 0)
        if status == _OK and resume < 0:  # the usual line: one sentence with a good checksum
            self._sentence(body, line)
        else:
            self._feed_rest(line, status, body, resume)
        if self._out:
            out, self._out = self._out, []
            return out
        return []

    def _feed_rest(self, line: bytes, status: int, body: str, resume: int) -> None:
        """Every other line: no checksum, framing rejects, several sentences run together."""
        while True:
            if status == nf.OK or status == nf.NO_CHECKSUM:
                if status == nf.NO_CHECKSUM:
                    if self.require_checksum:
                        self.rejects.reject("no_checksum", line)
                        body = ""
                    else:
                        self._no_checksum += 1
                if body:
                    self._sentence(body, line)
                elif not self.require_checksum:
                    self.rejects.reject("unparsable", line)  # "$" and nothing else
            elif status != nf.EMPTY and status != nf.COMMENT:
                self.rejects.reject(_FRAME_REJECTS[status], line)
            if resume < 0:
                return
            status, body, resume = _frame(line, resume)

    def feed_all(self, lines: Iterable[bytes]) -> list[Fix]:
        """Every fix from ``lines``, including the last epoch (the stream is over)."""
        fixes: list[Fix] = []
        for line in lines:
            fixes.extend(self.feed(line))
        fixes.extend(self.flush())
        return fixes

    def flush(self) -> list[Fix]:
        """End of stream (or device gone): emit the epoch in progress, if it is a fix.

        The date is forgotten too, and so is what gpsd keeps between epochs (last fix, GSA
        satellites): they carry forward only within one unbroken stream, and a receiver that
        comes back may have been away for days.
        """
        self._close_epoch()
        self._reset_epoch(0.0)
        self._days = -1
        self._last_mode = 0
        self._last_alt = self._old_alt = False
        self._sats_used = 0
        self._gsa_talker = ""
        self._seen_gsa.clear()
        out, self._out = self._out, []
        return out

    # ---- sentences --------------------------------------------------------------------------

    def _sentence(self, body: str, line: bytes) -> None:
        # the tag is talker (any two letters: GP GN GL GA GB BD GQ ...) + type; $P... is
        # proprietary. Only the sentences we use are split into fields.
        kind = _kind(body)
        if kind != _KIND_GSA:
            if kind < 0:
                self._skipped += 1
                return
            self._gsa_talker = ""  # gpsd: a run of GSAs ends at any other sentence
            if kind == _KIND_OTHER:
                self._skipped += 1
                return
        try:
            self._handlers[kind](body[:2], body[6:].split(",") if len(body) > 5 else [])
        except _Reject as exc:
            self.rejects.reject(str(exc.args[0]), line)
            return
        self._used += 1

    def _set_mode(self, mode: int) -> None:
        """A sentence states the mode (gpsd's MODE_SET). gpsd never downgrades a 3D fix of the
        cycle to 2D while the last or the previous fix had an altitude."""
        if self._e_mode == 3 and mode != 1 and (self._last_alt or self._old_alt):
            mode = 3
        self._e_mode = mode
        if mode >= 2:  # gpsd keeps this as lastfix for the next sentences
            self._last_mode = mode
            self._last_alt = self._e_alt is not None

    def _time(self, text: str) -> float:
        sod = nf.hhmmss_to_seconds(text)
        if sod != sod:
            raise _Reject(_time_reason(text))
        return sod

    def _gga(self, talker: str, d: list[str]) -> None:
        if len(d) <= GGA_ALT:
            raise _Reject("unparsable")
        if not d[GGA_TIME]:
            return  # Quectel's "$GPGGA,,,,,,0,,,,,,,,": no time, no fix, no epoch to attach it to
        sod = self._time(d[GGA_TIME])
        quality = nf.small_int(d[GGA_QUAL]) if d[GGA_QUAL] else -1  # empty: not stated (Firefly)
        if d[GGA_QUAL] and quality < 0:
            raise _Reject("unparsable")
        pos = _position(d, GGA_LAT)
        sats = nf.small_int(d[GGA_SATS]) if d[GGA_SATS] else -1
        hdop = _number(d[GGA_HDOP])
        alt = _number(d[GGA_ALT])
        self._at(sod)
        if quality in _GGA_NOT_A_FIX:
            self._e_invalid = True
            return
        if pos is None:
            self._set_mode(1)
            return
        self._take_position(pos, sats, hdop, alt)
        # gpsd reads the count with atoi(): empty is 0, and fewer than 3 satellites is no fix
        self._set_mode(1 if max(sats, 0) < 3 else 3 if alt is not None and sats >= 4 else 2)

    def _take_position(
        self, pos: tuple[float, float], sats: int, hdop: float | None, alt: float | None
    ) -> None:
        """GGA and GNS: position, satellites, HDOP and altitude; the caller states the mode."""
        self._e_lat, self._e_lon = pos
        if sats >= 0:
            self._e_sats = sats
        if hdop is not None and hdop < _MAX_SANE_DOP:
            self._e_hdop = hdop
        if alt is not None:
            self._e_alt = alt

    def _rmc(self, talker: str, d: list[str]) -> None:
        if len(d) <= RMC_DATE:
            raise _Reject("unparsable")
        if not d[RMC_TIME]:
            return  # "$GPRMC,,V,,,,,,,,,,N": nothing to attach
        sod = self._time(d[RMC_TIME])
        status = d[RMC_STATUS]
        mode = d[RMC_MODE][:1] if len(d) > RMC_MODE else ""
        if status not in ("A", "D") or mode in _NOT_A_FIX:
            self._at(sod)
            self._e_invalid = True
            return
        days = -1
        if d[RMC_DATE]:
            days = nf.ddmmyy_to_days(d[RMC_DATE])
            if days < 0:
                raise _Reject("impossible_value" if d[RMC_DATE].isdigit() else "unparsable")
        pos = _position(d, RMC_LAT)
        speed = _number(d[RMC_SPEED])
        track = _number(d[RMC_TRACK])
        self._at(sod)
        if days >= 0:
            self._dated(days, sod)
        if speed is not None:
            self._e_speed = speed * KNOTS_TO_MPS
        if track is not None:
            self._e_track = track
        if pos is None:
            self._set_mode(1)
            return
        self._e_lat, self._e_lon = pos
        # RMC has no mode of its own: gpsd keeps the last fix's, and says 3D when a GSA listed
        # 4 or more satellites or this epoch has an altitude (receivers that send no GSA)
        three_d = self._last_mode == 3 or self._sats_used > 3 or self._e_alt is not None
        self._set_mode(3 if three_d else 2)

    def _gll(self, talker: str, d: list[str]) -> None:
        if len(d) <= GLL_STATUS:
            raise _Reject("unparsable")
        if not d[GLL_TIME]:
            return  # Garmin 65: GLL without time; it cannot be placed in an epoch
        sod = self._time(d[GLL_TIME])
        mode = d[GLL_MODE][:1] if len(d) > GLL_MODE else ""
        if d[GLL_STATUS] != "A" or mode in _NOT_A_FIX:
            self._at(sod)
            self._e_invalid = True
            return
        pos = _position(d, GLL_LAT)
        self._at(sod)
        if pos is None:
            self._set_mode(1)
            return
        self._e_lat, self._e_lon = pos
        if self._e_alt is not None or self._sats_used > 3:
            self._set_mode(3)
        elif self._e_mode < 2 or not self._old_alt:
            self._set_mode(2)
        else:
            self._set_mode(self._e_mode)

    def _gns(self, talker: str, d: list[str]) -> None:
        if len(d) <= GNS_ALT:
            raise _Reject("unparsable")
        if not d[GNS_TIME]:
            return
        sod = self._time(d[GNS_TIME])
        # one mode letter per constellation (GPS, GLONASS, Galileo, BeiDou...); gpsd reads only
        # the first: N (or none) is no fix, S/M a simulated or manual position
        modes = d[GNS_MODE]
        nav_status = d[GNS_NAV_STATUS] if len(d) > GNS_NAV_STATUS else ""
        if not modes or modes[0] == "N":
            self._at(sod)
            self._set_mode(1)
            return
        if modes[0] in _NOT_A_FIX:
            self._at(sod)
            self._e_invalid = True
            return
        pos = _position(d, GNS_LAT)
        sats = nf.small_int(d[GNS_SATS]) if d[GNS_SATS] else -1
        hdop = _number(d[GNS_HDOP])
        alt = _number(d[GNS_ALT])
        self._at(sod)
        # NMEA 4.1 navigational status: S safe, C caution, U unsafe, V not valid for navigation.
        # gpsd uses nothing of a U or V sentence but its time, and neither do we.
        if nav_status in ("U", "V"):
            return
        if pos is None:
            self._set_mode(1)
            return
        self._take_position(pos, sats, hdop, alt)
        self._set_mode(3 if alt is not None and sats > 3 else 2)

    def _vtg(self, talker: str, d: list[str]) -> None:
        if len(d) <= VTG_KMH:
            raise _Reject("unparsable")
        mode = d[VTG_MODE][:1] if len(d) > VTG_MODE else ""
        track = _number(d[VTG_TRACK])
        knots = _number(d[VTG_KNOTS])
        kmh = _number(d[VTG_KMH])
        if mode in _NOT_A_FIX or mode == "E":
            return
        if knots is not None:
            self._e_speed = knots * KNOTS_TO_MPS
        elif kmh is not None:
            self._e_speed = kmh * KMH_TO_MPS
        if track is not None:
            self._e_track = track

    def _gsa(self, talker: str, d: list[str]) -> None:
        if len(d) <= GSA_FIX:
            raise _Reject("unparsable")
        previous, self._gsa_talker = self._gsa_talker, talker
        if len(d) < 17:
            return  # gpsd: too few fields (i.Trek M3 "$GPGSA,A,1,,,,"), nothing taken
        fix_type = d[GSA_FIX]
        hdop = _number(d[GSA_HDOP]) if len(d) > GSA_HDOP else None
        # satellites used: a run of GSAs from several constellations adds up (GPGSA then
        # GLGSA, or GNGSA after GNGSA); the same non-GN talker again starts a new count
        if not previous or (previous == talker and talker != "GN"):
            self._sats_used = 0
        self._sats_used += nf.used_prns(d, GSA_FIX + 1, GSA_FIX + 13)
        if talker != "GP":
            self._seen_gsa.add(talker)
        if hdop is not None and hdop < _MAX_SANE_DOP:
            self._e_hdop = hdop
        # once other constellations' GSAs are seen, the GPGSA no longer states the fix's mode
        if talker == "GP" and self._seen_gsa:
            return
        if fix_type in ("1", "2", "3"):
            self._set_mode(int(fix_type))

    def _zda(self, talker: str, d: list[str]) -> None:
        if len(d) <= ZDA_YEAR:
            raise _Reject("unparsable")
        if not d[ZDA_TIME]:
            return  # "$GPZDA,,,,,00,00": receiver has no time yet
        sod = self._time(d[ZDA_TIME])
        day, month, year = (nf.small_int(d[i]) for i in (ZDA_DAY, ZDA_MONTH, ZDA_YEAR))
        if day < 0 or month < 0 or year < 0:
            raise _Reject("unparsable")
        days = nf.days_from_civil(year, month, day)
        if days < 0:
            raise _Reject("impossible_value")
        self._at(sod)
        self._dated(days, sod)

    # ---- epochs -----------------------------------------------------------------------------

    def _reset_epoch(self, sod: float) -> None:
        self._e_sod = sod
        self._e_days = -1
        self._e_invalid = False
        self._e_lat = math.nan
        self._e_lon = math.nan
        self._e_alt = None
        self._e_speed = None
        self._e_track = None
        self._e_hdop = None
        self._e_sats = None
        self._e_mode = 0

    def _at(self, sod: float) -> None:
        """A sentence stamped ``sod`` arrived: stay in the current epoch or start the next one."""
        if self._open:
            if abs(sod - self._e_sod) < _SAME_EPOCH_S:
                return
            self._close_epoch()
            self._reset_epoch(sod)
        # else: the first epoch of the stream, which keeps what untimed sentences (GSA, VTG)
        # said before it: a capture or a connection starts mid-epoch, after its timed sentences
        self._e_sod = sod
        self._open = True
        if self._days >= 0:
            if sod < self._days_sod - _HALF_DAY_S:  # past midnight since the last date we saw
                self._days += 1
            self._days_sod = sod
            self._e_days = self._days

    def _dated(self, days: int, sod: float) -> None:
        """RMC or ZDA stated the date of the current epoch."""
        self._days = days
        self._days_sod = sod
        self._e_days = days

    def _close_epoch(self) -> None:
        if not self._open:
            return
        self._open = False
        self._old_alt = self._last_alt
        lat = self._e_lat
        mode = self._e_mode
        if self._e_invalid or lat != lat or mode < 2:
            return
        if self._e_days < 0:
            self._undated += 1  # gpsd reports these without a time; a Fix needs one
            return
        stated = self._e_days * 86400.0 + self._e_sod
        when = resolve_time(stated, self._clock(), self.floor)
        if when is None:
            self.rejects.reject("implausible_time", f"epoch dated {stated:.0f} s after 1970")
            return
        self._out.append(
            Fix(
                time=when,
                mode=mode,
                lat=lat,
                lon=self._e_lon,
                alt_msl=self._e_alt,
                speed=self._e_speed,
                track=self._e_track,
                hdop=self._e_hdop,
                sats=self._e_sats,
            )
        )
