"""The ``dropline`` command: one module per subcommand, imported only when that subcommand runs.

A subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help
and example live in :data:`COMMANDS`, so ``dropline --help`` imports none of them. Importing
lazily keeps ``dropline agent`` small on a Pi: the collector's or the decoders' libraries are
never loaded there.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from protocols.errors import UsageError

# subcommand path -> (module, one-line help, example). The help text is repeated here so that
# ``dropline --help`` does not import every subcommand's dependencies.
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("decode", "gps"): (
        "dropline_cli.decode_gps",
        "NMEA 0183 log (or gpsd JSON) to fixes, one per receiver epoch",
        "dropline decode gps tests/data/nmea/gpsd/bt451.log",
    ),
    ("decode", "can"): (
        "dropline_cli.decode_can",
        "CAN log (candump, asc, blf, csv) to VSS signals through a DBC",
        "dropline decode can --dbc tests/data/can/kona_ev/pcan.dbc --map kona_ev "
        "tests/data/can/kona_ev/logs/bms_bench_2021_64kwh_idle.asc",
    ),
    ("compact", "encode"): (
        "dropline_cli.compact",
        "a trace to error-bounded compacted track blobs",
        "dropline compact encode examples/munich-drive.jsonl --max-error-m 5 -o drive.trk",
    ),
    ("compact", "decode"): (
        "dropline_cli.compact",
        "compacted track blobs to JSON lines time, lat, lon",
        "dropline compact decode drive.trk",
    ),
    ("compact", "stats"): (
        "dropline_cli.compact",
        "bytes per fix of a trace at a bound and batch length",
        "dropline compact stats examples/munich-drive.jsonl --max-error-m 5 --batch-s 60 --json",
    ),
    ("decode", "scan"): (
        "dropline_cli.decode_scan",
        "barcode scanner lines to scans (SSCC, GTIN, GS1, courier tracking)",
        "dropline decode scan tests/data/barcodes/scans_raw.txt",
    ),
    ("agent",): ("dropline_cli.agent", "run the van agent", "dropline agent --config examples/agent.toml"),
    ("collector",): (
        "dropline_cli.collector",
        "run the collector (gRPC and/or MQTT ingest into one store)",
        "dropline collector --db collector.db --grpc 127.0.0.1:50051 --mqtt mqtt://127.0.0.1:1883",
    ),
    ("export",): (
        "dropline_cli.export",
        "print what the collector stored, with vehicle and seq",
        "dropline export --db collector.db --kind fixes",
    ),
    ("blob", "list"): (
        "dropline_cli.blob",
        "the photos and signatures the collector reassembled (complete or not)",
        "dropline blob list --db collector.db --vehicle VAN-1",
    ),
    ("blob", "get"): (
        "dropline_cli.blob",
        "write one verified photo or signature to a file",
        "dropline blob get --db collector.db --vehicle VAN-1 BLOB -o photo.jpg",
    ),
    ("replay",): (
        "dropline_cli.replay",
        "the core on recorded files merged by event time: the records the agent would commit",
        "dropline replay --config examples/replay.toml",
    ),
    ("config", "keygen"): (
        "dropline_cli.config_cmd",
        "a fleet engineer's ed25519 signing key pair (KEY and KEY.pub)",
        "dropline config keygen --out fleet.key",
    ),
    ("config", "sign"): (
        "dropline_cli.config_cmd",
        "sign a configuration or manifest for one van or a fleet (version, expiry)",
        "dropline config sign agent.toml --key fleet.key --vehicle van-7 --version 3 "
        "--expires 2027-01-01T00:00:00Z --kind config -o agent.toml.signed",
    ),
    ("config", "verify"): (
        "dropline_cli.config_cmd",
        "check a signed document against trusted public keys",
        "dropline config verify agent.toml.signed --pub fleet.key.pub",
    ),
    ("config", "push"): (
        "dropline_cli.config_cmd",
        "publish a signed document retained to vans' documents topics (a collector's certificate)",
        "dropline config push agent.toml.signed --vehicle van-7 --mqtt mqtt://broker:8883 "
        "--tls-ca pki/ca.pem --tls-cert pki/collectors/main.pem --tls-key pki/collectors/main.key",
    ),
    ("config", "rollout"): (
        "dropline_cli.config_cmd",
        "staged rollout: push to a fraction of the fleet, widen on applied, abort past refusals",
        "dropline config rollout agent.toml.signed --db collector.db --fraction 0.1 --abort-refusals 0.2",
    ),
    ("config", "rollout-status"): (
        "dropline_cli.config_cmd",
        "the rollouts and each van's outcome (--advance: take in reports, widen or abort)",
        "dropline config rollout-status --db collector.db --advance",
    ),
    ("geofence",): (
        "dropline_cli.geofence",
        "geofence enter/exit/dwell events of a trace against GeoJSON fences",
        "dropline geofence --fences fences.geojson examples/munich-drive.jsonl",
    ),
    ("pki", "init"): (
        "dropline_cli.pki",
        "a development CA for the fleet's certificates",
        "dropline pki init --dir pki",
    ),
    ("pki", "issue-vehicle"): (
        "dropline_cli.pki",
        "a van's client certificate (vehicle id in CN and SAN)",
        "dropline pki issue-vehicle van-7 --dir pki",
    ),
    ("pki", "issue-collector"): (
        "dropline_cli.pki",
        "a collector's certificate (gRPC server, MQTT client)",
        "dropline pki issue-collector main --dir pki --host collector.example --host 127.0.0.1",
    ),
    ("pki", "mosquitto-conf"): (
        "dropline_cli.pki",
        "Mosquitto TLS listener + ACL by certificate CN: each van only its own topics",
        "dropline pki mosquitto-conf --dir pki --port 8883",
    ),
    ("resequence",): (
        "dropline_cli.resequence",
        "best visiting order for a TSPTW instance within a time limit (the van's resequencer)",
        "dropline resequence tests/data/tsptw/dumas/n20w20.001.txt --time-limit 0.1 --seed 1",
    ),
    ("token", "create"): (
        "dropline_cli.token",
        "create an API token (read or admin) for the collector's HTTP API",
        "dropline token create --db collector.db --role read",
    ),
    ("share",): (
        "dropline_cli.share",
        "print an expiring customer tracking link for one stop",
        "dropline share S1 --db collector.db --base http://127.0.0.1:8080 --ttl-h 24",
    ),
    ("demo",): (
        "dropline_cli.demo",
        "simulated vans through the real drivers and agents into a local TLS collector, with a report",
        "dropline demo --vans 3 --scale 60",
    ),
    ("sim",): (
        "dropline_cli.sim",
        "a simulated delivery day for N vans through the real drivers and agents",
        "dropline sim --vans 3 --scale 20 --scenario tunnel --scenario late-stop --workdir sim-output",
    ),
}


def _epilog(example: str) -> str:
    return f"example:\n  {example}"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, tuple[str, ...]]]:
    top = argparse.ArgumentParser(
        prog="dropline",
        description="Dropline: edge agent and collector for delivery fleets.",
        epilog="\n".join(f"  {ex}" for _, _, ex in COMMANDS.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    subs = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    by_prog: dict[str, tuple[str, ...]] = {}
    for path, (_module, help_text, example) in COMMANDS.items():
        parent = subs
        if len(path) == 2:
            if path[0] not in groups:
                group = subs.add_parser(path[0], help=f"{path[0]} subcommands")
                groups[path[0]] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            parent = groups[path[0]]
        p = parent.add_parser(
            path[-1],
            help=help_text,
            description=help_text,
            epilog=_epilog(example),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(_path=path)
        by_prog[p.prog] = path
    return top, by_prog


def _load(path: tuple[str, ...]) -> ModuleType:
    return importlib.import_module(COMMANDS[path][0])


def _command_path(argv: Sequence[str]) -> tuple[str, ...] | None:
    words = [a for a in argv if not a.startswith("-")]
    return next((p for p in COMMANDS if tuple(words[: len(p)]) == p), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser()
    path = _command_path(argv)
    module = _load(path) if path else None
    if module is not None and path is not None:
        module.add_arguments(_find_subparser(parser, path))
    args = parser.parse_args(argv)  # prints help or a usage error and exits when no command matched
    assert module is not None
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args))
    except UsageError as exc:
        print(f"dropline: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def _find_subparser(top: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = top
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser
