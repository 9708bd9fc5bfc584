"""The core driven directly with hand-written events: state, pass-through, the GPS-lost timer on
event time, shell receipts, and the stage pipeline's contract."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from agent.core import Core
from agent.events import CoreEvent, Document, DriverRestarted, EffectResult, Quarantined
from agent.stages.base import Effect, StageOutput, VehicleState
from protocols.records import Alert, Fix, Scan, Signal, Tick

T0 = 1_410_324_847.0  # 2014-09-10T04:54:07Z, the Munich drive's first fix


def fix(t: float, lat: float = 48.1635, lon: float = 11.5644) -> Fix:
    return Fix(time=t, mode=2, lat=lat, lon=lon)


def run(core: Core, events: list[CoreEvent]) -> list[object]:
    out: list[object] = []
    for e in events:
        out += core.handle(e).records
    return out


def alerts(records: list[object]) -> list[Alert]:
    return [r for r in records if isinstance(r, Alert)]


def test_readings_pass_through_unchanged_and_update_state() -> None:
    core = Core()
    soc = Signal(T0 + 1, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", 81.5)
    speed = Signal(T0 + 1.5, "Vehicle.Speed", 42.0)
    scan = Scan(T0 + 2, "00000123", "unknown")
    f = fix(T0)
    assert run(core, [f, soc, speed, scan]) == [f, soc, speed, scan]
    assert core.state.fix == f
    assert core.state.soc_percent == 81.5
    assert core.state.speed_kmh == 42.0
    assert core.state.last_scan == scan
    assert core.state.time == T0 + 2


def test_ticks_produce_nothing_and_late_events_do_not_move_time_back() -> None:
    core = Core()
    assert run(core, [Tick(T0 + 5)]) == []  # no fix yet: nothing to lose
    late = Signal(T0 + 1, "Vehicle.Speed", 3.0)
    assert run(core, [late]) == [late]
    assert core.state.time == T0 + 5


def test_gps_lost_after_ten_seconds_of_event_time_then_restored() -> None:
    core = Core()
    events: list[CoreEvent] = [fix(T0, 48.1, 11.5)]
    events += [Tick(T0 + k) for k in range(1, 11)]  # exactly 10 s: not yet lost
    assert alerts(run(core, events)) == []
    lost = alerts(run(core, [Tick(T0 + 11), Tick(T0 + 12), Tick(T0 + 30)]))
    assert len(lost) == 1
    assert lost[0].code == "gps_lost"
    assert lost[0].time == T0 + 10  # the moment the fix became overdue, not the tick that saw it
    assert lost[0].attrs == {"last_fix": "2014-09-10T04:54:07.000Z", "lat": "48.1000000", "lon": "11.5000000"}
    back = alerts(run(core, [fix(T0 + 31), Tick(T0 + 32), fix(T0 + 33)]))
    assert [(a.code, a.time, a.attrs) for a in back] == [("gps_restored", T0 + 31, {"gap_s": "31.000"})]


def test_gps_lost_threshold_is_configurable_and_any_event_advances_it() -> None:
    from agent.core import default_stages

    core = Core(default_stages(gps_lost_s=3.0))
    out = alerts(run(core, [fix(T0), Signal(T0 + 3.5, "Vehicle.Speed", 0.0)]))
    assert [(a.code, a.time) for a in out] == [("gps_lost", T0 + 3)]


@given(st.lists(st.floats(min_value=0.0, max_value=40.0, allow_nan=False), min_size=1, max_size=30))
def test_gps_lost_and_restored_alternate_as_computed_by_hand(gaps: list[float]) -> None:
    """Fixes ``gaps`` apart with a tick each whole second between them: an outage is any gap in
    which a tick lands more than 10 s after the fix before it."""
    core = Core()
    times = [T0]
    for g in gaps:
        times.append(times[-1] + g)
    events: list[CoreEvent] = []
    expected: list[str] = []
    for a, b in itertools.pairwise(times):
        events.append(fix(a))
        ticks = [float(k) for k in range(math.floor(a) + 1, math.ceil(b))]
        events += [Tick(k) for k in ticks]
        if any(k - a > 10 for k in ticks):
            expected += ["gps_lost", "gps_restored"]
    events.append(fix(times[-1]))
    assert [a.code for a in alerts(run(core, events))] == expected


def test_shell_events_are_recorded_as_alerts() -> None:
    core = Core()
    out = alerts(
        run(
            core,
            [
                Document(T0, "manifest", b"abc"),
                EffectResult(T0 + 1, "resequence", {"tour": "3,1,2"}),
                DriverRestarted(T0 + 2, "can", "RuntimeError: boom", 1),
            ],
        )
    )
    assert [(a.code, a.time) for a in out] == [
        ("document_received", T0),
        ("effect_result", T0 + 1),
        ("driver_restarted", T0 + 2),
    ]
    # SHA-256 of "abc", FIPS 180-2 appendix B.1
    assert out[0].attrs == {
        "kind": "manifest",
        "bytes": "3",
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }
    assert out[1].attrs == {"tour": "3,1,2", "effect": "resequence"}
    assert out[2].attrs == {"driver": "can", "restarts": "1"}
    assert out[2].severity == "warning"


class Resequencer:
    """A stage asking for an effect on every scan, and seeing the state earlier stages left."""

    def __init__(self) -> None:
        self.seen_fix: list[Fix | None] = []

    def handle(self, event: CoreEvent, state: VehicleState) -> StageOutput:
        self.seen_fix.append(state.fix)
        if isinstance(event, Scan):
            return StageOutput(
                records=(Alert(event.time, "asked"),),
                effects=(Effect(event.time, "resequence", {"stop": event.raw}, 0.5),),
            )
        return StageOutput()


def test_stages_run_in_order_and_effects_are_collected() -> None:
    from agent.stages.vehicle import VehicleStage

    reseq = Resequencer()
    core = Core([VehicleStage(), reseq])
    f, scan = fix(T0), Scan(T0 + 1, "S1", "unknown")
    core.handle(f)
    out = core.handle(scan)
    assert out.records == (scan, Alert(T0 + 1, "asked"))
    assert out.effects == (Effect(T0 + 1, "resequence", {"stop": "S1"}, 0.5),)
    assert reseq.seen_fix == [f, f]  # the vehicle stage ran first


def test_records_the_collector_quarantined_become_the_vans_own_alert() -> None:

    out = Core().handle(Quarantined(T0 + 5, 12, 14, "bad_time"))
    alerts = [r for r in out.records if isinstance(r, Alert)]
    assert [(a.time, a.code, a.severity, a.attrs) for a in alerts] == [
        (T0 + 5, "records_quarantined", "warning", {"from_seq": "12", "to_seq": "14", "reason": "bad_time"})
    ]
