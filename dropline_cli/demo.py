"""``dropline demo`` (``make demo``): simulated vans, real everything else.

Each van's day (``dropline_cli.simulator``) goes through the real drivers (NMEA and scanner
pseudo-terminals, DBC-encoded CAN frames on a python-can virtual bus) into a real agent, whose
outbox sends over gRPC with mutual TLS (a development PKI made in the work directory) to a
collector on embedded defaults (SQLite). A status line per van while it runs; then a summary
computed from the collector's store and the vans' outboxes, and an HTML report (inline SVG, no
network). Offline: nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import html
import logging
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dropline_cli.sim import EmbeddedCollector, Van, make_pki, run_fleet, uplink_body
from dropline_cli.simulator.day import Day, plan

DEMO_SCENARIOS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"tunnel", "extended-dwell"}),
    frozenset({"wrong-stop", "scan-outside-fence", "late-stop"}),
    frozenset({"network-outage"}),
)
"""Van k gets ``DEMO_SCENARIOS[k % 4]``: one plain day, the others with exceptions to show."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-output"), help="outboxes, store, PKI, report"
    )
    parser.add_argument("--vans", type=int, default=3, help="simulated vans (default 3)")
    parser.add_argument("--stops", type=int, default=6, help="stops per van (default 6)")
    parser.add_argument(
        "--scale", type=float, default=16.0, help="simulated seconds per second (default 16: a day in ~2 min)"
    )


def days_for(n: int, stops: int, start: float) -> list[Day]:
    return [
        plan(
            f"van-{i + 1:02d}",
            start,
            stops,
            DEMO_SCENARIOS[i % len(DEMO_SCENARIOS)],
            leg_m=900.0,
            service_s=90,
            bearing_deg=360.0 * i / n,
        )
        for i in range(n)
    ]


def run(args: argparse.Namespace) -> int:
    import shutil

    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    days = days_for(args.vans, args.stops, float(int(time.time())) - 4 * 3600)
    make_pki(work / "pki", [d.vehicle for d in days])
    has_http = _collector_has_http()
    hub = EmbeddedCollector(work / "collector.db", work / "pki", http=has_http)
    hub.start()
    print("Dropline demo: SIMULATED vans (dropline_cli/simulator) through the real drivers, agents,")
    print("outboxes and mutual-TLS gRPC uplink into a real collector (SQLite). Nothing leaves loopback.")
    print(f"  collector: gRPC+TLS on {hub.addr}, store {hub.db}; CA and certificates in {work / 'pki'}")
    if hub.http_addr:
        print(f"  control tower: http://{hub.http_addr}/  (API tokens: dropline token create --db {hub.db})")
    else:
        print("  control tower: not available in this build (dropline collector --http)")
    span = max(d.steps[-1].t - d.steps[0].t for d in days)
    print(
        f"  {len(days)} vans, a {span / 60:.0f}-minute day at x{args.scale:g}: ~{span / args.scale:.0f} s\n"
    )
    stop_status = threading.Event()
    try:
        vans = run_fleet(
            days,
            work,
            args.scale,
            lambda v: uplink_body(hub.addr, v, work / "pki"),
            hub.outage,
            on_start=lambda vs: threading.Thread(
                target=_status_lines, args=(vs, hub.db, stop_status), daemon=True
            ).start(),
        )
    finally:
        stop_status.set()
        hub.stop()
    summary = summarize(vans, hub.db)
    print_summary(summary)
    report = work / "report.html"
    report.write_text(render_report(vans, hub.db, summary))
    print(f"\nReport: {report.resolve()}")
    print(f"Records: {sys.executable} -m dropline_cli export --db {hub.db} --kind all | head")
    return 0 if summary["lost"] == 0 and not summary["errors"] else 1


def _collector_has_http() -> bool:
    try:
        import cloud.api  # noqa: F401
    except ImportError:
        return False
    return True


def _stored(db: Path) -> dict[str, Counter[str]]:
    """Per vehicle, stored records by kind (read-only, while the collector writes)."""
    out: dict[str, Counter[str]] = {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as con:
            for vehicle, kind, n in con.execute("SELECT vehicle, kind, COUNT(*) FROM records GROUP BY 1, 2"):
                out.setdefault(vehicle, Counter())[kind] = n
    except sqlite3.Error:
        pass
    return out


def _status_lines(vans: list[Van], db: Path, stop: threading.Event) -> None:
    """One line per van, redrawn each second: progress, SoC, stops done, exceptions, sent/stored."""
    tty = sys.stdout.isatty()
    # Per van: (its latest agent, records sent by the agents before it, sent by that one), so the
    # count survives an agent's restart and the end of its day.
    sent_by: dict[str, tuple[object, int, int]] = {}
    while not stop.is_set() and not all(v.progress.done for v in vans):
        rows = _stored_details(db)
        lines = []
        for v in vans:
            p, info = v.progress, rows.get(v.day.vehicle, {})
            agent = p.agent
            latest, earlier, current = sent_by.get(v.day.vehicle, (None, 0, 0))
            if agent is not None:
                if agent is not latest:
                    latest, earlier, current = agent, earlier + current, 0
                if agent.uplink:
                    current = agent.uplink.stats.records_sent
            sent_by[v.day.vehicle] = (latest, earlier, current)
            sent = earlier + current
            lines.append(
                f"  {v.day.vehicle} {100 * p.step // max(1, p.steps):3d}%  SoC {p.soc_pct:5.1f}%  "
                f"stops {info.get('completed', 0)}/{len(v.day.manifest['stops'])}  "  # type: ignore[arg-type]
                f"exceptions {info.get('exceptions', 0)}  sent {sent}  stored {info.get('records', 0)}"
                + ("  [network down]" if p.outage else "")
            )
        if tty:
            sys.stdout.write("\r" + "\n".join(lines) + f"\x1b[{len(lines) - 1}A" * (len(lines) > 1))
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        stop.wait(1.0 if tty else 10.0)
    if tty:
        sys.stdout.write("\n" * len(vans) + "\n")


def _stored_details(db: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for vehicle, kinds in _stored(db).items():
        out[vehicle] = {"records": sum(kinds.values())}
    try:
        from cloud.collector import open_store

        store = open_store(db, readonly=True)
        for r in store.export("all"):
            d = out.setdefault(r["vehicle"], {})
            if r["kind"] == "stop_update" and r["status"] == "completed":
                d["completed"] = d.get("completed", 0) + 1
            if _is_exception(r):
                d["exceptions"] = d.get("exceptions", 0) + 1
    except sqlite3.Error as exc:  # a store being written: the next second's line will have it
        logging.getLogger("dropline.demo").debug("status line: store busy (%s)", exc)
    return out


def _is_exception(r: dict[str, Any]) -> bool:
    return r["kind"] == "alert" and r.get("severity") != "info"


def summarize(vans: list[Van], db: Path) -> dict[str, Any]:
    """The honest figures, from the collector's store and the vans' outboxes (what was sent)."""
    from cloud.collector import open_store
    from protocols.records import parse_iso_time

    store = open_store(db, readonly=True)
    rows = list(store.export("all"))
    committed = 0
    for v in vans:
        with sqlite3.connect(v.folder / "outbox.db") as con:
            committed += con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    stored = len(rows)
    fixes = sum(1 for r in rows if r["kind"] == "fix")
    wire = sum(_uplink_bytes(v.status) for v in vans)
    on_time = late = 0
    for v in vans:
        windows = {s["id"]: s["window"] for s in v.day.manifest["stops"]}  # type: ignore[attr-defined]
        for r in rows:
            if r["vehicle"] == v.day.vehicle and r["kind"] == "stop_update" and r["status"] == "arrived":
                t = parse_iso_time(r["time"])
                lo, hi = (parse_iso_time(w) for w in windows[r["stop"]])
                on_time, late = (on_time + 1, late) if lo <= t <= hi else (on_time, late + 1)
    return {
        "committed": committed,
        "stored": stored,
        "lost": committed - stored,
        "fixes": fixes,
        "wire_bytes": wire,
        "bytes_per_fix": wire / fixes if fixes else 0.0,
        "exceptions": dict(Counter(r["code"] for r in rows if _is_exception(r))),
        "deliveries": sum(1 for r in rows if r["kind"] == "delivery"),
        "parcels": sum(len(s["parcels"]) for v in vans for s in v.day.manifest["stops"]),  # type: ignore[attr-defined,misc]
        "on_time": on_time,
        "arrivals": on_time + late,
        "errors": {v.day.vehicle: v.error for v in vans if v.error},
    }


def _uplink_bytes(status: dict[str, Any]) -> int:
    total = 0
    for s in (status, status.get("drained") or {}):
        up = s.get("uplink") if isinstance(s, dict) else None
        total += int(up.get("bytes_sent", 0)) if isinstance(up, dict) else 0
    return total


def print_summary(s: dict[str, Any]) -> None:
    print("Summary (from the collector's store and the vans' outboxes):")
    print(f"  records committed by the vans {s['committed']}, stored {s['stored']}, lost {s['lost']}")
    print(
        f"  bytes on the wire per fix: {s['bytes_per_fix']:.1f} (all uplink payload bytes, signals and "
        f"alerts included, over {s['fixes']} fixes; TLS/TCP framing not counted)"
    )
    print(f"  exceptions raised: {sum(s['exceptions'].values())} {s['exceptions']}")
    print(f"  proofs of delivery: {s['deliveries']} of {s['parcels']} parcels planned")
    rate = 100.0 * s["on_time"] / s["arrivals"] if s["arrivals"] else 0.0
    print(f"  on time: {s['on_time']} of {s['arrivals']} stop arrivals inside their window ({rate:.0f} %)")
    for van, err in s["errors"].items():
        print(f"  {van} FAILED: {err}")


def _svg_lines(series: dict[str, list[tuple[float, float]]], w: int, h: int, title: str) -> str:
    pts = [p for ps in series.values() for p in ps]
    if not pts:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    sx, sy = (w - 20) / ((x1 - x0) or 1), (h - 20) / ((y1 - y0) or 1)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    body = []
    for i, (name, ps) in enumerate(series.items()):
        path = " ".join(f"{10 + (x - x0) * sx:.1f},{h - 10 - (y - y0) * sy:.1f}" for x, y in ps)
        c = colors[i % len(colors)]
        body.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        body.append(f'<text x="12" y="{16 + 14 * i}" fill="{c}" font-size="12">{html.escape(name)}</text>')
    return (
        f"<h2>{html.escape(title)}</h2><p>{y0:.4g} .. {y1:.4g}</p>"
        f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">{"".join(body)}</svg>'
    )


def render_report(vans: list[Van], db: Path, summary: dict[str, Any]) -> str:
    """One HTML file: tracks on a lon/lat (equirectangular, scaled by cos latitude) projection,
    state of charge over time, ETA against the actual arrival where Eta records exist."""
    import math

    from cloud.collector import open_store
    from protocols.records import parse_iso_time

    rows = list(open_store(db, readonly=True).export("all"))
    tracks: dict[str, list[tuple[float, float]]] = {}
    soc: dict[str, list[tuple[float, float]]] = {}
    etas: dict[str, list[tuple[float, float]]] = {}
    arrived: dict[tuple[str, str], float] = {}
    for r in rows:
        v = r["vehicle"]
        if r["kind"] == "fix":
            tracks.setdefault(v, []).append((r["lon"] * math.cos(math.radians(r["lat"])), r["lat"]))
        elif r["kind"] == "signal" and r["signal"].endswith("StateOfCharge.Current"):
            soc.setdefault(v, []).append((r["t"] / 60.0, r["value"]))
        elif r["kind"] == "stop_update" and r["status"] == "arrived":
            arrived[(v, r["stop"])] = parse_iso_time(r["time"])
    for r in rows:
        if r["kind"] == "eta" and (r["vehicle"], r.get("stop")) in arrived:
            actual = arrived[(r["vehicle"], r["stop"])]
            eta = parse_iso_time(r["eta"]) if isinstance(r.get("eta"), str) else None
            if eta is not None:
                key = f"{r['vehicle']} {r['stop']}"
                etas.setdefault(key, []).append((parse_iso_time(r["time"]) / 60.0, (eta - actual) / 60.0))
    eta_part = (
        _svg_lines(etas, 800, 300, "ETA minus actual arrival (minutes) over time")
        if etas
        else "<h2>ETA vs actual arrival</h2><p>No Eta records were stored in this run.</p>"
    )
    items = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(val))}</li>" for k, val in summary.items())
    return (
        "<!doctype html><meta charset=utf-8><title>Dropline demo report</title>"
        "<h1>Dropline demo: simulated vans, real agents and collector</h1>"
        f"<ul>{items}</ul>"
        + _svg_lines(tracks, 800, 600, "Tracks (longitude x cos latitude, latitude)")
        + _svg_lines(soc, 800, 300, "State of charge (%) over time (minutes, GNSS)")
        + eta_part
    )
