"""NmeaDecoder unit cases: epochs, dates, talkers, framing quirks, validity, and the CLI once."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_bridge.gps import nmea_fields
from firmware_bridge.gps.nmea import KNOTS_TO_MPS, NmeaDecoder
from firmware_bridge.gps.serial_nmea import iter_fixes_from_file
from protocols.records import Fix, iso_time
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parent.parent
PYNMEA2 = DATA / "nmea" / "pynmea2"


def sentence(body: str, *, prefix: str = "$", checksum: int | None = None) -> bytes:
    """``$body*hh\\r\\n`` with the checksum computed here, independently of the decoder."""
    cs = functools.reduce(lambda a, c: a ^ c, body.encode(), 0) if checksum is None else checksum
    return f"{prefix}{body}*{cs:02X}\r\n".encode()


def decode(*lines: bytes, require_checksum: bool = False) -> tuple[list[Fix], NmeaDecoder]:
    dec = NmeaDecoder(require_checksum=require_checksum)
    return dec.feed_all(lines), dec


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


RMC = "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A"
GGA = "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"


def test_one_fix_per_epoch_merging_rmc_gga_gsa_vtg() -> None:
    fixes, dec = decode(
        sentence(RMC),
        sentence("GPVTG,084.4,T,,M,022.4,N,041.5,K,A"),
        sentence(GGA),
        sentence("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"),
        sentence("GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45"),
    )
    assert len(fixes) == 1
    fix = fixes[0]
    assert iso_time(fix.time) == "1994-03-23T12:35:19.000Z"
    assert fix.mode == 3
    assert fix.lat == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert fix.lon == pytest.approx(11 + 31.0 / 60, abs=1e-12)
    assert fix.speed == pytest.approx(22.4 * KNOTS_TO_MPS)
    assert fix.track == pytest.approx(84.4)
    assert fix.alt_msl == pytest.approx(545.4)
    assert fix.hdop == pytest.approx(1.3)
    assert fix.sats == 8
    assert dec.stats["skipped"] == 1  # the GSV, recognised by its tag and not parsed
    assert dec.rejects.total == 0


def test_epoch_is_emitted_when_the_next_time_starts_not_before() -> None:
    dec = NmeaDecoder()
    assert dec.feed(sentence(RMC)) == []
    assert dec.feed(sentence(GGA)) == []
    nxt = dec.feed(sentence(RMC.replace("123519.00", "123520.00")))
    assert [iso_time(f.time) for f in nxt] == ["1994-03-23T12:35:19.000Z"]
    assert [iso_time(f.time) for f in dec.flush()] == ["1994-03-23T12:35:20.000Z"]
    assert dec.flush() == []


def test_midnight_rollover_gga_after_midnight_before_the_next_rmc() -> None:
    fixes, _ = decode(
        sentence("GPRMC,235959.50,A,4807.038,N,01131.000,E,0.0,,311299,,,A"),
        sentence("GPGGA,235959.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
        sentence("GPGGA,000000.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
        sentence("GPGGA,000001.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
        sentence("GPRMC,000001.50,A,4807.038,N,01131.000,E,0.0,,010100,,,A"),
    )
    assert [iso_time(f.time) for f in fixes] == [
        "1999-12-31T23:59:59.500Z",
        "2000-01-01T00:00:00.500Z",
        "2000-01-01T00:00:01.500Z",
    ]


def test_no_date_no_fix_and_a_time_going_back_a_little_is_not_a_new_day() -> None:
    fixes, dec = decode(sentence(GGA))  # no RMC/ZDA yet: gpsd reports it without a time
    assert fixes == [] and dec.stats["undated"] == 1
    fixes, _ = decode(
        sentence(RMC),
        sentence(GGA.replace("123519.00", "123518.00")),  # out of order by a second
    )
    assert [iso_time(f.time) for f in fixes] == ["1994-03-23T12:35:19.000Z", "1994-03-23T12:35:18.000Z"]


def test_zda_gives_the_date() -> None:
    fixes, _ = decode(sentence("GPZDA,123519.00,23,03,1994,00,00"), sentence(GGA))
    assert [iso_time(f.time) for f in fixes] == ["1994-03-23T12:35:19.000Z"]


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "BD", "GQ", "QZ", "GI"])
def test_every_talker(talker: str) -> None:
    fixes, _ = decode(sentence(talker + RMC[2:]), sentence(talker + GGA[2:]))
    assert len(fixes) == 1 and fixes[0].mode == 3


def test_proprietary_sentence_is_not_mistaken_for_rmc() -> None:
    # Garmin's $PGRMC (sensor configuration) ends in "RMC" like a talker + RMC would
    fixes, dec = decode(sentence("PGRMC,A,218.8,100,,,,,,A,3,1,2,4,30"), sentence(RMC))
    assert len(fixes) == 1 and dec.stats["skipped"] == 1


def test_framing_quirks_doubled_dollar_leading_space_junk_and_no_line_ending() -> None:
    fixes, dec = decode(
        b"$" + sentence(RMC),
        b"  " + sentence(GGA),
        b"\x00\xff\x13junk" + sentence("GPVTG,084.4,T,,M,022.4,N,041.5,K,A").rstrip(),
    )
    assert len(fixes) == 1 and fixes[0].speed is not None
    assert dec.rejects.total == 0


def test_two_sentences_run_together_on_one_line() -> None:
    line = sentence("GPGSA,A,3,04,05").rstrip() + sentence(RMC)
    fixes, dec = decode(line)
    assert len(fixes) == 1 and dec.rejects.total == 0
    cut = b"$GPGSV,3,1,11,23,87,270,,13,68" + sentence(RMC)  # a sentence cut by the next one
    fixes, dec = decode(cut)
    assert len(fixes) == 1 and dec.rejects.counts == {"truncated": 1}


def test_bad_checksum_between_good_sentences() -> None:
    bad = sentence(GGA.replace("4807.038", "4907.038"), checksum=0x47)
    fixes, dec = decode(sentence(RMC), bad, sentence("GPVTG,084.4,T,,M,022.4,N,041.5,K,A"))
    assert dec.rejects.counts == {"bad_checksum": 1}
    assert len(fixes) == 1
    assert fixes[0].lat == pytest.approx(48 + 7.038 / 60)  # not the corrupted 49
    assert fixes[0].alt_msl is None and fixes[0].mode == 2  # only RMC and VTG were good


def test_missing_checksum_accepted_as_gpsd_does_unless_required() -> None:
    bare = f"${RMC}\r\n".encode()
    fixes, dec = decode(bare)
    assert len(fixes) == 1 and dec.stats["no_checksum"] == 1
    fixes, dec = decode(bare, require_checksum=True)
    assert fixes == [] and dec.rejects.counts == {"no_checksum": 1}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (RMC.replace("4807.038,N", "9530.000,N"), "impossible_value"),  # latitude 95
        (RMC.replace("01131.000,E", "18130.000,E"), "impossible_value"),  # longitude 181
        (RMC.replace("4807.038", "4861.000"), "impossible_value"),  # 61 minutes
        (RMC.replace("230394", "231394"), "impossible_value"),  # month 13
        (RMC.replace("230394", "300294"), "impossible_value"),  # 30 February
        (RMC.replace("123519.00", "253519.00"), "impossible_value"),  # hour 25
        (RMC.replace("4807.038", "48O7.038"), "unparsable"),
        (RMC.replace(",N,", ",Q,"), "unparsable"),
        (RMC.replace("022.4", "2e3"), "unparsable"),
        ("GPRMC,123519.00,A,4807.038", "unparsable"),  # too few fields
        ("GPZDA,123519.00,23,13,1994,00,00", "impossible_value"),
    ],
)
def test_impossible_and_unparsable_values_are_counted(bad: str, reason: str) -> None:
    fixes, dec = decode(sentence(bad))
    assert fixes == []
    assert dec.rejects.counts == {reason: 1}


@pytest.mark.parametrize(
    "body",
    [
        RMC.replace(",A,4807", ",V,4807"),  # receiver warning
        RMC.replace(",W,A", ",W,N"),  # FAA mode: not valid
        RMC.replace(",W,A", ",W,S"),  # simulator (Garmin demo mode)
        GGA.replace(",1,08,", ",0,08,"),  # fix quality 0
        GGA.replace(",1,08,", ",8,08,"),  # fix quality 8: simulation
    ],
)
def test_a_sentence_saying_no_fix_makes_the_epoch_no_fix(body: str) -> None:
    other = GGA if body.startswith("GPRMC") else RMC
    fixes, dec = decode(sentence(other), sentence(body))
    assert fixes == [] and dec.rejects.total == 0


def test_mode_follows_gpsd_sentence_by_sentence() -> None:
    """Hand-worked from gpsd's driver_nmea0183.c rules (see the module docstring)."""
    gsa2 = sentence("GPGSA,A,2,04,05,09,,,,,,,,,,2.5,1.3,2.1")
    # GGA: altitude and 8 satellites -> 3D; a later GSA saying 2D does not downgrade it
    assert decode(sentence(RMC), sentence(GGA), gsa2)[0][0].mode == 3
    assert decode(sentence(RMC), sentence(GGA))[0][0].mode == 3
    # no altitude anywhere: the GSA's 2D stands
    no_alt = GGA.replace(",545.4,M,", ",,M,")
    assert decode(sentence(RMC), sentence(no_alt), gsa2)[0][0].mode == 2
    # 3 satellites with an altitude: 2D; fewer than 3: no fix at all
    assert decode(sentence(RMC), sentence(GGA.replace(",1,08,", ",1,03,")))[0][0].mode == 2
    assert decode(sentence(RMC), sentence(GGA.replace(",1,08,", ",1,02,")))[0] == []
    # RMC alone (Magellan EC-10X): 2D
    assert decode(sentence(RMC))[0][0].mode == 2


def test_mode_without_gsa_rmc_keeps_last_3d() -> None:
    rmc2 = RMC.replace("123519.00", "123520.00")
    fixes, _ = decode(sentence(RMC), sentence(GGA), sentence(rmc2))
    assert [f.mode for f in fixes] == [3, 3]  # RMC keeps the last fix's 3D


def test_mode_rmc_after_gsa_with_four_satellites() -> None:
    gsa = sentence("GPGSA,A,3,04,05,09,12,,,,,,,,,2.5,1.3,2.1")
    rmc2 = RMC.replace("123519.00", "123520.00")
    no_alt = GGA.replace(",545.4,M,", ",,M,")
    zda = sentence("GPZDA,123519.00,23,03,1994,00,00")
    fixes, _ = decode(zda, sentence(no_alt), gsa, sentence(rmc2))
    assert [f.mode for f in fixes] == [3, 3]  # 4 used satellites mean 3D to gpsd's RMC


def test_mode_one_gsa_per_constellation() -> None:
    no_alt = GGA.replace(",545.4,M,", ",,M,")
    gl3 = sentence("GLGSA,A,3,65,66,67,,,,,,,,,,2.5,1.3,2.1")
    gp2 = sentence("GPGSA,A,2,04,05,09,,,,,,,,,,2.5,1.3,2.1")
    # once a GLGSA is seen, a GPGSA no longer states the mode
    assert decode(sentence(RMC), sentence(no_alt), gl3, gp2)[0][0].mode == 3
    assert decode(sentence(RMC), sentence(no_alt), gp2)[0][0].mode == 2


def test_gns_mode_letters_and_nav_status() -> None:
    gns = "GNGNS,123519.00,4807.038,N,01131.000,E,AAN,08,0.9,545.4,46.9,,,S"
    fixes, _ = decode(sentence("GPZDA,123519.00,23,03,1994,00,00"), sentence(gns))
    assert len(fixes) == 1 and fixes[0].mode == 3 and fixes[0].alt_msl == 545.4
    # gpsd reads only the first mode letter: N is no fix even if GLONASS has one
    fixes, _ = decode(sentence("GPZDA,123519.00,23,03,1994,00,00"), sentence(gns.replace("AAN", "NAN")))
    assert fixes == []
    # navigational status V or U: gpsd takes nothing but the time from the sentence
    fixes, _ = decode(sentence("GPZDA,123519.00,23,03,1994,00,00"), sentence(gns[:-1] + "V"))
    assert fixes == []


def test_ublox_log_against_gpsd_chk() -> None:
    """The u-blox 8 log against the TPVs gpsd itself wrote for it (its .chk): every epoch's time,
    position and motion (the same log through gpsd's JSON, not through our decoder)."""
    log = DATA / "nmea" / "gpsd" / "ublox-8.log"
    ours = list(iter_fixes_from_file(log))
    chk: dict[str, dict[str, object]] = {}
    for line in (log.parent / "ublox-8.log.chk").read_text().splitlines():
        if line.startswith("{"):
            tpv = json.loads(line)
            if tpv.get("class") == "TPV" and tpv.get("mode", 0) >= 2 and "lat" in tpv:
                chk[tpv["time"]] = tpv  # the last report of an epoch is gpsd's final word
    assert len(ours) == len(chk) == 72
    for fix in ours:
        tpv = chk[iso_time(fix.time)]
        assert fix.mode == tpv["mode"]
        assert (fix.lat, fix.lon) == pytest.approx((tpv["lat"], tpv["lon"]), abs=5e-10)  # gpsd: %.9f
        assert fix.speed == pytest.approx(tpv.get("speed"), abs=0.0005)
        assert fix.track == pytest.approx(tpv.get("track"), abs=0.00005)
        assert fix.alt_msl == pytest.approx(tpv.get("altMSL"), abs=0.0005)


def test_pynmea2_example_file() -> None:
    dec = NmeaDecoder()
    fixes = list(iter_fixes_from_file(PYNMEA2 / "examples_data.log", dec))
    assert fixes == []  # one GGA and no date: nothing gpsd would give a time either
    assert dec.rejects.counts["not_nmea"] == 1  # "foobar"
    assert dec.stats["used"] == 1 and dec.stats["skipped"] == 3


def _pynmea2_cases() -> list[dict[str, object]]:
    with (PYNMEA2 / "pynmea2_test_sentences.jsonl").open() as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("case", _pynmea2_cases(), ids=lambda c: str(c["sentence"])[:40])
def test_pynmea2_sentences(case: dict[str, object]) -> None:
    """Every pynmea2 test sentence goes through without an exception; where pynmea2 reads a
    position and the sentence says the fix is valid, ours is the same position."""
    text = str(case["sentence"])
    ref = case["pynmea2_1_19_0"]
    assert isinstance(ref, dict)
    line = text.encode() + b"\r\n"
    zda = b""
    if ref.get("sentence_type") in ("GGA", "GLL") and "lat" in ref:  # give them the date RMC would
        zda = sentence(f"GPZDA,{_time_of(text)},23,03,1994,00,00")
    dec = NmeaDecoder()
    fixes = dec.feed_all([zda, line])
    want = _rmc_fix(text) if ref.get("sentence_type") == "RMC" else None
    if ref.get("sentence_type") not in ("RMC", "GGA", "GLL"):
        assert fixes == []  # no position in it (or a proprietary one gpsd does not use)
    elif ref.get("sentence_type") == "RMC":
        assert len(fixes) == (want is not None)
        if want is not None:
            assert asdict(fixes[0]) == pytest.approx(asdict(want), abs=1e-9)
    if fixes:  # GGA and GLL: where one is a fix, pynmea2 reads the same position
        assert fixes[0].lat == pytest.approx(float(ref["lat"]), abs=1e-9)
        assert fixes[0].lon == pytest.approx(float(ref["lon"]), abs=1e-9)


def _rmc_fix(text: str) -> Fix | None:
    """The fix gpsd makes of one RMC alone, worked out here from its fields: status A and an FAA
    mode (field 12) that is not N (no fix) or S (simulator); mode 2 (no altitude, no GSA); time
    from hhmmss.ss and ddmmyy; ddmm.mmmm to degrees; knots to m/s (1852 m / 3600 s)."""
    f = text.split("*")[0].split(",")
    if f[2] != "A" or f[12:13] in (["N"], ["S"]):
        return None
    hh, mm, ss = int(f[1][0:2]), int(f[1][2:4]), float(f[1][4:])
    day, month, year = int(f[9][0:2]), int(f[9][2:4]), 1900 + int(f[9][4:6])
    year += 100 if year < 1980 else 0
    when = datetime(year, month, day, hh, mm, tzinfo=UTC).timestamp() + ss
    lat = (int(f[3][:2]) + float(f[3][2:]) / 60) * (-1 if f[4] == "S" else 1)
    lon = (int(f[5][:3]) + float(f[5][3:]) / 60) * (-1 if f[6] == "W" else 1)
    speed = float(f[7]) * 1852 / 3600 if f[7] else None
    return Fix(when, 2, lat, lon, speed=speed, track=float(f[8]) if f[8] else None)


def _time_of(text: str) -> str:
    fields = text.split("*")[0].split(",")
    return fields[1] if text[3:6] == "GGA" else fields[5]


def test_checksum_helper_matches() -> None:
    body = b"GPGGA,,,,,,0,00,99.99,,,,,,"
    assert nmea_fields.checksum(body) == 0x48


def test_cli_subprocess_json_lines_and_help() -> None:
    log = DATA / "nmea" / "gpsd" / "bt451.log"
    run = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "gps", str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == len(list(iter_fixes_from_file(log)))
    # the first valid position: GLL 152504.50 status A (after a GSA saying no fix), dated by the
    # ZDA that follows it; gpsd reports it as mode 2 before that ZDA gives it a time
    assert rows[0]["time"] == "2009-12-09T15:25:04.500Z" and rows[0]["mode"] == 2
    assert {"time", "mode", "lat", "lon"} <= set(rows[0])
    assert "fixes from" in run.stderr and "rejected" in run.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "gps", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0
    assert (
        "example:" in helped.stdout and "dropline decode gps tests/data/nmea/gpsd/bt451.log" in helped.stdout
    )
    wrong = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "gps", str(DATA / "nmea" / "pynmea2" / "README.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 2
    assert re.search(r"README\.md: line \d+: not an NMEA sentence", wrong.stderr), wrong.stderr
