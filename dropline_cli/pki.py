"""``dropline pki init | issue-vehicle ID | issue-collector NAME | mosquitto-conf``: a development PKI.

A CA (ECDSA P-256) and certificates it signs, in one directory (``--dir``, default ``pki``):
``ca.pem``/``ca.key``; ``vehicles/<id>.pem|.key`` (CN = vehicle id, SAN
``urn:dropline:vehicle:<id>``, OU ``vehicle``, client authentication only);
``collectors/<name>.pem|.key`` (CN ``collector:<name>``, OU ``collector``, server and client
authentication, SAN the ``--host`` names and addresses); ``broker.pem|.key`` for Mosquitto.
``mosquitto-conf`` writes a listener that requires a certificate, takes the CN as the user name
and an ACL by ``%u`` (never ``%c``, which the client chooses): a van publishes only its own
telemetry and reads only its own acks and documents; only collectors read every van's telemetry
and publish acks, documents and ``dropline/v1/collectors``.

For development and tests: keys are written unencrypted (mode 0600). A fleet's real PKI keeps
its CA key offline.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols import topics
from protocols.errors import UsageError
from protocols.tls import BROKER_OU, COLLECTOR_OU, COLLECTOR_PREFIX, VEHICLE_OU, VEHICLE_URN

DAYS = 825


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.prog.split()[-1]
    parser.add_argument("--dir", type=Path, default=Path("pki"), help="the PKI directory (default: pki)")
    if action == "issue-vehicle":
        parser.add_argument("id", help="vehicle id (1-64 of A-Z a-z 0-9 _ . -)")
    elif action == "issue-collector":
        parser.add_argument("name", help="collector name (same characters as a vehicle id)")
        parser.add_argument(
            "--host",
            action="append",
            default=None,
            help="DNS name or IP it serves on (repeat; default localhost, 127.0.0.1)",
        )
    elif action == "mosquitto-conf":
        parser.add_argument("--port", type=int, default=8883, help="listener port (default 8883)")
        parser.add_argument("--bind", default="127.0.0.1", help="listener address (default 127.0.0.1)")
        parser.add_argument(
            "--host",
            action="append",
            default=None,
            help="broker DNS name or IP (repeat; default localhost, 127.0.0.1)",
        )


def run(args: argparse.Namespace) -> int:
    action = args._path[-1]
    pki: Path = args.dir
    if action == "init":
        out = init(pki)
    elif action == "issue-vehicle":
        out = issue_vehicle(pki, args.id)
    elif action == "issue-collector":
        out = issue_collector(pki, args.name, args.host or ["localhost", "127.0.0.1"])
    else:
        out = mosquitto_conf(pki, args.port, args.bind, args.host or ["localhost", "127.0.0.1"])
    sys.stdout.write(json.dumps({k: str(v) for k, v in out.items()}) + "\n")
    return 0


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _name(cn: str, ou: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dropline development"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def init(pki: Path) -> dict[str, Path]:
    """A new CA in ``pki`` (refuses to overwrite one: every certificate hangs on it)."""
    ca_key_path, ca_path = pki / "ca.key", pki / "ca.pem"
    if ca_path.exists():
        raise UsageError(f"{ca_path}: a CA is already there")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dropline development CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(ca_key_path, key)
    ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"ca": ca_path, "ca_key": ca_key_path}


def _load_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{pki}: no usable CA ({exc}); run dropline pki init --dir {pki}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{pki}/ca.key: not an EC key")
    return cert, key


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(
    pki: Path,
    stem: Path,
    cn: str,
    ou: str,
    san: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> dict[str, Path]:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, ou))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = stem.with_name(stem.name + ".pem"), stem.with_name(stem.name + ".key")
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"cert": cert_path, "key": key_path, "ca": pki / "ca.pem"}


def _check_id(value: str, what: str) -> None:
    if not topics.valid_vehicle(value):
        raise UsageError(f"{what} {value!r}: use 1-64 of A-Z a-z 0-9 _ . -")


def issue_vehicle(pki: Path, vehicle: str) -> dict[str, Path]:
    """A van's client certificate: CN and SAN carry its id."""
    _check_id(vehicle, "vehicle id")
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(VEHICLE_URN + vehicle)]
    return _issue(
        pki, pki / "vehicles" / vehicle, vehicle, VEHICLE_OU, san, [ExtendedKeyUsageOID.CLIENT_AUTH]
    )


def issue_collector(pki: Path, name: str, hosts: list[str]) -> dict[str, Path]:
    """A collector's certificate: it serves gRPC (server) and connects to the broker (client)."""
    _check_id(name, "collector name")
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cn = COLLECTOR_PREFIX + name
    return _issue(pki, pki / "collectors" / name, cn, COLLECTOR_OU, _general_names(hosts), usages)


def collector_names(pki: Path) -> list[str]:
    """The MQTT user names (certificate CNs) of every collector issued in ``pki``."""
    return sorted(COLLECTOR_PREFIX + p.name.removesuffix(".pem") for p in (pki / "collectors").glob("*.pem"))


def acl(collectors: list[str]) -> str:
    """The broker's ACL. ``pattern`` lines apply to every client with ``%u`` = its certificate's
    CN; collectors get their rights by name. Nothing is granted to anonymous clients."""
    p = topics.PREFIX
    lines = [
        "# Generated by dropline pki mosquitto-conf. %u is the certificate CN (use_identity_as_username);",
        "# never %c: the client chooses its client id.",
        f"pattern write {p}/%u/{topics.TELEMETRY}",
        f"pattern read {p}/%u/{topics.ACK}",
        f"pattern read {p}/%u/{topics.DOCUMENTS}",
        f"pattern read {topics.COLLECTORS}",
        "",
    ]
    for user in collectors:
        lines += [
            f"user {user}",
            f"topic read {p}/+/{topics.TELEMETRY}",
            f"topic write {p}/+/{topics.ACK}",
            f"topic write {p}/+/{topics.DOCUMENTS}",
            f"topic readwrite {topics.COLLECTORS}",
            "",
        ]
    return "\n".join(lines)


def mosquitto_conf(pki: Path, port: int, bind: str, hosts: list[str]) -> dict[str, Path]:
    """A broker certificate (issued once) and a TLS listener configuration with its ACL."""
    broker = pki / "broker"
    if not broker.with_name("broker.pem").exists():
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        _issue(pki, broker, "dropline-broker", BROKER_OU, _general_names(hosts), usages)
    acl_path, conf_path = pki / "mosquitto.acl", pki / "mosquitto.conf"
    acl_path.write_text(acl(collector_names(pki)))
    conf = [
        f"listener {port} {bind}",
        f"cafile {(pki / 'ca.pem').resolve()}",
        f"certfile {(pki / 'broker.pem').resolve()}",
        f"keyfile {(pki / 'broker.key').resolve()}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"acl_file {acl_path.resolve()}",
        "",
    ]
    conf_path.write_text("\n".join(conf))
    return {"conf": conf_path, "acl": acl_path, "broker_cert": pki / "broker.pem"}
