"""The real label strings of tests/data/barcodes/ against GS1's verdict, taken from outside our code:
gs1-syntax-engine's accept/reject (its ``Bad check digit`` notes), biip 5.2.0's own check-digit
errors, and, for the keys biip does not check (GRAI, GLN...), biip's mod-10 over the AIs of the
HRI biip derived. What GS1 accepts stays valid; what has a wrong check digit is flagged."""

from __future__ import annotations

import json
import re
from typing import Any

from biip.checksums import gs1_standard_check_digit

from firmware_bridge.scanner.parse import parse_scan
from tests.conftest import DATA

RECORDS: list[dict[str, Any]] = [
    json.loads(line) for line in (DATA / "barcodes" / "scans.jsonl").read_text(encoding="utf-8").splitlines()
]
# Check-digit spans of the keys, from the GS1 General Specifications' AI table (independent of
# gs1_checks' own table): AI -> (start, end) within the value.
KEY_SPANS = {
    "00": (0, 18),
    "01": (0, 14),
    "02": (0, 14),
    "03": (0, 14),
    "253": (0, 13),
    "255": (0, 13),
    "402": (0, 17),
    **{f"41{n}": (0, 13) for n in range(8)},
    "8003": (1, 14),
    "8006": (0, 14),
    "8017": (0, 18),
    "8018": (0, 18),
    "8026": (0, 14),
}
_HRI = re.compile(r"\((\d{2,4})\)([^(]*)")


def _mod10_ok(number: str) -> bool:
    return number.isdigit() and int(number[-1]) == gs1_standard_check_digit(number[:-1])


def _hri_bad_keys(hri: str) -> list[str]:
    bad = []
    for ai, value in _HRI.findall(hri):
        if ai in KEY_SPANS:
            start, end = KEY_SPANS[ai]
            if not _mod10_ok(value[start:end]):
                bad.append(ai)
    return bad


def test_gs1_syntax_engine_verdicts() -> None:
    """Accepted scans carry no error; the two it rejects for a bad check digit are flagged so."""
    flagged = []
    for r in (r for r in RECORDS if r["category"] == "gs1-scan-data"):
        e, scan = r["source_expectation"], parse_scan(r["scan"], 0.0)
        if e["accepted"]:
            assert "error" not in scan.fields, (r["id"], r["scan"], scan.fields)
        elif e["note"] == "Bad check digit":
            assert scan.kind == "unknown" and scan.fields["error"] == "bad_check_digit", r["id"]
            flagged.append(r["id"])
    assert flagged == ["D0161", "D0168"]


def test_biip_readings_with_good_keys_stay_valid_and_bad_keys_are_flagged() -> None:
    """Every GTIN/SSCC/element string biip read: if every key in it passes mod-10 (biip's), our
    reading has no error; if one fails (biip reads AI 410 and 8003 without checking), we flag it."""
    kept, flagged = 0, []
    for r in RECORDS:
        b = r["biip_5_2_0"]
        hri = b.get("gs1_hri") or b.get("gs1_digital_link_hri") or ""
        keys = [k for k in (b.get("gtin"), b.get("sscc")) if k]
        bad = _hri_bad_keys(hri) + [k for k in keys if not _mod10_ok(k)]
        if not hri and not keys:
            continue
        scan = parse_scan(r["scan"], 0.0)
        if bad:
            assert scan.kind == "unknown" and scan.fields["error"] == "bad_check_digit", (r["id"], scan)
            flagged.append(r["id"])
        else:
            assert "error" not in scan.fields, (r["id"], r["scan"], scan.fields)
            kept += 1
    print(f"\nbiip readings: {kept} with good keys kept, flagged {flagged}")
    assert flagged == ["D0050", "D0051", "D0106", "D0113"]  # GRAI, GLN, GRAI (with spaces), GTIN
    assert kept > 100


def test_biip_check_digit_errors_are_ours() -> None:
    """Where biip refused the whole string as a GTIN or SSCC for its check digit and found no other
    key, we say bad_check_digit too (only the error's wording is ours). Courier numbers are left out:
    a valid FedEx number is not a GTIN with a wrong check digit."""
    checked = []
    for r in (r for r in RECORDS if r["category"] != "courier-tracking-number"):
        b = r["biip_5_2_0"]
        errors = b.get("errors", {})
        said = [v for k, v in errors.items() if k in ("gtin_error", "sscc_error") and "check digit" in v]
        if not said or b.get("gtin") or b.get("sscc") or b.get("gs1_hri"):
            continue
        scan = parse_scan(r["scan"], 0.0)
        assert scan.fields.get("error") == "bad_check_digit", (r["id"], r["scan"], said, scan)
        assert re.search(r"expected (\d)", scan.fields["error_detail"]).group(1) in said[0], r["id"]  # type: ignore[union-attr]
        checked.append(r["id"])
    print(f"\nbiip's own check-digit refusals, ours too: {checked}")
    assert len(checked) >= 5


def test_courier_numbers_outside_gs1_are_untouched() -> None:
    """Valid courier numbers keep their reading; no error rides on any non-unknown scan."""
    for r in (r for r in RECORDS if r["category"] == "courier-tracking-number"):
        scan = parse_scan(r["scan"], 0.0)
        if r["source_expectation"]["valid"]:
            assert scan.kind == "tracking" and "error" not in scan.fields, r["id"]
