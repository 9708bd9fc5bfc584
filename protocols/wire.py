"""Batch framing without re-serialising: the outbox stores each record's body already encoded
with its kind, and a batch carries those bodies as per-kind segments behind a small header.

A segment (``dropline.v1.Segment``) holds the records of one kind: their seqs, explicit, and
their bodies encoded by that kind's codec: fixes as ``CODEC_TRACK_V1`` (the compacted track,
``protocols/track_codec.py``, seqs as runs), every other kind as ``CODEC_MESSAGES`` (one
serialised body message per record).
Whole ``Record`` messages (field 3) are still accepted, for clients using the generated stub.

Compiled by Cython (pure-Python mode) in the van's build; runs unchanged as plain Python.
Encoding (the van's side) needs no protobuf runtime: the schema's enum values and record kinds are
written out here (``tests/test_protocols.py`` checks them against the generated code).
Decoding (the collector's side) goes through the generated protobuf code (upb, in C), imported
when first needed, with limits checked first so a hostile batch cannot make the collector
allocate without bound; ``decode_rows`` (the collector's path) gives a track segment's fixes as
``TrackFix`` rows straight from its columns instead of one message per fix. A record whose body
does not decode is set aside with its seq and reason (``Unreadable``), never allowed to sink its
batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from protocols import track_codec
from protocols.errors import WireError

if TYPE_CHECKING:
    from protocols.dropline.v1 import dropline_pb2 as pb

_TAG_VEHICLE = b"\x0a"  # Batch field 1, length-delimited
_TAG_BATCH_ID = b"\x10"  # Batch field 2, varint
_TAG_RECORD = b"\x1a"  # Batch field 3, length-delimited
_TAG_COMPRESSION = b"\x20"  # Batch field 4, varint
_TAG_PACKED = b"\x2a"  # Batch field 5, length-delimited
_TAG_SEGMENT = b"\x32"  # Batch field 6, length-delimited
_TAG_SEG_KIND = b"\x0a"  # Segment field 1, length-delimited
_TAG_SEG_SEQS = b"\x1a"  # Segment field 3, packed varints
_TAG_SEG_BODY = b"\x22"  # Segment field 4, length-delimited
_TAG_SEG_CODEC = b"\x10"  # Segment field 2, varint
_TAG_SEG_DATA = b"\x2a"  # Segment field 5, length-delimited

COMPRESSION_NONE, COMPRESSION_ZLIB = 0, 1
"""``dropline.v1.Compression``."""
CODEC_MESSAGES, CODEC_TRACK_V1 = 0, 1
"""``dropline.v1.Codec``."""
BODY_KINDS = frozenset(
    {
        "fix", "signal", "scan", "alert", "gap", "fence_event", "stop_update", "delivery", "eta",
        "blob_chunk", "document_status",
    }
)  # fmt: skip
"""The record kinds this build can decode: the members of ``Record.body``."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Records of one kind for ``encode_batch``: ``bodies[i]`` is the encoded body of ``seqs[i]``;
    or, with ``codec`` ``CODEC_TRACK_V1``, ``data`` holds every fix (``protocols.track_codec``)."""

    kind: str
    seqs: Sequence[int]
    bodies: Sequence[bytes] = ()
    codec: int = CODEC_MESSAGES
    data: bytes = b""
    reference_seq: int | None = None


def track_segment(
    seqs: Sequence[int], fixes: Sequence[pb.Fix], reference: tuple[int, pb.Fix] | None = None
) -> Segment:
    """``columns_segment`` of protobuf fix messages, for callers that hold them (the CLI's
    compaction report); the van reads its bodies straight into columns instead."""
    ref = None if reference is None else (reference[0], track_codec.reference_of(reference[1]))
    return columns_segment(seqs, track_codec.columns_of(fixes), ref)


def columns_segment(
    seqs: Sequence[int],
    columns: track_codec.TrackColumns,
    reference: tuple[int, track_codec.Reference] | None = None,
) -> Segment:
    """Fixes as one ``CODEC_TRACK_V1`` segment; their seqs travel as runs beside the blob (not
    inside it), so a blob that does not decode is still quarantined record by record. With
    ``reference`` (seq, time and position of a fix the collector stored, e.g. the last one acked)
    the blob starts from that fix instead of absolute time and position."""
    return Segment(
        "fix",
        seqs,
        codec=CODEC_TRACK_V1,
        data=track_codec.pack(
            track_codec.encode_columns(columns, None if reference is None else reference[1])
        ),
        reference_seq=None if reference is None else reference[0],
    )


def seq_runs(seqs: Sequence[int], reference_seq: int | None = None) -> list[int]:
    """The ``seqs`` field of a ``CODEC_TRACK_V1`` segment: the reference seq + 1 (0: none), then
    per run of consecutive seqs its start minus where the previous run ended (zigzag) and its
    length; a batch of consecutive fixes costs a few bytes however long it is."""
    out = [0 if reference_seq is None else reference_seq + 1]
    expected = 0
    i, n = 0, len(seqs)
    while i < n:
        start = seqs[i]
        j = i + 1
        while j < n and seqs[j] == seqs[j - 1] + 1:
            j += 1
        delta = start - expected
        out.append(delta * 2 if delta >= 0 else -delta * 2 - 1)
        out.append(j - i)
        expected = start + (j - i)
        i = j
    return out


def expand_runs(runs: Sequence[int], max_records: int) -> tuple[int | None, list[int]]:
    """``(reference_seq, seqs)`` of a ``seq_runs`` field; WireError if malformed, negative or
    longer than ``max_records`` (checked before anything is allocated)."""
    if not runs or len(runs) % 2 == 0:
        raise WireError("bad_segment")
    if sum(runs[2::2]) > max_records:
        raise WireError("too_many_records")
    seqs: list[int] = []
    expected = 0
    for i in range(1, len(runs), 2):
        z, length = runs[i], runs[i + 1]
        start = expected + (z >> 1 if not z & 1 else -((z + 1) >> 1))
        if start < 0 or length == 0 or start + length > 1 << 64:
            raise WireError("bad_segment")
        seqs.extend(range(start, start + length))
        expected = start + length
    return (runs[0] - 1 if runs[0] else None), seqs


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record the collector could not read; kept aside (quarantined) with its reason."""

    seq: int
    kind: str
    reason: str
    body: bytes


class TrackFix(NamedTuple):
    """A fix of a track segment as ``decode_rows`` gives it: no protobuf message, only what the
    collector checks and stores. ``body`` is ``Record(seq=seq, fix=...)`` serialised exactly as
    protobuf serialises it, so it is stored, compared and exported like any decoded record's."""

    seq: int
    time_ms: int
    lat_e7: int
    lon_e7: int
    body: bytes


@dataclass(slots=True)
class Decoded:
    """A decoded batch: the header, the readable records, and the records set aside."""

    vehicle: str
    batch_id: int
    records: list[pb.Record]
    unreadable: list[Unreadable]


@dataclass(slots=True)
class DecodedRows:
    """A batch as ``decode_rows`` gives it: ``Decoded``, but the fixes of track segments as
    ``TrackFix`` rows, in batch order among the other records."""

    vehicle: str
    batch_id: int
    records: list[pb.Record | TrackFix]
    unreadable: list[Unreadable]


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def frame_records(records: Sequence[bytes]) -> bytes:
    """The bytes of ``repeated Record records = 3`` for already-encoded records."""
    parts: list[bytes] = []
    blob: bytes
    for blob in records:
        parts.append(_TAG_RECORD)
        parts.append(varint(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def frame_segment(segment: Segment) -> bytes:
    """The bytes of one ``Segment`` (codec ``CODEC_MESSAGES``, the default, left implicit)."""
    if segment.codec == CODEC_TRACK_V1:
        seqs = b"".join([varint(s) for s in seq_runs(segment.seqs, segment.reference_seq)])
    else:
        seqs = b"".join([varint(s) for s in segment.seqs])
    parts = [_field(_TAG_SEG_KIND, segment.kind.encode()), _field(_TAG_SEG_SEQS, seqs)]
    if segment.codec != CODEC_MESSAGES:
        if segment.bodies:
            raise ValueError("a columnar segment carries data, not bodies")
        parts.insert(1, _TAG_SEG_CODEC + varint(segment.codec))
        parts.append(_field(_TAG_SEG_DATA, segment.data))
        return b"".join(parts)
    if len(segment.seqs) != len(segment.bodies):
        raise ValueError("a segment needs one body per seq")
    body: bytes
    for body in segment.bodies:
        parts.append(_TAG_SEG_BODY)
        parts.append(varint(len(body)))
        parts.append(body)
    return b"".join(parts)


def encode_batch(
    vehicle: str,
    batch_id: int,
    records: Sequence[bytes] = (),
    compress: bool = False,
    *,
    segments: Sequence[Segment] = (),
) -> bytes:
    """A serialised ``Batch`` of whole records and/or segments; with ``compress`` the body
    travels zlib-compressed in ``packed`` when that is smaller (header fields stay readable, see
    ``peek_header``)."""
    head = _field(_TAG_VEHICLE, vehicle.encode()) + _TAG_BATCH_ID + varint(batch_id)
    body = frame_records(records) + b"".join([_field(_TAG_SEGMENT, frame_segment(s)) for s in segments])
    if not compress:
        return head + body
    packed = zlib.compress(body, 1)
    if len(packed) + 4 >= len(body):  # a compacted track does not shrink: zlib would only add
        return head + body
    return head + _TAG_COMPRESSION + varint(COMPRESSION_ZLIB) + _field(_TAG_PACKED, packed)


def peek_header(data: bytes) -> tuple[str, int]:
    """The vehicle and batch id from the front of a batch that may not decode as a whole, so
    that even a refusal names its batch. ``("", 0)`` for whatever cannot be read."""
    vehicle, batch_id, pos, n = "", 0, 0, len(data)
    for _ in range(2):
        if pos >= n:
            break
        tag = data[pos]
        pos += 1
        value, pos = _read_varint(data, pos)
        if value < 0:
            break
        if tag == 0x0A and pos + value <= n:
            try:
                vehicle = data[pos : pos + value].decode()
            except UnicodeDecodeError:
                vehicle = ""
            pos += value
        elif tag == 0x10:
            batch_id = value
        else:
            break
    return vehicle, batch_id


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position), or (-1, pos) when no complete varint of at most 64 bits is there."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return -1, pos


References = Callable[[str, int], "pb.Fix | None"]
"""``(vehicle, seq) -> the stored fix`` or None: how the collector finds a track's reference."""


def decode_batch(
    data: bytes, max_bytes: int, max_records: int, references: References | None = None
) -> Decoded:
    """Parse a batch, inflating ``packed`` and flattening segments into records; refuse (raise
    WireError) anything beyond the limits or unreadable as a whole. Single records that do not
    decode come back in ``unreadable``, each with its seq; a track segment whose reference fix
    ``references`` does not know comes back unreadable as ``track_needs_reference``."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    rows = decode_rows(data, max_bytes, max_records, references)
    records = [pb.Record.FromString(r.body) if isinstance(r, TrackFix) else r for r in rows.records]
    return Decoded(rows.vehicle, rows.batch_id, records, rows.unreadable)


def decode_rows(
    data: bytes, max_bytes: int, max_records: int, references: References | None = None
) -> DecodedRows:
    """``decode_batch`` without a protobuf message per fix of a track segment (the collector's
    path): those come back as ``TrackFix`` rows, straight from the track's columns."""
    if len(data) > max_bytes:
        raise WireError("oversized")
    batch = _parse(data)
    if batch.compression == COMPRESSION_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(batch.packed, max_bytes)
        except zlib.error as exc:
            raise WireError("bad_compression") from exc
        if inflater.unconsumed_tail or not inflater.eof:
            raise WireError("oversized" if inflater.unconsumed_tail else "bad_compression")
        inner = _parse(body)
        if inner.vehicle or inner.batch_id or inner.packed or inner.compression:
            raise WireError("bad_compression")
        inner.vehicle, inner.batch_id = batch.vehicle, batch.batch_id  # no copy of the records
        batch = inner
    elif batch.compression != COMPRESSION_NONE or batch.packed:
        raise WireError("unknown_compression")
    count = len(batch.records)
    if count > max_records:
        raise WireError("too_many_records")
    tracks: dict[int, tuple[int | None, list[int]]] = {}
    for i, segment in enumerate(batch.segments):
        if segment.codec == CODEC_TRACK_V1:
            tracks[i] = expand_runs(list(segment.seqs), max_records - count)
            count += len(tracks[i][1])
        else:
            count += len(segment.seqs)
        if count > max_records:
            raise WireError("too_many_records")
    records: list[pb.Record | TrackFix] = list(batch.records)
    unreadable: list[Unreadable] = []
    for i, segment in enumerate(batch.segments):
        if i in tracks:
            reference_seq, seqs = tracks[i]
            fix = (
                None
                if reference_seq is None or references is None
                else references(batch.vehicle, reference_seq)
            )
            _flatten_track(segment, seqs, fix, records, unreadable, max_bytes)
        else:
            _flatten(segment, records, unreadable)
    return DecodedRows(batch.vehicle, batch.batch_id, records, unreadable)


def _parse(data: bytes) -> pb.Batch:
    from protocols.dropline.v1 import dropline_pb2 as pb  # the collector's side only

    batch = pb.Batch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # upb raises DecodeError; anything else is just as undecodable
        raise WireError("undecodable") from exc
    return batch


def _flatten(segment: pb.Segment, records: list[pb.Record | TrackFix], unreadable: list[Unreadable]) -> None:
    from protocols.dropline.v1 import dropline_pb2 as pb

    kind = segment.kind
    seqs = list(segment.seqs)
    if segment.codec != CODEC_MESSAGES or len(segment.bodies) != len(seqs):
        reason = "unknown_codec" if segment.codec != CODEC_MESSAGES else "bad_segment"
        unreadable.extend(Unreadable(s, kind, reason, segment.data) for s in seqs)
        return
    if kind not in BODY_KINDS:
        unreadable.extend(
            Unreadable(s, kind, "unknown_kind", b) for s, b in zip(seqs, segment.bodies, strict=True)
        )
        return
    for seq, body in zip(seqs, segment.bodies, strict=True):
        record = pb.Record(seq=seq)
        try:
            getattr(record, kind).ParseFromString(body)
        except Exception:  # upb's DecodeError: this one body is garbage, its neighbours are not
            unreadable.append(Unreadable(seq, kind, "undecodable", bytes(body)))
            continue
        records.append(record)


def _flatten_track(
    segment: pb.Segment,
    seqs: list[int],
    reference: pb.Fix | None,
    records: list[pb.Record | TrackFix],
    unreadable: list[Unreadable],
    max_bytes: int,
) -> None:
    """A track blob back into ``TrackFix`` rows with their seqs; a blob that does not decode, or
    not into one fix per seq, sets every seq of the segment aside with the blob."""
    reason = ""
    columns: track_codec.TrackColumns | None = None
    if segment.kind != "fix" or segment.bodies:
        reason = "bad_segment"
    else:
        try:
            ref = None if reference is None else track_codec.reference_of(reference)
            columns = track_codec.decode_columns(track_codec.unpack(segment.data, max_bytes), len(seqs), ref)
        except WireError as exc:
            reason = str(exc)
        else:
            if len(columns) != len(seqs):
                reason = "bad_segment"
    if reason or columns is None:
        unreadable.extend(Unreadable(s, segment.kind, reason, segment.data) for s in seqs)
        return
    bodies = track_codec.record_bodies(seqs, columns)
    records.extend(map(TrackFix, seqs, columns.time_ms, columns.lat_e7, columns.lon_e7, bodies))
