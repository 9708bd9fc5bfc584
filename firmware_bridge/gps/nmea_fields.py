"""The per-byte and per-field work of NMEA 0183 decoding: framing, checksum, numbers, times, dates.

This is the hot path of the GPS driver (every byte of every sentence passes through :func:`frame`),
so it is written in Cython's pure-Python mode: ``setup.py`` compiles it, and the same file runs
unchanged as plain Python where no compiler is present. Every function is total: malformed input
gives a status code, NaN or -1, never an exception, so callers count it instead of crashing.
"""

from __future__ import annotations

import cython

# frame() status codes.
OK: cython.int = 0
NO_CHECKSUM: cython.int = 1  # "$...<end>" with no "*hh": gpsd accepts these
EMPTY: cython.int = 2  # only whitespace
COMMENT: cython.int = 3  # "#..." (gpsd treats these as comment packets)
NOT_NMEA: cython.int = 4  # no "$" at all
BINARY: cython.int = 5  # control or non-ASCII bytes inside the sentence
BAD_CHECKSUM: cython.int = 6
OVERLONG: cython.int = 7
TRUNCATED: cython.int = 8  # cut short by the "$" of the next sentence

# gpsd's NMEA_MAX: longer "sentences" are two sentences run together (seen on Garmin GPS-10).
MAX_SENTENCE: cython.Py_ssize_t = 102
NAN: cython.double = float("nan")


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _hex(c: cython.uchar) -> cython.int:
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _space(c: cython.uchar) -> cython.bint:
    """What ``bytes.strip()`` strips: space, tab, LF, VT, FF, CR."""
    return c == 32 or 9 <= c <= 13


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _two_digits(s: str, at: cython.Py_ssize_t) -> cython.int:
    """The two-digit number at ``s[at:at+2]``; -1 unless both are ASCII digits."""
    a: cython.Py_UCS4 = s[at]
    b: cython.Py_UCS4 = s[at + 1]
    if a < "0" or a > "9" or b < "0" or b > "9":
        return -1
    return (ord(a) - 48) * 10 + (ord(b) - 48)


@cython.ccall
def frame(line: bytes, start: cython.Py_ssize_t = 0) -> tuple[int, str, int]:
    """Find one sentence in ``line[start:]`` and verify its checksum.

    Returns ``(status, body, resume)``: ``body`` is the text between ``$`` and ``*`` (talker and
    fields) for OK and NO_CHECKSUM, else ``""``; ``resume`` is the index of a further ``$`` that
    starts another sentence on the same line (two sentences run together), else -1. Leading
    junk, leading spaces and a doubled ``$$`` are skipped, as gpsd's packet lexer does.
    """
    p: cython.p_const_uchar = line
    n: cython.Py_ssize_t = len(line)
    i: cython.Py_ssize_t = start
    c: cython.uchar
    # surrounding whitespace (CR, LF, spaces, tabs) is not content; NUL and other controls are
    while n > i and _space(p[n - 1]):
        n -= 1
    while i < n and _space(p[i]):
        i += 1
    if n <= i:
        return (EMPTY, "", -1)
    if p[i] == 35:  # '#'
        return (COMMENT, "", -1)
    while i < n and p[i] != 36:  # '$'
        i += 1
    if i >= n:
        return (NOT_NMEA, "", -1)
    while i < n and p[i] == 36:  # "$$" doubling
        i += 1
    body_start: cython.Py_ssize_t = i
    csum: cython.int = 0
    j: cython.Py_ssize_t = i
    binary: cython.bint = False
    while j < n:
        c = p[j]
        if c == 42:  # '*'
            break
        if c == 36:  # '$': the next sentence starts here
            return (TRUNCATED, "", j)
        if c < 32 or c > 126:
            binary = True
        csum ^= c
        j += 1
    body_end: cython.Py_ssize_t = j
    # a "$" after the checksum also starts another sentence
    k: cython.Py_ssize_t = j
    resume: cython.Py_ssize_t = -1
    while k < n:
        if p[k] == 36:
            resume = k
            break
        k += 1
    end: cython.Py_ssize_t = n if resume < 0 else resume
    if binary:
        return (BINARY, "", resume)
    if body_end - body_start + 1 > MAX_SENTENCE:
        return (OVERLONG, "", resume)
    if body_end >= end:
        return (NO_CHECKSUM, line[body_start:body_end].decode("ascii"), resume)
    # exactly "*hh" then nothing but whitespace up to the end (or the next "$")
    t: cython.Py_ssize_t = end
    while t > body_end and _space(p[t - 1]):
        t -= 1
    if t - body_end != 3:
        return (BAD_CHECKSUM, "", resume)
    hi: cython.int = _hex(p[body_end + 1])
    lo: cython.int = _hex(p[body_end + 2])
    if hi < 0 or lo < 0 or (hi << 4 | lo) != csum:
        return (BAD_CHECKSUM, "", resume)
    return (OK, line[body_start:body_end].decode("ascii"), resume)


@cython.ccall
@cython.exceptval(check=False)
def checksum(body: bytes) -> cython.int:
    """XOR of the bytes between ``$`` and ``*``: what the ``*hh`` of a sentence must say."""
    p: cython.p_const_uchar = body
    n: cython.Py_ssize_t = len(body)
    i: cython.Py_ssize_t
    s: cython.int = 0
    for i in range(n):
        s ^= p[i]
    return s


@cython.ccall
@cython.exceptval(check=False)
def decimal(s: str) -> cython.double:
    """A strictly formatted decimal (``-12.5``, ``3``, ``.5``); NaN for anything else.

    Stricter than ``float()``, which would also take ``nan``, ``1e9``, ``1_0`` or spaces: none of
    those is a number a receiver sends, so they mean corruption.
    """
    n: cython.Py_ssize_t = len(s)
    i: cython.Py_ssize_t = 0
    neg: cython.bint = False
    mant: cython.longlong = 0
    scale: cython.double = 1.0
    digits: cython.int = 0
    ch: cython.Py_UCS4
    if n == 0:
        return NAN
    ch = s[0]
    if ch == "-" or ch == "+":
        neg = ch == "-"
        i = 1
    while i < n:
        ch = s[i]
        if ch < "0" or ch > "9":
            break
        mant = mant * 10 + (ord(ch) - 48) if digits < 18 else mant
        digits += 1
        i += 1
    if i < n:
        if s[i] != ".":
            return NAN
        i += 1
        while i < n:
            ch = s[i]
            if ch < "0" or ch > "9":
                return NAN
            if digits < 18:
                mant = mant * 10 + (ord(ch) - 48)
                scale *= 10.0
            digits += 1
            i += 1
    if digits == 0:
        return NAN
    if digits > 15:
        value: cython.double = float(s)  # well-formed but beyond exact integer arithmetic
        return value
    # both exactly representable, so one division gives the correctly rounded value (2.72, not
    # 2.7199999999999998 as summing digit by digit would)
    return -(mant / scale) if neg else mant / scale


@cython.ccall
@cython.exceptval(check=False)
def ddmm_to_degrees(s: str, max_degrees: cython.int) -> cython.double:
    """``ddmm.mmmm`` (or ``dddmm.mmmm``) to unsigned degrees; NaN if malformed or out of range.

    Like gpsd, a decimal point is required, and the integer and fractional minutes are kept apart
    until the end so that 4404.13387 does not pick up binary rounding from 4404 x 0.01.
    """
    n: cython.Py_ssize_t = len(s)
    i: cython.Py_ssize_t = 0
    ipart: cython.longlong = 0
    frac: cython.longlong = 0
    scale: cython.double = 1.0
    ch: cython.Py_UCS4
    intdigits: cython.int = 0
    while i < n:
        ch = s[i]
        if ch < "0" or ch > "9":
            break
        if intdigits >= 6:
            return NAN
        ipart = ipart * 10 + (ord(ch) - 48)
        intdigits += 1
        i += 1
    if i >= n or s[i] != "." or intdigits < 3:
        return NAN
    i += 1
    while i < n:
        ch = s[i]
        if ch < "0" or ch > "9":
            return NAN
        if scale < 1e15:
            frac = frac * 10 + (ord(ch) - 48)
            scale *= 10.0
        i += 1
    degrees: cython.longlong = ipart // 100
    minutes: cython.longlong = ipart - degrees * 100
    if minutes >= 60:
        return NAN
    value: cython.double = (minutes + frac / scale) * (1.0 / 60.0) + degrees
    if value > max_degrees:
        return NAN
    return value


@cython.ccall
@cython.exceptval(check=False)
def hhmmss_to_seconds(s: str) -> cython.double:
    """``hhmmss`` or ``hhmmss.ss...`` to seconds of the UTC day; NaN if malformed or impossible.

    Second 60 is allowed (a leap second); hour 24 or minute 60 is not.
    """
    n: cython.Py_ssize_t = len(s)
    i: cython.Py_ssize_t
    ch: cython.Py_UCS4
    if n < 6:
        return NAN
    hh: cython.int = _two_digits(s, 0)
    mm: cython.int = _two_digits(s, 2)
    ss: cython.int = _two_digits(s, 4)
    if hh < 0 or mm < 0 or ss < 0 or hh > 23 or mm > 59 or ss > 60:
        return NAN
    frac: cython.longlong = 0
    scale: cython.double = 1.0
    if n > 6:
        if s[6] != "." or n > 16:
            return NAN
        for i in range(7, n):
            ch = s[i]
            if ch < "0" or ch > "9":
                return NAN
            frac = frac * 10 + (ord(ch) - 48)
            scale *= 10.0
    return hh * 3600.0 + mm * 60.0 + ss + frac / scale


@cython.ccall
@cython.exceptval(check=False)
def days_from_civil(year: cython.int, month: cython.int, day: cython.int) -> cython.longlong:
    """Days since 1970-01-01 of a proleptic Gregorian date; -1 if the date does not exist
    (month 13, 30 February, day 0) or is before 1970."""
    if month < 1 or month > 12 or day < 1 or year < 1970 or year > 9999:
        return -1
    leap: cython.bint = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    mdays: cython.int = 31
    if month == 2:
        mdays = 29 if leap else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        mdays = 30
    if day > mdays:
        return -1
    # Howard Hinnant's days_from_civil
    y: cython.longlong = year - (1 if month <= 2 else 0)
    era: cython.longlong = y // 400
    yoe: cython.longlong = y - era * 400
    mp: cython.longlong = (month + 9) % 12
    doy: cython.longlong = (153 * mp + 2) // 5 + day - 1
    doe: cython.longlong = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@cython.ccall
@cython.exceptval(check=False)
def ddmmyy_to_days(s: str) -> cython.longlong:
    """RMC's ``ddmmyy`` to days since 1970-01-01; -1 if malformed or impossible.

    The century follows gpsd: 2000 + yy, wrapping to the 1900s from 2080 on (so 99 is 1999).
    """
    if len(s) != 6:
        return -1
    dd: cython.int = _two_digits(s, 0)
    mo: cython.int = _two_digits(s, 2)
    yy: cython.int = _two_digits(s, 4)
    if dd < 0 or mo < 0 or yy < 0:
        return -1
    year: cython.int = 2000 + yy
    if year >= 2080:
        year -= 100
    return days_from_civil(year, mo, dd)


@cython.ccall
@cython.exceptval(check=False)
def small_int(s: str) -> cython.int:
    """A non-negative integer of at most 9 digits; -1 if empty or malformed."""
    n: cython.Py_ssize_t = len(s)
    i: cython.Py_ssize_t
    v: cython.int = 0
    ch: cython.Py_UCS4
    if n == 0 or n > 9:
        return -1
    for i in range(n):
        ch = s[i]
        if ch < "0" or ch > "9":
            return -1
        v = v * 10 + (ord(ch) - 48)
    return v


# sentence_kind() codes: the sentence types a fix is made of, in one small integer each.
KIND_OTHER: cython.int = 0  # a well-formed talker sentence of a type that carries no fix (GSV, TXT)
KIND_GGA: cython.int = 1
KIND_RMC: cython.int = 2
KIND_GLL: cython.int = 3
KIND_GNS: cython.int = 4
KIND_VTG: cython.int = 5
KIND_GSA: cython.int = 6
KIND_ZDA: cython.int = 7
KIND_NONE: cython.int = -1  # proprietary ($P...) or a tag that is not talker + 3 letters


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _is3(a: cython.Py_UCS4, b: cython.Py_UCS4, c: cython.Py_UCS4, s: str) -> cython.bint:
    return s[2] == a and s[3] == b and s[4] == c


@cython.ccall
@cython.exceptval(check=False)
def sentence_kind(body: str) -> cython.int:
    """The type of a sentence from its tag (the text before the first comma), without splitting it.

    The tag must be exactly five characters (two of talker, three of type) and not proprietary
    (``P...``): anything else is KIND_NONE. Known types get their KIND_ code; other well-formed
    tags KIND_OTHER.
    """
    n: cython.Py_ssize_t = len(body)
    if n < 5 or (n > 5 and body[5] != ",") or body[0] == "P":
        return KIND_NONE
    i: cython.Py_ssize_t
    for i in range(5):
        if body[i] == ",":
            return KIND_NONE
    if _is3("G", "G", "A", body):
        return KIND_GGA
    if _is3("R", "M", "C", body):
        return KIND_RMC
    if _is3("G", "S", "A", body):
        return KIND_GSA
    if _is3("V", "T", "G", body):
        return KIND_VTG
    if _is3("G", "L", "L", body):
        return KIND_GLL
    if _is3("G", "N", "S", body):
        return KIND_GNS
    if _is3("Z", "D", "A", body):
        return KIND_ZDA
    return KIND_OTHER


@cython.ccall
@cython.exceptval(check=False)
def used_prns(fields: list[str], start: cython.Py_ssize_t, stop: cython.Py_ssize_t) -> cython.int:
    """How many of ``fields[start:stop]`` name a satellite (a PRN: a positive integer), as
    GSA lists the satellites used in the fix; empty and malformed slots count as unused."""
    count: cython.int = 0
    i: cython.Py_ssize_t
    if stop > len(fields):
        stop = len(fields)
    for i in range(start, stop):
        if small_int(fields[i]) > 0:
            count += 1
    return count
