"""The TSPTW instance file (López-Ibáñez & Blum's matrix format, ``tests/data/tsptw/README.md``):
``N``, then N rows of N travel times (service at the origin included), then N rows ``earliest
latest``; node 0 is the depot; lines starting with ``#`` are comments.

:func:`read_tsptw` gives a :class:`agent.resequencer.Problem` with no service times (they are in
the matrix) that starts and ends at node 0; the diagonal is ignored. Anything else in the file is
an :class:`protocols.errors.InputError` naming the file and line.
"""

from __future__ import annotations

import math
from pathlib import Path

from agent.resequencer import Problem
from protocols.errors import InputError


def parse_tsptw(text: str, name: str = "<text>") -> Problem:
    """The instance in ``text``; ``name`` is used in error messages."""
    tokens: list[tuple[str, int]] = []
    for number, text_line in enumerate(text.splitlines(), 1):
        if not text_line.lstrip().startswith("#"):
            tokens.extend((word, number) for word in text_line.split())
    if not tokens:
        raise InputError(f"{name}: empty: expected the number of nodes")
    first, at = tokens[0]
    if not first.isdigit() or int(first) < 1:
        raise InputError(f"{name}:{at}: the number of nodes must be a positive integer, not {first!r}")
    n = int(first)
    wanted = 1 + n * n + 2 * n
    if len(tokens) != wanted:
        where = tokens[min(len(tokens), wanted) - 1][1]
        raise InputError(
            f"{name}:{where}: {n} nodes need {n * n} travel times and {n} windows "
            f"({wanted - 1} numbers), found {len(tokens) - 1}"
        )
    values: list[float] = []
    for word, line in tokens[1:]:
        try:
            value = float(word)
        except ValueError:
            raise InputError(f"{name}:{line}: not a number: {word!r}") from None
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{name}:{line}: times must be finite and not negative: {word!r}")
        values.append(value)
    travel = [[0.0 if i == j else values[i * n + j] for j in range(n)] for i in range(n)]
    windows = values[n * n :]
    earliest, latest = windows[0::2], windows[1::2]
    for i in range(n):
        if earliest[i] > latest[i]:
            at = tokens[1 + n * n + 2 * i][1]
            raise InputError(f"{name}:{at}: node {i}'s window [{earliest[i]}, {latest[i]}] is empty")
    return Problem(travel=travel, earliest=earliest, latest=latest)


def read_tsptw(path: Path) -> Problem:
    """The instance in the file at ``path``; an unreadable file is an InputError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    return parse_tsptw(text, str(path))
