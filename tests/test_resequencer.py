"""The resequencer against an evaluator written here from the data README's rules (not the solver's
own), brute force on small random instances, and the published best-known values."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.resequencer import Problem, solve
from agent.tsptw import parse_tsptw, read_tsptw
from dropline_cli import main
from protocols.errors import InputError

DATA = Path(__file__).parent / "data" / "tsptw"
BEST = {row["file"]: row for row in csv.DictReader((DATA / "best_known.csv").open())}
# Long enough never to be the limit: these runs end on their iteration budget, so they are
# reproducible and independent of the machine's load.
NO_DEADLINE = 600.0


def evaluate(
    travel: Sequence[Sequence[float]], earliest: Sequence[float], latest: Sequence[float], tour: Sequence[int]
) -> tuple[float, dict[int, float]]:
    """The README's convention: leave the depot at e_0, a_j = t_i + d[i][j], t_j = max(a_j, e_j),
    late where a_j > l_j (the depot's return too); cost = sum of d on the closed tour."""
    t = earliest[0]
    cost = 0.0
    late: dict[int, float] = {}
    here = 0
    for there in [*tour, 0]:
        cost += travel[here][there]
        arrive = t + travel[here][there]
        if arrive > latest[there] + 1e-9:
            late[there] = arrive - latest[there]
        t = max(arrive, earliest[there])
        here = there
    return cost, late


def brute_force(problem: Problem) -> tuple[float, float]:
    """By trying every order: the least total lateness, and the least cost at that lateness."""
    best = (math.inf, math.inf)
    for order in itertools.permutations(range(1, problem.size)):
        cost, late = evaluate(problem.travel, problem.earliest, problem.latest, order)
        best = min(best, (round(sum(late.values()), 6), cost))
    return best


def check(
    problem: Problem, plan_tour: list[int], cost: float, feasible: bool, late: dict[int, float]
) -> None:
    """Every answer: a permutation of the customers whose cost, feasibility and late stops are
    what the independent evaluator says."""
    assert sorted(plan_tour) == list(range(1, problem.size))
    true_cost, true_late = evaluate(problem.travel, problem.earliest, problem.latest, plan_tour)
    assert cost == pytest.approx(true_cost, abs=1e-6)
    assert feasible == (not true_late)
    assert set(late) == set(true_late)
    for stop, amount in true_late.items():
        assert late[stop] == pytest.approx(amount, abs=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "dumas/n20w20.001.txt",
        "dumas/n40w40.001.txt",
        "gendreau/n20w160.001.txt",
        "potvin_bengio/rc_201.1.txt",
    ],
)
def test_staged_instances_reach_best_known(name: str) -> None:
    problem = read_tsptw(DATA / name)
    plan = solve(problem, NO_DEADLINE, seed=1, max_iterations=300)
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)
    bks = float(BEST[name]["bks"])
    assert plan.feasible
    assert plan.cost <= bks + 0.01  # BKS values are rounded to 2 decimals


def test_best_known_tour_evaluates_to_its_value() -> None:
    """The evaluator itself against the README's verified tours."""
    for name, row in BEST.items():
        if (DATA / name).exists():
            problem = read_tsptw(DATA / name)
            tour = [int(x) for x in row["tour"].split()]
            cost, late = evaluate(problem.travel, problem.earliest, problem.latest, tour)
            assert not late
            assert cost == pytest.approx(float(row["bks"]), abs=0.01)


def _instance(draw: st.DrawFn) -> Problem:
    n = draw(st.integers(2, 8))  # nodes including the depot: up to 7 customers, 5040 orders
    times = st.integers(1, 50)
    travel = [[0 if i == j else draw(times) for j in range(n)] for i in range(n)]
    earliest = [0]
    latest = [draw(st.integers(50, 400))]
    for _ in range(1, n):
        start = draw(st.integers(0, 250))
        earliest.append(start)
        latest.append(start + draw(st.integers(0, 150)))
    return Problem(travel=travel, earliest=earliest, latest=latest)


instances = st.composite(_instance)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.integers(0, 2**32))
def test_small_instances_match_brute_force(problem: Problem, seed: int) -> None:
    plan = solve(problem, NO_DEADLINE, seed=seed, max_iterations=60)
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)
    lateness, cost = brute_force(problem)
    assert plan.feasible == (lateness == 0)
    if plan.feasible:
        assert plan.cost == pytest.approx(cost)
    # Infeasible: the lateness is the evaluator's (check above); its minimum is not promised.


def test_no_feasible_order_still_answers_and_names_late_stops() -> None:
    # Customer 2's window closes before anyone can reach it; 1 and 3 are fine.
    travel = [[0, 10, 50, 10], [10, 0, 50, 10], [50, 50, 0, 50], [10, 10, 50, 0]]
    problem = Problem(travel=travel, earliest=[0, 0, 0, 0], latest=[1000, 100, 20, 100])
    plan = solve(problem, NO_DEADLINE, seed=0, max_iterations=20)
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)
    assert not plan.feasible
    # Least total lateness: 2 first (50, 30 late), then 1 and 3 (one of them 10 late) = 40;
    # the time-warp view (3 at 80, "only 30 late") would undercount it.
    assert sum(plan.late.values()) == pytest.approx(40)
    assert 2 in plan.late and len(plan.late) == 2


def test_fixed_next_stop_stays_first() -> None:
    problem = read_tsptw(DATA / "gendreau/n20w160.001.txt")
    free = solve(problem, NO_DEADLINE, seed=3, max_iterations=100)
    fixed = next(s for s in reversed(free.tour) if s != free.tour[0])
    pinned = Problem(problem.travel, problem.earliest, problem.latest, fixed_next=fixed)
    plan = solve(pinned, NO_DEADLINE, seed=3, max_iterations=100)
    assert plan.tour[0] == fixed
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)


def test_same_seed_and_budget_same_tour() -> None:
    problem = read_tsptw(DATA / "dumas/n200w40.001.txt")
    a = solve(problem, NO_DEADLINE, seed=7, max_iterations=5)
    b = solve(problem, NO_DEADLINE, seed=7, max_iterations=5)
    assert a.tour == b.tour
    assert a.iterations == b.iterations == 5
    check(problem, a.tour, a.cost, a.feasible, a.late)


def test_warm_start_is_kept_when_nothing_beats_it() -> None:
    name = "dumas/n40w40.001.txt"
    problem = read_tsptw(DATA / name)
    optimum = [int(x) for x in BEST[name]["tour"].split()]  # Dumas values are proven optima
    plan = solve(problem, NO_DEADLINE, seed=0, max_iterations=0, warm_start=optimum)
    assert plan.cost == pytest.approx(float(BEST[name]["bks"]))
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)


def test_warm_start_missing_and_unknown_stops() -> None:
    problem = read_tsptw(DATA / "dumas/n20w20.001.txt")
    plan = solve(problem, NO_DEADLINE, seed=0, max_iterations=10, warm_start=[3, 99, 3, 5, 0])
    check(problem, plan.tour, plan.cost, plan.feasible, plan.late)


def _energy_problem(chargers: Sequence[int]) -> Problem:
    # Depot 0, stops 1..3 on a line 10 km apart (10 min each way), charger 4 next to stop 2.
    pos = {0: 0.0, 1: 10.0, 2: 20.0, 3: 30.0, 4: 21.0}
    nodes = range(5 if chargers else 4)
    km = [[abs(pos[i] - pos[j]) for j in nodes] for i in nodes]
    return Problem(
        travel=km,
        earliest=[0.0] * len(nodes),
        latest=[500.0] * len(nodes),
        chargers=chargers,
        distance_km=km,
        kwh_per_km=0.2,
        available_kwh=10.0,  # the round trip is 60 km = 12 kWh
        reserve_kwh=1.0,
        capacity_kwh=40.0,
        charge_kwh_per_time=1.0,
    )


def test_battery_short_without_charger() -> None:
    plan = solve(_energy_problem(()), NO_DEADLINE, seed=0, max_iterations=10)
    assert plan.battery_short and not plan.feasible
    assert sorted(plan.tour) == [1, 2, 3]


def test_charger_inserted_when_it_repairs_energy() -> None:
    problem = _energy_problem((4,))
    plan = solve(problem, NO_DEADLINE, seed=0, max_iterations=10)
    assert plan.charger == 4 and plan.feasible and not plan.battery_short
    assert sorted(plan.tour) == [1, 2, 3, 4]
    # Independent energy check: never below the reserve before the charger; enough after it.
    assert problem.distance_km is not None
    energy, here = problem.available_kwh, 0
    for there in plan.tour:
        energy -= problem.kwh_per_km * problem.distance_km[here][there]
        assert energy >= problem.reserve_kwh - 1e-9
        if there == 4:
            break
        here = there


def _format(problem: Problem) -> str:
    n = problem.size
    lines = [str(n)]
    lines += [" ".join(repr(float(x)) for x in row) for row in problem.travel]
    lines += ["# windows"]
    lines += [f"{e!r} {lt!r}" for e, lt in zip(problem.earliest, problem.latest, strict=True)]
    return "\n".join(lines) + "\n"


@settings(max_examples=100, deadline=None)
@given(instances())
def test_parser_round_trip(problem: Problem) -> None:
    parsed = parse_tsptw(_format(problem))
    assert [list(r) for r in parsed.travel] == [[float(x) for x in r] for r in problem.travel]
    assert list(parsed.earliest) == [float(x) for x in problem.earliest]
    assert list(parsed.latest) == [float(x) for x in problem.latest]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 .-e\n#nax", max_size=80))
def test_parser_refuses_garbage_with_input_error_only(text: str) -> None:
    try:
        problem = parse_tsptw(text, "x.txt")
    except InputError as exc:
        assert str(exc).startswith("x.txt")
        return
    assert all(math.isfinite(v) for row in problem.travel for v in row)
    assert all(e <= lt for e, lt in zip(problem.earliest, problem.latest, strict=True))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("2\n0 1\n1 0\n0 10\n", "x.txt:4"),  # a window short
        ("2\n0 1\n1 0\n0 10\n5 4\n", "x.txt:5"),  # empty window
        ("2\n0 nan\n1 0\n0 10\n0 10\n", "x.txt:2"),
        ("2\n0 -1\n1 0\n0 10\n0 10\n", "x.txt:2"),
        ("two\n", "x.txt:1"),
    ],
)
def test_parser_names_the_line(text: str, where: str) -> None:
    with pytest.raises(InputError, match=f"^{where}:"):
        parse_tsptw(text, "x.txt")


def test_cli_prints_a_tour_the_evaluator_agrees_with(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "potvin_bengio/rc_201.1.txt"
    assert main(["resequence", str(path), "--time-limit", "60", "--seed", "2", "--iterations", "100"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) >= {"tour", "cost", "feasible", "seconds"}
    problem = read_tsptw(path)
    cost, late = evaluate(problem.travel, problem.earliest, problem.latest, answer["tour"])
    assert answer["cost"] == pytest.approx(cost, abs=1e-6)
    assert answer["feasible"] == (not late)


def test_cli_bad_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("3\n0 1\n")
    assert main(["resequence", str(bad), "--time-limit", "1"]) == 2
    assert str(bad) in capsys.readouterr().err
