"""A DBC compiled to a compact decode table (JSON), so the agent decodes CAN without cantools.

cantools stays the DBC parser, but importing it costs about 20 MB resident (its package imports
``cantools.tester``, hence python-can, asyncio and ssl), which a van's 40 MB budget cannot carry.
The agent therefore runs this module once, in a short-lived child process
(``python -m firmware_bridge.can.compile_dbc DBC``), and decodes frames with
:mod:`firmware_bridge.can.table_decoder` over the table it prints.

The table reproduces what cantools' ``Message.decode_simple(data, decode_choices=False,
scaling=False)`` does, step for step, rather than re-deriving bit positions from the DBC: each
codec node (the message's root and, per multiplexer value, its multiplexed signals) keeps
cantools' two bitstruct layouts (big-endian signals over the payload, little-endian ones over the
reversed payload) as ``[type, bits, name | null]`` items, ``null`` being padding. Overlapping
signals, which the community DBCs have and cantools loads non-strictly, thus decode as cantools
decodes them. Per signal it keeps what ``Conversion.raw_to_scaled(raw, False)`` needs: ``scale``
and ``offset`` (``null`` for cantools' identity conversion; both integers for its integer
conversion), and whether the raw value is a float.

Errors: a DBC that cannot be read or parsed exits with status 2 and one line on stderr, which the
parent raises as :class:`~protocols.errors.DbcError`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from protocols.errors import DbcError

FORMAT = 1  # bumped when the table's layout changes, so a cached table of another layout is rebuilt


def load_dbc(path: str | Path) -> Any:
    """A cantools database, non-strict (the community DBCs have overlapping signals) and UTF-8."""
    import cantools

    try:
        return cantools.database.load_file(str(path), encoding="utf-8", strict=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise DbcError(f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # cantools raises its own parse errors (and others) for bad files
        raise DbcError(f"{path}: not a usable DBC: {exc}") from None


def _network_bit(start: int) -> int:
    """cantools' sawtooth (DBC big-endian start bit) to network bit number."""
    return 8 * (start // 8) + (7 - start % 8)


def _kind(signal: Any) -> str:
    return "f" if signal.is_float else "s" if signal.is_signed else "u"


def _big(signals: list[Any], bits: int) -> list[list[Any]]:
    """cantools' ``create_encode_decode_formats`` big-endian layout (``create_big``)."""
    items: list[list[Any]] = []
    position = 0
    for s in sorted(
        (s for s in signals if s.byte_order == "big_endian"), key=lambda s: _network_bit(s.start)
    ):
        if _network_bit(s.start) > position:
            items.append(["p", _network_bit(s.start) - position, None])
        items.append([_kind(s), s.length, s.name])
        position = _network_bit(s.start) + s.length
    if position < bits:
        items.append(["p", bits - position, None])
    return items


def _little(signals: list[Any], bits: int) -> list[list[Any]]:
    """cantools' little-endian layout (``create_little``), read over the reversed payload."""
    items: list[list[Any]] = []
    end = bits
    for s in reversed(signals):
        if s.byte_order == "big_endian":
            continue
        if end - (s.start + s.length) > 0:
            items.append(["p", end - (s.start + s.length), None])
        items.append([_kind(s), s.length, s.name])
        end = s.start
    if end > 0:
        items.append(["p", end, None])
    return items


def _node(
    message: Any, by_parent: dict[str | None, list[Any]], parent: str | None, mux_id: int | None
) -> dict[str, Any]:
    """One codec node, as cantools' ``Message._create_codec`` builds it (recursively)."""
    signals: list[Any] = []
    multiplexers: dict[str, dict[str, Any]] = {}
    for s in by_parent.get(parent, []):
        if mux_id is not None and (s.multiplexer_ids is None or mux_id not in s.multiplexer_ids):
            continue
        if s.is_multiplexer:
            ids: set[int] = set()
            for child in by_parent.get(s.name, []):
                ids.update(child.multiplexer_ids or ())
            if s.conversion.choices:  # a named mux value with no signals of its own still decodes
                ids.update(s.conversion.choices.keys())
            multiplexers[s.name] = {str(i): _node(message, by_parent, s.name, i) for i in sorted(ids)}
        signals.append(s)
    bits = 8 * message.length
    node: dict[str, Any] = {
        "signals": [s.name for s in signals],
        "big": _big(signals, bits),
        "little": _little(signals, bits),
    }
    if multiplexers:
        node["mux"] = multiplexers
    return node


def _conversion(signal: Any) -> dict[str, Any]:
    """``scale``/``offset`` as cantools' ``BaseConversion.factory`` picks them (choices aside:
    ``raw_to_scaled(raw, False)`` ignores them)."""
    scale, offset = signal.scale, signal.offset
    out: dict[str, Any] = {"name": signal.name, "float": bool(signal.is_float)}
    if scale == 1 and offset == 0:
        out["scale"] = out["offset"] = None
    elif float(scale).is_integer() and float(offset).is_integer() and not signal.is_float:
        out["scale"], out["offset"] = int(scale), int(offset)
    else:
        out["scale"], out["offset"] = scale, offset
    return out


def compile_database(db: Any) -> dict[str, Any]:
    """The decode table of a loaded cantools database (containers left out: DBCs have none)."""
    messages = []
    for message in db.messages:
        if getattr(message, "is_container", False):
            continue
        by_parent: dict[str | None, list[Any]] = {}
        for s in message.signals:
            by_parent.setdefault(s.multiplexer_signal, []).append(s)
        messages.append(
            {
                "name": message.name,
                "frame_id": message.frame_id,
                "extended": bool(message.is_extended_frame),
                "length": message.length,
                "signals": [_conversion(s) for s in message.signals],
                "codec": _node(message, by_parent, None, None),
            }
        )
    return {"format": FORMAT, "messages": messages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.can.compile_dbc",
        description="Print a DBC's decode table (JSON) for the agent's cantools-free CAN decoder.",
    )
    parser.add_argument("dbc", help="the DBC file")
    args = parser.parse_args(argv)

    try:
        table = compile_database(load_dbc(args.dbc))
    except DbcError as exc:
        print(exc, file=sys.stderr)
        return 2
    json.dump(table, sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
