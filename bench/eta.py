"""ETA benchmark on the real drives of ``tests/data/traces/``: ours vs a constant-speed
great-circle baseline, and the cost of one update for 200 stops.

    .venv/bin/python -m bench.eta [--stop-every 120]

Points along each drive (one every ``--stop-every`` seconds of driving) are the stops, in driving
order; the truth is the time the van was there. At every fix, each stop still ahead gets an ETA
from the van's position (chained stop to stop), learned online from the fixes so far for ours.
Prints the mean absolute error (s) by horizon (time to the truth): 0-5, 5-15, 15-30 min, for ours
and two baselines: great-circle legs at a fixed 30 km/h, and at the van's mean speed so far.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from agent.eta import EtaEstimator, EtaStop, great_circle_m

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "data" / "traces"
HORIZONS = ((0, 300), (300, 900), (900, 1800))
Point = tuple[float, float, float]  # time, lat, lon


def barefoot(path: Path) -> list[Point]:
    out = []
    for row in json.loads(path.read_text()):
        lon, lat = (float(x) for x in row["point"][len("POINT(") : -1].split())
        out.append((datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S%z").timestamp(), lat, lon))
    return out


def gpx(path: Path) -> list[Point]:
    ns = {"g": "http://www.topografix.com/GPX/1/0"}
    out: list[Point] = []
    for pt in ET.parse(path).getroot().iterfind(".//g:trkpt", ns):
        stamp = pt.findtext("g:time", namespaces=ns)
        if stamp is None:
            continue
        t = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        if out and t <= out[-1][0]:
            continue  # repeated timestamps (the Rome logger): keep the first
        out.append((t, float(pt.attrib["lat"]), float(pt.attrib["lon"])))
    return out


DRIVES: dict[str, Callable[[], list[Point]]] = {
    "munich (barefoot, 1 s)": lambda: barefoot(TRACES / "barefoot_munich" / "x0001-001.json"),
    "rome (gpsbabel m241)": lambda: gpx(TRACES / "gpsbabel" / "mtk_logger_m241_rome.gpx"),
    "stockholm (gpsbabel sbn)": lambda: gpx(TRACES / "gpsbabel" / "sbn_stockholm.gpx"),
}


def chain(time0: float, lat: float, lon: float, stops: Sequence[EtaStop], speed: float) -> list[float]:
    out, t, here = [], time0, (lat, lon)
    for s in stops:
        t += great_circle_m(here[0], here[1], s.lat, s.lon) / speed
        out.append(t)
        here = (s.lat, s.lon)
    return out


def run(points: list[Point], every: float) -> dict[str, list[list[float]]]:
    start = points[0][0]
    stops: list[EtaStop] = []
    truth: dict[str, float] = {}
    next_at = start + every
    for t, lat, lon in points:
        if t >= next_at:
            stop = EtaStop(f"s{len(stops)}", lat, lon)
            stops.append(stop)
            truth[stop.id] = t
            next_at = t + every
    ours = EtaEstimator({s.id: s for s in stops})
    errors: dict[str, list[list[float]]] = {
        k: [[] for _ in HORIZONS] for k in ("ours", "30 km/h", "mean speed")
    }
    path = 0.0
    previous: Point | None = None
    for t, lat, lon in points:
        if previous is not None:
            path += great_circle_m(previous[1], previous[2], lat, lon)
        previous = (t, lat, lon)
        ours.on_fix(t, lat, lon)
        ahead = [s for s in stops if truth[s.id] > t]
        if not ahead:
            break
        mean_speed = path / (t - start) if t - start >= 60 and path > 0 else 30 / 3.6
        answers = {
            "ours": ours.etas(t, lat, lon, [s.id for s in ahead]),
            "30 km/h": chain(t, lat, lon, ahead, 30 / 3.6),
            "mean speed": chain(t, lat, lon, ahead, mean_speed),
        }
        for name, etas in answers.items():
            for s, eta in zip(ahead, etas, strict=True):
                horizon = truth[s.id] - t
                for band, (lo, hi) in enumerate(HORIZONS):
                    if lo <= horizon < hi:
                        errors[name][band].append(abs(eta - truth[s.id]))
    return errors


def update_cost(stops: int = 200, repeats: int = 500) -> float:
    """Seconds for one fix's learning plus ETAs of ``stops`` stops (mean over ``repeats``)."""
    points = barefoot(TRACES / "barefoot_munich" / "x0001-001.json")
    ids = [f"s{i}" for i in range(stops)]
    sample = [points[(i * 7) % len(points)] for i in range(stops)]
    est = EtaEstimator({i: EtaStop(i, p[1], p[2]) for i, p in zip(ids, sample, strict=True)})
    for t, lat, lon in points[:600]:
        est.on_fix(t, lat, lon)
    started = time.perf_counter()
    for k in range(repeats):
        t, lat, lon = points[600 + k % 500]
        est.on_fix(t, lat, lon)
        est.etas(t, lat, lon, ids)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stop-every", type=float, default=120.0, help="seconds of driving between stops")
    args = parser.parse_args()
    names = ("ours", "30 km/h", "mean speed")
    total: dict[str, list[list[float]]] = {k: [[] for _ in HORIZONS] for k in names}
    header = "".join(f"{f'{lo // 60}-{hi // 60} min':>24s}" for lo, hi in HORIZONS)
    print(f"mean absolute ETA error, s (samples)\n{'drive':26s} {'model':11s}{header}")
    for drive, load in DRIVES.items():
        errors = run(load(), args.stop_every)
        for name in names:
            cells = []
            for band in range(len(HORIZONS)):
                xs = errors[name][band]
                total[name][band].extend(xs)
                cells.append(f"{statistics.fmean(xs):10.1f} ({len(xs):6d})" if xs else f"{'-':>19s}")
            print(f"{drive:26s} {name:11s}" + "".join(f"{c:>24s}" for c in cells))
    for name in names:
        cells = [f"{statistics.fmean(xs):10.1f} ({len(xs):6d})" if xs else "-" for xs in total[name]]
        print(f"{'all drives':26s} {name:11s}" + "".join(f"{c:>24s}" for c in cells))
    print(f"\none update (learn + ETAs) for 200 stops: {1e3 * update_cost():.3f} ms")


if __name__ == "__main__":
    main()
