"""NMEA sentences per second: our ``NmeaDecoder`` against a plain ``pynmea2.parse`` loop.

Both run in this process over the same lines (every line of every gpsd regression log, comments
included, as a receiver or a log file delivers them): ours gets the raw bytes and produces fixes;
the peer gets the decoded text and parses each line, catching its exceptions. The best of
``repeat`` runs counts, to keep scheduler noise out of the ratio.

    .venv/bin/python bench/decode_nmea.py [--repeat N]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pynmea2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dropline_cli import cext  # noqa: E402
from firmware_bridge.gps import nmea_fields  # noqa: E402
from firmware_bridge.gps.nmea import NmeaDecoder  # noqa: E402

LOGS = ROOT / "tests" / "data" / "nmea" / "gpsd"


def _lines(paths: list[Path]) -> list[bytes]:
    lines: list[bytes] = []
    for path in paths:
        lines.extend(path.read_bytes().splitlines(keepends=True))
    return lines


def _best(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_nmea(paths: list[Path], repeat: int) -> dict[str, float | int | bool]:
    """Sentences per second for ours and for the pynmea2 loop over the same lines, and the ratio
    (ours / pynmea2; >= 1.0 means we are not slower)."""
    raw = _lines(paths)
    text = [line.decode("ascii", "replace") for line in raw]
    fixes = 0

    def ours() -> None:
        nonlocal fixes
        dec = NmeaDecoder()
        dec.rejects._log.disabled = True  # logging is not what is measured
        n = 0
        feed = dec.feed
        for line in raw:
            n += len(feed(line))
        fixes = n + len(dec.flush())

    def peer() -> None:
        parse = pynmea2.parse
        for line in text:
            try:  # noqa: SIM105 - contextlib.suppress would slow the peer down, unfairly
                parse(line)
            except Exception:  # ParseError, ChecksumError, SentenceTypeError, ValueError...
                pass

    ours()  # warm up both (imports, caches)
    peer()
    t_ours = _best(ours, repeat)
    t_peer = _best(peer, repeat)
    n = len(raw)
    return {
        "lines": n,
        "fixes": fixes,
        "ours_sentences_per_s": n / t_ours,
        "pynmea2_sentences_per_s": n / t_peer,
        "ratio": t_peer / t_ours,
        "compiled": cext.compiled("firmware_bridge.gps.nmea_fields"),
    }


def bench_fields(paths: list[Path], repeat: int) -> dict[str, float]:
    """Lines per second through ``nmea_fields.frame`` (framing + checksum) as compiled by Cython
    and as the same source run by the interpreter: what compiling the hot module buys."""
    raw = _lines(paths)
    source = Path(nmea_fields.__file__ or "").with_name("nmea_fields.py")
    spec = importlib.util.spec_from_file_location("nmea_fields_plain", source)
    assert spec is not None and spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)

    def loop(frame: Callable[[bytes, int], object]) -> Callable[[], None]:
        def run() -> None:
            for line in raw:
                frame(line, 0)

        return run

    t_compiled = _best(loop(nmea_fields.frame), repeat)
    t_plain = _best(loop(plain.frame), repeat)
    return {
        "compiled_lines_per_s": len(raw) / t_compiled,
        "plain_lines_per_s": len(raw) / t_plain,
        "speedup": t_plain / t_compiled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20, help="runs of each loop; the fastest counts")
    args = parser.parse_args(argv)
    paths = sorted(LOGS.glob("*.log"))
    r = bench_nmea(paths, args.repeat)
    print(
        f"NMEA: {r['lines']} lines from {len(paths)} gpsd logs, {r['fixes']} fixes; "
        f"nmea_fields compiled: {r['compiled']}"
    )
    print(f"  ours (NmeaDecoder)    {r['ours_sentences_per_s']:>12,.0f} sentences/s")
    print(f"  pynmea2.parse loop    {r['pynmea2_sentences_per_s']:>12,.0f} sentences/s")
    print(f"  ratio ours/pynmea2    {r['ratio']:>12.2f}")
    f = bench_fields(paths, args.repeat)
    print("nmea_fields.frame (framing + checksum), same source:")
    print(f"  compiled (Cython)     {f['compiled_lines_per_s']:>12,.0f} lines/s")
    print(f"  plain Python          {f['plain_lines_per_s']:>12,.0f} lines/s")
    print(f"  speedup               {f['speedup']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
