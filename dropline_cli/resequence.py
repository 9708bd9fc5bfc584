"""``dropline resequence INSTANCE``: the van's resequencer on a TSPTW instance file, for checking it
against published best-known tours and other solvers.

Prints one JSON object: ``tour`` (customer ids in visit order, depot excluded), ``cost`` (the sum
of matrix entries on the closed tour, the benchmark convention), ``feasible`` (every window and the
depot's return met), ``seconds`` (wall time of the search), ``late`` (customer id -> lateness, only
when infeasible) and ``iterations``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from protocols.errors import UsageError


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in (0, 3600] seconds: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance", type=Path, help="TSPTW matrix file (tests/data/tsptw/README.md)")
    parser.add_argument(
        "--time-limit", type=_positive, required=True, metavar="S", help="wall-clock budget, seconds"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        metavar="N",
        help="stop after N perturbations too (with a generous --time-limit: a reproducible run)",
    )


def run(args: argparse.Namespace) -> int:
    from agent.resequencer import solve
    from agent.tsptw import read_tsptw
    from protocols.errors import InputError

    try:
        problem = read_tsptw(args.instance)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if args.iterations is not None and args.iterations < 0:
        raise UsageError(f"--iterations must not be negative: {args.iterations}")
    plan = solve(problem, args.time_limit, seed=args.seed, max_iterations=args.iterations)
    answer: dict[str, object] = {
        "tour": plan.tour,
        "cost": round(plan.cost, 6),
        "feasible": plan.feasible,
        "seconds": round(plan.seconds, 6),
        "iterations": plan.iterations,
    }
    if plan.late:
        answer["late"] = {str(k): round(v, 6) for k, v in sorted(plan.late.items())}
    print(json.dumps(answer))
    return 0
