"""The van's stand-in for ``biip.gs1_prefixes`` (firmware_bridge/scanner/gs1_prefixes.py) changes
no scan: every real scan string parses to the same Scan as with biip's own module, GS1 and GS1-8
prefixes agree with biip's for every 3- and 4-digit start, and the stand-in saves the memory it is
there for. Each side runs in a fresh interpreter, so which module is loaded is certain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_PARSE_ALL = """
import json, sys
{first}
from firmware_bridge.scanner.parse import parse_scan
from firmware_bridge.scanner import gs1_prefixes as ours
import biip.gs1_prefixes as loaded
scans = [json.loads(l)["scan"] for l in open("tests/data/barcodes/scans.jsonl", encoding="utf-8")]
scans += [l.rstrip("\\n") for l in open("tests/data/barcodes/scans_raw.txt", encoding="utf-8")]
out = [[s.kind, s.symbology, sorted(s.fields.items())] for s in (parse_scan(x, 0.0) for x in scans)]
prefixes = []
if {compare}:
    for n in range(10_000):
        for v in (f"{{n:03d}}0000000", f"{{n:04d}}000000", f"{{n:03d}}00000"[:8]):
            mine, theirs = ours.GS1Prefix.extract(v), loaded.GS1Prefix.extract(v)
            prefixes.append([v, None if mine is None else [mine.value, mine.usage],
                             None if theirs is None else [theirs.value, theirs.usage]])
            if len(v) == 8:
                mine8, theirs8 = ours.GS18Prefix.extract(v), loaded.GS18Prefix.extract(v)
                prefixes.append([v, None if mine8 is None else [mine8.value, mine8.usage],
                                 None if theirs8 is None else [theirs8.value, theirs8.usage]])
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024 / 1e6
print(json.dumps({{"standin": getattr(loaded, "__stand_in__", None), "scans": out,
                  "prefixes": prefixes, "hwm_mb": hwm}}))
"""


def _run(first: str, compare: bool) -> dict[str, Any]:
    code = _PARSE_ALL.format(first=first, compare=compare)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_stand_in_gives_the_same_scans_as_biip_and_saves_memory() -> None:
    real = _run("import biip.gs1_prefixes", compare=True)
    lean = _run("", compare=False)
    assert real["standin"] is None  # biip's own module was loaded first and kept
    assert lean["standin"] == "firmware_bridge.scanner.gs1_prefixes"
    assert len(real["scans"]) > 300
    assert lean["scans"] == real["scans"]
    disagree = [p for p in real["prefixes"] if p[1] != p[2]]
    assert not disagree, disagree[:5]
    assert sum(1 for p in real["prefixes"] if p[2] is not None) > 1000  # the table was exercised
    # biip's company-prefix table alone is ~20 MB of dicts: the point of the stand-in.
    assert lean["hwm_mb"] < real["hwm_mb"] - 10, (lean["hwm_mb"], real["hwm_mb"])
