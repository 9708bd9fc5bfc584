"""The peers of ``bench/resequence.py``: PyVRP and OR-Tools routing on TSPTW matrix files.

Runs in its own environment (``.venv-bench``: ``pip install pyvrp==0.14.1 ortools==9.15.6755``,
the ``bench`` extra; OR-Tools needs another protobuf than the product pins, so it never shares the
product's environment). Reads a JSON job list on stdin, prints one JSON line per job: the tour
(customer ids in visit order) and the wall time of the solve call. Imports nothing of Dropline.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def read(path: Path) -> tuple[list[list[float]], list[float], list[float]]:
    words = [
        w for line in path.read_text().splitlines() if not line.lstrip().startswith("#") for w in line.split()
    ]
    n = int(words[0])
    values = [float(w) for w in words[1:]]
    travel = [[0.0 if i == j else values[i * n + j] for j in range(n)] for i in range(n)]
    windows = values[n * n :]
    return travel, windows[0::2], windows[1::2]


def scale_of(travel: list[list[float]]) -> int:
    """Integer solvers: real matrices (Potvin-Bengio) scaled by 100 and rounded (README)."""
    return 1 if all(float(x).is_integer() for row in travel for x in row) else 100


def pyvrp(path: Path, seconds: float, seed: int) -> list[int]:
    from pyvrp import Model
    from pyvrp.stop import MaxRuntime

    travel, earliest, latest = read(path)
    k = scale_of(travel)
    n = len(travel)
    model = Model()
    places = [model.add_location(x=0, y=0) for _ in range(n)]
    depot = model.add_depot(places[0], tw_early=round(earliest[0] * k), tw_late=round(latest[0] * k))
    model.add_vehicle_type(
        num_available=1,
        start_depot=depot,
        end_depot=depot,
        tw_early=round(earliest[0] * k),
        tw_late=round(latest[0] * k),
    )
    for i in range(1, n):
        model.add_client(places[i], tw_early=round(earliest[i] * k), tw_late=round(latest[i] * k))
    for i in range(n):
        for j in range(n):
            if i != j:
                d = round(travel[i][j] * k)
                model.add_edge(places[i], places[j], distance=d, duration=d)
    result = model.solve(stop=MaxRuntime(seconds), seed=seed, display=False, collect_stats=False)
    routes = result.best.routes()
    return [int(a.idx) + 1 for route in routes for a in route if a.is_client()]  # 0-based clients


def ortools(path: Path, seconds: float, seed: int) -> list[int]:
    """Parallel cheapest insertion + guided local search on hard windows; when that finds nothing,
    the same with soft window ends (a large penalty per unit late)."""
    del seed  # OR-Tools routing has no seed parameter; its search is deterministic
    travel, earliest, latest = read(path)
    k = scale_of(travel)
    tour = _ortools(travel, earliest, latest, k, seconds, soft=False)
    return tour if tour is not None else (_ortools(travel, earliest, latest, k, seconds, soft=True) or [])


def _ortools(
    travel: list[list[float]], earliest: list[float], latest: list[float], k: int, seconds: float, soft: bool
) -> list[int] | None:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    n = len(travel)
    d = [[round(x * k) for x in row] for row in travel]
    horizon = round(latest[0] * k)
    manager = pywrapcp.RoutingIndexManager(n, 1, 0)
    routing = pywrapcp.RoutingModel(manager)
    callback = routing.RegisterTransitCallback(lambda a, b: d[manager.IndexToNode(a)][manager.IndexToNode(b)])
    routing.SetArcCostEvaluatorOfAllVehicles(callback)
    big = 10 * horizon + 10 * max(map(max, d))
    routing.AddDimension(callback, big, big, False, "Time")
    time_dim = routing.GetDimensionOrDie("Time")
    for node in range(1, n):
        index = manager.NodeToIndex(node)
        if soft:
            time_dim.CumulVar(index).SetRange(round(earliest[node] * k), big)
            time_dim.SetCumulVarSoftUpperBound(index, round(latest[node] * k), 1000)
        else:
            time_dim.CumulVar(index).SetRange(round(earliest[node] * k), round(latest[node] * k))
    time_dim.CumulVar(routing.Start(0)).SetRange(round(earliest[0] * k), horizon)
    if soft:
        time_dim.SetCumulVarSoftUpperBound(routing.End(0), horizon, 1000)
    else:
        time_dim.CumulVar(routing.End(0)).SetRange(0, horizon)
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(max(1, round(seconds * 1000)))
    solution = routing.SolveWithParameters(params)
    if solution is None:
        return None
    tour = []
    index = solution.Value(routing.NextVar(routing.Start(0)))
    while not routing.IsEnd(index):
        tour.append(manager.IndexToNode(index))
        index = solution.Value(routing.NextVar(index))
    return tour


SOLVERS = {"pyvrp": pyvrp, "ortools": ortools}


def main() -> None:
    jobs: list[dict[str, Any]] = json.load(sys.stdin)
    for warm in {(job["solver"], job["path"]) for job in jobs[:2]}:  # imports out of the timing
        SOLVERS[warm[0]](Path(warm[1]), 0.01, 0)
    for job in jobs:
        started = time.perf_counter()
        tour = SOLVERS[job["solver"]](Path(job["path"]), job["seconds"], job["seed"])
        wall = time.perf_counter() - started
        print(json.dumps({**job, "tour": tour, "wall": wall}), flush=True)


if __name__ == "__main__":
    main()
