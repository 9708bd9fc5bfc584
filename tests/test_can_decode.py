"""CAN decoding against cantools itself on the real Kona EV logs, the shipped mappings, and rejects."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from dropline_cli import main as dropline
from firmware_bridge.can.bus_driver import iter_signals_from_log
from firmware_bridge.can.compile_dbc import load_dbc
from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.mapping import MappingError, load_mapping, shipped_names
from protocols.errors import LogFormatError
from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[1]
CAN = DATA / "can"
KONA_DBC = CAN / "kona_ev" / "pcan.dbc"
KONA_LOGS = CAN / "kona_ev" / "logs"
CANDUMP = KONA_LOGS / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"
GVRET = KONA_LOGS / "230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
ASC = KONA_LOGS / "bms_bench_2021_64kwh_idle.asc"

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
SOC_DISPLAYED = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"

SHIPPED = {
    "kona_ev": CAN / "kona_ev" / "pcan.dbc",
    "nissan_leaf_aze0": CAN / "nissan_leaf" / "EV-can_AZE0.dbc",
    "nissan_leaf_ze1": CAN / "nissan_leaf" / "EV-can_ZE1.dbc",
    "tesla_model3": CAN / "tesla_model3" / "Model3CAN.dbc",
}


@pytest.fixture(scope="module")
def kona_db() -> Any:
    return cantools.database.load_file(str(KONA_DBC), encoding="utf-8", strict=False)


def frames_independently(path: Path) -> list[tuple[float, int, bytes]]:
    """(time, id, data) of every frame, read without our readers: python-can, or csv for GVRET."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [
            (
                int(r["Time Stamp"]) / 1e6,
                int(r["ID"], 16),
                bytes(int(r[f"D{i + 1}"], 16) for i in range(int(r["LEN"]))),
            )
            for r in rows
        ]
    return [(m.timestamp, m.arbitration_id, bytes(m.data)) for m in can.LogReader(path)]


def cantools_values(db: Any, path: Path) -> dict[str, list[tuple[float, float]]]:
    """SoC values exactly as cantools decodes them, frame by frame, with the mapping's arithmetic."""
    out: dict[str, list[tuple[float, float]]] = {SOC: [], SOC_DISPLAYED: [], "maybe": [], "fraction": []}
    for t, frame_id, data in frames_independently(path):
        if frame_id == 0x594:
            d = db.decode_message(frame_id, data)
            out[SOC].append((t, d["SoC_Maybe"] + d["SoC_Fraction"]))
            out["maybe"].append((t, d["SoC_Maybe"]))
            out["fraction"].append((t, d["SoC_Fraction"]))
        elif frame_id == 0x542:
            out[SOC_DISPLAYED].append((t, db.decode_message(frame_id, data)["SocDisp"]))
    return out


def run_cli(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "out.jsonl"
    assert dropline(["decode", "can", *args, "-o", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def compare(ours: list[tuple[float, float]], theirs: list[tuple[float, float]]) -> list[str]:
    """Every value, one by one: index, time and value must all be equal."""
    problems = [f"count: ours {len(ours)}, cantools {len(theirs)}"] if len(ours) != len(theirs) else []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            problems.append(f"#{i}: ours t={a[0]} value={a[1]!r}, cantools t={b[0]} value={b[1]!r}")
    return problems


@pytest.mark.parametrize("log", [CANDUMP, GVRET, ASC], ids=["candump", "gvret-csv", "asc"])
def test_state_of_charge_equals_cantools_value_by_value(tmp_path: Path, kona_db: Any, log: Path) -> None:
    rows = run_cli(tmp_path, "--dbc", str(KONA_DBC), "--map", "kona_ev", str(log))
    expected = cantools_values(kona_db, log)
    for name in (SOC, SOC_DISPLAYED):
        ours = [(r["t"], r["value"]) for r in rows if r["signal"] == name]
        assert ours, f"no {name} in {log.name}"
        assert not compare(ours, expected[name]), "\n".join(compare(ours, expected[name]))
    assert len(expected[SOC]) == (70 if log != ASC else 28)  # the counts the data's README gives


def test_unmapped_soc_signals_equal_cantools(tmp_path: Path, kona_db: Any) -> None:
    rows = run_cli(tmp_path, "--dbc", str(KONA_DBC), str(CANDUMP))
    expected = cantools_values(kona_db, CANDUMP)
    for signal, key in (("BatteryLimits.SoC_Maybe", "maybe"), ("BatteryLimits.SoC_Fraction", "fraction")):
        ours = [(r["t"], r["value"]) for r in rows if r["signal"] == signal]
        assert not compare(ours, expected[key]), "\n".join(compare(ours, expected[key]))


def test_all_signals_equal_cantools_frame_by_frame(kona_db: Any) -> None:
    """Without a mapping, every signal of every decodable frame equals cantools' (choices as numbers)."""
    decoder = CanDecoder(load_dbc(KONA_DBC))
    mismatches = []
    for t, frame_id, data in frames_independently(CANDUMP):
        ours = {s.name: s.value for s in decoder.decode(frame_id, data, t)}
        try:
            message = kona_db.get_message_by_frame_id(frame_id)
            theirs = message.decode(data, decode_choices=False, allow_excess=False)
        except (KeyError, cantools.database.DecodeError):
            theirs = None
        expected = None if theirs is None else {f"{message.name}.{k}": v for k, v in theirs.items()}
        if (ours or None) != (expected or None):  # messages without signals are skipped
            mismatches.append((t, hex(frame_id)))
    assert not mismatches, mismatches[:10]


def test_mapped_values_of_the_2019_log(tmp_path: Path) -> None:
    rows = run_cli(tmp_path, "--dbc", str(KONA_DBC), "--map", "kona_ev", "--channel", "can0", str(CANDUMP))
    by_name: dict[str, set[float]] = {}
    for r in rows:
        by_name.setdefault(r["signal"], set()).add(r["value"])
    assert by_name[SOC] == {35.5 + 0.30000000000000004}
    assert by_name[SOC_DISPLAYED] == {36.5}
    assert by_name["Vehicle.Powertrain.Transmission.SelectedGear"] == {126}  # Park
    assert by_name["Vehicle.Speed"] == {0.0}
    assert by_name["Vehicle.TraveledDistance"] == {26716.5}
    assert by_name["Vehicle.LowVoltageSystemState"] == {2, 4, 5}  # OFF, ON, START
    assert min(by_name["Vehicle.Powertrain.TractionBattery.CurrentVoltage"]) > 354
    assert all(r["signal"].startswith("Vehicle.") for r in rows)  # the shipped mapping is only_mapped


def test_cli_as_a_subprocess_logs_rejects_to_stderr() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropline_cli",
            "decode",
            "can",
            "--dbc",
            str(KONA_DBC),
            "--all-signals",
            str(CANDUMP),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr.strip().splitlines()[-1]
    assert "'unknown id': 9960" in summary and "'wrong length': 567" in summary
    first = json.loads(proc.stdout.splitlines()[0])
    assert set(first) == {"t", "signal", "value"} and isinstance(first["value"], int | float)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_mappings_load_and_match_their_dbc(name: str) -> None:
    db = load_dbc(SHIPPED[name])
    mapping = load_mapping(name, db)
    assert mapping.dbc == SHIPPED[name].name
    assert mapping.entries and all(e.vss.startswith("Vehicle.") for e in mapping.entries)
    vss = {e.vss for e in mapping.entries}
    assert {SOC, "Vehicle.Speed", "Vehicle.Powertrain.TractionBattery.CurrentVoltage"} <= vss
    CanDecoder(db, mapping)


def test_shipped_names() -> None:
    assert shipped_names() == sorted(SHIPPED)


def test_mapping_against_the_wrong_dbc_names_message_and_file() -> None:
    with pytest.raises(MappingError, match=r"nissan_leaf_ze1\.toml.*message: 'x55B' is not in the DBC"):
        load_mapping("nissan_leaf_ze1", load_dbc(KONA_DBC))


BAD_MAPPINGS = {
    "not toml": ("dbc = ", "not valid TOML"),
    "no dbc": ('[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\n', "dbc: required"),
    "unknown top key": ('dbc = "x.dbc"\nonly_maped = true\n', "only_maped: unknown key"),
    "no signals": ('dbc = "x.dbc"\n', "signals: required"),
    "not vss": ('dbc = "x.dbc"\n[signals."Speed"]\nmessage = "A"\nsignal = "B"\n', "not a VSS name"),
    "unknown entry key": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\nscal = 2\n',
        r'\[signals\."Vehicle\.Speed"\] scal: unknown key',
    ),
    "both signal forms": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\nsignals = ["C"]\n',
        "exactly one of",
    ),
    "no combine": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignals = ["B", "C"]\n',
        "combine: required",
    ),
    "bad combine": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignals = ["B", "C"]\ncombine = "max"\n',
        "combine: must be one of",
    ),
    "divide by zero": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\ndivide = 0\n',
        "divide: must not be 0",
    ),
    "bad values key": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\nvalues = { "P" = 126 }\n',
        "values: key 'P' is not a number",
    ),
    "bad invalid_raw": (
        'dbc = "x.dbc"\n[signals."Vehicle.Speed"]\nmessage = "A"\nsignal = "B"\ninvalid_raw = [1.5]\n',
        "invalid_raw: must be a list of integers",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPPINGS))
def test_bad_mapping_files_name_file_and_key(tmp_path: Path, case: str) -> None:
    text, message = BAD_MAPPINGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(MappingError, match=message) as info:
        load_mapping(path)
    assert str(path) in str(info.value)


def test_mapping_with_unknown_signal(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'dbc = "pcan.dbc"\n[signals."Vehicle.Speed"]\nmessage = "IEB_386_WHEEL"\nsignal = "WHL_SPD"\n'
    )
    with pytest.raises(MappingError, match="signals: 'WHL_SPD' is not a signal of IEB_386_WHEEL"):
        CanDecoder.from_files(KONA_DBC, path)


def test_unknown_mapping_name_lists_shipped_ones() -> None:
    with pytest.raises(MappingError, match="kona_ev"):
        load_mapping("kona_ice")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dropline(["decode", "can", "--dbc", str(KONA_DBC), "--map", "kona_ice", str(ASC)]) == 2
    assert "kona_ice: no such mapping" in capsys.readouterr().err
    assert dropline(["decode", "can", "--dbc", str(KONA_DBC), "--only-mapped", str(ASC)]) == 2
    assert dropline(["decode", "can", "--dbc", str(tmp_path / "none.dbc"), str(ASC)]) == 2
    assert "none.dbc: no such file" in capsys.readouterr().err
    bad_dbc = tmp_path / "bad.dbc"
    bad_dbc.write_text("BO_ this is not a dbc\n")
    assert dropline(["decode", "can", "--dbc", str(bad_dbc), str(ASC)]) == 2
    assert "bad.dbc: not a usable DBC" in capsys.readouterr().err
    odd_csv = tmp_path / "odd.csv"
    odd_csv.write_text("when,what\n1,2\n")
    assert dropline(["decode", "can", "--dbc", str(KONA_DBC), str(odd_csv)]) == 2
    assert "odd.csv: unknown CSV header" in capsys.readouterr().err


# --- the decoder on single frames ---


def kona(mapping: str | None = "kona_ev", **kw: Any) -> CanDecoder:
    return CanDecoder.from_files(KONA_DBC, mapping, **kw)


SOC_FRAME = bytes.fromhex("34213421a0620120")  # 0x594 from the bench log: 49.0 + 0.1 %


def test_unknown_ids_are_counted_and_skipped() -> None:
    decoder = kona()
    assert decoder.decode(0x7E4, b"\x02\x3e\x00", 1.0) == []
    assert decoder.decode(0x7E4, b"\x02\x3e\x00", 1.1) == []
    assert decoder.decode(0x594, SOC_FRAME, 1.2, is_extended=True) == []  # 29-bit 0x594 is another frame
    assert decoder.rejects.counts["unknown id"] == 3
    assert decoder.unknown_ids[0x7E4] == 2
    assert decoder.decode(0x490, bytes(8), 1.3) == []  # in the DBC, but no mapped signal: skipped
    assert decoder.skipped == 1 and decoder.rejects.total == 3


def test_wrong_length_frames_are_counted() -> None:
    decoder = kona(None)
    assert decoder.decode(0x594, SOC_FRAME[:7], 1.0) == []
    assert decoder.decode(0x594, SOC_FRAME + b"\x00", 1.1) == []  # longer than the DBC says: rejected too
    assert decoder.decode(0x5F5, bytes(8), 1.2) == []  # DBC says 64 bytes
    assert decoder.rejects.counts["wrong length"] == 3
    assert decoder.decode(0x594, SOC_FRAME, 1.3)  # the good frame after them still decodes


def test_combined_and_cached_values() -> None:
    decoder = kona()
    first = decoder.decode(0x594, SOC_FRAME, 1.0)
    again = decoder.decode(0x594, bytearray(SOC_FRAME), 2.0)  # same payload: served from the cache
    assert [(s.name, s.value) for s in first] == [(SOC, 49.0 + 0.1)]
    assert [(s.time, s.value) for s in again] == [(2.0, 49.0 + 0.1)]
    other = bytearray(SOC_FRAME)
    other[5] = 0x64  # SoC_Maybe 50.0
    assert decoder.decode(0x594, bytes(other), 3.0)[0].value == 50.0 + 0.1


def test_mean_of_wheel_speeds_and_gear_table() -> None:
    db = load_dbc(KONA_DBC)
    decoder = CanDecoder(db, load_mapping("kona_ev"))
    wheel = db.get_message_by_name("IEB_386_WHEEL")
    speeds = {"WHL_SPD_FL": 50, "WHL_SPD_FR": 51, "WHL_SPD_RL": 49, "WHL_SPD_RR": 50}
    wheels = wheel.encode({**{s.name: 0 for s in wheel.signals}, **speeds})
    assert [(s.name, s.value) for s in decoder.decode(0x386, wheels, 1.0)] == [("Vehicle.Speed", 50.0)]
    gear = db.get_message_by_name("VCU_200")
    values = {s.name: 0 for s in gear.signals}
    for raw, vss in ((0, 126), (5, 127), (6, 0), (7, -1)):
        out = decoder.decode(0x200, gear.encode({**values, "CURRENT_GEAR": raw}), 1.0)
        assert ("Vehicle.Powertrain.Transmission.SelectedGear", vss) in [(s.name, s.value) for s in out]
    out = decoder.decode(0x200, gear.encode({**values, "CURRENT_GEAR": 3}), 2.0)  # not in the table
    assert "Vehicle.Powertrain.Transmission.SelectedGear" not in [s.name for s in out]
    assert decoder.unavailable["Vehicle.Powertrain.Transmission.SelectedGear"] == 1


def test_only_mapped_switch() -> None:
    everything = kona(only_mapped=False).decode(0x594, SOC_FRAME, 1.0)
    names = [s.name for s in everything]
    assert SOC in names and "BatteryLimits.ChargeAvailable" in names
    assert "BatteryLimits.SoC_Maybe" not in names  # consumed by the VSS entry
    with pytest.raises(MappingError):
        CanDecoder(load_dbc(KONA_DBC), only_mapped=True)


def test_leaf_soc_divided_by_ten_and_unavailable() -> None:
    db = load_dbc(SHIPPED["nissan_leaf_aze0"])
    decoder = CanDecoder(db, load_mapping("nissan_leaf_aze0"))
    message = db.get_message_by_name("x55B")
    values = {s.name: (s.minimum or 0) for s in message.signals}
    out = decoder.decode(0x55B, message.encode({**values, "LB_SOC": 523}, strict=False), 1.0)
    assert [(s.name, s.value) for s in out] == [(SOC, 52.3)]
    assert decoder.decode(0x55B, message.encode({**values, "LB_SOC": 1023}, strict=False), 2.0) == []
    assert decoder.unavailable[SOC] == 1


def test_tesla_multiplexed_message_decodes_by_its_multiplexer() -> None:
    """ID142 (0x142) of the Model 3 DBC: a 2-bit index (bits 0-1) selects the m0 or m1 signals; the
    DBC's VAL_ lists index 2 (no signals of its own); index 3 is undefined. Expectations from the DBC text."""
    decoder = CanDecoder(load_dbc(SHIPPED["tesla_model3"]))

    def decode(data: bytes) -> dict[str, float]:
        return {
            s.name.removeprefix("ID142VCLEFT_liftgateStatus.VCLEFT_"): s.value
            for s in decoder.decode(0x142, data, 1.0)
        }

    m0 = (
        "LatchRequest",
        "MvmntNotAllowedCo",
        "PhysicalChimeRequ",
        "PositionCalibrate",
        "RequestSource",
        "State",
        "StoppingCondition",
        "UIChimeRequest",
    )
    assert decode(bytes(8)) == {"liftgateStatusIndex": 0, **{f"liftgate{n}": 0 for n in m0}}
    # index 1; liftgatePosition (21|7@1-, offset 33) raw 5: bits 21-23 of byte 2 are 0b101
    assert decode(bytes([0x01, 0, 0xA0, 0, 0, 0, 0, 0])) == {
        "liftgateStatusIndex": 1,
        "liftgateStrutDutyCycle": 0,
        "liftgateStrutCurrent": 0,
        "liftgatePosition": 5 + 33,
        "liftgateSpeed": 0,
    }
    assert decode(bytes([0x02, *bytes(7)])) == {"liftgateStatusIndex": 2}
    assert decoder.rejects.total == 0
    assert decode(bytes([0x03, *bytes(7)])) == {}
    assert decoder.rejects.as_dict() == {"undecodable": 1}


def test_float_signals_never_give_nan() -> None:
    db = cantools.database.load_string(
        'VERSION ""\nBS_:\nBU_: X\nBO_ 256 F: 4 X\n SG_ Temp : 0|32@1- (1,0) [0|0] "" X\n'
        "SIG_VALTYPE_ 256 Temp : 1;\n",
        database_format="dbc",
    )
    decoder = CanDecoder(db)
    assert decoder.decode(0x100, b"\x00\x00\xc0\x7f", 1.0) == []  # float32 NaN
    assert decoder.rejects.counts["not finite"] == 1
    assert [s.value for s in decoder.decode(0x100, b"\x00\x00\x80\x3f", 2.0)] == [1.0]


# --- log files ---


def test_gvret_and_candump_give_the_same_signals() -> None:
    a = [(s.time, s.name, s.value) for s in iter_signals_from_log(CANDUMP, kona())]
    b = [(s.time, s.name, s.value) for s in iter_signals_from_log(GVRET, kona())]
    assert a == b and len(a) > 3000


def test_channel_filter() -> None:
    p_can = list(iter_signals_from_log(CANDUMP, kona(), channels={"can0"}))
    c_can = list(iter_signals_from_log(GVRET, kona(), channels={"1"}))
    voltage = "Vehicle.Powertrain.TractionBattery.CurrentVoltage"
    assert {s.value for s in p_can if s.name == voltage} >= {355.0}
    assert {s.value for s in c_can if s.name == voltage} == {0.0}  # C-CAN's 0x595 has another layout


def test_bad_lines_in_logs_are_counted_and_the_rest_still_read(tmp_path: Path) -> None:
    lines = CANDUMP.read_text().splitlines()[:400]
    bad = [*lines[:200], "(12.5) can0 59#ZZ", "garbage \xff line", "", "(1.0) can0 594", *lines[200:]]
    log = tmp_path / "bad.log"
    log.write_text("\n".join(bad) + "\n", encoding="utf-8")
    clean = tmp_path / "clean.log"
    clean.write_text("\n".join(lines) + "\n")
    decoder = kona(None)
    got = list(iter_signals_from_log(log, decoder))
    assert got == list(iter_signals_from_log(clean, kona(None)))
    assert len(got) > 1000
    assert decoder.rejects.counts["bad log line"] == 3

    rows = GVRET.read_text().splitlines()[:300]
    gv = tmp_path / "bad.csv"
    gv.write_text(
        "\r\n".join([*rows[:100], "1,2,3", "x" * 50, "1953700000,594,maybe,0,8,0,0,0,0,0,0,0,0", *rows[100:]])
    )
    clean_gv = tmp_path / "clean.csv"
    clean_gv.write_text("\r\n".join(rows))
    decoder = kona(None)
    got = list(iter_signals_from_log(gv, decoder))
    assert got == list(iter_signals_from_log(clean_gv, kona(None)))
    assert len(got) > 1000
    assert decoder.rejects.counts["bad log line"] == 3


def test_unknown_log_suffix(tmp_path: Path) -> None:
    path = tmp_path / "frames.txt"
    path.write_text("hello\n")
    with pytest.raises(LogFormatError, match=r"frames\.txt"):
        list(iter_signals_from_log(path, kona()))


@pytest.mark.parametrize("suffix", [".blf", ".csv", ".log"])
def test_other_python_can_formats(tmp_path: Path, suffix: str) -> None:
    """BLF, python-can's own CSV and candump written by python-can read back to the same signals."""
    path = tmp_path / f"bench{suffix}"
    with can.Logger(path) as writer:
        for message in can.LogReader(ASC):
            message.channel = 0
            writer.on_message_received(message)
    ours = [(s.name, s.value) for s in iter_signals_from_log(path, kona())]
    theirs = [(s.name, s.value) for s in iter_signals_from_log(ASC, kona())]
    assert ours == theirs and len(ours) == 112
