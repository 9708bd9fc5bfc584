"""Signal deadbands and heartbeats per VSS name from the agent's TOML, through ``load`` and
``default_stages`` into a real core: what is committed is checked against values worked out by
hand from the rule (moved more than the deadband since the last report, or the heartbeat due)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load
from agent.core import Core, default_stages
from protocols.errors import ConfigError
from protocols.records import Signal

T0 = 1_700_000_000.0
TOML = """
[vehicle]
id = "van-1"

[uplink]
transport = "none"

[compaction.signals."Vehicle.Speed"]
deadband = 1.0
heartbeat_s = 60

[compaction.signals."Vehicle.LowVoltageSystemState"]
heartbeat_s = 300
"""


def committed(toml: str, tmp: Path, signals: list[Signal]) -> list[tuple[float, str, float]]:
    path = tmp / "agent.toml"
    path.write_text(toml + f'\n[outbox]\npath = "{tmp / "outbox.db"}"\n')
    core = Core(default_stages(compaction=load(path).compaction))
    out = []
    for s in signals:
        out += [(r.time - T0, r.name, r.value) for r in core.handle(s).records if isinstance(r, Signal)]
    return out


def test_each_named_signal_is_reported_by_exception_and_others_pass(tmp_path: Path) -> None:
    speed = [0.0, 0.5, 1.0, 1.5, 2.6, 2.0, 1.5, 1.5, 1.5]  # km/h, one a second
    signals = [Signal(T0 + i, "Vehicle.Speed", v) for i, v in enumerate(speed)]
    signals += [Signal(T0 + 10, "Vehicle.Speed", 1.5), Signal(T0 + 70, "Vehicle.Speed", 1.5)]
    signals += [Signal(T0 + i, "Vehicle.LowVoltageSystemState", 1.0) for i in (0, 100, 299, 300)]
    signals += [Signal(T0 + 301, "Vehicle.LowVoltageSystemState", 2.0)]
    signals += [Signal(T0 + i, "Vehicle.TraveledDistance", 10.0) for i in (0, 1)]  # not listed
    signals.sort(key=lambda s: s.time)
    got = committed(TOML, tmp_path, signals)
    assert [(t, v) for t, n, v in got if n == "Vehicle.Speed"] == [
        (0, 0.0),  # first
        (3, 1.5),  # moved 1.5 > 1.0 from 0.0 (0.5 and 1.0 did not move more than 1.0)
        (4, 2.6),  # 1.1 from 1.5
        (6, 1.5),  # 1.1 from 2.6 (2.0 was within 1.0 of it)
        (70, 1.5),  # unchanged since, reported by the heartbeat: 64 s after the last report
    ]
    assert [(t, v) for t, n, v in got if n == "Vehicle.LowVoltageSystemState"] == [
        (0, 1.0),
        (300, 1.0),  # heartbeat 300 s; 299 s was not yet due
        (301, 2.0),  # deadband 0: any change
    ]
    assert [(t, v) for t, n, v in got if n == "Vehicle.TraveledDistance"] == [(0, 10.0), (1, 10.0)]


def test_a_bad_signal_setting_names_the_table_and_the_entry(tmp_path: Path) -> None:
    bad = TOML.replace("deadband = 1.0", "deadband = -1.0")
    with pytest.raises(
        ConfigError, match=r'compaction\.signals: "Vehicle\.Speed"\.deadband: -1\.0 is outside'
    ):
        committed(bad, tmp_path, [])
    typo = TOML.replace("heartbeat_s = 60", "heartbeat = 60")
    with pytest.raises(ConfigError, match=r'"Vehicle\.Speed"\.heartbeat: unknown setting'):
        committed(typo, tmp_path, [])
