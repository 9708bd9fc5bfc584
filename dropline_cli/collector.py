"""``dropline collector``: run the collector until SIGTERM or SIGINT.

Batches from gRPC (``--grpc``) and MQTT (``--mqtt``) go through one idempotent write path into
the store ``--db`` (a SQLite file, or a ``postgresql://`` URL that several collectors share);
each is acknowledged only after its transaction committed. Logs go to
stderr at INFO (where it listens, each vehicle's progress, refused batches); stdout gets one
JSON line when it is ready (``{"ready": true, ..., "mqtt_subscribed": bool}``, after the MQTT
subscription or 10 s, whichever comes first) and one with its counters when it stops.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from protocols.errors import UsageError

log = logging.getLogger("dropline.collector")
READY_WAIT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        metavar="PATH|URL",
        help="the store: a SQLite file (created if missing) or a PostgreSQL URL, "
        "postgresql://user[:password]@host[:port]/dbname (schema migrated on start)",
    )
    parser.add_argument(
        "--grpc", metavar="ADDR", help="serve the gRPC Uplink here, e.g. 127.0.0.1:50051 or [::]:50051"
    )
    parser.add_argument(
        "--mqtt",
        metavar="URL",
        help="ingest from this broker: mqtt://[user[:password]@]host[:port] (MQTT 5, shared subscription)",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id; with one the broker keeps the session (and queued batches) across restarts",
    )
    parser.add_argument(
        "--http",
        metavar="ADDR",
        help="serve the control tower (API under /api/v1, dispatcher page at /, tracking links /t/...)"
        " and send webhooks, e.g. 127.0.0.1:8080",
    )
    parser.add_argument(
        "--manifests",
        metavar="DIR",
        type=Path,
        help="directory of manifest JSON files: stop windows and depots for KPIs and tracking pages",
    )
    parser.add_argument(
        "--tls-ca", metavar="PEM", help="CA that vans' certificates must chain to (dropline pki)"
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="this collector's certificate (dropline pki issue-collector)"
    )
    parser.add_argument("--tls-key", metavar="PEM", help="its private key")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC and MQTT: only for a local test (implied when every address is loopback)",
    )
    parser.add_argument(
        "--refused-rate",
        type=float,
        default=20.0,
        metavar="N",
        help="refused or quarantined batches per second a van (or plaintext peer) may send past"
        " --refused-burst before its batches are answered 'throttled' unread (0: no limit)",
    )
    parser.add_argument("--refused-burst", type=float, default=100.0, metavar="N", help="see --refused-rate")
    parser.add_argument(
        "--rollout-every-s",
        type=float,
        default=30.0,
        metavar="S",
        help="advance running rollouts this often (SQLite store; 0: only config rollout-status --advance)",
    )
    # Fault injection for the pipeline's fault tests: exit abruptly after the Nth commit, before
    # its ack is sent, to prove that a batch stored but never acknowledged is harmless.
    parser.add_argument("--exit-after-commits", type=int, metavar="N", help=argparse.SUPPRESS)


def _tls(args: argparse.Namespace) -> Any:
    """Mutual TLS files, or None with ``--insecure``; plaintext is refused otherwise."""
    from protocols.tls import TlsFiles

    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if all(files):
        tls = TlsFiles(Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key))
        try:
            tls.read()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return tls
    if any(files) or not (args.insecure or _loopback_only(args)):
        raise UsageError(
            "collector: give --tls-ca, --tls-cert and --tls-key (dropline pki), "
            "or --insecure for a local test in plaintext"
        )
    log.warning("collector: plaintext gRPC and MQTT (a local test): anyone who can connect can send")
    return None


def _loopback_only(args: argparse.Namespace) -> bool:
    """Plaintext that cannot leave this machine (every address loopback) is a local test too."""
    from protocols.mqtt_url import parse_mqtt_url

    hosts = []
    if args.grpc:
        hosts.append(args.grpc.rsplit(":", 1)[0].strip("[]"))
    if args.mqtt:
        try:
            hosts.append(parse_mqtt_url(args.mqtt).host)
        except ValueError:
            return False
    try:
        return all(h == "localhost" or ipaddress.ip_address(h).is_loopback for h in hosts)
    except ValueError:
        return False


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from cloud.collector import Collector, run_until_signalled
    from cloud.ingest import Budget, Ingest
    from cloud.store import WriteResult

    if not args.grpc and not args.mqtt and not args.http:
        raise UsageError(
            "collector: give --grpc ADDR, --mqtt URL and/or --http ADDR, or it has nothing to do"
        )
    tls = _tls(args)
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger("dropline").setLevel(logging.INFO)  # a server says where it listens
    from cloud.collector import POSTGRES_SCHEMES, open_store

    shown_db = str(args.db)
    if shown_db.startswith(POSTGRES_SCHEMES):
        from cloud.store_postgres import redact

        shown_db = redact(shown_db)  # never print a password
    try:
        store = open_store(args.db)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--db {shown_db}: {exc}") from exc
    except Exception as exc:  # sqlite3.DatabaseError, psycopg.OperationalError: unreachable, not a store
        raise UsageError(f"--db {shown_db}: cannot open the store: {exc}") from exc

    after_commit = None
    if args.exit_after_commits is not None:
        left = [args.exit_after_commits]

        def after_commit(vehicle: str, result: WriteResult) -> None:
            left[0] -= 1
            if left[0] <= 0:
                log.error("fault injection: exiting after a commit, before its ack")
                os._exit(70)

    try:
        budget = Budget(args.refused_rate, args.refused_burst) if args.refused_rate else None
    except ValueError as exc:
        store.close()
        raise UsageError(f"--refused-rate/--refused-burst: {exc}") from None
    ingest = Ingest(store, after_commit=after_commit, budget=budget)
    try:
        collector = Collector(
            args.db,
            grpc_addr=args.grpc,
            mqtt_url=args.mqtt,
            client_id=args.client_id,
            ingest=ingest,
            tls=tls,
            http_addr=args.http,
            manifests=args.manifests,
            rollout_every_s=args.rollout_every_s or None,
        )
    except ValueError as exc:
        store.close()
        raise UsageError(f"--mqtt {args.mqtt}: {exc}") from exc

    def ready() -> None:
        line: dict[str, Any] = {"ready": True, "db": shown_db, "grpc": args.grpc, "mqtt": args.mqtt}
        if collector.http is not None:
            line["http"] = f"{collector.http.host}:{collector.http.bound_port}"
        if collector.mqtt is not None:  # give the broker a moment, but start without it if it is down
            line["mqtt_subscribed"] = collector.mqtt.ready.wait(READY_WAIT_S)
        _print(line)

    try:
        run_until_signalled(collector, on_started=ready)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    _print({"stopped": True, **ingest.stats()})
    return 0
