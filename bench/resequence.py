"""Resequencer benchmark: ours vs PyVRP and OR-Tools routing on every staged TSPTW instance.

    .venv/bin/python -m bench.resequence [--data DIR] [--budgets 0.1 1] [--seeds 1 2 3]

Every tour (ours and the peers') is re-evaluated by ``agent.resequencer.simulate`` on the instance
file (the data README's convention: waiting allowed, cost = sum of the matrix on the closed tour),
so a peer's own objective or rounding never enters the table. Prints per-instance rows, then per
solver and budget: mean gap to the best known, share feasible, mean and worst wall time (ours also:
worst overshoot of the deadline and worst time to a first feasible tour), and our cost ratio to
each peer. The peers run in ``.venv-bench`` (``bench/resequence_peers.py``); without it only ours.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.resequencer import simulate, solve
from agent.tsptw import read_tsptw

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


@dataclass
class Run:
    solver: str
    instance: str
    budget: float
    seed: int
    cost: float
    feasible: bool
    gap: float
    wall: float
    first_feasible: float | None = None


def instances(data: Path) -> list[tuple[str, float]]:
    rows = csv.DictReader((data / "best_known.csv").open())
    return [
        (r["file"], float(r["bks"]))
        for r in rows
        if (data / r["file"]).exists() and "solomon" not in r["file"]
    ]


def judge(
    solver: str, data: Path, name: str, bks: float, budget: float, seed: int, tour: list[int], wall: float
) -> Run:
    problem = read_tsptw(data / name)
    if sorted(tour) != problem.stops():
        return Run(solver, name, budget, seed, float("inf"), False, float("inf"), wall)
    schedule = simulate(problem, tour)
    return Run(
        solver, name, budget, seed, schedule.cost, not schedule.late, 100 * (schedule.cost - bks) / bks, wall
    )


def ours(data: Path, name: str, bks: float, budget: float, seed: int) -> Run:
    problem = read_tsptw(data / name)
    started = time.perf_counter()
    plan = solve(problem, budget, seed=seed)
    wall = time.perf_counter() - started
    run = judge("ours", data, name, bks, budget, seed, plan.tour, wall)
    run.first_feasible = plan.first_feasible_s
    return run


def peers(data: Path, jobs: list[dict[str, object]]) -> list[dict[str, object]]:
    if not jobs:
        return []
    out = subprocess.run(
        [str(PEER_PYTHON), str(ROOT / "bench" / "resequence_peers.py")],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/tsptw")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--peers", nargs="*", default=["pyvrp", "ortools"])
    args = parser.parse_args()
    todo = instances(args.data)
    runs: list[Run] = []
    for budget in args.budgets:
        for name, bks in todo:
            for seed in args.seeds:
                runs.append(ours(args.data, name, bks, budget, seed))
    if PEER_PYTHON.exists():
        jobs: list[dict[str, object]] = [
            {
                "solver": s,
                "path": str(args.data / name),
                "seconds": budget,
                "seed": seed,
                "name": name,
                "bks": bks,
            }
            for s in args.peers
            for budget in args.budgets
            for name, bks in todo
            for seed in args.seeds
        ]
        for job in peers(args.data, jobs):
            runs.append(
                judge(
                    str(job["solver"]),
                    args.data,
                    str(job["name"]),
                    float(job["bks"]),  # type: ignore[arg-type]
                    float(job["seconds"]),  # type: ignore[arg-type]
                    int(job["seed"]),  # type: ignore[call-overload]
                    list(job["tour"]),  # type: ignore[call-overload]
                    float(job["wall"]),  # type: ignore[arg-type]
                )
            )
    else:
        print(f"(no {PEER_PYTHON}: peers skipped)")
    report(runs, todo, args.budgets)


def report(runs: list[Run], todo: list[tuple[str, float]], budgets: list[float]) -> None:
    solvers = list(dict.fromkeys(r.solver for r in runs))
    for budget in budgets:
        print(f"\n== budget {budget} s: mean gap % over seeds (feasible runs / runs), mean wall s")
        print(f"{'instance':34s}" + "".join(f"{s:>26s}" for s in solvers))
        for name, _ in todo:
            cells = []
            for s in solvers:
                rs = [r for r in runs if r.solver == s and r.budget == budget and r.instance == name]
                feas = sum(r.feasible for r in rs)
                gap = statistics.fmean(r.gap for r in rs) if rs else float("nan")
                wall = statistics.fmean(r.wall for r in rs) if rs else float("nan")
                cells.append(f"{gap:8.3f} ({feas}/{len(rs)}) {wall:6.3f}s")
            print(f"{name:34s}" + "".join(f"{c:>26s}" for c in cells))
    print("\n== summary")
    print(
        f"{'solver':8s} {'budget':>6s} {'mean gap %':>10s} {'feasible':>9s} "
        f"{'mean wall':>9s} {'max wall':>9s}  extra"
    )
    for budget in budgets:
        for s in solvers:
            rs = [r for r in runs if r.solver == s and r.budget == budget]
            if not rs:
                continue
            extra = ""
            if s == "ours":
                over = max(r.wall - r.budget for r in rs)
                first = [r.first_feasible for r in rs if r.first_feasible is not None]
                extra = f"max overshoot {1000 * over:.1f} ms, max first feasible {1000 * max(first):.1f} ms"
            feasible = 100 * sum(r.feasible for r in rs) / len(rs)
            print(
                f"{s:8s} {budget:6.2f} {statistics.fmean(r.gap for r in rs):10.3f} {feasible:8.0f}% "
                f"{statistics.fmean(r.wall for r in rs):9.3f} {max(r.wall for r in rs):9.3f}  {extra}"
            )
        mine = {(r.instance, r.seed): r for r in runs if r.solver == "ours" and r.budget == budget}
        for s in solvers:
            if s == "ours":
                continue
            pairs = [(mine[(r.instance, r.seed)], r) for r in runs if r.solver == s and r.budget == budget]
            pairs = [(a, b) for a, b in pairs if b.feasible]
            if pairs:
                ratio = statistics.fmean(a.cost / b.cost for a, b in pairs)
                wins = sum(a.cost < b.cost - 1e-6 for a, b in pairs)
                losses = sum(a.cost > b.cost + 1e-6 for a, b in pairs)
                print(
                    f"  ours/{s} at {budget} s: mean cost ratio {ratio:.5f}, "
                    f"better {wins}, worse {losses}, of {len(pairs)} (runs where the peer is feasible)"
                )


if __name__ == "__main__":
    main()
