"""Mutual TLS material both sides load, and who a peer certificate says it is.

Certificates come from ``dropline pki`` (a development CA): a van's has its vehicle id as the
subject CN (and a ``urn:dropline:vehicle:<id>`` SAN) and ``OU=vehicle``; a collector's has CN
``collector:<name>`` and ``OU=collector`` (``:`` cannot appear in a vehicle id, so no van can be
named like a collector).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocols.errors import ConfigError
from protocols.topics import valid_vehicle

VEHICLE_OU = "vehicle"
COLLECTOR_OU = "collector"
BROKER_OU = "broker"
COLLECTOR_PREFIX = "collector:"
VEHICLE_URN = "urn:dropline:vehicle:"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA the other side must chain to, and this side's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes; ConfigError naming the file that cannot be read."""
        out = []
        for name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"tls {name} {path}: cannot read ({exc.strerror})") from None
        return out[0], out[1], out[2]


def vehicle_of(cert_pem: bytes) -> str | None:
    """The vehicle a certificate (already verified by the TLS handshake) speaks for: its CN
    when it is a vehicle certificate whose SAN agrees, else None. (cryptography is imported
    here, on the collector, not on every van.)"""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    if len(cns) != 1 or [ou.value for ou in ous] != [VEHICLE_OU]:
        return None
    cn = cns[0].value
    if not isinstance(cn, str) or not valid_vehicle(cn) or uris != [VEHICLE_URN + cn]:
        return None
    return cn
