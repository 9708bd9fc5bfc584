"""Courier tracking numbers, recognised with the definitions of ``tracking_number_data``.

The definitions ship as package data in ``couriers/*.json`` (MIT, see the LICENSE file there).
They are read and their regexes compiled once, at import. A number is recognised the way the
reference implementation (the ``tracking_number`` Ruby gem) does it: spaces removed, upper-cased,
the whole string matched against each format's regex, then the format's check digit and its
``additional.exists`` lookups validated. A number whose check digit is wrong is never returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

# serial number, check digit, the checksum's own definition -> valid?
Checksum = Callable[[str, str, Mapping[str, Any]], bool]

_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>")  # Ruby/PCRE (?<name>...) -> (?P<name>...)
_WHITESPACE = re.compile(r"\s+", re.ASCII)  # Ruby's \s: GS (0x1D) is not whitespace


def _digit(c: str) -> int:
    """Ruby's ``String#to_i`` on one character: its value if a digit, else 0."""
    return int(c) if "0" <= c <= "9" else 0


def _mod10(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    """Weighted mod-10: weights alternate from the left (or the right with ``reverse``); letters
    (UPS) count as ``(ord - 3) % 10``."""
    chars = serial[::-1] if spec.get("reverse") else serial
    odds, evens = spec.get("odds_multiplier"), spec.get("evens_multiplier")
    total = 0
    for i, c in enumerate(chars):
        x = int(c) if "0" <= c <= "9" else (ord(c) - 3) % 10
        if odds is not None and i % 2 == 1:
            x *= int(odds)
        elif evens is not None and i % 2 == 0:
            x *= int(evens)
        total += x
    return (-total) % 10 == _digit(check) and check.isdigit()


def _mod7(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    return serial.isdigit() and check.isdigit() and int(serial) % 7 == int(check)


def _s10(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    """UPU S10: weighted sum mod 11; remainder 0 gives 5, remainder 1 gives 0."""
    weights: Sequence[int] = spec.get("weightings") or (8, 6, 4, 2, 3, 5, 9, 7)
    modulo = int(spec.get("modulo", 11))
    remainder = sum(_digit(c) * w for c, w in zip(serial, weights, strict=False)) % modulo
    expected = 5 if remainder == 0 else 0 if remainder == 1 else modulo - remainder
    return check.isdigit() and expected == int(check)


def _sum_product(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    weights: Sequence[int] = spec["weightings"]
    total = sum(_digit(c) * w for c, w in zip(serial, weights, strict=False))
    return check.isdigit() and total % int(spec["modulo1"]) % int(spec["modulo2"]) == int(check)


def _luhn(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    total = 0
    for i, c in enumerate(reversed(serial)):
        x = _digit(c) * (2 if i % 2 == 0 else 1)
        total += x - 9 if x > 9 else x
    return check.isdigit() and (-total) % 10 == int(check)


def _mod_37_36(serial: str, check: str, spec: Mapping[str, Any]) -> bool:
    """ISO 7064 MOD 37,36 (hybrid), as the DPD parcel label specification defines it."""
    alphabet: str = spec.get("alphabet") or "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    mod = int(spec.get("modulo", 36))
    cd = mod
    for c in serial:
        value = alphabet.find(c)
        cd += max(value, 0)
        if cd > mod:
            cd -= mod
        cd *= 2
        if cd > mod:
            cd -= mod + 1
    cd = mod + 1 - cd
    if cd == mod:
        cd = 0
    return 0 <= cd < len(alphabet) and alphabet[cd] == check


CHECKSUMS: dict[str, Checksum] = {
    "mod10": _mod10,
    "mod7": _mod7,
    "s10": _s10,
    "sum_product_with_weightings_and_modulo": _sum_product,
    "luhn": _luhn,
    "mod_37_36": _mod_37_36,
}


@dataclass(frozen=True, slots=True)
class Lookup:
    """One ``additional`` table: the value of a regex group looked up in a list of entries."""

    name: str
    group: str
    entries: tuple[Mapping[str, Any], ...]
    patterns: tuple[re.Pattern[str] | None, ...]

    def find(self, value: str) -> Mapping[str, Any] | None:
        for entry, pattern in zip(self.entries, self.patterns, strict=True):
            if pattern is not None:
                if pattern.search(value):
                    return entry
            elif entry.get("matches") == value:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class TrackingFormat:
    """One tracking-number format of one courier, compiled."""

    courier: str
    courier_name: str
    format_id: str
    name: str
    pattern: re.Pattern[str]
    checksum: Checksum | None
    checksum_spec: Mapping[str, Any]
    prepend: tuple[re.Pattern[str], str] | None
    lookups: tuple[Lookup, ...]
    required: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TrackingMatch:
    """A recognised tracking number. ``checked`` is False for formats that carry no check digit
    (a pattern match only, weaker evidence)."""

    courier: str
    format_id: str
    tracking_number: str
    checked: bool
    service: str | None = None
    courier_name: str | None = None
    country: str | None = None
    destination_zip: str | None = None
    shipper_id: str | None = None


def _compile(regex: str | list[str]) -> re.Pattern[str]:
    text = "".join(regex) if isinstance(regex, list) else regex
    return re.compile(_NAMED_GROUP.sub(r"(?P<\1>", text), re.ASCII)


def _format(courier: Mapping[str, Any], spec: Mapping[str, Any]) -> TrackingFormat:
    validation: Mapping[str, Any] = spec.get("validation") or {}
    checksum_spec: Mapping[str, Any] = validation.get("checksum") or {}
    checksum = None
    if checksum_spec:
        if checksum_spec["name"] not in CHECKSUMS:
            raise ValueError(f"{courier['courier_code']}: unknown checksum {checksum_spec['name']!r}")
        checksum = CHECKSUMS[checksum_spec["name"]]
    prepend_if = (validation.get("serial_number_format") or {}).get("prepend_if")
    prepend = (re.compile(prepend_if["matches_regex"]), str(prepend_if["content"])) if prepend_if else None
    lookups = tuple(
        Lookup(
            name=a["name"],
            group=a["regex_group_name"],
            entries=tuple(a["lookup"]),
            patterns=tuple(
                re.compile(e["matches_regex"]) if "matches_regex" in e else None for e in a["lookup"]
            ),
        )
        for a in spec.get("additional") or ()
    )
    return TrackingFormat(
        courier=courier["courier_code"],
        courier_name=courier["name"],
        format_id=spec.get("id") or spec["name"],
        name=spec["name"],
        pattern=_compile(spec["regex"]),
        checksum=checksum,
        checksum_spec=checksum_spec,
        prepend=prepend,
        lookups=lookups,
        required=tuple((validation.get("additional") or {}).get("exists") or ()),
    )


def load_formats() -> tuple[TrackingFormat, ...]:
    """Every format of every shipped definition, in file-name order then the file's own order."""
    folder = resources.files(__package__ or "firmware_bridge.scanner") / "couriers"
    entries = sorted((p for p in folder.iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    formats: list[TrackingFormat] = []
    for entry in entries:
        courier = json.loads(entry.read_text(encoding="utf-8"))
        formats.extend(_format(courier, spec) for spec in courier["tracking_numbers"])
    return tuple(formats)


FORMATS = load_formats()


def _group(m: re.Match[str], name: str) -> str | None:
    if name not in m.re.groupindex:
        return None
    value = m.group(name)
    return None if value is None else _WHITESPACE.sub("", value)


def _match(fmt: TrackingFormat, number: str) -> TrackingMatch | None:
    m = fmt.pattern.fullmatch(number)
    if m is None:
        return None
    serial = _group(m, "SerialNumber")
    if serial is None:
        return None
    if fmt.prepend is not None and fmt.prepend[0].search(serial):
        serial = fmt.prepend[1] + serial
    check_digit = _group(m, "CheckDigit") or ""
    if fmt.checksum is not None and not fmt.checksum(serial, check_digit, fmt.checksum_spec):
        return None
    found: dict[str, Mapping[str, Any]] = {}
    for lookup in fmt.lookups:
        value = _group(m, lookup.group)
        entry = lookup.find(value) if value is not None else None
        if entry is not None:
            found[lookup.name] = entry
    if not all(name in found for name in fmt.required):
        return None
    service = found.get("Service Type", {}).get("name")
    courier_entry = found.get("Courier", {})
    country = courier_entry.get("country") or found.get("Country Code", {}).get("country")
    return TrackingMatch(
        courier=fmt.courier,
        format_id=fmt.format_id,
        tracking_number=number,
        checked=fmt.checksum is not None,
        service=service,
        courier_name=courier_entry.get("courier") or fmt.courier_name,
        country=country,
        destination_zip=_group(m, "DestinationZip"),
        shipper_id=_group(m, "ShipperId"),
    )


def normalise(text: str) -> str:
    """What the reference implementation matches: no whitespace, upper case."""
    return _WHITESPACE.sub("", text).upper()


_DIGIT_SET = "0123456789"
_LETTER_SET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _freedom(fmt: TrackingFormat, number: str) -> int:
    """How many one-character variants of ``number`` (a digit for a digit, a letter for a letter)
    the format's pattern still accepts. Fewer means the format pins down more of this number:
    USPS ``420``/``92`` prefixes against FedEx's any-digit 34, Purolator's ``[0-5]`` first digit
    against FedEx's any-digit 12."""
    count = 0
    for i, c in enumerate(number):
        alphabet = _DIGIT_SET if c.isdigit() else _LETTER_SET if c.isalpha() else ""
        for other in alphabet:
            if other != c and fmt.pattern.fullmatch(number[:i] + other + number[i + 1 :]):
                count += 1
    return count


def recognise_all(text: str) -> list[TrackingMatch]:
    """Every format the text is a valid tracking number of, best first: check-digit formats before
    pattern-only ones; among several, the most specific pattern (see :func:`_freedom`) first, then
    definition order."""
    number = normalise(text)
    if not number or not number.isascii():
        return []
    found = [(fmt, m) for fmt, m in ((fmt, _match(fmt, number)) for fmt in FORMATS) if m is not None]
    if len(found) > 1:
        ranked = sorted(
            enumerate(found), key=lambda item: (not item[1][1].checked, _freedom(item[1][0], number), item[0])
        )
        found = [pair for _, pair in ranked]
    return [m for _, m in found]
