"""The shell's effect runner: work a stage asked for (``Effect``) runs here, on one worker
thread, never on the event thread; each answer comes back through ``deliver`` as an
``EffectResult`` event, which the core records, so a replay reproduces it from the record.

A handler gets the effect (with its time budget) and returns string fields. An effect without a
handler, or whose handler raises, answers ``{"error": ...}``: the stage that asked always hears back.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping

from agent.events import EffectResult
from agent.stages.base import Effect

log = logging.getLogger("dropline.effects")

Handler = Callable[[Effect], dict[str, str]]


class EffectRunner:
    """One worker thread running effects in request order."""

    def __init__(self, handlers: Mapping[str, Handler], deliver: Callable[[EffectResult], None]) -> None:
        self._handlers = dict(handlers)
        self._deliver = deliver
        self._queue: queue.Queue[Effect | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="effects", daemon=True)
        self.done = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, effect: Effect) -> None:
        """Queue ``effect``; returns at once (called on the event thread)."""
        self._queue.put(effect)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what was queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _work(self) -> None:
        while (effect := self._queue.get()) is not None:
            handler = self._handlers.get(effect.name)
            try:
                result = handler(effect) if handler else {"error": f"no handler for {effect.name}"}
            except Exception as exc:
                log.exception("effect %s failed", effect.name)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            self.done += 1
            self._deliver(EffectResult(0.0, effect.name, result))


def resequence(effect: Effect) -> dict[str, str]:
    """The ``resequence`` effect (``agent.stages.eta``): the resequencer on the problem in
    ``effect.args`` within ``effect.budget_s``, warm-started from the current order. Answers the
    manifest, the new order and its expected lateness per stop (JSON), and feasibility."""
    from agent.resequencer import Problem, solve

    args = effect.args
    stops: list[str] = json.loads(args["stops"])
    travel = json.loads(args["travel"])
    n = len(travel)
    if len(stops) != n - 2:
        raise ValueError(f"resequence: {len(stops)} stops for {n} nodes")
    problem = Problem(
        travel=travel,
        earliest=json.loads(args["earliest"]),
        latest=json.loads(args["latest"]),
        service=json.loads(args["service"]),
        start=0,
        end=n - 1,
    )
    plan = solve(problem, effect.budget_s, warm_start=list(range(1, n - 1)))
    late = {stops[i - 1]: round(x, 1) for i, x in plan.late.items() if 0 < i < n - 1}
    return {
        "manifest": args["manifest"],
        "order": json.dumps([stops[i - 1] for i in plan.tour]),
        "late": json.dumps(late, sort_keys=True),
        "feasible": "true" if plan.feasible else "false",
    }


HANDLERS: dict[str, Handler] = {"resequence": resequence}
"""The effects the van's own stages request, by name (the shell adds its own, such as documents)."""
