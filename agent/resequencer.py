"""The local resequencer: the best visiting order for one van's remaining stops (a TSP with time
windows), found within a hard wall-clock budget on the van itself.

The problem starts at the van's node (its position and time, or the depot at opening), visits every
remaining stop once, optionally with a fixed next stop (the driver is already heading there), and
ends at the depot. Waiting is allowed; arriving after a stop's window end is lateness. The search
is an iterated local search over relocation (1-3 stops, both orientations) and 2-opt moves, each
evaluated in O(1) by concatenating per-segment time summaries (duration, time warp, earliest and
latest start: Vidal et al. 2013), with random relocations as perturbation.

What a caller may assume of :func:`solve`:

* it returns within ``time_limit`` plus a few milliseconds (the clock is read inside the move loops);
* it always returns a tour of every stop: when no order meets every window it minimises the time
  warp (lateness) and :attr:`Plan.late` names the stops that will be late;
* with ``max_iterations`` and an unreachable deadline, the result depends only on the problem, the
  seed and the warm start (its own random generator, no clock in the logic);
* with an energy model, a tour whose energy runs below the reserve is not feasible; a charger from
  ``Problem.chargers`` is inserted when that repairs it, else :attr:`Plan.battery_short` is set.

The search itself is compiled by Cython (pure-Python mode, ``setup.py``) and runs unchanged as
Python where there is no compiler.
"""

# mypy: disable-error-code="untyped-decorator"
# (Cython's decorators are untyped: the compiled methods keep their own annotations.)
from __future__ import annotations

import itertools
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cython

_MASK = 0xFFFFFFFFFFFFFFFF
_EPS: cython.double = 1e-9
# Record-to-record acceptance: a feasible local optimum up to this fraction above the best becomes
# the next starting point; after _RESTART perturbations without a new best, restart from the best.
_ACCEPT: cython.double = 0.01
_RESTART: cython.int = 200
_REACH: cython.int = 10  # a perturbation moves a stop by up to this many positions


@dataclass(frozen=True)
class Problem:
    """One van's routing question, nodes numbered 0..n-1.

    ``travel[i][j]`` is the time from leaving ``i`` to reaching ``j`` (it may include the service at
    ``i``, as the TSPTW files do); ``service[i]`` is the time spent at ``i`` before leaving. The van
    leaves ``start`` no earlier than ``earliest[start]`` and must reach ``end`` (the depot; may be
    ``start`` itself) by ``latest[end]``. Every other node except ``chargers`` is a stop to visit.
    The objective is the sum of ``travel`` over the arcs driven (waiting is free).

    Energy (optional, all four or none): ``distance_km`` per arc, ``kwh_per_km``, ``available_kwh``
    (state of charge times capacity, now), ``reserve_kwh`` never to be used; a charger adds
    energy at ``charge_kwh_per_time`` per time unit, up to ``capacity_kwh``.
    """

    travel: Sequence[Sequence[float]]
    earliest: Sequence[float]
    latest: Sequence[float]
    service: Sequence[float] | None = None
    start: int = 0
    end: int = 0
    fixed_next: int | None = None
    chargers: Sequence[int] = ()
    distance_km: Sequence[Sequence[float]] | None = None
    kwh_per_km: float = 0.0
    available_kwh: float = float("inf")
    reserve_kwh: float = 0.0
    capacity_kwh: float = float("inf")
    charge_kwh_per_time: float = 0.0

    @property
    def size(self) -> int:
        return len(self.travel)

    def stops(self) -> list[int]:
        """The nodes to visit, in node order."""
        skip = {self.start, self.end, *self.chargers}
        return [i for i in range(self.size) if i not in skip]


@dataclass(frozen=True)
class Schedule:
    """A tour simulated without time travel: when the van reaches and starts each node."""

    arrival: list[float]
    begin: list[float]
    late: dict[int, float]
    cost: float
    end_arrival: float
    energy_left_kwh: float


@dataclass(frozen=True)
class Plan:
    """The resequencer's answer. ``tour`` lists the stops (and any inserted charger) in visit
    order, start and end excluded; ``late`` maps each stop that misses its window (and the end
    node, if the return is late) to its lateness; ``feasible`` means no lateness and enough
    energy."""

    tour: list[int]
    cost: float
    feasible: bool
    late: dict[int, float]
    schedule: Schedule
    battery_short: bool = False
    charger: int | None = None
    iterations: int = 0
    seconds: float = 0.0
    first_feasible_s: float | None = None
    history: list[tuple[float, float]] = field(default_factory=list)


def simulate(problem: Problem, tour: Sequence[int]) -> Schedule:
    """Drive ``tour`` (stops in order, start and end excluded) from ``problem.start`` to
    ``problem.end``: wait at early arrivals, record lateness at late ones."""
    service = problem.service
    node = problem.start
    t = float(problem.earliest[node])
    arrival = []
    begin = []
    late: dict[int, float] = {}
    cost = 0.0
    energy = problem.available_kwh
    rate = problem.kwh_per_km
    for nxt in [*tour, problem.end]:
        travel = float(problem.travel[node][nxt])
        cost += travel
        if problem.distance_km is not None:
            energy -= rate * float(problem.distance_km[node][nxt])
        a = t + (float(service[node]) if service else 0.0) + travel
        if a > problem.latest[nxt] + 1e-9:
            late[nxt] = a - float(problem.latest[nxt])
        b = max(a, float(problem.earliest[nxt]))
        if nxt in problem.chargers and problem.charge_kwh_per_time > 0:
            gained = min(problem.capacity_kwh, _energy_needed_after(problem, tour, nxt)) - energy
            gained = max(gained, 0.0)
            energy += gained
            b += gained / problem.charge_kwh_per_time
        arrival.append(a)
        begin.append(b)
        node, t = nxt, b
    last = len(arrival) - 1  # compiled with wraparound=False: no negative indices
    return Schedule(arrival[:last], begin[:last], late, cost, arrival[last], energy)


def _energy_needed_after(problem: Problem, tour: Sequence[int], charger: int) -> float:
    """Energy to charge up to at ``charger``: what the rest of the tour uses plus the reserve."""
    assert problem.distance_km is not None
    rest = [*tour[list(tour).index(charger) :], problem.end]
    used = sum(problem.distance_km[a][b] for a, b in itertools.pairwise(rest))
    return problem.kwh_per_km * used + problem.reserve_kwh


def solve(
    problem: Problem,
    time_limit: float,
    *,
    seed: int = 0,
    max_iterations: int | None = None,
    warm_start: Sequence[int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Plan:
    """The best tour found within ``time_limit`` seconds of wall clock (or ``max_iterations``
    perturbations, whichever ends first). ``warm_start`` (the current plan) seeds the search:
    its stops keep their order, stops it lacks are inserted, unknown ones are ignored."""
    started = clock()
    deadline = started + max(time_limit, 0.0) - 0.002  # the last move scan and the answer
    stops = problem.stops()
    n = problem.size
    flat = array("d", bytes(8 * n * n))
    for i, row in enumerate(problem.travel):
        if len(row) != n:
            raise ValueError(f"travel row {i} has {len(row)} entries, expected {n}")
        flat[i * n : (i + 1) * n] = array("d", (float(x) for x in row))
    service = array("d", (float(x) for x in problem.service) if problem.service else bytes(8 * n))
    search = _Search(
        flat,
        array("d", (float(x) for x in problem.earliest)),
        array("d", (float(x) for x in problem.latest)),
        service,
        n,
        problem.start,
        problem.end,
        array("l", stops),
        -1 if problem.fixed_next is None else problem.fixed_next,
        seed,
    )
    if warm_start is not None:
        known = set(stops)
        search.warm([s for s in dict.fromkeys(warm_start) if s in known])
    else:
        search.warm([])
    budget = -1 if max_iterations is None else max_iterations
    search.run(deadline, budget, clock, started)
    tour, iterations, first, history = search.result()
    plan = Plan(
        tour=tour,
        cost=0.0,
        feasible=False,
        late={},
        schedule=simulate(problem, tour),
        iterations=iterations,
        first_feasible_s=None if first < 0 else first - started,
        history=[(t - started, c) for t, c in history],
    )
    plan = _finish(problem, tour, plan, started, clock)
    if plan.battery_short and problem.chargers:
        plan = _charge(problem, plan, started, clock)
    return plan


def _finish(
    problem: Problem, tour: list[int], plan: Plan, started: float, clock: Callable[[], float]
) -> Plan:
    schedule = simulate(problem, tour)
    short = problem.distance_km is not None and schedule.energy_left_kwh < problem.reserve_kwh - 1e-9
    return Plan(
        tour=tour,
        cost=schedule.cost,
        feasible=not schedule.late and not short,
        late=dict(schedule.late),
        schedule=schedule,
        battery_short=short,
        iterations=plan.iterations,
        seconds=clock() - started,
        first_feasible_s=plan.first_feasible_s,
        history=plan.history,
    )


def _charge(problem: Problem, plan: Plan, started: float, clock: Callable[[], float]) -> Plan:
    """Insert the charger stop that repairs the energy at the least (lateness, cost); the plan
    with ``battery_short`` when none does."""
    best: tuple[tuple[bool, float, float], list[int], Schedule] | None = None
    for charger in problem.chargers:
        for at in range(len(plan.tour) + 1):
            tour = [*plan.tour[:at], charger, *plan.tour[at:]]
            if not _reaches(problem, tour, charger):
                continue
            schedule = simulate(problem, tour)
            if schedule.energy_left_kwh < problem.reserve_kwh - 1e-9:
                continue
            key = (bool(schedule.late), sum(schedule.late.values()), schedule.cost)
            if best is None or key < best[0]:
                best = (key, tour, schedule)
    if best is None:
        return plan
    _, tour, schedule = best
    return Plan(
        tour=tour,
        cost=schedule.cost,
        feasible=not schedule.late,
        late=dict(schedule.late),
        schedule=schedule,
        charger=next(c for c in tour if c in problem.chargers),
        iterations=plan.iterations,
        seconds=clock() - started,
        first_feasible_s=plan.first_feasible_s,
        history=plan.history,
    )


def _reaches(problem: Problem, tour: Sequence[int], charger: int) -> bool:
    """Whether the van gets to ``charger`` without dipping into the reserve."""
    assert problem.distance_km is not None
    energy = problem.available_kwh
    node = problem.start
    for nxt in tour:
        energy -= problem.kwh_per_km * problem.distance_km[node][nxt]
        if energy < problem.reserve_kwh - 1e-9:
            return False
        if nxt == charger:
            return True
        node = nxt
    return False


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _cat(
    d1: cython.double,
    t1: cython.double,
    e1: cython.double,
    l1: cython.double,
    c1: cython.double,
    d2: cython.double,
    t2: cython.double,
    e2: cython.double,
    l2: cython.double,
    c2: cython.double,
    arc: cython.double,
) -> tuple[cython.double, cython.double, cython.double, cython.double, cython.double]:
    """Summary of segment 1 followed by segment 2 (``arc`` = travel between them): duration,
    time warp, earliest and latest start, cost."""
    delta: cython.double = d1 - t1 + arc
    wait: cython.double = e2 - delta - l1
    warp: cython.double = e1 + delta - l2
    if wait < 0.0:
        wait = 0.0
    if warp < 0.0:
        warp = 0.0
    e: cython.double = e2 - delta
    if e1 > e:
        e = e1
    lt: cython.double = l2 - delta
    if l1 < lt:
        lt = l1
    return d1 + d2 + arc + wait, t1 + t2 + warp, e - wait, lt + warp, c1 + c2 + arc


@cython.cclass
class _Search:
    """The compiled search state: the route as an array of nodes (start, stops..., end) with
    prefix and suffix segment summaries kept current after every move."""

    dist: cython.double[::1]
    ear: cython.double[::1]
    lat: cython.double[::1]
    svc: cython.double[::1]
    n: cython.int
    m: cython.int
    lo: cython.int
    fixed: cython.int
    start_node: cython.int
    end_node: cython.int
    stops: cython.long[::1]
    stop_list: list[int]
    route: cython.long[::1]
    scratch: cython.long[::1]
    best: cython.long[::1]
    current: cython.long[::1]
    pd: cython.double[::1]
    pt: cython.double[::1]
    pe: cython.double[::1]
    pl: cython.double[::1]
    pc: cython.double[::1]
    sd: cython.double[::1]
    st: cython.double[::1]
    se: cython.double[::1]
    sl: cython.double[::1]
    sc: cython.double[::1]
    weight: cython.double
    rng: cython.ulonglong
    deadline: cython.double
    clock: Callable[[], float]
    stopped: cython.bint
    iterations: cython.long
    first_feasible: cython.double
    history: list[tuple[float, float]]

    def __init__(
        self,
        dist: Sequence[float],
        ear: Sequence[float],
        lat: Sequence[float],
        svc: Sequence[float],
        n: int,
        start: int,
        end: int,
        stops: Sequence[int],
        fixed: int,
        seed: int,
    ) -> None:
        self.dist = dist
        self.ear = ear
        self.lat = lat
        self.svc = svc
        self.n = n
        self.m = len(stops)
        self.start_node = start
        self.end_node = end
        self.stops = stops
        self.stop_list = list(stops)
        self.fixed = fixed if fixed >= 0 and self.m > 0 else -1
        self.lo = 2 if self.fixed >= 0 else 1
        size = self.m + 2
        self.route = array("l", bytes(8 * size))
        self.scratch = array("l", bytes(8 * size))
        self.best = array("l", bytes(8 * size))
        self.current = array("l", bytes(8 * size))
        self.pd, self.pt, self.pe, self.pl, self.pc = (array("d", bytes(8 * size)) for _ in range(5))
        self.sd, self.st, self.se, self.sl, self.sc = (array("d", bytes(8 * size)) for _ in range(5))
        longest = max(dist) if n > 0 else 1.0
        self.weight = max(1.0, longest) * 10.0
        self.rng = (seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) & _MASK
        if self.rng == 0:
            self.rng = 1
        self.deadline = float("inf")
        self.clock = time.perf_counter
        self.stopped = False
        self.iterations = 0
        self.first_feasible = -1.0
        self.history = []

    @cython.cfunc
    def _next(self) -> cython.ulonglong:
        x: cython.ulonglong = self.rng
        x ^= (x << 13) & _MASK
        x ^= x >> 7
        x ^= (x << 17) & _MASK
        self.rng = x
        return x

    @cython.cfunc
    def _below(self, k: cython.long) -> cython.long:
        """A random integer in [0, k)."""
        return cython.cast(cython.long, self._next() % cython.cast(cython.ulonglong, k))

    @cython.cfunc
    def _time_up(self) -> cython.bint:
        if not self.stopped and self.clock() >= self.deadline:
            self.stopped = True
        return self.stopped

    @cython.cfunc
    def _summarise(self) -> cython.void:
        """Recompute the prefix and suffix summaries of the route."""
        r: cython.long[::1] = self.route
        last: cython.int = self.m + 1
        node: cython.long = r[0]
        p: cython.int
        self.pd[0] = self.svc[node]
        self.pt[0] = 0.0
        self.pe[0] = self.ear[node]
        self.pl[0] = self.lat[node]
        self.pc[0] = 0.0
        for p in range(1, last + 1):
            node = r[p]
            self.pd[p], self.pt[p], self.pe[p], self.pl[p], self.pc[p] = _cat(
                self.pd[p - 1],
                self.pt[p - 1],
                self.pe[p - 1],
                self.pl[p - 1],
                self.pc[p - 1],
                self.svc[node],
                0.0,
                self.ear[node],
                self.lat[node],
                0.0,
                self.dist[r[p - 1] * self.n + node],
            )
        node = r[last]
        self.sd[last] = self.svc[node]
        self.st[last] = 0.0
        self.se[last] = self.ear[node]
        self.sl[last] = self.lat[node]
        self.sc[last] = 0.0
        for p in range(last - 1, -1, -1):
            node = r[p]
            self.sd[p], self.st[p], self.se[p], self.sl[p], self.sc[p] = _cat(
                self.svc[node],
                0.0,
                self.ear[node],
                self.lat[node],
                0.0,
                self.sd[p + 1],
                self.st[p + 1],
                self.se[p + 1],
                self.sl[p + 1],
                self.sc[p + 1],
                self.dist[node * self.n + r[p + 1]],
            )

    @cython.cfunc
    def _objective(self) -> cython.double:
        return self.pc[self.m + 1] + self.weight * self.pt[self.m + 1]

    def warm(self, order: list[int]) -> None:
        """The first route: ``order`` (already filtered to known stops) kept as is, every other
        stop inserted by cheapest penalised insertion, earliest window end first."""
        present = set(order)
        if self.fixed >= 0:
            order = [self.fixed, *(s for s in order if s != self.fixed)]
            present.add(self.fixed)
        lat = self.lat
        ear = self.ear
        rest = sorted((s for s in self.stop_list if s not in present), key=lambda s: (lat[s], ear[s], s))
        size = len(order)
        self.route[0] = self.start_node
        for i, s in enumerate(order):
            self.route[i + 1] = s
        self.route[size + 1] = self.end_node
        for s in rest:
            self._insert_cheapest(s, size)
            size += 1
        self._summarise()
        self.best[:] = self.route

    @cython.cfunc
    def _insert_cheapest(self, node: cython.long, size: cython.int) -> cython.void:
        """Insert ``node`` into the partial route ``route[0..size+1]`` where it costs least."""
        saved: cython.int = self.m
        self.m = size
        self._summarise()
        self.m = saved
        best_at: cython.int = size
        best_val: cython.double = 1e300
        p: cython.int
        d: cython.double
        t: cython.double
        e: cython.double
        lt: cython.double
        c: cython.double
        r: cython.long[::1] = self.route
        n: cython.int = self.n
        for p in range(self.lo - 1, size + 1):
            d, t, e, lt, c = _cat(
                self.pd[p], self.pt[p], self.pe[p], self.pl[p], self.pc[p],
                self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                self.dist[r[p] * n + node],
            )  # fmt: skip
            d, t, e, lt, c = _cat(
                d, t, e, lt, c,
                self.sd[p + 1], self.st[p + 1], self.se[p + 1], self.sl[p + 1], self.sc[p + 1],
                self.dist[node * n + r[p + 1]],
            )  # fmt: skip
            if c + self.weight * t < best_val - _EPS:
                best_val = c + self.weight * t
                best_at = p
        for p in range(size + 1, best_at, -1):
            r[p + 1] = r[p]
        r[best_at + 1] = node

    @cython.cfunc
    def _two_opt(self) -> cython.bint:
        """Apply the best improving reversal starting at each position; True if any."""
        r: cython.long[::1] = self.route
        n: cython.int = self.n
        m: cython.int = self.m
        w: cython.double = self.weight
        improved: cython.bint = False
        best_val: cython.double
        best_j: cython.int
        i: cython.int
        j: cython.int
        node: cython.long
        rd: cython.double
        rt: cython.double
        re: cython.double
        rl: cython.double
        rc: cython.double
        d: cython.double
        t: cython.double
        e: cython.double
        lt: cython.double
        c: cython.double
        for i in range(self.lo, m):
            if self._time_up():
                return improved
            best_val = self._objective() - _EPS
            best_j = -1
            node = r[i]
            rd, rt, re, rl, rc = self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0
            for j in range(i + 1, m + 1):
                node = r[j]
                rd, rt, re, rl, rc = _cat(
                    self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                    rd, rt, re, rl, rc, self.dist[node * n + r[j - 1]],
                )  # fmt: skip
                if self.pc[i - 1] + rc + w * (self.pt[i - 1] + rt) >= best_val:
                    break
                d, t, e, lt, c = _cat(
                    self.pd[i - 1], self.pt[i - 1], self.pe[i - 1], self.pl[i - 1], self.pc[i - 1],
                    rd, rt, re, rl, rc, self.dist[r[i - 1] * n + node],
                )  # fmt: skip
                d, t, e, lt, c = _cat(
                    d, t, e, lt, c,
                    self.sd[j + 1], self.st[j + 1], self.se[j + 1], self.sl[j + 1], self.sc[j + 1],
                    self.dist[r[i] * n + r[j + 1]],
                )  # fmt: skip
                if c + w * t < best_val:
                    best_val = c + w * t
                    best_j = j
            if best_j >= 0:
                self._reverse(i, best_j)
                self._summarise()
                improved = True
        return improved

    @cython.cfunc
    def _reverse(self, i: cython.int, j: cython.int) -> cython.void:
        r: cython.long[::1] = self.route
        tmp: cython.long
        while i < j:
            tmp = r[i]
            r[i] = r[j]
            r[j] = tmp
            i += 1
            j -= 1

    @cython.cfunc
    def _relocate(self, length: cython.int) -> cython.bint:
        """Move each segment of ``length`` stops (as is or reversed) to its best position;
        True if any move improved the route."""
        r: cython.long[::1] = self.route
        n: cython.int = self.n
        m: cython.int = self.m
        w: cython.double = self.weight
        improved: cython.bint = False
        best_val: cython.double
        best_k: cython.int
        best_rev: cython.int
        i: cython.int
        j: cython.int
        k: cython.int
        q: cython.int
        rev: cython.int
        node: cython.long
        first: cython.long
        tail: cython.long
        sd: cython.double
        st: cython.double
        se: cython.double
        sl: cython.double
        sc: cython.double
        md: cython.double
        mt: cython.double
        me: cython.double
        ml: cython.double
        mc: cython.double
        d: cython.double
        t: cython.double
        e: cython.double
        lt: cython.double
        c: cython.double
        i = self.lo
        while i + length - 1 <= m:
            if self._time_up():
                return improved
            j = i + length - 1
            best_val = self._objective() - _EPS
            best_k = -1
            best_rev = 0
            for rev in range(2 if length > 1 else 1):
                first = r[j] if rev else r[i]
                sd, st, se, sl, sc = self.svc[first], 0.0, self.ear[first], self.lat[first], 0.0
                tail = first
                for q in range(1, length):
                    node = r[j - q] if rev else r[i + q]
                    sd, st, se, sl, sc = _cat(
                        sd, st, se, sl, sc,
                        self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                        self.dist[tail * n + node],
                    )  # fmt: skip
                    tail = node
                # forward: prefix(i-1) + r[j+1..k] + S + suffix(k+1)
                if j + 1 <= m:
                    node = r[j + 1]
                    md, mt, me, ml, mc = _cat(
                        self.pd[i - 1], self.pt[i - 1], self.pe[i - 1], self.pl[i - 1], self.pc[i - 1],
                        self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                        self.dist[r[i - 1] * n + node],
                    )  # fmt: skip
                    for k in range(j + 1, m + 1):
                        if k > j + 1:
                            node = r[k]
                            md, mt, me, ml, mc = _cat(
                                md, mt, me, ml, mc,
                                self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                                self.dist[r[k - 1] * n + node],
                            )  # fmt: skip
                        d, t, e, lt, c = _cat(
                            md, mt, me, ml, mc, sd, st, se, sl, sc, self.dist[r[k] * n + first]
                        )
                        if mc + sc + w * t >= best_val:
                            break
                        d, t, e, lt, c = _cat(
                            d, t, e, lt, c,
                            self.sd[k + 1], self.st[k + 1], self.se[k + 1], self.sl[k + 1], self.sc[k + 1],
                            self.dist[tail * n + r[k + 1]],
                        )  # fmt: skip
                        if c + w * t < best_val:
                            best_val = c + w * t
                            best_k = k
                            best_rev = rev
                # backward: prefix(k) + S + r[k+1..i-1] + suffix(j+1)
                if i - 2 >= self.lo - 1:
                    node = r[i - 1]
                    md, mt, me, ml, mc = _cat(
                        self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                        self.sd[j + 1], self.st[j + 1], self.se[j + 1], self.sl[j + 1], self.sc[j + 1],
                        self.dist[node * n + r[j + 1]],
                    )  # fmt: skip
                    for k in range(i - 2, self.lo - 2, -1):
                        if k < i - 2:
                            node = r[k + 1]
                            md, mt, me, ml, mc = _cat(
                                self.svc[node], 0.0, self.ear[node], self.lat[node], 0.0,
                                md, mt, me, ml, mc, self.dist[node * n + r[k + 2]],
                            )  # fmt: skip
                        d, t, e, lt, c = _cat(
                            sd, st, se, sl, sc, md, mt, me, ml, mc, self.dist[tail * n + r[k + 1]]
                        )
                        if c + w * t >= best_val:
                            break
                        d, t, e, lt, c = _cat(
                            self.pd[k], self.pt[k], self.pe[k], self.pl[k], self.pc[k],
                            d, t, e, lt, c, self.dist[r[k] * n + first],
                        )  # fmt: skip
                        if c + w * t < best_val:
                            best_val = c + w * t
                            best_k = k
                            best_rev = rev
            if best_k >= 0:
                self._move(i, j, best_k, best_rev)
                self._summarise()
                improved = True
            i += 1
        return improved

    @cython.cfunc
    def _move(self, i: cython.int, j: cython.int, k: cython.int, rev: cython.int) -> cython.void:
        """Move ``route[i..j]`` (reversed if ``rev``) to just after position ``k``."""
        r: cython.long[::1] = self.route
        s = self.scratch
        out: cython.int = 0
        p: cython.int
        q: cython.int
        for p in range(self.m + 2):
            if i <= p <= j:
                continue
            s[out] = r[p]
            out += 1
            if p == k:
                for q in range(j - i + 1):
                    s[out] = r[j - q] if rev else r[i + q]
                    out += 1
        for p in range(self.m + 2):
            r[p] = s[p]

    @cython.cfunc
    def _descend(self) -> cython.void:
        """Local search to a local optimum (or the deadline)."""
        improved: cython.bint = True
        while improved and not self._time_up():
            improved = self._relocate(1)
            improved = self._relocate(2) or improved
            improved = self._relocate(3) or improved
            improved = self._two_opt() or improved

    @cython.cfunc
    def _perturb(self, strength: cython.int) -> cython.void:
        """``strength`` random relocations of one stop by up to ``_REACH`` positions."""
        movable: cython.int = self.m - self.lo + 1
        _q: cython.int
        i: cython.int
        k: cython.int
        if movable < 2:
            return
        for _q in range(strength):
            i = self.lo + cython.cast(cython.int, self._below(movable))
            k = i + cython.cast(cython.int, self._below(2 * _REACH + 1)) - _REACH
            if k < self.lo - 1:
                k = self.lo - 1
            if k > self.m:
                k = self.m
            if k == i or k == i - 1:
                continue
            self._move(i, i, k, 0)

    @cython.cfunc
    def _better(
        self, t: cython.double, c: cython.double, bt: cython.double, bc: cython.double
    ) -> cython.bint:
        """Less time warp first, then less cost."""
        if t > _EPS or bt > _EPS:
            return t < bt - _EPS or (abs(t - bt) <= _EPS and c < bc - _EPS)
        return c < bc - _EPS

    def result(self) -> tuple[list[int], int, float, list[tuple[float, float]]]:
        """The best route's stops, perturbations done, clock at first feasible (-1: none), and
        (clock, cost) at each improvement (cost inf while infeasible)."""
        return (
            [self.best[p] for p in range(1, self.m + 1)],
            self.iterations,
            self.first_feasible,
            self.history,
        )

    @cython.cfunc
    def _lateness(self) -> cython.double:
        """Total lateness of the route driven without time warp (waiting when early)."""
        r: cython.long[::1] = self.route
        t: cython.double = self.ear[r[0]]
        a: cython.double
        late: cython.double = 0.0
        p: cython.int
        for p in range(1, self.m + 2):
            a = t + self.svc[r[p - 1]] + self.dist[r[p - 1] * self.n + r[p]]
            if a > self.lat[r[p]]:
                late += a - self.lat[r[p]]
            t = a if a > self.ear[r[p]] else self.ear[r[p]]
        return late

    @cython.cfunc
    def _polish_lateness(self) -> cython.void:
        """When no route is on time: move single stops wherever that lowers the real lateness
        (then cost), each candidate driven in full, until no move helps or time is up."""
        r: cython.long[::1] = self.route
        m: cython.int = self.m
        i: cython.int
        k: cython.int
        late: cython.double
        cost: cython.double
        best_late: cython.double = self._lateness()
        best_cost: cython.double = self._cost()
        improved: cython.bint = True
        while improved and best_late > _EPS:
            improved = False
            for i in range(self.lo, m + 1):
                if self._time_up():
                    return
                for k in range(self.lo - 1, m + 1):
                    if k == i or k == i - 1:
                        continue
                    self.best[:] = r
                    self._move(i, i, k, 0)
                    late = self._lateness()
                    cost = self._cost()
                    if late < best_late - _EPS or (late <= best_late + _EPS and cost < best_cost - _EPS):
                        best_late = late
                        best_cost = cost
                        improved = True
                        break
                    r[:] = self.best
        self.best[:] = r

    @cython.cfunc
    def _cost(self) -> cython.double:
        r: cython.long[::1] = self.route
        total: cython.double = 0.0
        p: cython.int
        for p in range(1, self.m + 2):
            total += self.dist[r[p - 1] * self.n + r[p]]
        return total

    @cython.cfunc
    def _late_now(self) -> cython.double:
        """The current route's real lateness (0 exactly when it has no time warp)."""
        if self.pt[self.m + 1] <= _EPS:
            return 0.0
        return self._lateness()

    def run(self, deadline: float, budget: int, clock: Callable[[], float], started: float) -> None:
        """Iterated local search until ``deadline`` or ``budget`` perturbations (-1: unbounded).
        The search descends on cost plus weighted time warp; the best route is kept by real
        lateness first (when no route is on time), then cost."""
        self.deadline = deadline
        self.clock = clock
        self.stopped = False
        m: cython.int = self.m
        late: cython.double
        self._summarise()
        self._descend()
        best_t: cython.double = self._late_now()
        best_c: cython.double = self.pc[m + 1]
        self.best[:] = self.route
        if best_t <= _EPS:
            self.first_feasible = clock()
        self.history.append((clock(), best_c if best_t <= _EPS else float("inf")))
        strength: cython.int = 1
        limit: cython.int = 8 if m > 8 else m
        stale: cython.int = 0
        self.current[:] = self.best
        while budget < 0 or self.iterations < budget:
            if self._time_up() or m < 2:
                break
            self.iterations += 1
            self.route[:] = self.current
            self._perturb(strength)
            self._summarise()
            self._descend()
            late = self._late_now()
            if self._better(late, self.pc[m + 1], best_t, best_c):
                if best_t > _EPS and late <= _EPS:
                    self.first_feasible = clock()
                best_t = late
                best_c = self.pc[m + 1]
                self.best[:] = self.route
                self.current[:] = self.route
                self.history.append((clock(), best_c if best_t <= _EPS else float("inf")))
                strength = 1
                stale = 0
            else:
                strength = strength + 1 if strength < limit else 1
                stale += 1
                if late <= _EPS and best_t <= _EPS and self.pc[m + 1] <= best_c * (1.0 + _ACCEPT):
                    self.current[:] = self.route
                if stale >= _RESTART:
                    self.current[:] = self.best
                    stale = 0
            if best_t > _EPS and self.weight < 1e12:
                self.weight *= 1.1
        self.route[:] = self.best
        if best_t > _EPS:
            self._polish_lateness()
            self.route[:] = self.best
