"""The van's protobuf-free Downlink/Ack/Document decoder against protobuf's own parser.

Truth is ``google.protobuf`` (upb): a message protobuf builds decodes to the same values, and for
any bytes at all (random, truncated, mutated, a soup of fields of every wire type and number,
nested groups) ours raises ``WireError`` exactly where protobuf refuses and agrees with it
everywhere else; no other exception ever escapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols import downlink
from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError
from protocols.wire import varint
from tests.mutations import mutated

U64 = st.integers(0, 2**64 - 1)


def ack_of(m: pb.Ack) -> downlink.Ack:
    return downlink.Ack(
        m.vehicle,
        m.batch_id,
        tuple(downlink.SeqRange(r.first, r.last) for r in m.stored),
        m.rejected,
        m.reason,
        m.contiguous,
        tuple(downlink.Quarantined(q.first, q.last, q.reason) for q in m.quarantined),
    )


def document_of(m: pb.Document) -> downlink.Document:
    return downlink.Document(m.kind, m.envelope)


def downlink_of(m: pb.Downlink) -> downlink.Downlink:
    which = m.WhichOneof("body")
    if which == "ack":
        return downlink.Downlink(ack=ack_of(m.ack))
    if which == "document":
        return downlink.Downlink(document=document_of(m.document))
    return downlink.Downlink(collector_online=m.collector_online)


KINDS: dict[str, tuple[Any, Callable[[Any], Any], Callable[[bytes], Any]]] = {
    "downlink": (pb.Downlink, downlink_of, downlink.decode_downlink),
    "ack": (pb.Ack, ack_of, downlink.decode_ack),
    "document": (pb.Document, document_of, downlink.decode_document),
}


def check_agrees(kind: str, data: bytes) -> None:
    """Ours refuses (WireError, nothing else) exactly what protobuf refuses, else the same values."""
    cls, convert, decode = KINDS[kind]
    try:
        expected = convert(cls.FromString(data))
    except Exception:  # upb's DecodeError
        expected = None
    try:
        got = decode(data)
    except WireError as exc:
        assert str(exc), "a WireError says what is wrong"
        got = None
    assert got == expected, data.hex()


@st.composite
def acks(draw: st.DrawFn) -> pb.Ack:
    return pb.Ack(
        vehicle=draw(st.text(max_size=12)),
        batch_id=draw(U64),
        stored=[pb.SeqRange(first=a, last=b) for a, b in draw(st.lists(st.tuples(U64, U64), max_size=4))],
        rejected=draw(st.booleans()),
        reason=draw(st.text(max_size=12)),
        contiguous=draw(U64),
        quarantined=[
            pb.Quarantined(first=a, last=b, reason=r)
            for a, b, r in draw(st.lists(st.tuples(U64, U64, st.text(max_size=6)), max_size=3))
        ],
    )


documents = st.builds(pb.Document, kind=st.text(max_size=10), envelope=st.binary(max_size=40))
downlinks = st.one_of(
    st.builds(pb.Downlink, ack=acks()),
    st.builds(pb.Downlink, document=documents),
    st.builds(pb.Downlink, collector_online=st.booleans()),
    st.just(pb.Downlink()),
)


@given(downlinks)
def test_messages_protobuf_builds_decode_to_the_same_values(message: pb.Downlink) -> None:
    assert downlink.decode_downlink(message.SerializeToString()) == downlink_of(message)


@given(acks(), documents)
def test_acks_and_documents_decode_alone(ack: pb.Ack, document: pb.Document) -> None:
    assert downlink.decode_ack(ack.SerializeToString()) == ack_of(ack)
    assert downlink.decode_document(document.SerializeToString()) == document_of(document)


@given(st.lists(downlinks, min_size=2, max_size=4))
def test_concatenated_messages_merge_as_protobuf_merges(messages: list[pb.Downlink]) -> None:
    """Protobuf's rule for bytes seen twice: the oneof's last member wins, a message seen again is
    merged into (scalars replaced, repeated appended)."""
    check_agrees("downlink", b"".join(m.SerializeToString() for m in messages))


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


@st.composite
def soup(draw: st.DrawFn, depth: int = 3) -> bytes:
    """Fields of any number and wire type, with well-formed or broken values: nested soup in
    length-delimited fields, strings valid and not, groups closed right and wrong."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        number = draw(st.one_of(st.integers(1, 8), st.integers(0, 2**29 + 5)))
        wire_type = draw(st.integers(0, 7))
        parts.append(tag(number, wire_type))
        if wire_type == 0:
            parts.append(varint(draw(st.integers(0, 2**70))))
        elif wire_type == 1:
            parts.append(draw(st.binary(min_size=8, max_size=8)))
        elif wire_type == 5:
            parts.append(draw(st.binary(min_size=4, max_size=4)))
        elif wire_type == 2:
            payload = draw(
                st.one_of(
                    st.text(max_size=6).map(str.encode),
                    st.binary(max_size=8),
                    soup(depth - 1) if depth > 0 else st.just(b""),
                )
            )
            parts.append(varint(len(payload)) + payload)
        elif wire_type == 3:
            inner = draw(soup(depth - 1)) if depth > 0 else b""
            closing = draw(st.one_of(st.just(number), st.integers(0, 9)))
            parts.append(inner + tag(closing, 4))
    return b"".join(parts)


serialised = st.one_of(
    downlinks.map(lambda m: m.SerializeToString()),
    acks().map(lambda m: m.SerializeToString()),
    documents.map(lambda m: m.SerializeToString()),
)


@settings(max_examples=600)
@given(st.sampled_from(sorted(KINDS)), mutated(st.one_of(serialised, soup(), st.binary(max_size=24))))
@example("downlink", b"\x18" + b"\x80" * 9 + b"\x02")  # bits past 64 dropped: false
@example("downlink", b"\x18" + b"\x80" * 10 + b"\x01")  # an 11-byte varint
@example("downlink", b"\x98\x80\x80\x80\x10\x01")  # a tag over 32 bits
@example("downlink", b"\x12\x80\x80\x80\x80\x00")  # a 6-byte length
@example("downlink", b"\x0a\x04\x0a\x02\xc0\x80")  # overlong UTF-8 in Ack.vehicle
@example("ack", b"\x0a\x03\xed\xa0\x80")  # a UTF-16 surrogate in UTF-8
@example("downlink", b"\x0a\x02\x10\x05\x12\x02\x0a\x00\x0a\x02\x20\x01")  # ack, document, ack
@example("downlink", b"\x0b\x08\x01\x0c\x1a\x01\x01")  # known fields with other wire types
def test_any_bytes_decode_as_protobuf_decodes_them_or_raise_wire_error(kind: str, data: bytes) -> None:
    check_agrees(kind, data)


@pytest.mark.parametrize("extra", [0, 1])
def test_nesting_stops_where_protobufs_does(extra: int) -> None:
    """Groups inside the ack inside the downlink: protobuf's depth limit, counted the same."""

    def groups(n: int) -> bytes:
        return tag(5, 3) * n + tag(5, 4) * n

    top = groups(downlink.DEPTH_LIMIT + extra)
    in_ack = b"\x0a" + varint(len(groups(99 + extra))) + groups(99 + extra)
    ranges = b"\x1a" + varint(len(groups(98 + extra))) + groups(98 + extra)
    in_range = b"\x0a" + varint(len(ranges)) + ranges
    for data in (top, in_ack, in_range):
        check_agrees("downlink", data)
    check_agrees("ack", top)
    if extra:
        with pytest.raises(WireError, match="nesting deeper than 100"):
            downlink.decode_downlink(in_range)
    else:
        assert downlink.decode_downlink(in_range) == downlink.Downlink(
            ack=downlink.Ack(stored=(downlink.SeqRange(),))
        )
