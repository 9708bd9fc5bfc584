"""Agreement with gpsd on its own regression logs: the acceptance test of the NMEA decoder.

For every ``*.log`` in tests/data/nmea/gpsd/, each TPV of the matching ``.log.chk`` with
``mode >= 2`` and a ``time`` must have a fix from ``dropline decode gps`` (the same code path:
``iter_fixes_from_file``) with the same time, lat/lon within 1e-6 degrees, speed within 0.01 m/s,
track within 0.1 degree and the same mode. At least 99 % must match across the set.

How a TPV is compared. gpsd reports an epoch several times, once per sentence that updates it,
each report more complete than the last; we report the epoch once, complete. So:

* a field absent from a TPV is not compared (a TPV sent before RMC has no speed yet);
* where a later TPV of the same epoch revises a field, gpsd's own final value for the epoch is
  the reference: before RMC arrives gpsd fills ``speed`` with an estimate from the distance to
  the previous fix (9.2 m/s in one haicom-305N epoch whose RMC then says 0.99), and an RMC read
  before GGA gives mode 2 until GGA brings the altitude. Those interim values are gpsd's partial
  state, not a statement about the epoch. How many TPVs would also match field for field on
  their own interim values is printed as well ("literal").

Besides, no fix of ours may carry a time at which gpsd reported the epoch as no fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.gps.nmea import NmeaDecoder
from firmware_bridge.gps.serial_nmea import iter_fixes_from_file
from protocols.records import Fix, iso_time
from tests.conftest import DATA

LOGS = DATA / "nmea" / "gpsd"
TOLERANCE = {"lat": 1e-6, "lon": 1e-6, "speed": 0.01, "track": 0.1, "mode": 0.0}
REQUIRED = 0.99


@dataclass
class Agreement:
    total: int = 0
    matched: int = 0
    literal: int = 0
    epochs: int = 0
    epochs_matched: int = 0
    mismatches: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    per_log: dict[str, tuple[int, int]] = field(default_factory=dict)


def gpsd_tpvs(chk: Path) -> list[dict[str, Any]]:
    """The TPV reports of a .chk (which interleaves the input sentences and gpsd's JSON)."""
    out = []
    with chk.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("class") == "TPV":
                    out.append(obj)
    return out


def _differences(tpv: dict[str, Any], ref: dict[str, Any], fix: Fix) -> list[str]:
    diffs = []
    for key, tol in TOLERANCE.items():
        if key not in tpv:
            continue
        want = ref.get(key, tpv[key])
        got = getattr(fix, key)
        if got is None:
            diffs.append(f"{key}: gpsd {want}, ours absent")
        elif abs(got - want) > tol:
            diffs.append(f"{key}: gpsd {want}, ours {got:.9g}")
    return diffs


def compare_log(log: Path, result: Agreement) -> None:
    fixes: dict[str, Fix] = {}
    for decoded in iter_fixes_from_file(log, NmeaDecoder()):
        fixes.setdefault(iso_time(decoded.time), decoded)
    tpvs = gpsd_tpvs(log.with_name(log.name + ".chk"))
    timed = [t for t in tpvs if "time" in t]
    final = {t["time"]: t for t in timed if t.get("mode", 0) >= 2}
    no_fix_times = {t["time"] for t in timed if t.get("mode", 0) < 2} - set(final)
    total = matched = 0
    for tpv in timed:
        if tpv.get("mode", 0) < 2:
            continue
        total += 1
        fix = fixes.get(tpv["time"])
        if fix is None:
            result.mismatches.append(
                f"{log.name} {tpv['time']}: no fix with this time (gpsd mode {tpv['mode']})"
            )
            continue
        if not _differences(tpv, tpv, fix):
            result.literal += 1
        diffs = _differences(tpv, final[tpv["time"]], fix)
        if diffs:
            result.mismatches.append(f"{log.name} {tpv['time']}: " + "; ".join(diffs))
        else:
            matched += 1
    result.epochs += len(final)
    result.epochs_matched += sum(
        1 for t, tpv in final.items() if t in fixes and not _differences(tpv, tpv, fixes[t])
    )
    result.invented += [
        f"{log.name} {t}: gpsd says no fix, ours {fixes[t]}" for t in no_fix_times & set(fixes)
    ]
    result.total += total
    result.matched += matched
    result.per_log[log.name] = (matched, total)


def agreement() -> Agreement:
    result = Agreement()
    for log in sorted(LOGS.glob("*.log")):
        compare_log(log, result)
    return result


def report(result: Agreement) -> str:
    lines = [
        f"agreement with gpsd: {result.matched}/{result.total} TPVs = "
        f"{100 * result.matched / result.total:.2f} % "
        f"(literal, each TPV on its own interim values: {result.literal}/{result.total} = "
        f"{100 * result.literal / result.total:.2f} %)",
        f"epochs (gpsd's last TPV of each time): {result.epochs_matched}/{result.epochs}",
    ]
    lines += [f"  {name}: {m}/{n}" for name, (m, n) in result.per_log.items()]
    lines += ["mismatches:"] + [f"  {m}" for m in result.mismatches]
    lines += ["fixes where gpsd reports no fix:"] + [f"  {m}" for m in result.invented]
    return "\n".join(lines)


def test_agreement_with_gpsd() -> None:
    result = agreement()
    text = report(result)
    print(text)
    assert result.total > 1000  # the whole set was read
    assert result.matched >= REQUIRED * result.total, text
    assert not result.invented, text


def test_every_log_has_its_chk() -> None:
    logs = sorted(LOGS.glob("*.log"))
    assert len(logs) == 17
    assert all(log.with_name(log.name + ".chk").is_file() for log in logs)
