"""Frames decoded over a compiled decode table (:mod:`firmware_bridge.can.compile_dbc`), without cantools.

:func:`load_table` runs the compiler in a child process (cantools' ~20 MB never enters the agent)
and keeps the table in a cache directory when given one, keyed by the DBC's SHA-256, so a van
parses its DBC once. A :class:`DecodeTable` answers what :class:`~firmware_bridge.can.decoder.CanDecoder`
and :meth:`Mapping.check` ask of a database (``messages``, ``get_message_by_name``), and each
:class:`TableMessage` decodes raw values exactly as cantools' ``decode_simple(data, False, False)``
(proven by hypothesis against cantools in ``tests/test_can_table.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from protocols.errors import DbcError

FORMAT = 1  # the compile_dbc table layout this module reads
_FLOAT = {16: struct.Struct(">e"), 32: struct.Struct(">f"), 64: struct.Struct(">d")}

# (name, shift, mask, kind, bits): one bitstruct field, its shift from the payload's least
# significant bit when the payload is read as one big-endian integer.
_Field = tuple[str, int, int, str, int]


class DecodeFailed(ValueError):
    """The payload does not decode (layout longer than the payload, undefined multiplexer value)."""


class TableSignal:
    """A signal's conversion: ``scaled(raw)`` equals cantools' ``raw_to_scaled(raw, False)``."""

    __slots__ = ("is_float", "name", "offset", "scale")

    def __init__(self, name: str, scale: float | None, offset: float | None, is_float: bool) -> None:
        self.name = name
        self.scale = scale
        self.offset = offset
        self.is_float = is_float

    def scaled(self, raw: Any, decode_choices: bool = False) -> Any:
        """The physical value (``decode_choices`` is accepted for cantools' signature, never used)."""
        if self.scale is None:
            return raw
        return raw * self.scale + self.offset


def _fields(items: list[list[Any]], bits: int) -> tuple[_Field, ...] | None:
    """The named fields of one bitstruct layout; None when it is longer than the payload."""
    out: list[_Field] = []
    position = 0
    for kind, length, name in items:
        position += length
        if name is not None:
            out.append((name, bits - position, (1 << length) - 1, kind, length))
    return None if position > bits else tuple(out)


def _unpack(fields: tuple[_Field, ...], value: int, out: dict[str, Any]) -> None:
    for name, shift, mask, kind, length in fields:
        raw = (value >> shift) & mask
        if kind == "s":
            if raw >> (length - 1):
                raw -= 1 << length
        elif kind == "f":
            raw = _FLOAT[length].unpack(raw.to_bytes(length // 8, "big"))[0]
        out[name] = raw


class _Node:
    """One codec node: its signals, both layouts, and the nodes its multiplexers select."""

    __slots__ = ("big", "little", "mux", "signals")

    def __init__(self, doc: dict[str, Any], bits: int) -> None:
        self.signals: tuple[str, ...] = tuple(doc["signals"])
        self.big = _fields(doc["big"], bits)
        self.little = _fields(doc["little"], bits)
        self.mux: dict[str, dict[int, _Node]] = {
            name: {int(k): _Node(child, bits) for k, child in children.items()}
            for name, children in doc.get("mux", {}).items()
        }

    def decode(self, data: bytes | bytearray, out: dict[str, Any]) -> None:
        if self.big is None or self.little is None:
            raise DecodeFailed("unpacking failed")
        unpacked: dict[str, Any] = {}
        if self.big:
            _unpack(self.big, int.from_bytes(data, "big"), unpacked)
        if self.little:
            _unpack(self.little, int.from_bytes(data, "little"), unpacked)
        for name in self.signals:
            if name in unpacked:
                out[name] = unpacked[name]
        for name, children in self.mux.items():
            selector = int(out[name])
            child = children.get(selector)
            if child is None:
                raise DecodeFailed(f"expected multiplexer id {sorted(children)}, but got {selector}")
            child.decode(data, out)


class TableMessage:
    """One message of the table: what the decoder plans with, and ``decode_simple``."""

    __slots__ = ("_root", "frame_id", "is_extended_frame", "length", "name", "signals")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.name: str = doc["name"]
        self.frame_id: int = doc["frame_id"]
        self.is_extended_frame: bool = doc["extended"]
        self.length: int = doc["length"]
        self.signals = [TableSignal(s["name"], s["scale"], s["offset"], s["float"]) for s in doc["signals"]]
        self._root = _Node(doc["codec"], 8 * self.length)

    def decode_simple(
        self, data: bytes | bytearray, decode_choices: bool = False, scaling: bool = False
    ) -> dict[str, Any]:
        """Raw values by signal name, as cantools' ``decode_simple(data, False, False)`` returns them
        (a longer payload is cut to the DBC's length, a shorter one raises :class:`DecodeFailed`)."""
        if decode_choices or scaling:
            raise ValueError("the table decodes raw values only")
        if len(data) < self.length:
            raise DecodeFailed(f"Wrong data size: {len(data)} instead of {self.length} bytes")
        out: dict[str, Any] = {}
        self._root.decode(data[: self.length], out)
        return out


class DecodeTable:
    """A DBC's messages, compiled: the part of a cantools database the agent needs."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise DbcError(f"decode table format {doc.get('format')!r}, expected {FORMAT}")
        self.messages = [TableMessage(m) for m in doc["messages"]]
        self._by_name = {m.name: m for m in self.messages}

    def get_message_by_name(self, name: str) -> TableMessage:
        """The message called ``name``; KeyError if the DBC has none (as cantools raises)."""
        return self._by_name[name]


def compile_in_child(dbc: Path) -> str:
    """The table's JSON text, from ``python -m firmware_bridge.can.compile_dbc`` in a child process."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run(
        [sys.executable, "-m", "firmware_bridge.can.compile_dbc", str(dbc)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        raise DbcError(lines[-1] if out.returncode == 2 else f"{dbc}: compiling the DBC failed: {lines[-1]}")
    return out.stdout


def load_table(dbc: str | Path, cache_dir: str | Path | None = None) -> DecodeTable:
    """The decode table of ``dbc``: from ``cache_dir/dbc-<sha256>.json`` when there, else compiled
    (in a child process) and written there atomically. Raises DbcError for an unreadable or bad DBC."""
    path = Path(dbc)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise DbcError(f"{path}: cannot read: {exc}") from None
    cached = Path(cache_dir) / f"dbc-{digest}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return DecodeTable(json.loads(cached.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a torn or foreign file: compile again and replace it
    text = compile_in_child(path)
    table = DecodeTable(json.loads(text))
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only directory only costs the next start a compile
    return table
