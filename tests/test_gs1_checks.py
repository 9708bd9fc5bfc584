"""GS1 check digits, check character pairs and dates, against independent truth: biip's own
mod-10 (``biip.checksums``), the unit-test vectors of gs1-syntax-dictionary's C linters
(lint_csumalpha.c, lint_yymmd0.c), and Python's calendar through ``datetime.date``."""

from __future__ import annotations

import datetime as dt

import pytest
from biip.checksums import gs1_standard_check_digit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.scanner import gs1_checks
from firmware_bridge.scanner.gs1_checks import check_pair, full_year, mod10_check_digit, violation
from firmware_bridge.scanner.lines import UnreadableLine, decode_line
from firmware_bridge.scanner.parse import GS, parse_scan

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGITS = "0123456789"


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=n, max_size=n)


def with_check(payload: str) -> str:
    """The payload and its check digit, computed by biip (not by the code under test)."""
    return payload + str(gs1_standard_check_digit(payload))


@FAST
@given(st.text(alphabet=DIGITS, min_size=1, max_size=40))
def test_mod10_is_biips(payload: str) -> None:
    assert mod10_check_digit(payload) == gs1_standard_check_digit(payload)


# lint_csumalpha.c's UNIT_TEST_PASS values (gs1/gs1-syntax-dictionary), check pair last.
CSUMALPHA_PASS = [
    "22",
    "!22",
    "!!22",
    "1987654Ad4X4bL5ttr2310c2K",
    "12345678901234567890123NT",
    "12345_ABCDEFGHIJKLMCP",
    "12345_NOPQRSTUVWXYZDN",
    "12345_abcdefghijklmN3",
    "12345_nopqrstuvwxyzP2",
    "12345_!\"%&'()*+,-./LC",
    "12345_0123456789:;<=>?62",
    "7907665Bm8v2AB",
    "97850l6KZm0yCD",
    "225803106GSpEF",
    "149512464PM+GH",
    "62577B8fRG7HJK",
    "515942070CYxLM",
    "390800494sP6NP",
    "386830132uO+QR",
    "53395376X1:nST",
    "957813138Sb6UV",
    "530790no0qOgWX",
    "62185314IvwmYZ",
    "23956qk1&dB!23",
    "794394895ic045",
    "57453Uq3qA<H67",
    "0881063PhHvY89",
    "00000!HV",
    "99999zzzzzzzzzzzzzzzzzzT2",
]


@pytest.mark.parametrize("value", CSUMALPHA_PASS)
def test_check_pair_matches_the_reference_linter(value: str) -> None:
    assert check_pair(value[:-2]) == value[-2:]
    if len(value) <= 25:  # AI 8013 (GMN) is X..25
        assert violation("8013", value) is None


@pytest.mark.parametrize("value", ["33", "1987654Ad4X4bL5ttr2310cXK", "1987654Ad4X4bL5ttr2310c2X"])
def test_wrong_check_pair_is_flagged(value: str) -> None:
    found = violation("8013", value)
    assert found is not None and found.reason == gs1_checks.BAD_CHECK_PAIR


CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


@FAST
@given(st.text(alphabet=CSET82, min_size=1, max_size=23), st.data())
def test_any_single_character_change_breaks_the_pair(payload: str, data: st.DataObject) -> None:
    """Weights are primes below the modulus 1021 and character values differ by less than 82, so
    GS1's pair detects every single substitution (in the data or in the pair itself)."""
    pair = check_pair(payload)
    assert pair is not None
    value = payload + pair
    at = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    alphabet = CSET82 if at < len(payload) else "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    new = data.draw(st.sampled_from(alphabet).filter(lambda c: c != value[at]))
    changed = value[:at] + new + value[at + 1 :]
    found = violation("8013", changed)
    assert found is not None and found.reason == gs1_checks.BAD_CHECK_PAIR


# lint_yymmd0.c's unit tests: (data, passes)
YYMMD0 = [
    ("000606", True),
    ("990606", True),
    ("200131", True),
    ("200010", False),
    ("201310", False),
    ("200132", False),
    ("200229", True),
    ("200230", False),
    ("200430", True),
    ("200431", False),
    ("210228", True),
    ("210229", False),
    ("240229", True),
    ("000229", True),
    ("000230", False),
    ("960229", True),
    ("200600", True),
]


@pytest.mark.parametrize(("data", "passes"), YYMMD0)
def test_dates_match_the_reference_linter(data: str, passes: bool) -> None:
    for ai in ("11", "13", "15", "17"):
        assert (violation(ai, data) is None) is passes, (ai, data)


def test_day_zero_only_where_gs1_allows_it() -> None:
    """YYMMD0 AIs (11-17) take day 00 as "end of month"; YYMMDD ones (7006, 4326) do not."""
    assert violation("17", "250200") is None
    assert violation("7006", "250200") is not None
    assert violation("4326", "250200") is not None


def test_leap_years_do_not_depend_on_the_reference_year_before_2050() -> None:
    """The claim that lets gs1_checks use a fixed reference year instead of the clock."""

    def leap(year: int) -> bool:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)

    for yy in range(100):
        assert len({leap(full_year(yy, ref)) for ref in range(1951, 2050)}) == 1, yy
    assert full_year(0, 2025) == 2000 and full_year(75, 2025) == 2075 and full_year(76, 2025) == 1976


@FAST
@given(digits(6))
def test_yymmd0_agrees_with_the_calendar(data: str) -> None:
    yy, mm, dd = int(data[:2]), int(data[2:4]), int(data[4:])
    try:
        dt.date(2000 + yy, mm, max(dd, 1))  # 2000-2099: leap years as GS1 reads YY from 1951 to 2049
        real = True
    except ValueError:
        real = False
    found = violation("17", data)
    assert (found is None) is real
    if found is not None:
        assert found.reason == gs1_checks.BAD_DATE and found.ai == "17"


# AI -> (length of the numeric part, where its check digit span starts, ends) for generation.
CHECKED = {
    "00": (18, 0, 18),
    "01": (14, 0, 14),
    "410": (13, 0, 13),
    "414": (13, 0, 13),
    "417": (13, 0, 13),
    "402": (17, 0, 17),
    "8017": (18, 0, 18),
    "8018": (18, 0, 18),
}
VARIABLE = {"253": 13, "255": 13, "8003": 14}  # key with check digit, then an optional serial


Case = tuple[str, dict[str, str], list[tuple[str, int, int, int]]]


@st.composite
def element_string(draw: st.DrawFn) -> Case:
    """A valid GS1-128 message: AI 01 and some keys with check digits, a batch, a date; returns the
    scan text, the AI values, and where each check-digit span sits in the text."""
    chosen = draw(st.lists(st.sampled_from(sorted(set(CHECKED) - {"01"})), unique=True, max_size=3))
    variable = draw(st.lists(st.sampled_from(sorted(VARIABLE)), unique=True, max_size=2))
    values: dict[str, str] = {"01": with_check(draw(digits(13)))}
    for ai in chosen:
        values[ai] = with_check(draw(digits(CHECKED[ai][0] - 1)))
    spans: list[tuple[str, int, int, int]] = []
    text = "]C1"
    for ai, value in values.items():
        start = len(text) + len(ai)
        spans.append((ai, start, start + len(value), len(value)))
        text += ai + value
    for ai in variable:
        lead = "0" if ai == "8003" else ""
        key = lead + with_check(draw(digits(12)))
        serial = draw(st.text(alphabet=DIGITS if ai == "255" else DIGITS + "ABCxyz", max_size=6))
        start = len(text) + len(ai) + len(lead)
        spans.append((ai, start, start + 13, 13))
        values[ai] = key + serial
        text += ai + key + serial + GS
    batch = draw(st.text(alphabet=DIGITS + "ABCDEFxyz-", min_size=1, max_size=20))
    day = draw(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2049, 12, 31)))
    values["10"], values["17"] = batch, day.strftime("%y%m%d")
    text += "10" + batch + GS + "17" + values["17"]
    return text, values, spans


@FAST
@given(element_string())
def test_valid_element_string_round_trips(
    case: tuple[str, dict[str, str], list[tuple[str, int, int, int]]],
) -> None:
    text, values, _ = case
    scan = parse_scan(text, 0.0)
    assert scan.kind == ("sscc" if "00" in values else "gs1"), scan
    assert "error" not in scan.fields
    assert {ai: scan.fields.get(ai) for ai in values} == values
    assert scan.fields["gtin"] == values["01"]


@FAST
@given(element_string(), st.data())
def test_any_single_digit_change_is_caught(case: Case, data: st.DataObject) -> None:
    """GS1 mod-10 weighs alternately 3 and 1, both prime to 10: one wrong digit anywhere in a key
    (the check digit included) always shows."""
    text, _, spans = case
    ai, start, end, _ = data.draw(st.sampled_from(spans))
    at = data.draw(st.integers(min_value=start, max_value=end - 1))
    digit = data.draw(st.sampled_from(DIGITS).filter(lambda d: d != text[at]))
    scan = parse_scan(text[:at] + digit + text[at + 1 :], 0.0)
    assert scan.kind == "unknown"
    assert scan.fields["error"] == gs1_checks.BAD_CHECK_DIGIT
    assert scan.fields["error_ai"] == ai


@FAST
@given(digits(17), st.integers(min_value=0, max_value=17), st.integers(min_value=1, max_value=9))
def test_bare_sscc_with_one_wrong_digit_is_never_a_parcel_id(payload: str, at: int, shift: int) -> None:
    """Another reading may still accept the digits (a courier number with its own check digit, or,
    without a symbology identifier, biip's element strings such as ``(21)`` serial), but never as
    an SSCC; with nothing else it is ``unknown`` for its check digit."""
    sscc = with_check(payload)
    assert parse_scan(sscc, 0.0).kind == "sscc"
    bad = sscc[:at] + str((int(sscc[at]) + shift) % 10) + sscc[at + 1 :]
    scan = parse_scan(bad, 0.0)
    assert scan.kind != "sscc" and "sscc" not in scan.fields and "sscc:" not in scan.fields.get("also", "")
    if scan.kind == "unknown":
        assert scan.fields["error"] == gs1_checks.BAD_CHECK_DIGIT


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_documented_error(blob: bytes) -> None:
    try:
        text = decode_line(blob)
    except UnreadableLine:
        return
    scan = parse_scan(text, 0.0)
    assert scan.raw == text
    assert scan.kind == "unknown" or "error" not in scan.fields


@FAST
@given(st.sampled_from([*sorted(gs1_checks.CHECKED_AIS), "99", ""]), st.text(max_size=40))
def test_violation_never_raises(ai: str, value: str) -> None:
    found = violation(ai, value)
    assert found is None or (found.ai == ai and found.reason in gs1_checks.REASONS)
