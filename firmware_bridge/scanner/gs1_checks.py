"""The GS1 content checks biip leaves undone: check digits and dates of AI element strings.

biip matches each AI's pattern, but it only *records* a wrong check digit (for AIs 00, 01-03 and
41x, in ``sscc_error``/``gtin_error``/``gln_error``) and checks none at all for 253, 255, 402,
8003, 8006, 8013, 8014, 8017, 8018 or 8026; a misprinted SSCC then reads as a valid AI 00. Here
every component that the GS1 Barcode Syntax Dictionary (gs1-syntax-dictionary.txt, the table
gs1-syntax-engine runs) marks with a ``csum``, ``csumalpha``, ``zero`` or date/time linter is
checked, by the GS1 General Specifications' own rules:

* ``csum``: GS1 mod-10 (weights 3, 1, 3... from the digit left of the check digit), GenSpecs 7.9.1;
* ``csumalpha``: the check character pair of GMN/MUDI (prime weights mod 1021), GenSpecs 7.9.5;
* ``yymmd0`` / ``yymmdd``: a real date, day ``00`` meaning "end of month" only where allowed;
  ``yyyymmdd``; ``hh``, ``mi``, ``ss``, ``hhmi``.

:func:`violation` is pure and never raises: any string in, ``None`` or a :class:`Violation` out.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

# Rejects reasons (also the ``error`` field of an invalid Scan).
BAD_CHECK_DIGIT = "bad_check_digit"
BAD_CHECK_PAIR = "bad_check_pair"
BAD_DATE = "bad_date"
BAD_VALUE = "bad_value"
BAD_SYNTAX = "bad_syntax"
"""A scan its symbology marks as GS1 whose data is no valid element string at all."""
REASONS = (BAD_CHECK_DIGIT, BAD_CHECK_PAIR, BAD_DATE, BAD_VALUE, BAD_SYNTAX)

# Component specs copied from gs1-syntax-dictionary.txt (gs1/gs1-syntax-dictionary), only the AIs
# that carry one of the linters above; the other linters of a component are left out.
_SPECS: dict[str, str] = {
    "00": "N18,csum",
    "01": "N14,csum",
    "02": "N14,csum",
    "03": "N14,csum",
    "11": "N6,yymmd0",
    "12": "N6,yymmd0",
    "13": "N6,yymmd0",
    "15": "N6,yymmd0",
    "16": "N6,yymmd0",
    "17": "N6,yymmd0",
    "253": "N13,csum [X..17]",
    "255": "N13,csum [N..12]",
    "402": "N17,csum",
    **{f"41{n}": "N13,csum" for n in range(8)},
    "4324": "N6,yymmd0 N4,hhmi",
    "4325": "N6,yymmd0 N4,hhmi",
    "4326": "N6,yymmdd",
    "7003": "N6,yymmdd N4,hhmi",
    "7006": "N6,yymmdd",
    "7007": "N6,yymmdd [N6],yymmdd",
    "7011": "N6,yymmdd [N4],hhmi",
    "7250": "N8,yyyymmdd",
    "7251": "N8,yyyymmdd N4,hhmi",
    "8003": "N1,zero N13,csum [X..16]",
    "8006": "N14,csum N4",
    "8008": "N6,yymmdd N2,hh [N2],mi [N2],ss",
    "8013": "X..25,csumalpha",
    "8014": "X..25,csumalpha",
    "8017": "N18,csum",
    "8018": "N18,csum",
    "8026": "N14,csum N4",
}

_COMPONENT = re.compile(r"^(\[)?[NXY](\d+)?(?:\.\.(\d+))?\]?((?:,\w+)*)$")

# GenSpecs 7.12 reads YY within 49 years back and 50 ahead of the current year. Which YY is a leap
# year is the same for every reference year from 1951 to 2049 (00 is 2000 throughout), so a fixed
# reference gives GS1's verdicts without reading the clock, and a replay stays byte-identical.
REFERENCE_YEAR = 2025


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one element string breaks a GS1 rule: ``reason`` is one of :data:`REASONS`."""

    ai: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class _Component:
    start: int
    length: int | None  # None: variable, the rest of the value
    optional: bool
    linters: tuple[str, ...]


def _components(spec: str) -> tuple[_Component, ...]:
    out: list[_Component] = []
    start = 0
    for part in spec.split():
        m = _COMPONENT.match(part)
        if m is None:  # pragma: no cover - the table above is fixed
            raise ValueError(f"bad component spec {part!r}")
        fixed = m.group(2) if m.group(3) is None else None
        length = int(fixed) if fixed is not None else None
        linters = tuple(x for x in m.group(4).split(",") if x)
        out.append(_Component(start, length, m.group(1) is not None, linters))
        start += length or 0
    return tuple(out)


_TABLE: dict[str, tuple[_Component, ...]] = {ai: _components(spec) for ai, spec in _SPECS.items()}
CHECKED_AIS = frozenset(_TABLE)


def mod10_check_digit(payload: str) -> int:
    """The GS1 check digit for ``payload`` (the digits before the check digit)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return (10 - total % 10) % 10


_CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_CSET32 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _primes(n: int) -> list[int]:
    found: list[int] = []
    k = 2
    while len(found) < n:
        if all(k % p for p in found if p * p <= k):
            found.append(k)
        k += 1
    return found


_PRIMES = _primes(100)


def check_pair(payload: str) -> str | None:
    """The two GS1 alphanumeric check characters for ``payload`` (CSET 82 characters), or ``None``
    when a character is outside CSET 82 or the payload is longer than 100 characters."""
    if len(payload) > len(_PRIMES) or any(c not in _CSET82 for c in payload):
        return None
    total = sum(_CSET82.index(c) * _PRIMES[i] for i, c in enumerate(reversed(payload))) % 1021
    return _CSET32[total >> 5] + _CSET32[total & 31]


def full_year(yy: int, reference_year: int = REFERENCE_YEAR) -> int:
    """A two-digit year as GenSpecs 7.12 reads it, relative to ``reference_year``."""
    century = reference_year - reference_year % 100
    diff = yy - reference_year % 100
    if 51 <= diff <= 99:
        return century - 100 + yy
    if -99 <= diff <= -50:
        return century + 100 + yy
    return century + yy


def _date_problem(year: int, month: int, day: int, *, day_zero: bool) -> str | None:
    if not 1 <= month <= 12:
        return f"month {month:02d}"
    last = calendar.monthrange(year, month)[1]
    if day == 0 and day_zero:
        return None
    if not 1 <= day <= last:
        return f"day {day:02d} of {year:04d}-{month:02d}"
    return None


# (start, end, highest value) of each two-digit part of a time linter.
_TIME_LIMITS = {
    "hh": ((0, 2, 23),),
    "mi": ((0, 2, 59),),
    "ss": ((0, 2, 59),),
    "hhmi": ((0, 2, 23), (2, 4, 59)),
}


def _lint(linter: str, data: str) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``data`` fails ``linter``; unknown linters pass."""
    if linter == "csum":
        if not data.isascii() or not data.isdigit() or len(data) < 2:
            return BAD_VALUE, f"{data!r} is not a number with a check digit"
        want = mod10_check_digit(data[:-1])
        if int(data[-1]) != want:
            return BAD_CHECK_DIGIT, f"{data}: check digit {data[-1]}, expected {want}"
        return None
    if linter == "csumalpha":
        pair = check_pair(data[:-2]) if len(data) >= 2 else None
        if pair is None:
            return BAD_VALUE, f"{data!r} cannot carry a check character pair"
        if data[-2:] != pair:
            return BAD_CHECK_PAIR, f"{data}: check characters {data[-2:]}, expected {pair}"
        return None
    if not data.isascii() or not data.isdigit():
        return BAD_VALUE, f"{data!r} is not numeric"
    if linter == "zero":
        return None if data == "0" else (BAD_VALUE, f"{data!r} must be 0")
    if linter in ("yymmd0", "yymmdd", "yyyymmdd"):
        year = int(data[:-4]) if linter == "yyyymmdd" else full_year(int(data[:2]))
        problem = _date_problem(year, int(data[-4:-2]), int(data[-2:]), day_zero=linter == "yymmd0")
        return None if problem is None else (BAD_DATE, f"{data}: {problem}")
    for start, end, most in _TIME_LIMITS.get(linter, ()):
        if int(data[start:end]) > most:
            return BAD_DATE, f"{data}: {data[start:end]} > {most}"
    return None


def violation(ai: str, value: str) -> Violation | None:
    """The first GS1 rule the element string ``(ai) value`` breaks, or ``None``. AIs without a
    check digit or date (and unknown AIs) always pass: their syntax is biip's to match."""
    components = _TABLE.get(ai)
    if components is None:
        return None
    for c in components:
        end = len(value) if c.length is None else c.start + c.length
        data = value[c.start : end]
        if not data and c.optional:
            continue
        if c.length is not None and len(data) != c.length:
            return Violation(ai, BAD_VALUE, f"({ai}) {value!r} too short")
        for linter in c.linters:
            found = _lint(linter, data)
            if found is not None:
                return Violation(ai, found[0], f"({ai}) {found[1]}")
    return None
