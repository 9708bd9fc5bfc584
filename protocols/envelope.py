"""Signed fleet documents (agent configuration, delivery manifests): the envelope both sides use.

An envelope is compact JSON ``{"signed": B64, "signatures": [{"keyid": HEX, "sig": B64}, ...]}``.
``signed`` holds the exact payload bytes that were signed, so nothing is re-serialised before a
check (no canonicalisation to get wrong). The payload is JSON binding, as TUF and Uptane do, the
document ``kind`` (config | manifest), its target (one ``vehicle`` or a whole ``fleet``), a
``version`` that only ever grows, an ``expires`` time, the envelope ``schema`` and the ``body``.

Signatures are ed25519 over ``DOMAIN + payload`` by keys named by their id (SHA-256 of the raw
public key, so an id cannot be chosen). A :class:`Trust` holds the keys a van believes (two during
a key rotation) and a threshold that counts **distinct** key ids with a good signature: one key
signing twice is one signature (python-tuf GHSA-pwqf-9h7j-7mv8). A signature claiming a trusted
key that does not verify refuses the whole envelope; signatures by keys the van does not know are
ignored, as TUF does (a newer key it has not been given yet). So the one change to an envelope
that is not refused is a signature's key id altered into an unknown one while enough trusted
signatures remain: the payload the van then accepts is still exactly the one that was signed.

:func:`open_envelope` checks form and signatures; :func:`check_target` checks what is specific to
one van at one time (vehicle, version, expiry). Every refusal is an :class:`EnvelopeError` whose
``reason`` is a short code fit for a counter and a ``DocumentStatus``. Nothing here reads a clock
or a file: time and the highest accepted version are given by the caller.

The verify side (:class:`Trust`, :func:`load_public_key`, :func:`key_id`, :func:`open_envelope`,
:func:`check_target`) works on raw 32-byte public keys through ``protocols/ed25519.py`` (the
process's own libcrypto), so the van never imports ``cryptography`` (about 7 MB resident, issue
20). The sign side (:func:`sign`, :func:`load_private_key`, :func:`private_pem`,
:func:`public_pem`, :func:`public_raw`), used by fleet engineers' tools and the collector, imports
``cryptography`` when first called.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocols import ed25519
from protocols.errors import InputError
from protocols.records import iso_time, parse_iso_time
from protocols.topics import valid_vehicle

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SCHEMA = 1
"""The envelope schema this build reads and writes; any other is refused (``schema``)."""

KINDS = ("config", "manifest")
DOMAIN = b"dropline-envelope-v1\n"
"""Prefixed to the payload before signing, so a signature over something else never verifies here."""

MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_SIGNATURES = 16
MAX_VERSION = (1 << 63) - 1
_PAYLOAD_KEYS = {"type", "schema", "kind", "vehicle", "fleet", "version", "expires", "body"}
_TYPE = "dropline/document"
_KEY_ID = re.compile(r"[0-9a-f]{64}")


class EnvelopeError(InputError):
    """A document refused; ``reason`` is the counted code, the message says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Document:
    """A payload whose signatures met the threshold. ``vehicle`` xor ``fleet`` is set;
    ``expires`` is seconds since the epoch; ``signed_by`` are the distinct trusted key ids."""

    kind: str
    vehicle: str | None
    fleet: str | None
    version: int
    expires: float
    schema: int
    body: bytes
    signed_by: tuple[str, ...]


def key_id(public: bytes) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: derived, never chosen by a signer."""
    return hashlib.sha256(public).hexdigest()


class Trust:
    """The keys a van believes and how many distinct ones must sign. The same key given twice
    counts once (ids are derived from the key), so a threshold cannot be met by repetition.
    Keys are raw 32-byte ed25519 public keys (:func:`load_public_key`, :func:`public_raw`).
    Raises ConfigError if this process cannot verify ed25519 (no suitable libcrypto), so a van
    finds out when it loads its keys, not when the first document arrives."""

    def __init__(self, keys: Iterable[bytes], threshold: int = 1) -> None:
        self.keys: dict[str, bytes] = {}
        for k in keys:
            if not isinstance(k, bytes):
                raise TypeError(f"a trusted key is its raw 32 bytes, not {type(k).__name__}")
            if len(k) != ed25519.PUBLIC_KEY_BYTES:
                raise ValueError(f"an ed25519 public key is 32 bytes, not {len(k)}")
            self.keys[key_id(k)] = k
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if threshold > len(self.keys):
            raise ValueError(f"threshold {threshold} but only {len(self.keys)} distinct keys")
        self.threshold = threshold
        ed25519.require()


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM ed25519 key; ValueError for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an ed25519 private key")
    return key


def load_public_key(pem: bytes) -> bytes:
    """The raw 32 bytes of the first PEM ed25519 public key (SubjectPublicKeyInfo) in ``pem``;
    ValueError (an InputError) for anything else."""
    return ed25519.public_key_from_pem(pem)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_raw(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a ``cryptography`` public key: what :class:`Trust` and :func:`key_id` take."""
    return key.public_bytes_raw()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    """Strict base64: the one canonical spelling only, so no two strings mean the same bytes."""
    if not isinstance(text, str):
        raise EnvelopeError("malformed", f"{what} is not a string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("malformed", f"{what} is not base64") from None
    if _b64(data) != text:
        raise EnvelopeError("malformed", f"{what} is not canonical base64")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EnvelopeError("malformed", f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> None:
    raise EnvelopeError("malformed", f"{name} is not JSON")


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError, over-long integers
        raise EnvelopeError("malformed", f"{what}: {exc}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError("malformed", f"{what} is not an object")
    return obj


def sign(
    body: bytes,
    keys: Sequence[Ed25519PrivateKey],
    *,
    kind: str,
    version: int,
    expires: float,
    vehicle: str | None = None,
    fleet: str | None = None,
    schema: int = SCHEMA,
) -> bytes:
    """The envelope bytes of ``body`` for one ``vehicle`` or a ``fleet``, signed by every key."""
    if (vehicle is None) == (fleet is None):
        raise ValueError("give a vehicle or a fleet, not both or neither")
    target = vehicle if vehicle is not None else fleet
    if target is None or not valid_vehicle(target):
        raise ValueError(f"invalid vehicle or fleet id {target!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if not 1 <= version <= MAX_VERSION:
        raise ValueError("version must be 1..2^63-1")
    if not keys:
        raise ValueError("at least one signing key")
    payload = json.dumps(
        {
            "type": _TYPE,
            "schema": schema,
            "kind": kind,
            "vehicle": vehicle,
            "fleet": fleet,
            "version": version,
            "expires": iso_time(expires),
            "body": _b64(body),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signatures = [
        {"keyid": key_id(public_raw(k.public_key())), "sig": _b64(k.sign(DOMAIN + payload))} for k in keys
    ]
    envelope = {"signed": _b64(payload), "signatures": signatures}
    return json.dumps(envelope, separators=(",", ":")).encode()


def open_envelope(data: bytes, trust: Trust) -> Document:
    """The document inside ``data`` if its form is right and at least ``trust.threshold``
    distinct trusted keys signed it; otherwise :class:`EnvelopeError`. Never raises anything
    else, whatever the bytes."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("too_large", f"{len(data)} bytes")
    outer = _json(data, "envelope")
    if set(outer) != {"signed", "signatures"}:
        raise EnvelopeError("malformed", "envelope keys must be signed and signatures")
    payload = _unb64(outer["signed"], "signed")
    sigs = outer["signatures"]
    if not isinstance(sigs, list) or not sigs or len(sigs) > MAX_SIGNATURES:
        raise EnvelopeError("malformed", f"signatures must be a list of 1..{MAX_SIGNATURES}")
    good: set[str] = set()
    for entry in sigs:
        if not isinstance(entry, dict) or set(entry) != {"keyid", "sig"}:
            raise EnvelopeError("malformed", "a signature is {keyid, sig}")
        keyid = entry["keyid"]
        signature = _unb64(entry["sig"], "sig")
        if not isinstance(keyid, str) or _KEY_ID.fullmatch(keyid) is None:
            raise EnvelopeError("malformed", "keyid is not 64 lowercase hex digits")
        key = trust.keys.get(keyid)
        if key is None:
            continue  # a key this van does not know (yet): it neither counts nor refuses
        if not ed25519.verify(key, signature, DOMAIN + payload):
            raise EnvelopeError("bad_signature", f"key {keyid[:16]}")
        good.add(keyid)
    if not good:
        raise EnvelopeError("unknown_key", "no signature by a trusted key")
    if len(good) < trust.threshold:
        raise EnvelopeError("threshold", f"{len(good)} of {trust.threshold} distinct keys")
    return _document(_json(payload, "payload"), tuple(sorted(good)))


def _document(p: dict[str, Any], signed_by: tuple[str, ...]) -> Document:
    if set(p) != _PAYLOAD_KEYS or p["type"] != _TYPE:
        raise EnvelopeError("malformed", "payload fields")
    schema = p["schema"]
    if type(schema) is not int or schema != SCHEMA:
        raise EnvelopeError("schema", f"schema {schema!r}, this build reads {SCHEMA}")
    kind = p["kind"]
    if kind not in KINDS:
        raise EnvelopeError("kind", f"kind {kind!r}")
    vehicle, fleet = p["vehicle"], p["fleet"]
    target = vehicle if fleet is None else fleet
    if (vehicle is None) == (fleet is None) or not isinstance(target, str) or not valid_vehicle(target):
        raise EnvelopeError("malformed", "exactly one valid vehicle or fleet")
    version = p["version"]
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise EnvelopeError("malformed", "version must be an integer 1..2^63-1")
    expires_text = p["expires"]
    try:
        expires = parse_iso_time(expires_text) if isinstance(expires_text, str) else math.nan
    except (ValueError, OverflowError):
        expires = math.nan
    if not math.isfinite(expires):
        raise EnvelopeError("malformed", "expires must be an ISO 8601 time")
    body = _unb64(p["body"], "body")
    return Document(kind, vehicle, fleet, version, expires, schema, body, signed_by)


def check_target(doc: Document, *, vehicle: str, fleet: str | None, highest: int, now: float) -> None:
    """Refuse ``doc`` for this van at event time ``now`` unless it names this van (or its
    fleet), is newer than ``highest`` (the highest version of its kind already accepted:
    never a rollback or a replay) and has not expired."""
    if doc.vehicle is not None and doc.vehicle != vehicle:
        raise EnvelopeError("wrong_vehicle", f"for {doc.vehicle}, this is {vehicle}")
    if doc.fleet is not None and doc.fleet != fleet:
        raise EnvelopeError("wrong_vehicle", f"for fleet {doc.fleet}, this van is in {fleet}")
    if doc.version <= highest:
        raise EnvelopeError("old_version", f"version {doc.version}, already at {highest}")
    if now >= doc.expires:
        raise EnvelopeError("expired", f"expired {iso_time(doc.expires)}")
