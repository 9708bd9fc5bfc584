"""What the collector sends a van (``dropline.v1.Downlink``, ``Ack``, ``Document``), decoded
without the protobuf runtime, so the van's process never imports ``google.protobuf``.

The values are plain frozen dataclasses with the protobuf messages' field names (``ack.stored[0]
.first`` reads the same). Decoding follows protobuf's (upb's) wire rules, which
``tests/test_downlink.py`` checks against protobuf itself: unknown fields of any wire type are
skipped (groups included), a known field with another wire type counts as unknown, the last value
wins for a scalar, repeated messages are appended, a message field seen twice is merged, and the
last member of the ``body`` oneof wins. Input protobuf rejects (truncated, a varint over 10
bytes, a tag over 32 bits or of field 0, an unmatched end-group, nesting deeper than 100,
invalid UTF-8 in a string) raises ``WireError`` naming what is wrong; nothing else is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from protocols.errors import WireError

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
"""Protobuf wire types."""
DEPTH_LIMIT = 100
"""Nested messages and groups protobuf (upb) decodes below the top-level message."""
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class SeqRange:
    first: int = 0
    last: int = 0


@dataclass(frozen=True, slots=True)
class Quarantined:
    first: int = 0
    last: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """The collector's end-to-end acknowledgement of one batch (see the .proto for the meaning)."""

    vehicle: str = ""
    batch_id: int = 0
    stored: tuple[SeqRange, ...] = ()
    rejected: bool = False
    reason: str = ""
    contiguous: int = 0
    quarantined: tuple[Quarantined, ...] = ()


@dataclass(frozen=True, slots=True)
class Document:
    """A signed fleet document (``kind`` config or manifest); the van checks ``envelope``."""

    kind: str = ""
    envelope: bytes = b""


@dataclass(frozen=True, slots=True)
class Downlink:
    """One message down the link: at most one of ``ack``, ``document``, ``collector_online``."""

    ack: Ack | None = None
    document: Document | None = None
    collector_online: bool = False


def _varint(data: bytes, pos: int, max_bytes: int, what: str) -> tuple[int, int]:
    """``(value, next position)`` of the varint at ``pos``, at most ``max_bytes`` long."""
    value = shift = 0
    start, end = pos, min(len(data), pos + max_bytes)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    if pos - start < max_bytes:
        raise WireError(f"truncated {what} at byte {start}")
    raise WireError(f"{what} longer than {max_bytes} bytes at byte {start}")


def _tag(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(field number, wire type, next position)`` of the tag at ``pos``."""
    tag, after = _varint(data, pos, 5, "tag")
    if tag >> 32 or tag >> 3 == 0:
        raise WireError(f"invalid tag {tag} at byte {pos}")
    return tag >> 3, tag & 7, after


def _value(data: bytes, pos: int, number: int, wire_type: int, depth: int) -> tuple[int | bytes | None, int]:
    """``(value, next position)`` of field ``number`` at ``pos``: an int for a varint (to 64 bits)
    or fixed-width field (little-endian), bytes for a length-delimited one, None for a group
    (checked and skipped; ``depth`` is how many more levels may open)."""
    if wire_type == VARINT:
        value, pos = _varint(data, pos, 10, "varint")
        return value & _U64, pos
    if wire_type in (I64, I32):
        end = pos + (8 if wire_type == I64 else 4)
        if end > len(data):
            raise WireError(f"truncated fixed-width field {number} at byte {pos}")
        return int.from_bytes(data[pos:end], "little"), end
    if wire_type == LEN:
        size, pos = _varint(data, pos, 5, "length")
        if size > len(data) - pos:
            raise WireError(f"field {number} runs {size - (len(data) - pos)} bytes past its message")
        return bytes(data[pos : pos + size]), pos + size
    if wire_type == SGROUP:
        if depth <= 0:
            raise WireError(f"nesting deeper than {DEPTH_LIMIT} at byte {pos}")
        while pos < len(data):
            inner, inner_type, pos = _tag(data, pos)
            if inner_type == EGROUP:
                if inner != number:
                    raise WireError(f"group {number} closed as group {inner} at byte {pos}")
                return None, pos
            pos = _value(data, pos, inner, inner_type, depth - 1)[1]
        raise WireError(f"group {number} not closed")
    if wire_type == EGROUP:
        raise WireError(f"end of group {number} outside a group at byte {pos}")
    raise WireError(f"invalid wire type {wire_type} at byte {pos}")


def fields(data: bytes, depth: int = DEPTH_LIMIT) -> Iterator[tuple[int, int | bytes]]:
    """The ``(tag, value)`` of each field of one message, in order: ``tag`` is protobuf's
    (field number << 3 | wire type), ``value`` as ``_value`` reads it. Groups are checked and
    skipped. ``depth``: how many more levels of nesting (groups, messages) may follow."""
    pos = 0
    while pos < len(data):
        number, wire_type, pos = _tag(data, pos)
        value, pos = _value(data, pos, number, wire_type, depth)
        if value is not None:
            yield number << 3 | wire_type, value


def _string(value: bytes, field: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"invalid UTF-8 in string field {field}") from exc


def _seq_range(data: bytes, depth: int) -> SeqRange:
    first = last = 0
    for tag, value in fields(data, depth):
        match tag, value:
            case 0x08, int():
                first = value
            case 0x10, int():
                last = value
    return SeqRange(first, last)


def _quarantined(data: bytes, depth: int) -> Quarantined:
    first = last = 0
    reason = ""
    for tag, value in fields(data, depth):
        match tag, value:
            case 0x08, int():
                first = value
            case 0x10, int():
                last = value
            case 0x1A, bytes():
                reason = _string(value, "Quarantined.reason")
    return Quarantined(first, last, reason)


def _ack(data: bytes, depth: int, base: Ack = Ack()) -> Ack:
    """``data`` decoded as an Ack merged into ``base`` (protobuf's rule for a repeated message)."""
    vehicle, batch_id, rejected, reason, contiguous = (
        base.vehicle, base.batch_id, base.rejected, base.reason, base.contiguous,
    )  # fmt: skip
    stored, quarantined = list(base.stored), list(base.quarantined)
    for tag, value in fields(data, depth):
        match tag, value:
            case 0x0A, bytes():
                vehicle = _string(value, "Ack.vehicle")
            case 0x10, int():
                batch_id = value
            case 0x1A, bytes():
                stored.append(_seq_range(value, depth - 1))
            case 0x20, int():
                rejected = value != 0
            case 0x2A, bytes():
                reason = _string(value, "Ack.reason")
            case 0x30, int():
                contiguous = value
            case 0x3A, bytes():
                quarantined.append(_quarantined(value, depth - 1))
    return Ack(vehicle, batch_id, tuple(stored), rejected, reason, contiguous, tuple(quarantined))


def _document(data: bytes, depth: int, base: Document = Document()) -> Document:
    kind, envelope = base.kind, base.envelope
    for tag, value in fields(data, depth):
        match tag, value:
            case 0x0A, bytes():
                kind = _string(value, "Document.kind")
            case 0x12, bytes():
                envelope = value
    return Document(kind, envelope)


def decode_downlink(data: bytes) -> Downlink:
    """A serialised ``dropline.v1.Downlink``; WireError for input protobuf would refuse."""
    out = Downlink()
    for tag, value in fields(data):
        match tag, value:
            case 0x0A, bytes():
                out = Downlink(ack=_ack(value, DEPTH_LIMIT - 1, out.ack or Ack()))
            case 0x12, bytes():
                out = Downlink(document=_document(value, DEPTH_LIMIT - 1, out.document or Document()))
            case 0x18, int():
                out = Downlink(collector_online=value != 0)
    return out


def decode_ack(data: bytes) -> Ack:
    """A serialised ``dropline.v1.Ack`` (an MQTT ack message); WireError as ``decode_downlink``."""
    return _ack(data, DEPTH_LIMIT)


def decode_document(data: bytes) -> Document:
    """A serialised ``dropline.v1.Document``; WireError as ``decode_downlink``."""
    return _document(data, DEPTH_LIMIT)
