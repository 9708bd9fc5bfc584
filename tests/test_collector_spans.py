"""Progress ranges (``cloud.spans.Spans``): the same answers as a plain set, and work per change
that does not grow with the number of ranges held, whatever the arrival order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud import spans as spans_module
from cloud.spans import Spans


def _set_runs(seqs: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of a set, independently of the code under test."""
    out = []
    for s in sorted(seqs):
        if s - 1 not in seqs:
            last = s
            while last + 1 in seqs:
                last += 1
            out.append((s, last))
    return out


@given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 12)), max_size=80))
def test_small_blocks_match_a_set(adds: list[tuple[int, int]]) -> None:
    """Blocks of 2-3 ranges: every split, merge across blocks and emptied block is exercised."""
    saved = spans_module.LOAD
    spans_module.LOAD = 2
    try:
        spans, model = Spans(), set[int]()
        for first, length in adds:
            change = spans.add(first, first + length)
            covered = set(range(first, first + length + 1)) <= model
            model.update(range(first, first + length + 1))
            assert (change is None) == covered
            assert spans.ranges() == _set_runs(model)
            assert len(spans) == len(_set_runs(model))
        upto = max(model, default=0)
        missing = _set_runs(set(range(1, upto + 1)) - model)
        assert (spans.end(), spans.hole_count(), spans.first_hole()) == (
            upto,
            len(missing),
            missing[0] if missing else None,
        )
        assert spans.holes(upto) == missing
    finally:
        spans_module.LOAD = saved


def _moved_per_add(n: int) -> float:
    """The issue's pattern: odd seqs only (nothing merges), newest first (every insert at the front)."""
    spans = Spans()
    for s in range(2 * n - 1, 0, -2):
        spans.add(s, s)
    assert len(spans) == n
    return spans.moved / n


@pytest.mark.parametrize("order", ["newest first", "oldest first", "interleaved"])
def test_work_per_range_does_not_grow_with_the_ranges_held(order: str) -> None:
    def run(n: int) -> float:
        seqs = list(range(1, 2 * n, 2))
        if order == "newest first":
            seqs.reverse()
        elif order == "interleaved":
            seqs = seqs[::2] + seqs[1::2]
        spans = Spans()
        for s in seqs:
            spans.add(s, s)
        for s in range(2, 2 * n, 2)[: n // 4]:  # then some evens arrive and merge neighbours
            spans.add(s, s)
        return spans.moved / (n + n // 4)

    small, large = run(2_000), run(64_000)  # 32 times the ranges
    assert large <= 2 * small + 4, (
        f"{order}: {small:.1f} entries moved per add at 2,000, {large:.1f} at 64,000"
    )
    assert large < 2 * spans_module.LOAD  # bounded by the block size, not by the ranges held


def test_a_flat_list_would_fail_the_complexity_check() -> None:
    """The check above can fail: with one block (a flat list, as before) the work grows with n."""
    saved = spans_module.LOAD
    spans_module.LOAD = 10**9
    try:
        assert _moved_per_add(16_000) > 4 * _moved_per_add(2_000)
    finally:
        spans_module.LOAD = saved


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), max_size=40))
def test_the_prefix_is_the_longest_run_from_one(adds: list[tuple[int, int]]) -> None:
    spans, model = Spans(), set[int]()
    for first, length in adds:
        spans.add(first, first + length)
        model.update(range(first, first + length + 1))
    prefix = 0
    while prefix + 1 in model:
        prefix += 1
    assert spans.prefix() == prefix


@given(
    st.lists(st.tuples(st.integers(1, 100), st.integers(0, 10)), max_size=15),
    st.lists(st.tuples(st.integers(1, 100), st.integers(0, 10)), max_size=15),
)
def test_minus_matches_a_set(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    sa, sb = Spans([(f, f + n) for f, n in a]), Spans([(f, f + n) for f, n in b])
    ma = {s for f, n in a for s in range(f, f + n + 1)}
    mb = {s for f, n in b for s in range(f, f + n + 1)}
    assert sa.minus(sb) == _set_runs(ma - mb)
