"""The shared line assembler against an independent oracle: ``re.split`` over the whole stream at
once (CR LF, CR or LF end a line), whatever pieces the stream arrives in."""

from __future__ import annotations

import itertools
import re
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.lines import LineAssembler, Overlong
from protocols.rejects import Rejects

_ENDS = re.compile(rb"\r\n|\r|\n")


def oracle(data: bytes) -> tuple[list[bytes], bytes]:
    """Every terminated line of ``data`` and the unterminated rest, read in one piece."""
    *lines, rest = _ENDS.split(data)
    return lines, rest


# streams rich in line ends, GS (0x1D: data, not a line end) and long runs without a terminator
pieces = st.one_of(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r", b"\x1d", b" "]),
    st.binary(max_size=12),
    st.integers(1, 120).map(lambda n: b"x" * n),
)
streams = st.lists(pieces, max_size=40).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length): every chunking is possible."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 5000), max_size=30), max_line=st.integers(1, 64))
def test_any_chunking_gives_the_lines_of_the_whole_stream(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    lines, rest = oracle(data)
    a = LineAssembler(max_line)
    got: list[bytes | Overlong] = []
    for chunk in chunked(data, cuts):
        got += a.feed(chunk)
        assert a.pending <= max_line  # memory bounded by the limit, at every moment
    # one item per terminated line, in order; a line over the limit only as an Overlong marker,
    # reported as soon as it crosses the limit (so an unterminated rest over it is reported too)
    want = [len(x) > max_line or x for x in lines] + [True] * (len(rest) > max_line)
    assert [isinstance(g, Overlong) or g for g in got] == want
    assert all(g.length > max_line for g in got if isinstance(g, Overlong))
    assert a.finish() == (rest if 0 < len(rest) <= max_line else None)
    assert a.pending == 0


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 5000), max_size=30), max_line=st.integers(1, 64))
def test_push_counts_what_it_drops(data: bytes, cuts: list[int], max_line: int) -> None:
    lines, rest = oracle(data)
    rejects = Rejects("test-lines")
    a = LineAssembler(max_line, rejects)
    got = [line for chunk in chunked(data, cuts) for line in a.push(chunk)]
    a.end()
    assert got == [x for x in lines if 0 < len(x) <= max_line]
    assert all(len(line) <= max_line for line in got)  # a line over the limit never appears
    want = {
        "overlong": sum(len(x) > max_line for x in lines) + (len(rest) > max_line),
        "truncated": int(len(rest) <= max_line and rest.strip() != b""),
    }
    assert rejects.as_dict() == {k: v for k, v in want.items() if v}


def test_crlf_split_across_reads_is_one_line_end() -> None:
    a = LineAssembler(100)
    assert a.feed(b"abc\r") == [b"abc"]
    assert a.feed(b"\n") == []  # the LF of that CR LF
    assert a.feed(b"\n") == [b""]  # a second LF is an empty line
    assert a.feed(b"\r") == [b""]
    assert a.feed(b"\r") == [b""]  # CR CR: two line ends
    assert a.feed(b"\nx\x1dy\n") == [b"x\x1dy"]  # GS is data


def test_the_limit_is_inclusive_and_reported_once() -> None:
    rejects = Rejects("test-lines")
    a = LineAssembler(8, rejects)
    assert a.push(b"12345678\n") == [b"12345678"]
    assert a.push(b"12345") == [] and a.push(b"6789") == [] and a.push(b"more") == []
    assert rejects.as_dict() == {"overlong": 1}
    assert a.pending == 0
    assert a.push(b"tail\r\nok\r\n") == [b"ok"]  # dropped up to its end, then lines again
    a.push(b"x" * 20)
    a.end()  # an over-long line cut off is not truncated as well: it was counted once
    assert rejects.as_dict() == {"overlong": 2}


def test_ten_megabytes_without_a_line_end_are_not_held() -> None:
    """A receiver at the wrong baud rate: 10 MB of junk, in one read and in 64 kB reads; the
    assembler never allocates more than about its limit, and the good line after comes through."""
    junk = bytes(range(14, 256)) * (10_000_000 // 242)
    good = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
    for size in (len(junk), 1 << 16):
        rejects = Rejects("test-lines")
        a = LineAssembler(256, rejects)
        reads = [junk[i : i + size] for i in range(0, len(junk), size)]
        tracemalloc.start()
        try:
            for read in reads:
                assert a.push(read) == []
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64_000, (size, peak)
        assert a.pending == 0
        assert a.push(b"\r\n" + good + b"\r\n") == [good]
        assert rejects.as_dict() == {"overlong": 1}
