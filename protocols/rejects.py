"""Counting and logging of rejected input, shared by every parser and driver.

Bad input (a corrupt sentence, an unknown CAN id, an unreadable scan) is never an exception out
of a driver: it is counted here under a short reason and logged, rate-limited so a noisy device
cannot flood the journal.
"""

from __future__ import annotations

import logging
from collections import Counter

_LOG_FIRST = 5
_LOG_EVERY = 1000


class Rejects:
    """Per-reason counters for one parser or driver; the first few of each reason are logged."""

    def __init__(self, source: str, logger: logging.Logger | None = None) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self._log = logger or logging.getLogger(f"dropline.{source}")

    def reject(self, reason: str, detail: object = "") -> None:
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            self._log.warning("%s: rejected (%s, %d so far): %.120r", self.source, reason, n, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
