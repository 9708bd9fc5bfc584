"""CAN frames per second: our decoder vs a plain cantools ``decode_message`` loop, same frames, same run.

Both loops run over the same frames, read from the log into memory beforehand, alternating
repeat by repeat so that both see the same machine state; the best repeat of each counts. Our
decoder is built fresh for every repeat (outside the timing), so its payload cache starts cold.

    .venv/bin/python -m bench.decode_can [--log LOG] [--dbc DBC] [--map kona_ev] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KONA = REPO / "tests" / "data" / "can" / "kona_ev"
DEFAULT_LOG = KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"
DEFAULT_DBC = KONA / "pcan.dbc"


def _plain(db: Any, frames: list[Any]) -> float:
    start = time.perf_counter()
    for msg in frames:
        try:  # noqa: SIM105 - the plain loop as a user writes it; contextlib.suppress would slow it
            db.decode_message(msg.arbitration_id, msg.data)
        except Exception:  # the plain loop a user would write: skip what cantools refuses
            pass
    return time.perf_counter() - start


def _plain_records(db: Any, frames: list[Any]) -> float:
    """The plain loop when every signal must leave as a timestamped ``Signal`` record, as ours
    does without a mapping: the fair peer for ``ratio_all_signals``."""
    from protocols.records import Signal

    names = {m.frame_id: m.name for m in db.messages}
    out: list[Signal] = []
    start = time.perf_counter()
    for msg in frames:
        try:
            decoded = db.decode_message(msg.arbitration_id, msg.data)
        except Exception:
            continue
        prefix = names[msg.arbitration_id]
        out.extend(Signal(msg.timestamp, f"{prefix}.{k}", v) for k, v in decoded.items())
    return time.perf_counter() - start


def _ours(decoder: Any, frames: list[Any]) -> tuple[float, int]:
    decode = decoder.decode
    n = 0
    start = time.perf_counter()
    for msg in frames:
        n += len(decode(msg.arbitration_id, msg.data, msg.timestamp, msg.is_extended_id))
    return time.perf_counter() - start, n


def bench_can(log: Path, dbc: Path, repeat: int, mapping: str | Path = "kona_ev") -> dict[str, Any]:
    """Frames/s of our decoder (with ``mapping`` as shipped, and with all signals) vs the plain loop.

    ``ratio`` = ours / plain with the mapping as shipped (the kona_ev mapping emits only its VSS
    signals); ``ratio_all_signals`` = ours / plain when every DBC signal is emitted as a ``Signal``,
    and ``ratio_all_signals_same_output`` = that against the plain loop emitting the same records.
    """
    from firmware_bridge.can.bus_driver import read_frames
    from firmware_bridge.can.compile_dbc import load_dbc
    from firmware_bridge.can.decoder import CanDecoder
    from firmware_bridge.can.mapping import load_mapping
    from protocols.rejects import Rejects

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # rejects log their first few; not part of what is measured
    try:
        frames = list(read_frames(Path(log), Rejects("bench")))
        db = load_dbc(dbc)
        loaded = load_mapping(mapping, db)
        best = {
            "plain": float("inf"),
            "plain_records": float("inf"),
            "ours": float("inf"),
            "all": float("inf"),
        }
        signals = {"ours": 0, "all": 0}
        for _ in range(max(1, repeat)):
            best["plain"] = min(best["plain"], _plain(db, frames))
            best["plain_records"] = min(best["plain_records"], _plain_records(db, frames))
            for key, only_mapped in (("ours", None), ("all", False)):
                decoder = CanDecoder(db, loaded, only_mapped=only_mapped)
                seconds, signals[key] = _ours(decoder, frames)
                best[key] = min(best[key], seconds)
    finally:
        logging.disable(previous)
    n = len(frames)
    plain_fps, records_fps, ours_fps, all_fps = (
        n / best[k] for k in ("plain", "plain_records", "ours", "all")
    )
    return {
        "log": Path(log).name,
        "dbc": Path(dbc).name,
        "mapping": str(mapping),
        "frames": n,
        "repeat": repeat,
        "plain_cantools_fps": round(plain_fps),
        "ours_fps": round(ours_fps),
        "ratio": round(ours_fps / plain_fps, 3),
        "ours_signals": signals["ours"],
        "ours_all_signals_fps": round(all_fps),
        "ratio_all_signals": round(all_fps / plain_fps, 3),
        "plain_records_fps": round(records_fps),
        "ratio_all_signals_same_output": round(all_fps / records_fps, 3),
        "all_signals": signals["all"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--dbc", type=Path, default=DEFAULT_DBC)
    parser.add_argument("--map", dest="mapping", default="kona_ev")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    result = bench_can(args.log, args.dbc, args.repeat, args.mapping)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CAN decode: {result['frames']} frames of {result['log']}, {result['dbc']}, best of {args.repeat}")
    print(f"  plain cantools decode_message loop: {result['plain_cantools_fps']:>10,} frames/s")
    print(
        f"  dropline, mapping {result['mapping']}:       {result['ours_fps']:>10,} frames/s"
        f"  ratio {result['ratio']:.2f}  ({result['ours_signals']} signals)"
    )
    print(
        f"  dropline, every DBC signal:         {result['ours_all_signals_fps']:>10,} frames/s"
        f"  ratio {result['ratio_all_signals']:.2f}  ({result['all_signals']} signals)"
    )
    print(
        f"  plain loop, a Signal per signal:    {result['plain_records_fps']:>10,} frames/s"
        f"  ratio of ours, every DBC signal, to it {result['ratio_all_signals_same_output']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
