"""The ``compact-5m`` golden case judged against its input, not against the compactor: every fix
of the trace is within 5 m (haversine written here) of the committed track interpolated at its
own time, every committed fix is a fix of the trace moved by less than the bound, and far fewer
fixes are committed than read."""

from __future__ import annotations

import bisect
import json
import math
from datetime import datetime
from pathlib import Path

CASES = Path(__file__).parent / "cases"
R = 6371008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * R * math.asin(math.sqrt(min(1.0, h)))


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def points(path: Path) -> list[tuple[float, float, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(seconds(r["time"]), r["lat"], r["lon"]) for r in rows if r.get("kind", "fix") == "fix"]


def test_compact_case_keeps_every_fix_of_its_trace_within_the_bound() -> None:
    trace = points(CASES / "drive" / "munich-3min.jsonl")
    kept = points(CASES / "compact-5m" / "expected.jsonl")
    assert 2 <= len(kept) < len(trace) // 4
    originals = {t: (lat, lon) for t, lat, lon in trace}
    for t, lat, lon in kept:
        assert haversine_m(lat, lon, *originals[t]) < 5.0
    times = [k[0] for k in kept]
    assert times == sorted(times) and times[0] == trace[0][0] and times[-1] <= trace[-1][0]
    for t, lat, lon in trace:
        if t > times[-1]:  # the last 60 s may still wait in the window when the file ends
            assert t - times[-1] <= 60.0
            continue
        i = min(len(kept) - 2, bisect.bisect_right(times, t) - 1)
        (ta, la, oa), (tb, lb, ob) = kept[i], kept[i + 1]
        r = (t - ta) / (tb - ta)
        assert haversine_m(la + (lb - la) * r, oa + (ob - oa) * r, lat, lon) <= 5.0, t
