"""CAN frames to ``Signal`` readings through a DBC and an optional vehicle mapping. Pure: no I/O, no clock.

Speed matters (a van's buses carry a few thousand frames a second on a Pi), so the work per frame
is kept small: one dict lookup finds the message's precomputed plan (or skips the frame), the
decoded result of the last payload of each id is reused when the payload repeats (most CAN
payloads do), raw values are decoded without choices or scaling, and only the signals that
will be emitted are scaled.

Frames are decoded over a compiled decode table (:mod:`firmware_bridge.can.table_decoder`), which
reproduces cantools exactly: a cantools database given to the constructor is compiled in-process,
and :meth:`CanDecoder.from_table` has the DBC compiled in a child process, so the live agent never
imports cantools (about 20 MB resident with the python-can, asyncio and ssl it drags in).

Rejections (counted in ``rejects`` under a short reason, never raised): ``bad timestamp`` (not
in ``[0, TIME_LIMIT)`` seconds: NaN, infinite, negative or past year 9999), ``unknown id`` (not in
the DBC), ``wrong length`` (payload length differs from the DBC's), ``undecodable`` (the table,
as cantools, refuses the payload, e.g. an undefined multiplexer value), ``not finite`` (a float signal decoded
to NaN or infinity). Frames of DBC messages that no output needs are skipped and counted in ``skipped``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_bridge.can.mapping import Mapping, MappingEntry, load_mapping
from firmware_bridge.can.table_decoder import DecodeTable, TableMessage, load_table
from protocols.errors import MappingError
from protocols.records import Signal
from protocols.rejects import Rejects

log = logging.getLogger("dropline.can")

# Frame times are seconds since the Unix epoch (or since a log's start); a record's time must print
# as ISO 8601 and fit the wire's int64 milliseconds, so the end of year 9999 UTC bounds it.
TIME_LIMIT = 253_402_300_800.0
EXTENDED_FLAG = 0x8000_0000  # set in a lookup key for 29-bit ids, so 0x123 std and 0x123 ext differ

Convert = Callable[[Any, bool], Any]  # TableSignal.scaled(raw, decode_choices)
# (signal name, output name, convert)
_Passthrough = tuple[str, str, Convert]
# (output name, ((signal name, convert), ...), combine, scale, divide, offset, values table, invalid raw)
_Rule = tuple[
    str,
    tuple[tuple[str, Convert], ...],
    str | None,
    float,
    float,
    float,
    dict[float, float] | None,
    frozenset[int],
]


class _Plan:
    """What to do with one frame id: precomputed once, so a frame costs a few lookups."""

    __slots__ = ("decode", "float_signals", "length", "message", "passthrough", "rules")

    def __init__(
        self,
        message: str,
        length: int,
        decode: Callable[..., dict[str, Any]],
        passthrough: tuple[_Passthrough, ...],
        rules: tuple[_Rule, ...],
        float_signals: bool,
    ) -> None:
        self.message = message
        self.length = length
        self.decode = decode
        self.passthrough = passthrough
        self.rules = rules
        self.float_signals = float_signals


class CanDecoder:
    """Decodes frames of one bus with one DBC; emits VSS names where the mapping has them.

    Without a mapping every signal comes out as ``<Message>.<Signal>``. With one, a DBC signal
    that a mapping entry uses comes out only under the entry's VSS name; the others come out as
    ``<Message>.<Signal>`` unless ``only_mapped`` (from the argument, else from the mapping file).
    Values are numbers: enumerations as their numeric value, scaled as the DBC says.
    """

    def __init__(
        self,
        db: DecodeTable | Any,
        mapping: Mapping | None = None,
        *,
        only_mapped: bool | None = None,
        rejects: Rejects | None = None,
    ) -> None:
        if not isinstance(db, DecodeTable):  # a cantools database (or anything with its messages)
            from firmware_bridge.can.compile_dbc import compile_database

            db = DecodeTable(compile_database(db))
        if mapping is not None:
            mapping.check(db)
        self.mapping = mapping
        self.only_mapped = (mapping.only_mapped if mapping else False) if only_mapped is None else only_mapped
        if self.only_mapped and mapping is None:
            raise MappingError("only_mapped needs a mapping")
        self.rejects = rejects if rejects is not None else Rejects("can")
        self.skipped = 0  # frames of DBC messages no output needs
        self.unknown_ids: Counter[int] = Counter()  # frames per id not in the DBC (key: see EXTENDED_FLAG)
        self.unavailable: Counter[str] = Counter()  # outputs dropped: SNA raw value or not in `values`
        self._plans: dict[int, _Plan] = {}
        self._ignored: set[int] = set()
        self._last: dict[int, tuple[bytes, tuple[tuple[str, Any], ...], tuple[str, ...]]] = {}
        for message in db.messages:
            key = message.frame_id | (EXTENDED_FLAG if message.is_extended_frame else 0)
            plan = self._plan(message)
            if plan is None:
                self._ignored.add(key)
            else:
                self._plans[key] = plan

    @classmethod
    def from_files(
        cls, dbc: str | Path, mapping: str | Path | None = None, *, only_mapped: bool | None = None
    ) -> CanDecoder:
        """A decoder from a DBC path and a mapping name (``kona_ev``) or TOML path, checked together."""
        from firmware_bridge.can.compile_dbc import load_dbc

        db = load_dbc(dbc)
        loaded = load_mapping(mapping, db) if mapping else None
        if loaded is not None and Path(loaded.dbc).name != Path(dbc).name:
            log.warning("%s was written for %s, used with %s", loaded.source, loaded.dbc, Path(dbc).name)
        return cls(db, loaded, only_mapped=only_mapped)

    @classmethod
    def from_table(
        cls,
        dbc: str | Path,
        mapping: str | Path | None = None,
        *,
        cache_dir: str | Path | None = None,
        only_mapped: bool | None = None,
    ) -> CanDecoder:
        """As :meth:`from_files`, with the DBC compiled in a child process (or read from
        ``cache_dir``): cantools is never imported here. DbcError/MappingError as there."""
        table = load_table(dbc, cache_dir)
        loaded = load_mapping(mapping, table) if mapping else None
        if loaded is not None and Path(loaded.dbc).name != Path(dbc).name:
            log.warning("%s was written for %s, used with %s", loaded.source, loaded.dbc, Path(dbc).name)
        return cls(table, loaded, only_mapped=only_mapped)

    def _plan(self, message: TableMessage) -> _Plan | None:
        entries: list[MappingEntry] = self.mapping.by_message.get(message.name, []) if self.mapping else []
        signals = {s.name: s for s in message.signals}
        used = {name for entry in entries for name in entry.signals}
        passthrough: tuple[_Passthrough, ...] = ()
        if not self.only_mapped:
            passthrough = tuple(
                (s.name, f"{message.name}.{s.name}", s.scaled) for s in message.signals if s.name not in used
            )
        rules = tuple(
            (
                e.vss,
                tuple((name, signals[name].scaled) for name in e.signals),
                e.combine,
                e.scale,
                e.divide,
                e.offset,
                e.values,
                e.invalid_raw,
            )
            for e in entries
        )
        if not passthrough and not rules:
            return None
        return _Plan(
            message.name,
            message.length,
            message.decode_simple,
            passthrough,
            rules,
            any(s.is_float for s in message.signals),
        )

    def decode(
        self, arbitration_id: int, data: bytes | bytearray, timestamp: float, is_extended: bool = False
    ) -> list[Signal]:
        """The signals one frame carries; an empty list for skipped or rejected frames. Never raises."""
        if not 0.0 <= timestamp < TIME_LIMIT:  # False for NaN too
            self.rejects.reject("bad timestamp", f"0x{arbitration_id:X}: {timestamp!r}")
            return []
        key = arbitration_id | EXTENDED_FLAG if is_extended else arbitration_id
        plan = self._plans.get(key)
        if plan is None:
            if key in self._ignored:
                self.skipped += 1
            elif key in self.unknown_ids:  # logged when first seen; a plain count from then on
                self.unknown_ids[key] += 1
                self.rejects.counts["unknown id"] += 1
            else:
                self.unknown_ids[key] = 1
                self.rejects.reject(
                    "unknown id", f"0x{arbitration_id:X}{' (extended)' if is_extended else ''}"
                )
            return []
        last = self._last.get(key)
        if last is not None and last[0] == data:
            pairs = last[1]
            if last[2]:
                self.unavailable.update(last[2])
        else:
            decoded = self._decode(plan, data)
            if decoded is None:
                return []
            pairs = decoded[0]
            self._last[key] = (bytes(data), pairs, decoded[1])
        return [Signal(timestamp, name, value) for name, value in pairs]

    def _decode(
        self, plan: _Plan, data: bytes | bytearray
    ) -> tuple[tuple[tuple[str, Any], ...], tuple[str, ...]] | None:
        """(name, value) pairs of one payload and the outputs it left unavailable; None if rejected."""
        if len(data) != plan.length:
            self.rejects.reject("wrong length", f"{plan.message}: {len(data)} bytes, DBC says {plan.length}")
            return None
        try:
            raw = plan.decode(data, False, False)
        except (ValueError, KeyError) as exc:  # DecodeFailed; KeyError: a multiplexer not decoded
            self.rejects.reject("undecodable", f"{plan.message}: {exc}")
            return None
        out = [(name, convert(raw[sig], False)) for sig, name, convert in plan.passthrough if sig in raw]
        missing: list[str] = []
        for name, sources, combine, scale, divide, offset, table, invalid in plan.rules:
            values = []
            for sig, convert in sources:
                value = raw.get(sig)
                if value is None:  # absent under this multiplexer value
                    break
                if invalid and value in invalid:
                    missing.append(name)
                    break
                values.append(convert(value, False))
            else:
                result = values[0] if combine is None else sum(values)
                if combine == "mean":
                    result /= len(values)
                if scale != 1.0 or divide != 1.0 or offset != 0.0:
                    result = result * scale / divide + offset
                    if result == 0:
                        result = abs(result)  # no "-0.0" from a sign flip
                if table is not None:
                    mapped = table.get(result)
                    if mapped is None:
                        missing.append(name)
                        continue
                    result = mapped
                out.append((name, result))
        if plan.float_signals and not all(math.isfinite(value) for _, value in out):
            self.rejects.reject("not finite", plan.message)
            return None
        if missing:
            self.unavailable.update(missing)
        return tuple(out), tuple(missing)

    def stats(self) -> dict[str, Any]:
        """Counters for a summary line: rejects by reason, skipped frames, unavailable outputs."""
        return {
            "rejects": self.rejects.as_dict(),
            "skipped": self.skipped,
            "unavailable": dict(self.unavailable),
        }
