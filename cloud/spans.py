"""Sets of sequence numbers kept as merged ranges, with O(log n) work per change whatever the order.

A vehicle's progress is a set of seqs (held, explained, quarantined) that arrive in any order:
newest first after a dead zone, odd and even seqs in different batches. A flat sorted list pays
O(n) per insert for the memmove behind it; with 320,000 ranges that is what made one van's batch
take seconds. ``Spans`` keeps its ranges in blocks of at most ``2 * LOAD`` (the layout of
sortedcontainers' SortedList): a change bisects the block maxima, then edits one block, so it
shifts at most ``2 * LOAD`` entries plus the ranges it merges away (each range is merged away
once, so that part is amortised O(1)).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence

LOAD = 256
"""Target block size: a block is split when it reaches ``2 * LOAD`` ranges."""


class Spans:
    """Sorted, disjoint, non-touching closed ranges of integers.

    ``moved`` counts the list entries shifted or copied by every change so far: the cost model
    the complexity test and the benchmark read (bisects are O(log n) and not counted)."""

    __slots__ = ("_count", "_firsts", "_lasts", "_maxes", "moved")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._firsts: list[list[int]] = []
        self._lasts: list[list[int]] = []
        self._maxes: list[int] = []  # _maxes[b] == _lasts[b][-1]
        self._count = 0
        self.moved = 0
        for first, last in sorted(ranges):
            self.add(first, last)

    def __len__(self) -> int:
        return self._count

    def add(self, first: int, last: int) -> tuple[list[int], tuple[int, int]] | None:
        """Merge [first, last] in; return (firsts of the ranges it replaced, the new range), or None
        when it was already covered, so the caller can mirror exactly that change elsewhere."""
        maxes = self._maxes
        b = bisect_left(maxes, first - 1)  # first block holding a range that reaches first - 1
        if b < len(maxes):
            fs, ls = self._firsts[b], self._lasts[b]
            k = bisect_left(ls, first - 1)
            if fs[k] <= last + 1:  # overlaps or touches: merge with it and what follows
                if fs[k] <= first and last <= ls[k]:
                    return None
                replaced, top = self._pop_from(b, k, last + 1)
                first, last = min(first, replaced[0]), max(last, top)
                self._insert(first, last)
                return replaced, (first, last)
        self._insert(first, last)
        return [], (first, last)

    def _pop_from(self, b: int, k: int, bound: int) -> tuple[list[int], int]:
        """Remove the ranges from position (b, k) on whose first <= bound; their firsts and the
        greatest last. At least the range at (b, k) is removed."""
        replaced: list[int] = []
        top = 0
        firsts, lasts, maxes = self._firsts, self._lasts, self._maxes
        while b < len(firsts):
            fs, ls = firsts[b], lasts[b]
            n = len(fs)
            e = bisect_right(fs, bound, k)
            if e > k:
                replaced.extend(fs[k:e])
                top = ls[e - 1]
                del fs[k:e]
                del ls[k:e]
                self.moved += n - k
                self._count -= e - k
            if fs:
                maxes[b] = ls[-1]
            else:
                del firsts[b], lasts[b], maxes[b]
                self.moved += len(maxes) - b
            if e < n:
                break
            if fs:
                b += 1
            k = 0
        return replaced, top

    def _insert(self, first: int, last: int) -> None:
        """Insert a range that touches no other."""
        firsts, lasts, maxes = self._firsts, self._lasts, self._maxes
        self._count += 1
        if not maxes:
            firsts.append([first])
            lasts.append([last])
            maxes.append(last)
            return
        b = min(bisect_left(maxes, first), len(maxes) - 1)
        fs, ls = firsts[b], lasts[b]
        k = bisect_left(ls, first)
        fs.insert(k, first)
        ls.insert(k, last)
        self.moved += len(fs) - k
        maxes[b] = ls[-1]
        if len(fs) >= 2 * LOAD:
            firsts.insert(b + 1, fs[LOAD:])
            lasts.insert(b + 1, ls[LOAD:])
            del fs[LOAD:]
            del ls[LOAD:]
            maxes[b] = ls[-1]
            maxes.insert(b + 1, lasts[b + 1][-1])
            self.moved += LOAD + len(maxes) - b

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for fs, ls in zip(self._firsts, self._lasts, strict=True):
            yield from zip(fs, ls, strict=True)

    def ranges(self) -> list[tuple[int, int]]:
        return list(self)

    def prefix(self) -> int:
        """The highest c such that every integer in [1, c] is covered (0 if 1 is not)."""
        if self._firsts and self._firsts[0][0] <= 1:
            return self._lasts[0][0]
        return 0

    def end(self) -> int:
        """The highest covered integer (0 when empty)."""
        return self._maxes[-1] if self._maxes else 0

    def hole_count(self) -> int:
        """How many uncovered runs lie in [1, end()]: O(1)."""
        if not self._count:
            return 0
        return self._count - 1 + (1 if self._firsts[0][0] > 1 else 0)

    def first_hole(self) -> tuple[int, int] | None:
        """The lowest uncovered run below ``end()``: O(1)."""
        if not self._count:
            return None
        fs, ls = self._firsts[0], self._lasts[0]
        if fs[0] > 1:
            return (1, fs[0] - 1)
        if self._count == 1:
            return None
        nxt = fs[1] if len(fs) > 1 else self._firsts[1][0]
        return (ls[0] + 1, nxt - 1)

    def holes(self, upto: int, limit: int | None = None) -> list[tuple[int, int]]:
        """The uncovered runs in [1, upto], lowest first, at most ``limit`` of them (a walk: for
        reports, not for the write path)."""
        out: list[tuple[int, int]] = []
        expect = 1
        for first, last in self:
            if first > upto or (limit is not None and len(out) >= limit):
                break
            if first > expect:
                out.append((expect, first - 1))
            expect = last + 1
        if expect <= upto and (limit is None or len(out) < limit):
            out.append((expect, upto))
        return out

    def minus(self, other: Spans) -> list[tuple[int, int]]:
        """The parts of these ranges that ``other`` does not cover (one merge walk of both)."""
        out: list[tuple[int, int]] = []
        theirs = iter(other)
        cur = next(theirs, None)
        for first, last in self:
            lo = first
            while cur is not None and cur[1] < lo:
                cur = next(theirs, None)
            while lo <= last:
                if cur is None or cur[0] > last:
                    out.append((lo, last))
                    break
                if cur[0] > lo:
                    out.append((lo, cur[0] - 1))
                lo = cur[1] + 1
                if cur[1] <= last:
                    cur = next(theirs, None)
        return out


def runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted integers (repeats allowed) as inclusive (first, last) runs."""
    if not seqs:
        return []
    out: list[tuple[int, int]] = []
    first = prev = seqs[0]
    for s in seqs:
        if s > prev + 1:
            out.append((first, prev))
            first = s
        prev = s
    out.append((first, prev))
    return out
