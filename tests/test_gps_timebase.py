"""Week-rollover correction and the plausible-time range, on hand-computed dates."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from firmware_bridge.gps.nmea import NmeaDecoder
from firmware_bridge.gps.timebase import BUILD_FLOOR, GPS_EPOCH, ROLLOVER_S, resolve_time


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = t("2026-03-01T00:00:00")


def test_constants_are_the_dates_they_claim() -> None:
    assert t("1980-01-06T00:00:00") == GPS_EPOCH
    assert t("2025-01-01T00:00:00") == BUILD_FLOOR
    assert ROLLOVER_S == 619315200.0  # 1024 weeks of 604800 s


def test_rollover_victim_is_moved_forward_1024_weeks() -> None:
    # 2026-02-20 reported 1024 weeks early is 2006-07-07 (7168 days before, by hand)
    assert resolve_time(t("2006-07-07T12:00:00"), NOW) == t("2026-02-20T12:00:00")
    # RMC "99" after a rollover: 1999-08-22 + 1024 weeks = 2019-04-07, still before the floor:
    # another 1024 weeks gives 2038-11-21, beyond now + 1 year: impossible
    assert resolve_time(t("1999-08-22T00:00:00"), NOW) is None


def test_range_floor_and_future_slack() -> None:
    assert resolve_time(t("2026-02-28T23:59:59"), NOW) == t("2026-02-28T23:59:59")
    assert resolve_time(t("2027-02-28T00:00:00"), NOW) == t("2027-02-28T00:00:00")  # within a year
    assert resolve_time(t("2027-03-02T00:00:00"), NOW) is None  # more than a year ahead
    assert resolve_time(t("2150-01-01T00:00:00"), NOW) is None
    assert resolve_time(t("1979-12-31T00:00:00"), NOW, floor=GPS_EPOCH) is None
    assert resolve_time(t("2007-04-08T09:53:07"), NOW, floor=GPS_EPOCH) == t("2007-04-08T09:53:07")
    # a Pi that booted at 1970 without a real-time clock: the floor stands in for the clock
    assert resolve_time(t("2025-06-01T00:00:00"), 0.0) == t("2025-06-01T00:00:00")


def sentence(body: str) -> bytes:
    cs = functools.reduce(lambda a, c: a ^ c, body.encode(), 0)
    return f"${body}*{cs:02X}\r\n".encode()


def test_decoder_counts_implausible_time_and_keeps_good_fixes() -> None:
    dec = NmeaDecoder(floor=BUILD_FLOOR, clock=lambda: NOW)
    lines = [
        sentence("GPRMC,120000.00,A,4807.038,N,01131.000,E,0.0,0.0,010226,,,A"),  # 2026-02-01
        sentence("GPZDA,120001.00,01,01,2150,00,00"),  # a 2150 epoch
        sentence("GPGLL,4807.038,N,01131.000,E,120001.00,A,A"),
        sentence("GPRMC,120002.00,A,4807.038,N,01131.000,E,0.0,0.0,070706,,,A"),  # rollover
    ]
    fixes = dec.feed_all(lines)
    assert [f.time for f in fixes] == [t("2026-02-01T12:00:00"), t("2026-02-20T12:00:02")]
    assert dec.rejects.counts["implausible_time"] == 1
