"""Batch framing without re-serialising: the outbox stores each record already encoded, and a
batch is those bytes framed as ``repeated Record records = 3`` behind a small header.

Compiled by Cython (pure-Python mode) in the van's build; runs unchanged as plain Python.
Decoding goes through the generated protobuf code (upb, in C), with limits checked first so a
hostile batch cannot make the collector allocate without bound.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from protocols.dropline.v1 import dropline_pb2 as pb
from protocols.errors import WireError

_TAG_VEHICLE = b"\x0a"  # field 1, length-delimited
_TAG_BATCH_ID = b"\x10"  # field 2, varint
_TAG_RECORD = b"\x1a"  # field 3, length-delimited
_TAG_COMPRESSION = b"\x20"  # field 4, varint
_TAG_PACKED = b"\x2a"  # field 5, length-delimited


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame_records(records: Sequence[bytes]) -> bytes:
    """The bytes of ``repeated Record records = 3`` for already-encoded records."""
    parts: list[bytes] = []
    blob: bytes
    for blob in records:
        parts.append(_TAG_RECORD)
        parts.append(varint(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def encode_batch(vehicle: str, batch_id: int, records: Sequence[bytes], compress: bool = False) -> bytes:
    """A serialised ``Batch``; with ``compress`` the records travel zlib-compressed in ``packed``."""
    name = vehicle.encode()
    head = _TAG_VEHICLE + varint(len(name)) + name + _TAG_BATCH_ID + varint(batch_id)
    body = frame_records(records)
    if not compress:
        return head + body
    packed = zlib.compress(body, 1)
    return head + _TAG_COMPRESSION + varint(pb.COMPRESSION_ZLIB) + _TAG_PACKED + varint(len(packed)) + packed


def decode_batch(data: bytes, max_bytes: int, max_records: int) -> pb.Batch:
    """Parse a batch, inflating ``packed`` into ``records``; refuse anything beyond the limits."""
    if len(data) > max_bytes:
        raise WireError("oversized")
    batch = pb.Batch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # upb raises DecodeError; anything else is just as undecodable
        raise WireError("undecodable") from exc
    if batch.compression == pb.COMPRESSION_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(batch.packed, max_bytes)
        except zlib.error as exc:
            raise WireError("bad_compression") from exc
        if inflater.unconsumed_tail or not inflater.eof:
            raise WireError("oversized" if inflater.unconsumed_tail else "bad_compression")
        inner = pb.Batch()
        try:
            inner.ParseFromString(body)
        except Exception as exc:
            raise WireError("undecodable") from exc
        if inner.vehicle or inner.batch_id or inner.packed or inner.compression:
            raise WireError("bad_compression")
        inner.vehicle, inner.batch_id = batch.vehicle, batch.batch_id  # no copy of the records
        batch = inner
    elif batch.compression != pb.COMPRESSION_NONE or batch.packed:
        raise WireError("unknown_compression")
    if len(batch.records) > max_records:
        raise WireError("too_many_records")
    return batch
