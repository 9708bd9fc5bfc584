"""ETAs: distances against hand-computed values, learning against a synthetic drive whose speed
is known, chaining (travel, waiting, service) against hand arithmetic."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.eta import (
    EARTH_RADIUS_M,
    SERVICE_PRIOR_COUNT,
    SERVICE_WINDOW,
    EtaEstimator,
    EtaStop,
    ServiceTimes,
    SpeedProfile,
    great_circle_m,
)

METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180  # one degree of a great circle


def test_great_circle_hand_values() -> None:
    assert great_circle_m(48.0, 11.0, 49.0, 11.0) == pytest.approx(METRES_PER_DEGREE, rel=1e-12)
    assert great_circle_m(0.0, 0.0, 0.0, 90.0) == pytest.approx(EARTH_RADIUS_M * math.pi / 2, rel=1e-12)
    assert great_circle_m(10.0, 20.0, 10.0, 20.0) == 0.0


def drive_north(
    profile: SpeedProfile, speed_mps: float, seconds: int, start: float = 0.0
) -> tuple[float, float]:
    """A straight drive north at ``speed_mps``, one fix per second; returns the last position."""
    lat = 48.0
    for k in range(seconds + 1):
        lat = 48.0 + k * speed_mps / METRES_PER_DEGREE
        profile.observe(start + k, lat, 11.0)
    return lat, 11.0


@pytest.mark.parametrize("speed", [4.0, 12.0])
def test_profile_learns_the_van_s_pace(speed: float) -> None:
    profile = SpeedProfile()
    drive_north(profile, speed, 1800)
    # A straight road: one straight-line metre takes 1 / speed seconds at every distance.
    for distance in (150.0, 800.0, 2_000.0, 4_000.0):
        assert profile.pace(distance) == pytest.approx(1 / speed, rel=0.1)


def test_profile_ignores_fixes_from_the_past() -> None:
    profile = SpeedProfile()
    drive_north(profile, 10.0, 300)
    before = profile.pace(500.0)
    profile.observe(5.0, 0.0, 0.0)  # older than the newest fix, far away
    assert profile.pace(500.0) == before


def test_etas_chain_travel_waiting_and_service() -> None:
    stops = {
        "a": EtaStop("a", 48.0, 11.0, service_s=60.0),
        "b": EtaStop("b", 48.1, 11.0, service_s=120.0, earliest=2_000.0, latest=2_100.0),
        "c": EtaStop("c", 48.2, 11.0, service_s=0.0, latest=2_200.0),
    }
    matrix = {"a": {"b": 600.0}, "b": {"c": 300.0}}
    est = EtaEstimator(stops, matrix=matrix)
    # At stop a at t=1000: a now; b = 1000 + 60 + 600 = 1660, waits to 2000, serves 120;
    # c = 2120 + 300 = 2420 (220 late).
    etas = est.etas(1_000.0, 48.0, 11.0, ["a", "b", "c"])
    assert etas == pytest.approx([1_000.0, 1_660.0, 2_420.0])
    assert est.late(["a", "b", "c"], etas) == pytest.approx({"c": 220.0})


def test_without_matrix_legs_use_the_profile() -> None:
    stops = {"a": EtaStop("a", 48.0, 11.0), "b": EtaStop("b", 48.0 + 3_000 / METRES_PER_DEGREE, 11.0)}
    est = EtaEstimator(stops)
    etas = est.etas(0.0, 48.0, 11.0, ["a", "b"])
    assert etas[1] == pytest.approx(est.profile.seconds(3_000.0), rel=1e-9)


def test_service_time_median_resists_one_long_stop() -> None:
    service = ServiceTimes()
    assert service.estimate("parcel", 120.0) == 120.0
    for seconds in (300.0, 310.0, 2_000.0):
        service.observe("parcel", seconds)
    # median of [120, 120, 300, 310, 2000]
    assert service.estimate("parcel", 120.0) == 300.0
    service.observe("parcel", math.nan)
    assert service.estimate("parcel", 120.0) == 300.0
    assert service.estimate("pallet", 600.0) == 600.0


@given(st.floats(0, 1e5), st.lists(st.floats(0, 1e5), max_size=40))
def test_service_time_is_the_median_of_the_prior_and_the_last_observations(
    prior: float, seen: list[float]
) -> None:
    """The same value as statistics.median (which the van does not import: 0.5 MB)."""
    service = ServiceTimes()
    for seconds in seen:
        service.observe("parcel", seconds)
    kept = seen[-SERVICE_WINDOW:]
    expected = statistics.median([prior] * SERVICE_PRIOR_COUNT + kept) if kept else prior
    assert service.estimate("parcel", prior) == expected


coordinates = st.tuples(st.floats(47.0, 49.0), st.floats(10.0, 12.0))


@settings(max_examples=100, deadline=None)
@given(st.lists(coordinates, min_size=1, max_size=20), st.lists(coordinates, min_size=1, max_size=50))
def test_etas_are_finite_and_in_visit_order(
    stops: list[tuple[float, float]], fixes: list[tuple[float, float]]
) -> None:
    est = EtaEstimator(
        {f"s{i}": EtaStop(f"s{i}", lat, lon, service_s=30.0) for i, (lat, lon) in enumerate(stops)}
    )
    for k, (lat, lon) in enumerate(fixes):
        est.on_fix(float(k * 5), lat, lon)
    lat, lon = fixes[-1]
    etas = est.etas(1_000.0, lat, lon, list(est.stops))
    assert all(math.isfinite(x) for x in etas)
    assert etas[0] >= 1_000.0
    assert all(b >= a + 30.0 - 1e-9 for a, b in itertools.pairwise(etas))
