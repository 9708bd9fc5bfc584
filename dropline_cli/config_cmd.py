"""``dropline config keygen | sign | verify | push``: signed fleet documents (protocols/envelope.py).

``keygen`` writes a fleet engineer's ed25519 key pair; ``sign`` wraps a file in an envelope bound
to one vehicle (or a fleet), a version, an expiry and a kind; ``verify`` checks one against the
public keys a van trusts and prints what it holds; ``push`` publishes one retained on each named
van's documents topic, with a collector's certificate (the broker lets only collectors write there),
and/or (``--db``) leaves it in the collector's pushed-documents table, which its gRPC streams send
down to each named van (``cloud/documents.py``). ``rollout`` pushes one to a fraction of the
fleet first and widens or aborts on what the vans report (``cloud/rollout.py``);
``rollout-status`` prints the rollouts (and with ``--advance`` moves the running ones on).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import envelope
from protocols.errors import UsageError
from protocols.records import iso_time, parse_iso_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.prog.split()[-1]
    if action == "keygen":
        parser.add_argument("--out", required=True, metavar="KEY", help="private key file (KEY.pub: public)")
    elif action == "sign":
        parser.add_argument("file", type=Path, metavar="FILE", help="the document body")
        parser.add_argument("--key", required=True, action="append", type=Path, help="private key (repeat)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--vehicle", metavar="V", help="the one van this document is for")
        target.add_argument("--fleet", metavar="F", help="every van of this fleet")
        parser.add_argument("--version", required=True, type=int, help="greater than any before it")
        parser.add_argument("--expires", required=True, metavar="ISO", help="e.g. 2027-01-01T00:00:00Z")
        parser.add_argument("--kind", required=True, choices=envelope.KINDS)
        parser.add_argument("-o", "--output", type=Path, help="envelope file (default: stdout)")
    elif action == "verify":
        parser.add_argument("file", type=Path, metavar="FILE", help="an envelope")
        parser.add_argument("--pub", required=True, action="append", type=Path, help="trusted key (repeat)")
        parser.add_argument("--threshold", type=int, default=1, help="distinct keys that must sign")
        parser.add_argument("--body", type=Path, help="write the verified body here")
    elif action == "push":
        parser.add_argument("file", type=Path, metavar="FILE", help="a signed envelope")
        parser.add_argument("--mqtt", metavar="URL", help="the fleet's broker (retained, per van)")
        parser.add_argument(
            "--db", metavar="DB", help="the gRPC collector's store: SQLite file or postgresql:// URL"
        )
        parser.add_argument("--vehicle", required=True, action="append", help="deliver to this van (repeat)")
        parser.add_argument("--tls-ca", metavar="PEM", help="CA of the broker's certificate (--mqtt)")
        parser.add_argument("--tls-cert", metavar="PEM", help="a collector's certificate (--mqtt)")
        parser.add_argument("--tls-key", metavar="PEM", help="its private key (--mqtt)")
    elif action == "rollout":
        parser.add_argument("file", type=Path, metavar="FILE", help="a signed envelope")
        parser.add_argument(
            "--db", required=True, type=Path, metavar="DB", help="the collector's SQLite store"
        )
        parser.add_argument("--fraction", type=float, default=0.1, help="of the vans in the first wave")
        parser.add_argument("--abort-refusals", type=float, default=0.2, help="abort past this failed share")
        parser.add_argument(
            "--silent-after-s", type=float, default=600.0, help="no record since the push: failed"
        )
        parser.add_argument("--vehicles", nargs="+", metavar="V", help="the vans (default: all in the store)")
    elif action == "rollout-status":
        parser.add_argument(
            "--db", required=True, type=Path, metavar="DB", help="the collector's SQLite store"
        )
        parser.add_argument("--advance", action="store_true", help="take in reports, widen or abort first")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def _print(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def run(args: argparse.Namespace) -> int:
    action = args._path[-1]
    if action == "keygen":
        return _keygen(Path(args.out))
    if action == "sign":
        return _sign(args)
    if action == "push":
        return _push(args)
    if action == "rollout":
        return _rollout(args)
    if action == "rollout-status":
        return _rollout_status(args)
    return _verify(args)


def _keygen(out: Path) -> int:
    key = Ed25519PrivateKey.generate()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(envelope.private_pem(key))
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(envelope.public_pem(key.public_key()))
    keyid = envelope.key_id(envelope.public_raw(key.public_key()))
    _print({"key": str(out), "pub": str(pub), "keyid": keyid})
    return 0


def _sign(args: argparse.Namespace) -> int:
    keys = []
    for path in args.key:
        try:
            keys.append(envelope.load_private_key(_read(path)))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not an unencrypted ed25519 private key ({exc})") from None
    try:
        expires = parse_iso_time(args.expires)
    except ValueError:
        raise UsageError(f"--expires {args.expires!r}: not an ISO 8601 time") from None
    try:
        data = envelope.sign(
            _read(args.file),
            keys,
            kind=args.kind,
            version=args.version,
            expires=expires,
            vehicle=args.vehicle,
            fleet=args.fleet,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.output:
        args.output.write_bytes(data)
    else:
        sys.stdout.write(data.decode() + "\n")
    return 0


def trust_from(paths: list[Path], threshold: int) -> envelope.Trust:
    """The trusted keys in ``paths`` (PEM public keys); a usage error names a bad file."""
    keys = []
    for path in paths:
        try:
            keys.append(envelope.load_public_key(_read(path)))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not an ed25519 public key ({exc})") from None
    try:
        return envelope.Trust(keys, threshold)
    except ValueError as exc:
        raise UsageError(f"--threshold: {exc}") from None


def _verify(args: argparse.Namespace) -> int:
    trust = trust_from(args.pub, args.threshold)
    try:
        doc = envelope.open_envelope(_read(args.file).strip(), trust)
    except envelope.EnvelopeError as exc:
        _print({"file": str(args.file), "valid": False, "reason": exc.reason, "detail": str(exc)})
        return 1
    if args.body:
        args.body.write_bytes(doc.body)
    _print(
        {
            "file": str(args.file),
            "valid": True,
            "kind": doc.kind,
            "vehicle": doc.vehicle,
            "fleet": doc.fleet,
            "version": doc.version,
            "expires": iso_time(doc.expires),
            "schema": doc.schema,
            "signed_by": list(doc.signed_by),
            "bytes": len(doc.body),
        }
    )
    return 0


def _push(args: argparse.Namespace) -> int:
    """Publish the envelope retained on each van's documents topic, with a collector's
    certificate (the broker's ACL lets only collectors write there). Each van checks it itself."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocols import topics
    from protocols.mqtt_url import parse_mqtt_url
    from protocols.tls import TlsFiles

    if not (args.mqtt or args.db):
        raise UsageError("config push: give --mqtt URL, --db DB or both")
    data = _read(args.file)
    try:
        kind = json.loads(base64.b64decode(json.loads(data)["signed"]))["kind"]
        names = [topics.topic(v, topics.DOCUMENTS) for v in args.vehicle]
        target = parse_mqtt_url(args.mqtt) if args.mqtt else None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{args.file}: not a signed envelope, or a bad --mqtt/--vehicle ({exc})") from None
    if args.db:
        _push_db(args.db, args.vehicle, kind, data)
    if target is None:
        return 0
    if not (args.tls_ca and args.tls_cert and args.tls_key):
        raise UsageError("config push --mqtt: give --tls-ca, --tls-cert and --tls-key (a collector's)")
    tls = TlsFiles(Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key))
    tls.read()
    from protocols.dropline.v1 import dropline_pb2 as pb

    payload = pb.Document(kind=kind, envelope=data).SerializeToString()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
    try:
        client.connect(target.host, target.port)
    except OSError as exc:
        raise UsageError(f"--mqtt {args.mqtt}: {exc}") from None
    client.loop_start()
    try:
        for name in names:
            client.publish(name, payload, qos=1, retain=True).wait_for_publish(30)
            _print({"published": name, "kind": kind, "bytes": len(data)})
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


def _push_db(db: str, vehicles: list[str], kind: str, data: bytes) -> None:
    """Leave the envelope for each van in the collector's pushed-documents table (its gRPC
    streams send it down on bind and within a poll of the push): ``<db>.documents`` beside a
    SQLite store, or the PostgreSQL store's own database (every collector sharing it sends it)."""
    from cloud.documents import SUFFIX, PushedDocuments
    from cloud.sqldb import SqlDb, is_postgres

    if not is_postgres(db) and not Path(db).exists():
        raise UsageError(f"--db {db}: no such collector store")
    try:
        table = PushedDocuments(SqlDb(db).beside(SUFFIX))
    except Exception as exc:  # psycopg.OperationalError: unreachable, refused
        raise UsageError(f"--db: cannot open the pushed-documents table: {exc}") from exc
    if is_postgres(db):
        from cloud.store_postgres import redact

        db = redact(db)  # never print a password
    try:
        for vehicle in vehicles:
            push_id = table.push(vehicle, kind, data)
            _print({"pushed": vehicle, "kind": kind, "id": push_id, "bytes": len(data), "db": str(db)})
    finally:
        table.close()


def _rollout(args: argparse.Namespace) -> int:
    """Start a staged rollout of the envelope and push its first wave (``cloud/rollout.py``)."""
    from cloud.rollout import Rollouts
    from cloud.store import SqliteStore

    data = _read(args.file)
    try:
        signed = json.loads(base64.b64decode(json.loads(data)["signed"]))
        kind, version = str(signed["kind"]), int(signed["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{args.file}: not a signed envelope ({exc})") from None
    if not args.db.exists():
        raise UsageError(f"--db {args.db}: no such collector store")
    vehicles = args.vehicles
    if not vehicles:
        store = SqliteStore(args.db, readonly=True)
        try:
            vehicles = [p.vehicle for p in store.vehicles()]
        finally:
            store.close()
    rollouts = Rollouts(args.db)
    try:
        rid = rollouts.start(
            kind,
            version,
            data,
            vehicles,
            fraction=args.fraction,
            abort_refusals=args.abort_refusals,
            silent_after_s=args.silent_after_s,
        )
        _print(rollouts.status(rid))
    except ValueError as exc:
        raise UsageError(f"config rollout: {exc}") from None
    finally:
        rollouts.close()
    return 0


def _rollout_status(args: argparse.Namespace) -> int:
    """One JSON line per rollout, newest first; ``--advance`` moves running ones on first."""
    from cloud.rollout import Rollouts

    if not args.db.exists():
        raise UsageError(f"--db {args.db}: no such collector store")
    rollouts = Rollouts(args.db)
    try:
        for status in rollouts.all():
            if args.advance and status["state"] == "running":
                status = rollouts.advance(status["id"])
            _print(status)
    finally:
        rollouts.close()
    return 0
