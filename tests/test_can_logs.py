"""Recorded CAN logs with bad input in them: garbage lines, overlong lines, bad timestamps, files
that are not logs at all. The truth is the clean file read by python-can and decoded by cantools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from dropline_cli import main as dropline
from firmware_bridge.can.bus_driver import iter_signals_from_log
from firmware_bridge.can.compile_dbc import load_dbc
from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.log_lines import MAX_LINE
from firmware_bridge.can.log_reader import read_frames
from protocols.errors import DbcError, LogFormatError, MappingError
from protocols.rejects import Rejects
from tests.conftest import DATA

KONA_DBC = DATA / "can" / "kona_ev" / "pcan.dbc"
LOGS = DATA / "can" / "kona_ev" / "logs"
ASC = LOGS / "bms_bench_2021_64kwh_idle.asc"
CANDUMP = LOGS / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"
GVRET = LOGS / "230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"

Row = tuple[float, str, float]


@pytest.fixture(scope="module")
def db() -> Any:
    return cantools.database.load_file(str(KONA_DBC), encoding="utf-8", strict=False)


def cantools_signals(db: Any, frames: list[Any]) -> list[Row]:
    """Every signal of every frame cantools can decode, named <Message>.<Signal>, choices as numbers."""
    out: list[Row] = []
    for m in frames:
        try:
            message = db.get_message_by_frame_id(m.arbitration_id)
        except KeyError:
            continue
        if message.length != len(m.data):
            continue
        decoded = message.decode(bytes(m.data), decode_choices=False, allow_excess=False)
        out.extend((m.timestamp, f"{message.name}.{name}", value) for name, value in decoded.items())
    return out


def ours(path: Path, decoder: CanDecoder | None = None) -> list[Row]:
    d = decoder or CanDecoder(load_dbc(KONA_DBC))
    return [(s.time, s.name, s.value) for s in iter_signals_from_log(path, d)]


def insert(lines: list[str], at: dict[int, list[str]]) -> list[str]:
    out: list[str] = []
    for i, line in enumerate(lines):
        out.extend(at.get(i, []))
        out.append(line)
    return out


# lines python-can's ASC reader raises on (each would end its reading), and lines it skips by design
ASC_RAISING = [
    "   1.000000 1  594             Rx   d 8 ZZ 21 34 21 A0 62 01 20",
    "   1.100000 1  594             Rx   d",
    "   1.200000 1  5G4             Rx   d 8 34 21 34 21 A0 62 01 20",
]
ASC_SKIPPED = ["garbage \ufffd line", "// a comment", "", "   1.300000 1  594"]


def test_asc_garbage_lines_every_signal_of_the_good_lines_comes_out(tmp_path: Path, db: Any) -> None:
    lines = ASC.read_text().splitlines()
    dirty = tmp_path / "dirty.asc"
    dirty.write_text(
        "\n".join(
            insert(lines, {5: ASC_RAISING[:1], 100: [*ASC_RAISING[1:], *ASC_SKIPPED], 540: ASC_RAISING})
        )
        + "\n"
    )
    decoder = CanDecoder(load_dbc(KONA_DBC))
    got = ours(dirty, decoder)
    want = cantools_signals(db, list(can.LogReader(ASC)))
    assert len(want) > 1000
    assert got == want
    assert decoder.rejects.counts["bad log line"] == 2 * len(ASC_RAISING)
    mapped = CanDecoder.from_files(KONA_DBC, "kona_ev")
    assert len(ours(dirty, mapped)) == 112  # all of the clean file's mapped signals, not 32


@pytest.mark.parametrize("suffix", [".csv", ".log", ".trc"])
def test_python_can_text_formats_read_past_garbage(tmp_path: Path, db: Any, suffix: str) -> None:
    """The ASC's frames written by python-can itself, with lines its reader raises on in between."""
    clean = tmp_path / f"clean{suffix}"
    with can.Logger(clean) as writer:
        for message in can.LogReader(ASC):
            message.channel = 0 if suffix != ".trc" else 1
            writer.on_message_received(message)
    lines = clean.read_text().splitlines()
    n = len(lines)
    garbage = {
        ".csv": ["1.0,594,0,0,0,8,not base64!", "1.0,594", "x,594,0,0,0,8,NCE0IaBiASA="],
        ".log": ["(1.0) can0 594#ZZ", "(1.0) can0", "(x) can0 594#3421342"],
        ".trc": ["      9)      1.000 DT  1 0594 Rx 8  ZZ 21", "      9)      x DT 1 0594 Rx 8 34"],
    }[suffix]
    dirty = tmp_path / f"dirty{suffix}"
    dirty.write_text("\n".join(insert(lines, {3: garbage, n // 2: garbage, n - 1: garbage})) + "\n")
    decoder = CanDecoder(load_dbc(KONA_DBC))
    got = ours(dirty, decoder)
    want = cantools_signals(db, list(can.LogReader(clean)))
    assert len(want) > 1000
    assert got == want
    assert decoder.rejects.counts["bad log line"] == 3 * len(garbage)


@pytest.mark.parametrize("log", [CANDUMP, GVRET, ASC], ids=["candump", "gvret", "asc"])
def test_overlong_lines_are_counted_and_skipped_unparsed(tmp_path: Path, log: Path) -> None:
    lines = log.read_text().splitlines()[:600]
    first_frame = next(i for i, line in enumerate(lines) if i > 0 and line[:1] in "( 0123456789")
    long_frame = lines[first_frame] + " 00" * 4_000_000  # a 12 MB line that still starts like a frame
    dirty = tmp_path / f"dirty{log.suffix}"
    dirty.write_text("\n".join(insert(lines, {first_frame: [long_frame, "x" * (MAX_LINE + 1)]})) + "\n")
    clean = tmp_path / f"clean{log.suffix}"
    clean.write_text("\n".join(lines) + "\n")
    decoder = CanDecoder(load_dbc(KONA_DBC))
    assert ours(dirty, decoder) == ours(clean)
    assert decoder.rejects.counts["overlong"] == 2
    assert "bad log line" not in decoder.rejects.counts


def test_a_line_of_exactly_max_line_characters_is_read(tmp_path: Path) -> None:
    frame = "(2.000000) can0 594#34213421A0620120"
    path = tmp_path / "edge.log"
    path.write_text(frame.ljust(MAX_LINE) + "\n" + frame.ljust(MAX_LINE + 1) + "\n")
    rejects = Rejects("t")
    assert [(m.timestamp, m.arbitration_id) for m in read_frames(path, rejects)] == [(2.0, 0x594)]
    assert rejects.as_dict() == {"overlong": 1}


def test_bad_timestamps_in_logs_are_counted_and_skipped(tmp_path: Path) -> None:
    good = "594#34213421A0620120"
    candump = tmp_path / "t.log"
    candump.write_text(
        f"(nan) can0 {good}\n(1e300) can0 {good}\n(inf) can0 {good}\n(-1.5) can0 {good}\n(5.25) can0 {good}\n"
    )
    decoder = CanDecoder.from_files(KONA_DBC, "kona_ev")
    assert [(s.time, s.name, s.value) for s in iter_signals_from_log(candump, decoder)] == [(5.25, SOC, 49.1)]
    assert decoder.rejects.as_dict() == {"bad timestamp": 4}

    gvret = tmp_path / "t.csv"
    row = "00000594,false,0,8,34,21,34,21,A0,62,01,20"
    gvret.write_text(
        f"Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8\n99999999999999999999,{row}\n5250000,{row}\n"
    )
    decoder = CanDecoder.from_files(KONA_DBC, "kona_ev")
    assert [(s.time, s.value) for s in iter_signals_from_log(gvret, decoder)] == [(5.25, 49.1)]
    assert decoder.rejects.as_dict() == {"bad timestamp": 1}


def blf_of_the_asc(path: Path) -> int:
    with can.Logger(path) as writer:
        n = 0
        for message in can.LogReader(ASC):
            message.channel = 0
            writer.on_message_received(message)
            n += 1
    return n


def test_random_blf_and_mf4_are_format_errors_naming_the_file(tmp_path: Path) -> None:
    noise = bytes((i * 7919 + 13) % 251 for i in range(5000))
    for name in ("noise.blf", "noise.mf4", "empty.blf"):
        path = tmp_path / name
        path.write_bytes(b"" if name == "empty.blf" else noise)
        with pytest.raises(LogFormatError, match=name.replace(".", r"\.")):
            list(read_frames(path, Rejects("t")))
        out = tmp_path / "out.jsonl"
        assert dropline(["decode", "can", "--dbc", str(KONA_DBC), str(path), "-o", str(out)]) == 2


def test_corrupt_or_cut_off_blf_gives_the_good_part_and_counts_the_rest(tmp_path: Path) -> None:
    whole = tmp_path / "whole.blf"
    n = blf_of_the_asc(whole)
    raw = whole.read_bytes()
    cut = tmp_path / "cut.blf"
    cut.write_bytes(raw[: len(raw) // 2])
    rejects = Rejects("t")
    frames = list(read_frames(cut, rejects))
    truth = list(can.LogReader(whole))
    assert 0 < len(frames) < n
    assert [(m.timestamp, bytes(m.data)) for m in frames] == [
        (m.timestamp, bytes(m.data)) for m in truth[: len(frames)]
    ]
    assert rejects.as_dict() == {"unreadable rest": 1}
    corrupt = tmp_path / "corrupt.blf"
    corrupt.write_bytes(raw[:200] + bytes(100) + raw[300:])
    rejects = Rejects("t")
    list(read_frames(corrupt, rejects))
    assert rejects.as_dict() == {"unreadable rest": 1}


def test_cli_decodes_a_dirty_asc(tmp_path: Path) -> None:
    lines = ASC.read_text().splitlines()
    dirty = tmp_path / "dirty.asc"
    dirty.write_text("\n".join(insert(lines, {50: ASC_RAISING})) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        dropline(["decode", "can", "--dbc", str(KONA_DBC), "--map", "kona_ev", str(dirty), "-o", str(out)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 112 and sum(r["signal"] == SOC for r in rows) == 28


BAD_MAPS = ["kona_ice", "x" * 5000, "kona\0ev", "no/such/dir/m.toml", "/", "kona_ev/"]


@pytest.mark.parametrize("name", BAD_MAPS, ids=range(len(BAD_MAPS)))
def test_unknown_mapping_is_a_mapping_error_and_a_usage_error(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MappingError, match=r"no such mapping|cannot read"):
        CanDecoder.from_files(KONA_DBC, name)
    if "\0" not in name:  # argv cannot carry a NUL; the agent's config can
        assert dropline(["decode", "can", "--dbc", str(KONA_DBC), "--map", name, str(ASC)]) == 2
        err = capsys.readouterr().err
        assert "no such mapping" in err or "cannot read" in err


BAD_DBCS = ["none.dbc", "x" * 5000 + ".dbc", "bad\0.dbc", "."]


@pytest.mark.parametrize("name", BAD_DBCS, ids=range(len(BAD_DBCS)))
def test_unknown_dbc_is_a_dbc_error_naming_the_file(name: str) -> None:
    with pytest.raises(DbcError) as info:
        CanDecoder.from_files(name, "kona_ev")
    assert name[:20].replace("\0", " ") in str(info.value).replace("\0", " ")
