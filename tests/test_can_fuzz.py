"""Property tests: random frames and random log lines never raise, are always counted, and good
frames around them still decode exactly as they do alone."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.can.bus_driver import iter_signals_from_log
from firmware_bridge.can.compile_dbc import load_dbc
from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.log_reader import read_frames
from firmware_bridge.can.mapping import load_mapping
from protocols.rejects import Rejects
from tests.conftest import DATA

CAN = DATA / "can"
DBCS = {
    "kona_ev": CAN / "kona_ev" / "pcan.dbc",
    "nissan_leaf_ze1": CAN / "nissan_leaf" / "EV-can_ZE1.dbc",
    "tesla_model3": CAN / "tesla_model3" / "Model3CAN.dbc",
}
GOOD = [  # (id, payload) from bms_bench_2021_64kwh_idle.asc
    (0x594, bytes.fromhex("34213421a0620120")),
    (0x542, bytes.fromhex("650a00000000ffff")),
    (0x595, bytes.fromhex("0b00b8b80000180e")),
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    """Rejects log their first few warnings; thousands of examples would flood the captured log."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@cache
def db(name: str) -> Any:
    return load_dbc(DBCS[name])


def decoder(name: str, mapped: bool | None) -> CanDecoder:
    """mapped: None = no mapping, False = mapping with all signals, True = only mapped signals."""
    mapping = load_mapping(name) if mapped is not None else None
    return CanDecoder(db(name), mapping, only_mapped=mapped)


def frames(name: str) -> st.SearchStrategy[tuple[int, bytes, bool]]:
    known = sorted(m.frame_id for m in db(name).messages)
    ids = st.one_of(st.sampled_from(known), st.integers(0, 0x7FF), st.integers(0, 0x1FFFFFFF))
    return st.tuples(ids, st.binary(min_size=0, max_size=64), st.booleans())


def counted(d: CanDecoder) -> int:
    return d.rejects.total + d.skipped + sum(d.unavailable.values())


@pytest.mark.parametrize("mapped", [None, False, True], ids=["no-map", "map-all", "map-only"])
@pytest.mark.parametrize("name", sorted(DBCS))
def test_random_frames_never_raise_and_are_always_counted(name: str, mapped: bool | None) -> None:
    d = decoder(name, mapped)

    @FUZZ
    @given(st.lists(frames(name), max_size=30))
    def check(batch: list[tuple[int, bytes, bool]]) -> None:
        for i, (frame_id, data, extended) in enumerate(batch):
            before = counted(d)
            out = d.decode(frame_id, data, float(i), extended)
            assert out or counted(d) > before, (hex(frame_id), data.hex())
            for s in out:
                assert isinstance(s.value, int | float) and s.value == s.value  # a number, not NaN
                assert s.time == float(i)

    check()


@pytest.mark.parametrize("mapped", [None, True], ids=["no-map", "map-only"])
def test_good_frames_still_decode_between_garbage(mapped: bool | None) -> None:
    alone = {
        fid: [(s.name, s.value) for s in decoder("kona_ev", mapped).decode(fid, data, 0.0)]
        for fid, data in GOOD
    }
    assert all(alone.values())
    d = decoder("kona_ev", mapped)

    @FUZZ
    @given(st.lists(st.tuples(frames("kona_ev"), st.sampled_from(GOOD)), min_size=1, max_size=20))
    def check(pairs: list[tuple[tuple[int, bytes, bool], tuple[int, bytes]]]) -> None:
        for (frame_id, data, extended), (good_id, good_data) in pairs:
            d.decode(frame_id, data, 1.0, extended)
            out = d.decode(good_id, good_data, 2.0)
            assert [(s.name, s.value) for s in out] == alone[good_id]

    check()


CANDUMP_LINES = [
    f"({100 + i}.000000) can0 {fid:03X}#{data.hex().upper()}" for i, (fid, data) in enumerate(GOOD)
]
GARBAGE = st.text(st.characters(exclude_characters="#\r\n", exclude_categories=["Cs"]), max_size=40)


@FUZZ
@given(st.lists(GARBAGE, max_size=6), st.lists(GARBAGE, max_size=6), st.binary(max_size=30))
def test_candump_garbage_lines_are_counted_and_good_lines_read(
    tmp_path: Path, before: list[str], after: list[str], raw: bytes
) -> None:
    log = tmp_path / "fuzz.log"
    body = "\n".join([*before, CANDUMP_LINES[0], *after, CANDUMP_LINES[1], CANDUMP_LINES[2]]) + "\n"
    noise = raw.replace(b"#", b"").replace(b"\r", b"").replace(b"\n", b"")  # one line of invalid UTF-8 etc.
    log.write_bytes(body.encode("utf-8") + noise + b"\n")
    d = decoder("kona_ev", None)
    got = list(iter_signals_from_log(log, d))
    want = [
        s for i, (fid, data) in enumerate(GOOD) for s in decoder("kona_ev", None).decode(fid, data, 100.0 + i)
    ]
    assert got == want
    with log.open(encoding="utf-8", errors="replace") as f:
        bad = sum(1 for line in f if line.strip() and line.rstrip("\n") not in CANDUMP_LINES)
    assert d.rejects.counts["bad log line"] == bad  # every non-blank bad line counted, once


GVRET_HEADER = "Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8"
GVRET_LINES = [
    f"{(100 + i) * 1_000_000},{fid:08X},false,0,8,{','.join(f'{b:02X}' for b in data)}"
    for i, (fid, data) in enumerate(GOOD)
]


@FUZZ
@given(
    st.lists(
        st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=60),
        max_size=8,
    )
)
def test_gvret_garbage_rows_are_counted_and_good_rows_read(tmp_path: Path, garbage: list[str]) -> None:
    log = tmp_path / "fuzz.csv"
    half = len(garbage) // 2
    log.write_text("\r\n".join([GVRET_HEADER, *garbage[:half], *GVRET_LINES, *garbage[half:]]) + "\r\n")
    d = decoder("kona_ev", None)
    got = [s for s in iter_signals_from_log(log, d) if s.time in (100.0, 101.0, 102.0)]
    want = [
        s for i, (fid, data) in enumerate(GOOD) for s in decoder("kona_ev", None).decode(fid, data, 100.0 + i)
    ]
    assert got == want
    assert d.rejects.counts["bad log line"] == sum(1 for row in garbage if row)  # every non-empty bad row


GvretRow = tuple[int, int, bool, int, bytes]  # (microseconds, id, extended, bus, data)
GVRET_ROWS = st.one_of(
    st.tuples(
        st.integers(0, 10**19),
        st.integers(0, 0x7FF),
        st.just(False),
        st.integers(0, 15),
        st.binary(max_size=8),
    ),
    st.tuples(
        st.integers(0, 10**19),
        st.integers(0, 0x1FFFFFFF),
        st.just(True),
        st.integers(0, 15),
        st.binary(max_size=8),
    ),
)
LINE_TEXT = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=60)


def gvret_row(row: GvretRow) -> str:
    t, fid, ext, bus, data = row
    return f"{t},{fid:08X},{'true' if ext else 'false'},{bus},{len(data)}" + "".join(
        f",{b:02X}" for b in data
    )


@FUZZ
@given(st.lists(st.tuples(GVRET_ROWS, st.lists(LINE_TEXT, max_size=2)), max_size=12))
def test_gvret_arbitrary_valid_rows_between_garbage_come_out_as_written(
    tmp_path: Path, rows: list[tuple[GvretRow, list[str]]]
) -> None:
    """Every valid row, whatever its id, length, bus or time, comes out exactly as written; every
    non-empty garbage row is counted once."""
    log = tmp_path / "rows.csv"
    lines = [GVRET_HEADER]
    for row, garbage in rows:
        lines += [*garbage, gvret_row(row)]
    log.write_text("\r\n".join(lines) + "\r\n")
    rejects = Rejects("fuzz")
    got = [
        (m.timestamp, m.arbitration_id, m.is_extended_id, m.channel, bytes(m.data))
        for m in read_frames(log, rejects)
    ]
    assert got == [(t / 1e6, fid, ext, bus, data) for (t, fid, ext, bus, data), _ in rows]
    assert rejects.as_dict() == (
        {"bad log line": n} if (n := sum(1 for _, g in rows for x in g if x)) else {}
    )


ASC_HEADER = ["date Wed, 08 Nov 2023 21:17:01 GMT", "base hex  timestamps absolute", "begin triggerblock"]


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**9),
            st.integers(0, 0x7FF),
            st.binary(max_size=8),
            st.lists(LINE_TEXT, max_size=2),
        ),
        max_size=12,
    )
)
def test_asc_and_candump_frames_between_garbage_come_out_as_written(
    tmp_path: Path, frames: list[tuple[int, int, bytes, list[str]]]
) -> None:
    """Frames in Vector ASC and candump lines, with random lines between them: every frame comes out
    as written (time, id, data); nothing but counts comes of the garbage."""
    asc = [*ASC_HEADER]
    candump = []
    for us, fid, data, garbage in frames:
        t = f"{us // 10**6}.{us % 10**6:06d}"
        asc += [
            *garbage,
            f"   {t} 1  {fid:X}             Rx   d {len(data)} {' '.join(f'{b:02X}' for b in data)}",
        ]
        candump += [*garbage, f"({t}) can0 {fid:03X}#{data.hex().upper()}"]
    want = [(us / 1e6, fid, data) for us, fid, data, _ in frames]
    garbage_lines = sum(len(g) for *_, g in frames)
    for suffix, lines in ((".asc", asc), (".log", candump)):
        log = tmp_path / f"frames{suffix}"
        log.write_text("\n".join(lines) + "\n")
        rejects = Rejects("fuzz")
        got = [(m.timestamp, m.arbitration_id, bytes(m.data)) for m in read_frames(log, rejects)]
        assert got == want, suffix
        assert set(rejects.counts) <= {"bad log line"} and rejects.total <= garbage_lines
