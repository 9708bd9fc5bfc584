"""NMEA 0183 sentences a GNSS receiver sends each epoch (GGA, GSA, RMC), from a position.

Talker ``GP``, fields as NMEA 0183 4.x defines them (the same fields gpsd reads): times in UTC,
latitude ``ddmm.mmmmm``, longitude ``dddmm.mmmmm``, speed in knots, checksum the XOR of the bytes
between ``$`` and ``*``. A fix of ``None`` is an epoch without a fix (a tunnel): the receiver still
talks, with quality 0, status ``V`` and mode 1, as real receivers do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

KNOTS_PER_MPS = 3600.0 / 1852.0


@dataclass(frozen=True)
class Position:
    """Where the van is at one receiver epoch."""

    lat: float
    lon: float
    speed_mps: float = 0.0
    track_deg: float = 0.0
    alt_m: float = 520.0


def checksum(body: str) -> str:
    """The two hex digits after ``*``: XOR of every byte of ``body`` (between ``$`` and ``*``)."""
    x = 0
    for b in body.encode("ascii"):
        x ^= b
    return f"{x:02X}"


def sentence(body: str) -> str:
    """``$body*CS`` with CRLF, as it travels on the serial line."""
    return f"${body}*{checksum(body)}\r\n"


def _lat(lat: float) -> tuple[str, str]:
    a = abs(lat)
    deg = int(a)
    return f"{deg:02d}{(a - deg) * 60:08.5f}", "N" if lat >= 0 else "S"


def _lon(lon: float) -> tuple[str, str]:
    a = abs(lon)
    deg = int(a)
    return f"{deg:03d}{(a - deg) * 60:08.5f}", "E" if lon >= 0 else "W"


def epoch(t: float, pos: Position | None, sats: int = 9, hdop: float = 0.9) -> str:
    """The sentences of one epoch at Unix time ``t`` (whole seconds are what receivers send)."""
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    hms = when.strftime("%H%M%S") + f".{when.microsecond // 10_000:02d}"
    dmy = when.strftime("%d%m%y")
    if pos is None:
        return (
            sentence(f"GPGGA,{hms},,,,,0,00,99.99,,,,,,")
            + sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99")
            + sentence(f"GPRMC,{hms},V,,,,,,,{dmy},,,N")
        )
    lat, ns = _lat(pos.lat)
    lon, ew = _lon(pos.lon)
    used = ",".join(f"{n:02d}" for n in range(1, sats + 1)) + "," * (12 - sats)
    knots = pos.speed_mps * KNOTS_PER_MPS
    return (
        sentence(f"GPGGA,{hms},{lat},{ns},{lon},{ew},1,{sats:02d},{hdop:.2f},{pos.alt_m:.1f},M,47.0,M,,")
        + sentence(f"GPGSA,A,3,{used},{hdop + 0.6:.2f},{hdop:.2f},{hdop + 0.3:.2f}")
        + sentence(f"GPRMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.3f},{pos.track_deg:.2f},{dmy},,,A")
    )
