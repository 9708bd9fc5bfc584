"""Geofence throughput and per-fix latency against shapely 2, in the same run.

Fences: star-shaped polygons of 8-24 vertices and 30-150 m radius (a stop, a yard, a block),
spread over the Munich drive's area grown by 2 km, a tenth of them on the drive itself so that
fixes do hit fences. Fixes: the real Munich drive (``examples/munich-drive.jsonl``, 1,194 fixes)
replayed ``--rounds`` times. For 10, 1,000 and 10,000 fences it measures:

* ``ours containing``: ``FenceIndex.containing`` (the same question shapely answers);
* ``ours detector``: ``Geofence.update`` (the whole detector: signed distances to every nearby
  border, hysteresis, confirmation, dwell);
* ``shapely``: an ``STRtree`` query per fix, then prepared ``contains_xy`` on the candidates;

and checks that ours and shapely's answers agree on every fix. Index build times too.
Each measure is the best of ``--repeat`` runs (the machine is shared).
Run: ``.venv/bin/python -m bench.geofence`` (needs the ``bench`` extra: shapely, numpy).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

from agent.geofence import Fence, FenceIndex, Geofence
from firmware_bridge.gps.tpv import read_trace

DRIVE = Path(__file__).resolve().parent.parent / "examples" / "munich-drive.jsonl"
M = 6371008.8 * math.pi / 180


def make_fences(n: int, track: list[tuple[float, float]], rng: random.Random) -> list[Fence]:
    lats = [p[0] for p in track]
    lons = [p[1] for p in track]
    grow_lat, grow_lon = 2000 / M, 2000 / (M * math.cos(math.radians(lats[0])))
    fences = []
    for k in range(n):
        if k % 10 == 0:
            lat, lon = track[rng.randrange(len(track))]
        else:
            lat = rng.uniform(min(lats) - grow_lat, max(lats) + grow_lat)
            lon = rng.uniform(min(lons) - grow_lon, max(lons) + grow_lon)
        r = rng.uniform(30, 150)
        sides = rng.randint(8, 24)
        kx = M * math.cos(math.radians(lat))
        ring = []
        for v in range(sides):
            a = 2 * math.pi * v / sides
            rv = r * rng.uniform(0.6, 1.0)
            ring.append((lon + rv * math.cos(a) / kx, lat + rv * math.sin(a) / M))
        ring.append(ring[0])
        fences.append(Fence(f"f{k}", polygons=((tuple(ring),),), lon=ring[0][0], lat=ring[0][1]))
    return fences


def percentiles(ns: list[int]) -> tuple[float, float]:
    ns = sorted(ns)
    return ns[len(ns) // 2] / 1000, ns[int(len(ns) * 0.99)] / 1000


def best(results: dict[str, tuple[float, float, float]], name: str, rate: float, ns: list[int]) -> None:
    """Keeps the fastest of the repeats (the one least disturbed by other processes)."""
    if name not in results or rate > results[name][0]:
        results[name] = (rate, *percentiles(ns))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="times the drive is replayed per measure")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=3, help="each measure's best of this many (a shared machine's noise)"
    )
    args = parser.parse_args()

    import numpy as np
    import shapely  # type: ignore[import-untyped]

    fixes = list(read_trace(DRIVE))
    track = [(f.lat, f.lon) for f in fixes]
    queries = track * args.rounds
    import agent.geofence

    compiled = agent.geofence.__file__.endswith(".so")
    print(
        f"agent.geofence compiled: {compiled}; {len(queries)} fixes per measure; "
        f"shapely {shapely.__version__}"
    )
    print(
        f"{'fences':>7} {'ours containing':>24} {'ours detector':>24} "
        f"{'shapely STRtree+prepared':>27} {'ratio':>6}"
    )
    for n in (10, 1000, 10000):
        rng = random.Random(args.seed)
        fences = make_fences(n, track, rng)

        t0 = time.perf_counter()
        index = FenceIndex(fences, 20.0)
        ours_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        polys = np.array([shapely.Polygon(f.polygons[0][0]) for f in fences])
        tree = shapely.STRtree(polys)
        shapely.prepare(polys)
        shapely_build = time.perf_counter() - t0

        def ours(lat: float, lon: float, index: FenceIndex = index) -> list[int]:
            return index.containing(lat, lon)

        def theirs(lat: float, lon: float, tree: Any = tree, polys: Any = polys) -> list[int]:
            candidates = tree.query(shapely.Point(lon, lat))
            hits = candidates[shapely.contains_xy(polys[candidates], lon, lat)]
            return sorted(int(i) for i in hits)

        mismatches = sum(ours(lat, lon) != theirs(lat, lon) for lat, lon in track)
        results: dict[str, tuple[float, float, float]] = {}
        clock = time.perf_counter_ns
        base = fixes[0].time
        for _ in range(args.repeat):
            for name, fn in (("ours", ours), ("shapely", theirs)):
                lat_ns = []
                t_all = clock()
                for lat, lon in queries:
                    t = clock()
                    fn(lat, lon)
                    lat_ns.append(clock() - t)
                best(results, name, len(queries) / ((clock() - t_all) / 1e9), lat_ns)
            geofence = Geofence(index)
            lat_ns = []
            t_all = clock()
            for k, (lat, lon) in enumerate(queries):
                t = clock()
                geofence.update(base + k, lat, lon)
                lat_ns.append(clock() - t)
            best(results, "detector", len(queries) / ((clock() - t_all) / 1e9), lat_ns)

        def cell(r: tuple[float, float, float]) -> str:
            return f"{r[0] / 1000:7.0f}k/s p50 {r[1]:4.1f} p99 {r[2]:4.1f}us"

        ratio = results["ours"][0] / results["shapely"][0]
        print(
            f"{n:>7} {cell(results['ours']):>24} {cell(results['detector']):>24} "
            f"{cell(results['shapely']):>27} {ratio:5.1f}x"
        )
        print(
            f"        build: ours {ours_build * 1000:.1f} ms, shapely {shapely_build * 1000:.1f} ms; "
            f"answers differing from shapely: {mismatches} of {len(track)} fixes; "
            f"detector vs shapely {results['detector'][0] / results['shapely'][0]:.1f}x"
        )


if __name__ == "__main__":
    main()
