"""One scanner line to a :class:`Scan`: pure, deterministic, never raises.

The AIM symbology identifier (ISO/IEC 15424, ``]`` + code + modifier, e.g. ``]C1``, ``]d2``,
``]Q3``, ``]E0``) is split off first and kept in ``Scan.symbology``; it decides how the rest is
read. GS (0x1D) stands for FNC1 between GS1 element strings; ``|`` separates the linear and
composite parts of a GS1 composite symbol. GS1 content is parsed by biip's own parsers (called
one by one here so that an exception inside biip is a failed reading, never an escape).

Precedence, for content that several readings accept (all of them are cheap to try):

1. a GS1 Digital Link URI -> ``sscc`` when it carries AI 00, else ``gs1``;
2. a valid SSCC (18 bare digits, or AI 00 in an element string) -> ``sscc``: the parcel's own GS1
   identity, and FedEx's SSCC-18 format is that same number;
3. a bare GTIN/UPC with a valid check digit (unless the symbology says GS1 element string) ->
   ``gtin``: a GS1 check digit over the exact GTIN lengths is the world's commonest barcode;
4. a GS1 element string carrying a valid GTIN (AI 01) -> ``gs1``;
5. a courier tracking number whose check digit verifies -> ``tracking``: carriers print GS1-looking
   numbers (USPS ``92``/``94``/``420``, FedEx ``96``) whose leading digits biip would otherwise read
   as company-internal or postal AIs;
6. any other GS1 element string (only when no symbology identifier says the data is not GS1);
7. a courier number from a format without a check digit (a pattern only) -> ``tracking``;
8. otherwise ``unknown`` with the raw text.

Every GS1 reading is held to the GS1 rules biip does not enforce (:mod:`gs1_checks`): each check
digit (SSCC, GTIN, GLN, GDTI, GCN, GSIN, GRAI, ITIP, GSRN), the GMN/MUDI check character pair,
and every date and time. A reading that breaks one is not a reading: when nothing valid is left
the scan is ``unknown`` and its ``fields`` say why, ``error`` (a Rejects reason:
``bad_check_digit``, ``bad_check_pair``, ``bad_date``, ``bad_value``), ``error_detail`` (what was
read and what GS1 expects) and ``error_ai`` (absent for a bare SSCC/GTIN). ``raw`` is always kept;
callers count ``fields["error"]`` as a rejection (:func:`invalid_reason`). A bare number of GTIN or
SSCC length (8, 12, 13, 14, 18 digits) whose check digit fails is reported the same way, unless
another reading (a courier number) accepts it.

A reading that lost to a better one is listed in ``fields["also"]`` (``kind:detail`` joined by
``;``) so an ambiguous scan stays visible. EAN/UPC symbologies (``]E0``...) carry only GTINs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from firmware_bridge.scanner import gs1_prefixes

gs1_prefixes.install()  # before biip's first import: its company-prefix table costs ~20 MB

from biip import ParseConfig  # noqa: E402
from biip.gs1_digital_link_uris import GS1DigitalLinkURI  # noqa: E402
from biip.gs1_element_strings import GS1ElementStrings  # noqa: E402
from biip.gs1_messages import GS1Message  # noqa: E402
from biip.gtin import Gtin  # noqa: E402
from biip.sscc import Sscc  # noqa: E402
from biip.upc import Upc  # noqa: E402

from firmware_bridge.scanner import couriers, gs1_checks  # noqa: E402
from firmware_bridge.scanner.couriers import TrackingMatch  # noqa: E402
from firmware_bridge.scanner.gs1_checks import BAD_SYNTAX, Violation  # noqa: E402
from protocols.records import Scan  # noqa: E402

GS = "\x1d"
# Dates are checked by gs1_checks (biip would drop the whole message on one bad date, unexplained).
_CONFIG = ParseConfig(separator_chars=(GS,), gs1_element_strings_verify_date=False)
_AIM = re.compile(r"\](?:Y([0-9])|[A-Za-z][0-9A-Za-z])")
_EDGE_SPACE = " \t\r\n\v\f"  # not str.strip(): Python counts GS (0x1D) as whitespace
_DIGITS = re.compile(r"[0-9]+")

# AIM code + modifier -> how the data is to be read.
_GS1_MESSAGE = {"C1", "e0", "e1", "e2", "d2", "Q3", "J1"}
_GTIN_ONLY = {"E0", "E3", "E4", "I1"}
_COMPOSITE_PREFIXES = ("]e0", "]e1", "]e2")

T = TypeVar("T")


def _attempt(parse: Callable[[str], T], value: str) -> T | None:
    """One biip parser on one value; any exception from the library is a failed reading."""
    try:
        return parse(value)
    except Exception:  # biip raises ParseError, but also IndexError/ValueError on odd input
        return None


def split_symbology(text: str) -> tuple[str | None, str]:
    """``("]C1", rest)`` when the text starts with an AIM symbology identifier, else ``(None, text)``.

    The system-expansion code ``]Y<n>`` carries ``n + 1`` modifier characters, as in biip."""
    m = _AIM.match(text)
    if m is None:
        return None, text
    end = m.end()
    if m.group(1) is not None:
        end = min(len(text), 2 + int(m.group(1)) + 1)
    return text[:end], text[end:]


@dataclass(frozen=True, slots=True)
class _Gs1:
    """A parsed GS1 element-string message (or Digital Link) as flat fields."""

    fields: dict[str, str]
    hri: str
    has_sscc: bool
    has_gtin: bool
    problem: Violation | None


def _gs1_fields(elements: GS1ElementStrings) -> _Gs1 | None:
    if not elements:
        return None
    fields: dict[str, str] = {}
    has_sscc = has_gtin = False
    problem: Violation | None = None
    for es in elements:
        problem = problem or gs1_checks.violation(es.ai.ai, es.value)
        fields.setdefault(es.ai.ai, es.value)
        if es.date is not None:
            fields.setdefault(f"{es.ai.ai}.date", es.date.isoformat())
        if es.ai.ai == "00" and es.sscc is not None and "sscc" not in fields:
            fields["sscc"] = es.sscc.value
            has_sscc = True
        if es.ai.ai == "01" and es.gtin is not None and "gtin" not in fields:
            fields["gtin"] = es.gtin.value
            fields["gtin_format"] = es.gtin.format.name
            has_gtin = True
    hri = GS1Message.from_element_strings(elements).as_hri()
    fields["hri"] = hri
    return _Gs1(fields, hri, has_sscc, has_gtin, problem)


def _message(body: str) -> _Gs1 | None:
    message = _attempt(lambda v: GS1Message.parse(v, config=_CONFIG), body.lstrip(GS))
    return None if message is None else _gs1_fields(message.element_strings)


def _digital_link(body: str) -> _Gs1 | None:
    if not body[:8].lower().startswith(("http://", "https://")):
        return None
    uri = _attempt(lambda v: GS1DigitalLinkURI.parse(v, config=_CONFIG), body)
    return None if uri is None else _gs1_fields(uri.element_strings)


def _gtin(body: str, *, upc_e: bool = True) -> dict[str, str] | None:
    """A bare GTIN (8/12/13/14 digits), or a UPC-A/E when ``upc_e``, read as ``biip.parse`` does
    (an EAN/UPC symbology identifier makes biip read a GTIN only)."""
    if not _DIGITS.fullmatch(body):
        return None
    gtin = _attempt(lambda v: Gtin.parse(v, config=_CONFIG), body)
    upc = _attempt(lambda v: Upc.parse(v, config=_CONFIG), body) if upc_e or gtin is not None else None
    if gtin is None and upc is not None:
        gtin = _attempt(lambda v: Gtin.parse(v, config=_CONFIG), upc.as_upc_a())
    if gtin is None:
        return None
    fields = {"gtin": gtin.value, "gtin_format": gtin.format.name}
    if upc is None and gtin.format.name == "GTIN_12":
        upc = _attempt(lambda v: Upc.parse(v, config=_CONFIG), gtin.as_gtin_12())
    if upc is not None:
        fields["upc"] = upc.value
    return fields


def _sscc(body: str) -> dict[str, str] | None:
    if len(body) != 18 or not _DIGITS.fullmatch(body):
        return None
    sscc = _attempt(lambda v: Sscc.parse(v, config=_CONFIG), body)
    return None if sscc is None else {"sscc": sscc.value}


_BARE_KEYS = {8: "GTIN-8", 12: "GTIN-12", 13: "GTIN-13", 14: "GTIN-14", 18: "SSCC"}


def _bare_problem(body: str) -> Violation | None:
    """A bare number of GTIN or SSCC length whose GS1 check digit fails (not a reading at all)."""
    key = _BARE_KEYS.get(len(body))
    if key is None or not _DIGITS.fullmatch(body):
        return None
    want = gs1_checks.mod10_check_digit(body[:-1])
    if int(body[-1]) == want:
        return None
    return Violation("", gs1_checks.BAD_CHECK_DIGIT, f"{key} {body}: check digit {body[-1]}, expected {want}")


def _tracking_fields(m: TrackingMatch) -> dict[str, str]:
    fields = {
        "courier": m.courier,
        "tracking_number": m.tracking_number,
        "format": m.format_id,
        "check_digit": "verified" if m.checked else "none",
    }
    optional = {
        "service": m.service,
        "courier_name": m.courier_name,
        "country": m.country,
        "destination_zip": m.destination_zip,
        "shipper_id": m.shipper_id,
    }
    fields.update({k: v for k, v in optional.items() if v})
    return fields


def _composite(mode: str, body: str) -> tuple[str, _Gs1 | None]:
    """Split a GS1 composite ``linear|2D`` into the linear part and the 2D part's elements."""
    if mode not in ("gs1", "gtin") or "|" not in body:
        return body, None
    linear, component = body.split("|", 1)
    if component.startswith(_COMPOSITE_PREFIXES):
        component = component[3:]
    return linear, _message(component)


def _merge(primary: dict[str, str], component: _Gs1 | None) -> dict[str, str]:
    if component is None:
        return primary
    merged = dict(primary)
    if "hri" not in merged and "gtin" in merged:  # the linear part is an EAN/UPC: AI 01 in HRI
        merged["01"] = merged["gtin"].zfill(14)
        merged["hri"] = f"(01){merged['01']}"
    for key, value in component.fields.items():
        if key == "hri":
            merged["hri"] = merged.get("hri", "") + value
        else:
            merged.setdefault(key, value)
    return merged


def _mode(symbology: str | None) -> str:
    if symbology is None:
        return "any"
    code = symbology[1:]
    if code in _GS1_MESSAGE:
        return "gs1"
    if code in _GTIN_ONLY:
        return "gtin"
    return "data"


_Reading = tuple[str, dict[str, str], str]


def _readings(mode: str, body: str) -> tuple[list[_Reading], Violation | None]:
    """Every valid reading of the body in precedence order, as ``(kind, fields, short detail)``,
    and the first GS1 rule broken by a reading that was dropped for it."""
    out: list[_Reading] = []
    if not body:
        return out, None
    if mode == "gtin":
        gtin = _gtin(body, upc_e=False)
        if gtin is not None:
            out.append(("gtin", gtin, gtin["gtin"]))
        return out, None if gtin is not None else _bare_problem(body)
    link = _digital_link(body)
    if link is not None:
        if link.problem is None:
            out.append(("sscc" if link.has_sscc else "gs1", link.fields, link.hri))
        return out, link.problem
    message = _message(body) if mode != "data" else None
    problem = None
    if message is not None and message.problem is not None:
        problem, message = message.problem, None
    bare_sscc = _sscc(body) if mode != "gs1" else None
    if bare_sscc is not None:
        out.append(("sscc", bare_sscc, bare_sscc["sscc"]))
    if message is not None and message.has_sscc:
        out.append(("sscc", message.fields, message.hri))
    bare_gtin = _gtin(body) if mode != "gs1" else None
    if bare_gtin is not None:
        out.append(("gtin", bare_gtin, bare_gtin["gtin"]))
    if mode != "gs1" and bare_sscc is None and bare_gtin is None:  # digits of exactly a key's length
        problem = _bare_problem(body) or problem  # are that key, rather than element strings
    if message is not None and message.has_gtin and not message.has_sscc:
        out.append(("gs1", message.fields, message.hri))
    tracking = couriers.recognise_all(body) if GS not in body else []
    for m in tracking:
        if m.checked:
            out.append(("tracking", _tracking_fields(m), f"{m.courier}/{m.format_id}"))
    if message is not None and not message.has_gtin and not message.has_sscc:
        out.append(("gs1", message.fields, message.hri))
    for m in tracking:
        if not m.checked:
            out.append(("tracking", _tracking_fields(m), f"{m.courier}/{m.format_id}"))
    return out, problem


def invalid_reason(scan: Scan) -> str | None:
    """The Rejects reason of a scan that broke a GS1 rule (``fields["error"]``), else ``None``."""
    return scan.fields.get("error")


def _invalid(raw: str, time: float, symbology: str | None, problem: Violation) -> Scan:
    fields = {"error": problem.reason, "error_detail": problem.detail}
    if problem.ai:
        fields["error_ai"] = problem.ai
    return Scan(time=time, raw=raw, kind="unknown", fields=fields, symbology=symbology)


def parse_scan(raw: str, time: float) -> Scan:
    """Classify and parse one scanner line (without its terminator). Never raises."""
    symbology, body = split_symbology(raw.strip(_EDGE_SPACE))
    mode = _mode(symbology)
    body = body.strip(_EDGE_SPACE)
    linear, component = _composite(mode, body)
    readings, problem = _readings(mode, linear)
    if component is not None and component.problem is not None:
        return _invalid(raw, time, symbology, component.problem)
    if not readings:
        if problem is None and mode == "gs1" and body:  # e.g. a date with month 13, a cut-off field
            problem = Violation("", BAD_SYNTAX, "not a valid GS1 element string")
        if problem is not None:
            return _invalid(raw, time, symbology, problem)
        return Scan(time=time, raw=raw, kind="unknown", symbology=symbology)
    kind, fields, _ = readings[0]
    if component is not None:
        fields = _merge(fields, component)
        kind = "sscc" if kind == "sscc" else "gs1"
    others = [f"{k}:{detail}" for k, _, detail in readings[1:]]
    if others:
        fields = {**fields, "also": ";".join(others)}
    return Scan(time=time, raw=raw, kind=kind, fields=fields, symbology=symbology)
