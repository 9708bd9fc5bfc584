"""Property tests: no input makes the NMEA decoder raise, bad input is counted, and the good
sentences around it still give exactly the fix they give alone."""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.gps import nmea_fields
from firmware_bridge.gps.nmea import NmeaDecoder
from firmware_bridge.gps.serial_nmea import LineAssembler, iter_fixes_from_file
from protocols.records import Fix
from protocols.rejects import Rejects
from tests.conftest import DATA

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sentence(body: str, checksum: int | None = None) -> bytes:
    cs = functools.reduce(lambda a, c: a ^ c, body.encode(), 0) if checksum is None else checksum
    return f"${body}*{cs:02X}\r\n".encode()


BEFORE = [
    sentence("GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A"),
    sentence("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
]
AFTER = [
    sentence("GPRMC,123520.00,A,4807.040,N,01131.002,E,022.4,084.4,230394,003.1,W,A"),
    sentence("GPGGA,123520.00,4807.040,N,01131.002,E,1,08,0.9,545.4,M,46.9,M,,"),
]


def _counted(dec: NmeaDecoder) -> int:
    return dec.rejects.total + dec.stats["used"] + dec.stats["skipped"]


def _fixes(lines: list[bytes]) -> tuple[list[Fix], NmeaDecoder]:
    dec = NmeaDecoder()
    return dec.feed_all(lines), dec


GOOD, _ = _fixes(BEFORE + AFTER)
assert len(GOOD) == 2


def _between(bad: list[bytes]) -> tuple[list[Fix], NmeaDecoder]:
    """The bad lines after the first epoch is complete (its successor started) and before the
    second one: both good epochs must come out unchanged."""
    fixes, dec = _fixes([*BEFORE, AFTER[0], *bad, AFTER[1]])
    return fixes, dec


def _assert_good_survive(fixes: list[Fix]) -> None:
    assert fixes[0] == GOOD[0]
    assert fixes[-1].time == GOOD[1].time
    assert math.isclose(fixes[-1].lat, GOOD[1].lat) and math.isclose(fixes[-1].lon, GOOD[1].lon)


@FUZZ
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes(junk: bytes) -> None:
    line = junk.replace(b"\n", b"") + b"\r\n"
    fixes, dec = _between([line])
    _assert_good_survive(fixes)
    if line.strip() and not line.lstrip().startswith(b"#"):
        assert _counted(dec) > 4  # 4 good sentences + whatever the junk line became


@FUZZ
@given(st.sampled_from(BEFORE + AFTER), st.data())
def test_truncated_sentences(good: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(good) - 4))
    piece = good[:cut] + b"\r\n"
    fixes, dec = _between([piece])
    _assert_good_survive(fixes)
    assert _counted(dec) == 5
    # a cut that keeps the "*hh" away looks like a sentence without checksum (accepted, as
    # gpsd does) only if every field up to the date or altitude survived; it can never move
    # a position
    for fix in fixes:
        assert any(math.isclose(fix.lat, g.lat) and math.isclose(fix.lon, g.lon) for g in GOOD)


@FUZZ
@given(st.integers(min_value=0, max_value=255), st.sampled_from(BEFORE + AFTER))
def test_wrong_checksums(cs: int, good: bytes) -> None:
    body = good[1 : good.index(b"*")].decode()
    fixes, dec = _between([sentence(body.replace("4807", "4907"), checksum=cs)])
    _assert_good_survive(fixes)
    wrong_cs = functools.reduce(lambda a, c: a ^ c, body.replace("4807", "4907").encode(), 0)
    if cs != wrong_cs:
        assert dec.rejects.counts["bad_checksum"] == 1


@FUZZ
@given(st.sampled_from(BEFORE + AFTER), st.data())
def test_nul_and_invalid_utf8_inside_a_sentence(good: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=1, max_value=len(good) - 6))
    byte = data.draw(st.sampled_from([b"\x00", b"\xff", b"\xc3\x28", b"\x80", b"\x1b"]))
    fixes, dec = _between([good[:at] + byte + good[at:]])
    _assert_good_survive(fixes)
    assert dec.rejects.total == 1


@FUZZ
@given(st.integers(min_value=103, max_value=5000))
def test_over_long_lines(n: int) -> None:
    line = b"$GPGGA," + b"1" * n + b"*00\r\n"
    fixes, dec = _between([line])
    _assert_good_survive(fixes)
    assert dec.rejects.counts["overlong"] == 1


@FUZZ
@given(
    st.sampled_from(
        [
            ("4807.040,N", "9530.000,N"),  # latitude 95
            ("01131.002,E", "18100.001,E"),  # longitude beyond 180
            ("230394", "231394"),  # month 13
            ("230394", "320394"),  # day 32
            ("123520.00", "246060.00"),  # 24:60:60
        ]
    ),
    st.sampled_from(AFTER[:1]),
)
def test_impossible_values(swap: tuple[str, str], good: bytes) -> None:
    body = good[1 : good.index(b"*")].decode()
    fixes, dec = _between([sentence(body.replace(*swap))])
    _assert_good_survive(fixes)
    assert dec.rejects.counts["impossible_value"] == 1


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=20))
def test_line_assembler_any_chunking(chunks: list[bytes]) -> None:
    rejects = Rejects("fuzz")
    lines = LineAssembler(rejects)
    out = [line for chunk in chunks for line in lines.push(chunk)]
    lines.end()
    joined = b"".join(chunks).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert out == [part for part in joined.split(b"\n")[:-1] if part]


@FUZZ
@given(st.sampled_from(sorted((DATA / "nmea" / "gpsd").glob("*.log"))), st.integers(1, 64))
def test_logs_give_the_same_fixes_whatever_the_chunking(log: Path, size: int) -> None:
    data = log.read_bytes()
    dec = NmeaDecoder()
    lines = LineAssembler(dec.rejects)
    fixes = [
        f
        for i in range(0, len(data), size)
        for line in lines.push(data[i : i + size])
        for f in dec.feed(line)
    ]
    lines.end()
    fixes += dec.flush()
    assert fixes == list(iter_fixes_from_file(log))


def test_fuzzy_cases_and_skytraq_error_logs() -> None:
    dec = NmeaDecoder()
    fixes = list(iter_fixes_from_file(DATA / "nmea" / "gpsd" / "nmea-fuzzy-cases.log", dec))
    assert len(fixes) == 14 and dec.rejects.total == 0
    dec = NmeaDecoder()
    assert list(iter_fixes_from_file(DATA / "nmea" / "gpsd" / "skytraq-err.log", dec)) == []
    assert dec.stats["skipped"] == 6  # $STI error reports: no checksum, nothing to decode
    dec = NmeaDecoder(require_checksum=True)
    assert list(iter_fixes_from_file(DATA / "nmea" / "gpsd" / "skytraq-err.log", dec)) == []
    assert dec.rejects.counts == {"no_checksum": 6}


def _plain_nmea_fields() -> ModuleType:
    source = (nmea_fields.__file__ or "").rsplit("/", 1)[0] + "/nmea_fields.py"
    spec = importlib.util.spec_from_file_location("nmea_fields_plain", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAIN = _plain_nmea_fields()
_field_text = st.text(alphabet="0123456789.-+NSEWe ", max_size=14) | st.text(max_size=8)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@FUZZ
@given(st.binary(max_size=120), _field_text)
def test_compiled_and_plain_python_agree(line: bytes, text: str) -> None:
    """The compiled extension and the same source run as Python give the same answers."""
    assert nmea_fields.frame(line, 0) == PLAIN.frame(line, 0)
    assert _same(nmea_fields.decimal(text), PLAIN.decimal(text))
    assert _same(nmea_fields.ddmm_to_degrees(text, 90), PLAIN.ddmm_to_degrees(text, 90))
    assert _same(nmea_fields.hhmmss_to_seconds(text), PLAIN.hhmmss_to_seconds(text))
    assert nmea_fields.ddmmyy_to_days(text) == PLAIN.ddmmyy_to_days(text)
    assert nmea_fields.small_int(text) == PLAIN.small_int(text)
