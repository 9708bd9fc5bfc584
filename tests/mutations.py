"""A hypothesis strategy shared by the codec tests: real encodings damaged the ways a link or a
bad writer damages them."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` cut short, with bytes changed, inserted or deleted."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 3))]
        else:
            del data[at:]
    return bytes(data)
