"""Plausible GNSS times: gpsd's GPS-week-rollover correction and a range anchored on the host clock.

A receiver counts GPS weeks in 10 bits, so firmware past its pivot reports dates exactly 1024
weeks (19.6 years) early (the 2019 rollover gave fixes dated 1999); two-digit RMC years are put
in 2000-2079 (gpsd's ``merge_ddmmyy``). gpsd corrects a date that falls before its build-time
floor by whole 1024-week periods (timebase.c, ``gpsd_gpstime_resolv``), and warns about a date
more than a year after the host clock (libgpsd_core.c). :func:`resolve_time` does both, as a pure
function of its arguments, and answers None for a time that is still impossible: the caller
counts it as ``implausible_time`` and drops it, so one bad fix never reaches the collector.
"""

from __future__ import annotations

import math

GPS_EPOCH = 315964800.0  # 1980-01-06T00:00:00Z: no GNSS time can be earlier
LAST_TIME = 253402300800.0  # 10000-01-01T00:00:00Z: the first time ISO 8601 (and iso_time) cannot write
ROLLOVER_S = 1024 * 7 * 86400.0  # one 10-bit GPS week cycle
# The floor a live receiver's time cannot be below: this release's build date (2025-01-01),
# as gpsd uses its build date. Historic logs are decoded with ``floor=GPS_EPOCH`` instead.
BUILD_FLOOR = 1735689600.0
# gpsd flags a time more than a year after the host clock; a Raspberry Pi without a real-time
# clock can be behind (it never runs ahead of real time by more than NTP's last step), so the
# slack is gpsd's year, not less.
FUTURE_SLACK_S = 365 * 86400.0


def resolve_time(t: float, reference: float, floor: float = BUILD_FLOOR) -> float | None:
    """``t`` (Unix seconds) corrected for GPS week rollovers, or None when impossible.

    Rules: a time at or after the GPS epoch but before ``floor`` is moved forward by whole
    1024-week periods until it is not; the result (or ``t`` itself) must lie in
    ``[floor, max(reference, floor) + FUTURE_SLACK_S]``, ``reference`` being the host clock. A
    host clock below the floor (a Pi booting at 1970) is treated as the floor.
    """
    if not math.isfinite(t) or not math.isfinite(reference):
        return None
    if GPS_EPOCH <= t < floor:
        t += math.ceil((floor - t) / ROLLOVER_S) * ROLLOVER_S
    if t < floor or t < GPS_EPOCH or t > max(reference, floor) + FUTURE_SLACK_S:
        return None
    return t
