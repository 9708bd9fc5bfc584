"""The live time base (agent/timebase.py) and the reorder window (agent/reorder.py), as pure units
with injected clocks: a host wall clock that starts wrong and jumps, fixes that arrive late."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agent.reorder import ReorderWindow
from agent.timebase import Arrival, Clock, TimeBase
from protocols.records import Fix, Scan, Signal, Tick

GNSS0 = 1_700_000_000.0  # true UTC at monotonic 0
BOOT_WALL = 1_600_000_000.0  # the Pi's saved clock at boot: a year behind


def fix_at(mono: float, latency: float = 0.0) -> tuple[Fix, Clock, Arrival]:
    """A fix for the epoch at ``mono`` (true time GNSS0 + mono) arriving ``latency`` later."""
    return Fix(time=GNSS0 + mono, mode=3, lat=48.0, lon=11.0), Clock.GNSS, Arrival(mono + latency, 0.0)


def test_readings_before_the_first_fix_are_held_then_restamped_in_order() -> None:
    tb: TimeBase[object] = TimeBase()
    wall = lambda mono: BOOT_WALL + mono  # noqa: E731  the wrong saved clock
    out = tb.place(Scan(wall(1.0), "A", "unknown"), Clock.ARRIVAL, Arrival(1.0, wall(1.0)))
    assert out == []
    sig = Signal(wall(2.0) - 0.25, "Vehicle.Speed", 10.0)  # stamped 0.25 s before arrival
    assert tb.place(sig, Clock.HOST, Arrival(2.0, wall(2.0))) == []
    assert tb.held == 2 and tb.offset is None and tb.now(2.0) is None
    f, _, arrival = fix_at(3.0)
    out = tb.place(f, Clock.GNSS, arrival)
    assert out == [
        Scan(GNSS0 + 1.0, "A", "unknown"),
        Signal(GNSS0 + 1.75, "Vehicle.Speed", 10.0),
        f,
    ]
    assert tb.held == 0
    assert tb.now(10.0) == GNSS0 + 10.0


def test_a_wall_clock_that_jumps_by_hours_does_not_move_readings() -> None:
    """NTP sets the clock three hours forward mid-stream; a frame stamped before the jump and
    handed over after it is placed at its arrival, not three hours off, and counted."""
    tb: TimeBase[object] = TimeBase(max_age_s=2.0)
    jump_at, jump = 20.0, 3 * 3600.0

    def wall(mono: float) -> float:
        return BOOT_WALL + mono + (jump if mono >= jump_at else 0.0)

    placed: list[tuple[float, float]] = []  # (true time, placed time)
    tb.place(*fix_at(0.0))
    for k in range(1, 400):
        mono = k * 0.1
        if k % 10 == 0:
            tb.place(*fix_at(mono))
        stamp_mono = mono - 0.01  # the kernel stamped the frame 10 ms before the shell got it
        sig = Signal(wall(stamp_mono), "Vehicle.Speed", float(k))
        for r in tb.place(sig, Clock.HOST, Arrival(mono, wall(mono))):
            placed.append((GNSS0 + stamp_mono, r.time))  # type: ignore[attr-defined]
    assert len(placed) == 399
    errors = [abs(p - t) for t, p in placed]
    assert max(errors) <= 0.011  # 10 ms at most: the one frame straddling the jump
    assert sorted(errors)[-2] < 1e-6
    assert tb.suspect_stamps == 1
    times = [p for _, p in placed]
    assert times == sorted(times)


def test_offset_is_the_quickest_arrival_among_recent_fixes() -> None:
    tb: TimeBase[object] = TimeBase(window=4)
    for mono, latency in [(1.0, 0.3), (2.0, 0.05), (3.0, 0.8), (4.0, 0.2)]:
        tb.place(*fix_at(mono, latency))
    assert tb.offset is not None
    assert abs(tb.offset - (GNSS0 - 0.05)) < 1e-6
    for mono in (5.0, 6.0, 7.0, 8.0):  # the quick one leaves the window
        tb.place(*fix_at(mono, 0.4))
    assert abs(tb.offset - (GNSS0 - 0.4)) < 1e-6


def test_hold_is_bounded_drops_oldest_telemetry_never_scans() -> None:
    tb: TimeBase[object] = TimeBase(hold_max=5)
    for k in range(8):
        tb.place(Signal(0.0, "Vehicle.Speed", float(k)), Clock.ARRIVAL, Arrival(float(k), 0.0))
    tb.place(Scan(0.0, "S", "unknown"), Clock.ARRIVAL, Arrival(8.5, 0.0))
    assert tb.held == 5 and tb.dropped_unsynced == 4
    out = tb.place(*fix_at(9.0))
    assert [getattr(r, "value", None) for r in out[:-1]] == [4.0, 5.0, 6.0, 7.0, None]


@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 0.4, allow_nan=False)),
        min_size=1,
        max_size=60,
    )
)
def test_reorder_window_releases_in_time_order_and_loses_nothing(
    items: list[tuple[float, float]],
) -> None:
    """Events arriving up to 0.4 s late (less than the 0.5 s window) come out sorted."""
    w: ReorderWindow[Tick] = ReorderWindow(window_s=0.5)
    arrivals = sorted(((t + delay, t) for t, delay in items), key=lambda a: a[0])
    out: list[Tick] = []
    for now, t in arrivals:
        out += w.release(now)
        out += w.push(Tick(t))
    out += w.drain()
    assert [e.time for e in out] == sorted(t for t, _ in items)
    assert w.late == 0


def test_reorder_window_counts_late_events_and_bounds_its_hold() -> None:
    w: ReorderWindow[Tick] = ReorderWindow(window_s=0.5, max_held=3)
    w.push(Tick(10.0))
    assert w.release(10.6) == [Tick(10.0)]
    assert w.push(Tick(9.0)) == [Tick(9.0)] and w.late == 1
    times = [11.0, 14.0, 12.0, 13.0]
    random.Random(1).shuffle(times)
    early: list[Tick] = []
    for t in times:
        early += w.push(Tick(t))
    assert early == [Tick(11.0)]  # the fourth push overflows: the earliest of all four leaves
    assert w.drain() == [Tick(12.0), Tick(13.0), Tick(14.0)]


def _scaled_day(
    tb: TimeBase[object], scale: float, latencies: list[float], age: float = 0.002
) -> list[tuple[float, float]]:
    """Fixes each GNSS second, played ``scale`` times faster than real time and arriving
    ``latencies`` (host seconds) late; after each, a CAN frame stamped half a real epoch later on a
    wall clock a year off, handed over ``age`` later. Returns (true GNSS time, placed time)."""
    placed: list[tuple[float, float]] = []
    for k, latency in enumerate(latencies):
        mono = k / scale
        tb.place(Fix(GNSS0 + k, 3, 48.0, 11.0), Clock.GNSS, Arrival(mono + latency, 0.0))
        stamp = mono + 0.5 / scale
        sig = Signal(BOOT_WALL + stamp, "Vehicle.Speed", float(k))
        for r in tb.place(sig, Clock.HOST, Arrival(stamp + age, BOOT_WALL + stamp + age)):
            placed.append((GNSS0 + k + 0.5, r.time))  # type: ignore[attr-defined]
    return placed


def test_a_day_played_twenty_times_faster_is_placed_on_its_own_time() -> None:
    """Hand-computed truth: at scale 20, half an epoch after fix k is GNSS0 + k + 0.5. A quick fix
    (1 ms late) now and then keeps the offset honest, as on a van."""
    tb: TimeBase[object] = TimeBase()
    rng = random.Random(7)
    latencies = [0.001 if k % 5 == 0 else rng.uniform(0.001, 0.004) for k in range(200)]
    placed = _scaled_day(tb, 20.0, latencies)
    assert abs(tb.rate - 20.0) < 0.5 and tb.refused_rates == 0
    errors = [abs(p - t) for t, p in placed[20:]]  # once the window holds 16 fixes
    assert max(errors) < 0.05  # 1 ms of latency is 20 ms of GNSS time at this scale
    now = tb.now(10.0)
    assert now is not None and abs(now - (GNSS0 + 200.0)) < 0.1


def test_a_real_receiver_has_rate_one_exactly() -> None:
    """Jitter of a third of an epoch must not turn into a rate: placement is as before rates."""
    tb: TimeBase[object] = TimeBase()
    rng = random.Random(3)
    placed = _scaled_day(tb, 1.0, [rng.uniform(0.0, 0.3) for _ in range(100)])
    assert tb.rate == 1.0
    assert all(abs(p - t) <= 0.3 for t, p in placed)


def test_absurd_rates_are_refused_and_the_last_good_one_kept() -> None:
    """A receiver repeating one time (rate 0) says nothing about the clocks: refused, counted."""
    tb: TimeBase[object] = TimeBase()
    for k in range(20):
        tb.place(Fix(GNSS0 + k, 3, 48.0, 11.0), Clock.GNSS, Arrival(k / 10.0, 0.0))
    assert abs(tb.rate - 10.0) < 1e-6
    for k in range(20, 60):
        tb.place(Fix(GNSS0 + 20, 3, 48.0, 11.0), Clock.GNSS, Arrival(k / 10.0, 0.0))
    assert tb.refused_rates > 0 and abs(tb.rate - 10.0) < 1e-6


def test_a_gnss_time_that_goes_back_restarts_the_window() -> None:
    """A new time line (a day replayed again): readings follow it at once, at the same rate."""
    tb: TimeBase[object] = TimeBase()
    for k in range(30):
        tb.place(Fix(GNSS0 + k, 3, 48.0, 11.0), Clock.GNSS, Arrival(k / 5.0, 0.0))
    back = GNSS0 - 3600.0
    tb.place(Fix(back, 3, 48.0, 11.0), Clock.GNSS, Arrival(6.0, 0.0))
    (scan,) = tb.place(Scan(0.0, "A", "unknown"), Clock.ARRIVAL, Arrival(6.2, 0.0))
    assert abs(scan.time - (back + 1.0)) < 1e-6  # type: ignore[attr-defined]
    assert abs(tb.rate - 5.0) < 1e-6


@given(
    st.floats(1.0, 500.0),
    st.lists(st.floats(0.0, 1.0), min_size=20, max_size=60),
)
def test_any_scale_is_recovered_from_jittered_fixes(scale: float, jitter: list[float]) -> None:
    """Latency up to a tenth of an epoch (host seconds), the first fix quick: readings land
    within two tenths of an epoch of their true GNSS time, whatever the scale."""
    tb: TimeBase[object] = TimeBase()
    placed = _scaled_day(tb, scale, [0.0] + [j * 0.1 / scale for j in jitter], age=0.0)
    if abs(scale - 1.0) > 0.06:
        assert abs(tb.rate - scale) / scale < 0.1
    assert all(abs(p - t) <= 0.2 for t, p in placed[16:])
