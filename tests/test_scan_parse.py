"""parse_scan against the 295 real scan strings of tests/data/barcodes/scans.jsonl, each checked
against its own source's expectation: the courier definitions' valid/invalid test numbers, biip
5.2.0's GTIN/SSCC, and gs1-syntax-engine's accept/reject with the FNC1-normalised data it derives."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_messages import GS1Message

from firmware_bridge.scanner import couriers
from firmware_bridge.scanner.parse import parse_scan, split_symbology
from protocols.records import Scan
from tests.conftest import DATA

BARCODES = DATA / "barcodes"
RECORDS: list[dict[str, Any]] = [
    json.loads(line) for line in (BARCODES / "scans.jsonl").read_text(encoding="utf-8").splitlines()
]
KINDS = {"sscc", "gtin", "gs1", "tracking", "unknown"}


def _of(category: str) -> list[dict[str, Any]]:
    return [r for r in RECORDS if r["category"] == category]


def test_the_data_is_what_the_readme_says() -> None:
    assert len(RECORDS) == 295
    assert Counter(r["category"] for r in RECORDS) == {
        "biip-test-input": 131,
        "courier-tracking-number": 124,
        "gs1-scan-data": 40,
    }


def test_every_record_parses_without_raising() -> None:
    for i, r in enumerate(RECORDS):
        scan = parse_scan(r["scan"], float(i))
        assert isinstance(scan, Scan)
        assert scan.kind in KINDS
        assert scan.raw == r["scan"]
        assert scan.time == float(i)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in scan.fields.items())


def test_courier_expectations_all_match() -> None:
    """Valid numbers come out as ``tracking`` of that courier and format; an invalid one is never
    ``tracking`` of the courier it imitates (it may be something else: D0254, fifteen zeros, is a
    valid FedEx Ground number with check digit 0)."""
    records = _of("courier-tracking-number")
    mismatches, elsewhere = [], []
    for r in records:
        e = r["source_expectation"]
        scan = parse_scan(r["scan"], 0.0)
        is_tracking = scan.kind == "tracking"
        same_courier = is_tracking and scan.fields["courier"] == e["courier"]
        if e["valid"]:
            ok = same_courier and scan.fields["format"] == e["format_id"]
        else:
            ok = not same_courier
            if is_tracking:
                got = f"{scan.fields['courier']}/{scan.fields['format']}"
                elsewhere.append(f"{r['id']} {r['scan']!r} -> {got}")
        if not ok:
            mismatches.append(f"{r['id']} {r['scan']!r} expected {e} got {scan.kind} {scan.fields}")
    valid = sum(r["source_expectation"]["valid"] for r in records)
    print(
        f"\ncourier expectations: {len(records) - len(mismatches)}/{len(records)} agree "
        f"({valid} valid, {len(records) - valid} invalid)"
    )
    for line in elsewhere:
        print(f"  invalid for its courier, valid for another: {line}")
    assert not mismatches, "\n".join(mismatches)


def test_invalid_check_digit_is_never_tracking_of_that_format() -> None:
    """Change the check digit of every valid checked courier number to each other digit: that
    format must refuse every one of them."""
    formats = {f.format_id: f for f in couriers.FORMATS}
    changed = 0
    for r in _of("courier-tracking-number"):
        e = r["source_expectation"]
        fmt = formats[e["format_id"]]
        number = couriers.normalise(r["scan"])
        m = fmt.pattern.fullmatch(number)
        if not e["valid"] or fmt.checksum is None or m is None or not m.group("CheckDigit").isdigit():
            continue
        at = m.start("CheckDigit")
        for d in "0123456789":
            if d != number[at]:
                bad = number[:at] + d + number[at + 1 :]
                assert all(m.format_id != e["format_id"] for m in couriers.recognise_all(bad)), bad
                changed += 1
    print(f"\n{changed} numbers with a wrong check digit refused by their format")
    assert changed > 500


def test_gtin_and_sscc_agree_with_biip() -> None:
    """On biip's own test inputs our GTIN and SSCC are biip 5.2.0's, record by record."""
    records = _of("biip-test-input")
    disagree, hri_same, hri_total = [], 0, 0
    for r in records:
        b = r["biip_5_2_0"]
        scan = parse_scan(r["scan"], 0.0)
        for key in ("gtin", "sscc"):
            if scan.fields.get(key) != b.get(key):
                ours, theirs = scan.fields.get(key), b.get(key)
                disagree.append(f"{r['id']} {r['scan']!r} {key}: ours {ours} biip {theirs}")
        hri = b.get("gs1_digital_link_hri") or b.get("gs1_hri")
        if hri:
            hri_total += 1
            hri_same += scan.fields.get("hri") == hri or f"gs1:{hri}" in scan.fields.get("also", "")
    print(
        f"\nbiip-test-input: GTIN+SSCC agree on {len(records) - len(disagree)}/{len(records)}; "
        f"biip's GS1 HRI found (as the reading or in 'also') on {hri_same}/{hri_total}"
    )
    assert not disagree, "\n".join(disagree)


# Where we read a GTIN that biip 5.2.0 does not, and why.
BEYOND_BIIP = {
    "D0141": "GS1 Digital Link behind ]Q1 (plain QR): biip tries Digital Link only without an identifier",
    "D0142": "the same, with a mixed-case scheme",
    "D0148": "the same behind ]d1 (plain Data Matrix)",
    "D0152": "GS1 DotCode ]J1: biip raises on the J code character",
    "D0163": "GS1 composite EAN-13|CC: biip does not split at |",
}


def test_gtin_and_sscc_agree_with_biip_overall() -> None:
    """Over all 295 records we read every GTIN and SSCC biip reads, and more only in BEYOND_BIIP."""
    differ = {}
    for r in RECORDS:
        b = r["biip_5_2_0"]
        scan = parse_scan(r["scan"], 0.0)
        if any(scan.fields.get(k) != b.get(k) for k in ("gtin", "sscc")):
            differ[r["id"]] = (b.get("gtin"), b.get("sscc"), scan.fields.get("gtin"), scan.fields.get("sscc"))
    print(f"\nall records: GTIN+SSCC equal to biip on {len(RECORDS) - len(differ)}/{len(RECORDS)}")
    for id_, reason in BEYOND_BIIP.items():
        print(f"  {id_} {differ.get(id_)}: {reason}")
    assert set(differ) == set(BEYOND_BIIP)
    assert all(biip_gtin is None and biip_sscc is None for biip_gtin, biip_sscc, _, _ in differ.values())


def _gs1_hri(data: str) -> str:
    """gs1-syntax-engine's data string (``^`` = FNC1) as HRI, through biip's element-string parser."""
    message: str = GS1Message.parse(data[1:].replace("^", "\x1d")).as_hri()
    return message


def test_gs1_scan_data_accepted_ones_read_right() -> None:
    """What gs1-syntax-engine accepts: GS1 element strings give the same AIs and values; EAN-13/8
    the same GTIN; Digital Link URIs their AIs; plain text (``]Q1TESTING``) stays ``unknown``."""
    records = _of("gs1-scan-data")
    wrong, rejected_but_read = [], []
    accepted = [r for r in records if r["source_expectation"]["accepted"]]
    for r in records:
        e = r["source_expectation"]
        scan = parse_scan(r["scan"], 0.0)
        data: str = e["data_str_caret_fnc1"]
        if not e["accepted"]:
            if scan.kind != "unknown":
                rejected_but_read.append(f"{r['id']} {r['scan']!r} -> {scan.kind} {scan.fields}")
            continue
        if e["symbology"] in ("EAN13", "EAN8"):
            linear, _, component = data.partition("|")
            ok = scan.fields.get("gtin") == linear and scan.kind == ("gs1" if component else "gtin")
            if component:
                ok = ok and scan.fields["hri"].endswith(_gs1_hri(component))
        elif data.startswith("^"):
            ok = scan.kind in ("gs1", "sscc", "gtin") and scan.fields.get("hri") == _gs1_hri(data)
        elif data.lower().startswith("http"):
            uri = GS1DigitalLinkURI.parse(data)
            ok = scan.kind == "gs1" and scan.fields.get("hri") == uri.as_gs1_message().as_hri()
        else:
            ok = scan.kind == "unknown" and not scan.fields
        assert scan.symbology == r["scan"][:3], r["id"]
        if not ok:
            wrong.append(f"{r['id']} {r['scan']!r} expected {data!r} got {scan.kind} {scan.fields}")
    print(
        f"\ngs1-scan-data: {len(accepted) - len(wrong)}/{len(accepted)} accepted scans read right; "
        f"{len(records) - len(accepted) - len(rejected_but_read)}/{len(records) - len(accepted)} "
        "rejected ones also give no reading"
    )
    for line in rejected_but_read:
        print(f"  rejected by gs1-syntax-engine, read by biip's rules: {line}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("raw", "kind", "fields"),
    [
        ("]C100106141412345678908\x1d10ABC", "sscc", {"sscc": "106141412345678908", "10": "ABC"}),
        ("]d2\x1d0112312312312333\x1d17251231", "gs1", {"01": "12312312312333", "17.date": "2025-12-31"}),
        ("]E05901234123457", "gtin", {"gtin": "5901234123457", "gtin_format": "GTIN_13"}),
        ("]C01Z410E7W0392751591", "tracking", {"courier": "ups", "check_digit": "verified"}),
        ("RB123456785US", "tracking", {"courier": "s10", "country": "United States of America"}),
        ("]J1011231231231233310ABC123", "gs1", {"01": "12312312312333", "10": "ABC123"}),
        ("]", "unknown", {}),
        ("]J", "unknown", {}),
        ("]E0abc", "unknown", {}),
        # a misprinted SSCC (check digit 1, GS1 mod-10 gives 0) is no parcel id
        ("]C100376130321109103421", "unknown", {"error": "bad_check_digit", "error_ai": "00"}),
        ("]C100376130321109103420", "sscc", {"sscc": "376130321109103420"}),
        ("376130321109103421", "unknown", {"error": "bad_check_digit"}),
        (
            "https://id.gs1.org/00/376130321109103421",
            "unknown",
            {"error": "bad_check_digit", "error_ai": "00"},
        ),
        ("]C1011231231231233417251231", "unknown", {"error": "bad_check_digit", "error_ai": "01"}),
        (
            "]C1011231231231233317250229",
            "unknown",
            {"error": "bad_date", "error_ai": "17"},
        ),  # 2025: no leap day
        ("]C1011231231231233317240229", "gs1", {"17": "240229", "17.date": "2024-02-29"}),
        ("]C1011231231231233317240200", "gs1", {"17.date": "2024-02-29"}),  # day 00: end of month
        ("]d2\x1d0112312312312333\x1d7006240200", "unknown", {"error": "bad_date", "error_ai": "7006"}),
        ("]C14101234567890128", "gs1", {"410": "1234567890128"}),
        # the 2D part of a composite is part of the same symbol: its bad date refuses the scan
        ("]E02112345678900|]e017250230", "unknown", {"error": "bad_date", "error_ai": "17"}),
        ("]E02112345678900|]e017250228", "gs1", {"gtin": "2112345678900", "17": "250228"}),
        ("]C14101234567890127", "unknown", {"error": "bad_check_digit", "error_ai": "410"}),
    ],
)
def test_examples(raw: str, kind: str, fields: dict[str, str]) -> None:
    scan = parse_scan(raw, 1.0)
    assert scan.kind == kind
    assert fields.items() <= scan.fields.items()


def test_symbology_is_split_and_kept() -> None:
    assert split_symbology("]Q3abc") == ("]Q3", "abc")
    assert split_symbology("]Y1abc") == ("]Y1a", "bc")
    assert split_symbology("]") == (None, "]")
    assert split_symbology("]1x") == (None, "]1x")
    assert parse_scan("]Q3011231231231233310ABC123", 0.0).symbology == "]Q3"


def test_cli_decodes_the_raw_file(tmp_path: Path) -> None:
    out = tmp_path / "scans.jsonl"
    raw = BARCODES / "scans_raw.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "scan", str(raw), "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = (BARCODES / "scans_raw.ids").read_text().split()
    by_id = {r["id"]: r["scan"] for r in RECORDS}
    assert len(rows) == len(ids) == 286
    assert [row["line"] for row in rows] == list(range(1, 287))
    for row, id_ in zip(rows, ids, strict=True):
        scan = parse_scan(by_id[id_], 0.0)
        assert row["raw"] == by_id[id_]
        assert row["kind"] == scan.kind
        assert {k: v for k, v in row.items() if k not in ("line", "raw", "kind", "symbology")} == scan.fields
        assert row.get("symbology") == scan.symbology
    # the invalid scans are written (raw kept) and counted; no line is unreadable
    invalid = Counter(row["error"] for row in rows if "error" in row)
    assert all(row["kind"] == "unknown" for row in rows if "error" in row)
    assert invalid == {
        "bad_check_digit": 11,
        "bad_date": 1,
        "bad_syntax": 1,
    }  # bad_syntax: D0170, an illegal caret
    assert "286 scans" in proc.stderr and "13 of them breaking a GS1 rule" in proc.stderr
    assert "13 lines rejected (bad_check_digit 11, bad_date 1, bad_syntax 1)" in proc.stderr


def test_cli_unusable_input_names_the_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "decode", "scan", str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "missing.txt" in proc.stderr
