"""Verify-only Ed25519 over the process's libcrypto: it agrees with ``cryptography`` on every
verdict, parses the PEM keys ``cryptography`` writes, and keeps ``cryptography`` out of the van."""

from __future__ import annotations

import _hashlib
import base64
import ctypes
import ctypes.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ed25519, envelope
from protocols.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
"""The field prime and the order of the base point (RFC 8032)."""


def _enc(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


SMALL_ORDER = [
    _enc(1),  # the identity
    _enc(P - 1),  # order 2
    _enc(0),  # order 4
    _enc(0, 1),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]
NON_CANONICAL = [_enc(1, 1), _enc(P), _enc(P + 1), _enc(P, 1), _enc(P + 1, 1), _enc(2**255 - 1)]
"""Encodings with y >= p or a sign bit on x = 0: what implementations disagree on, if any."""

private_keys = st.binary(min_size=32, max_size=32).map(Ed25519PrivateKey.from_private_bytes)
messages = st.binary(max_size=300)
points = st.binary(min_size=32, max_size=32) | st.sampled_from(SMALL_ORDER + NON_CANONICAL)
scalars = st.one_of(
    st.integers(0, 2**256 - 1),
    st.sampled_from([0, 1, L - 1, L, L + 1, 2**253 - 1, 2**256 - 1]),
    st.integers(0, 8),
).map(lambda s: s.to_bytes(32, "little"))


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _theirs(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=200)
@given(private_keys, messages)
def test_signatures_made_by_cryptography_verify(key: Ed25519PrivateKey, message: bytes) -> None:
    assert ed25519.verify(_raw(key), key.sign(message), message)


@settings(max_examples=300)
@given(private_keys, messages, st.sampled_from(["signature", "message", "key"]), st.data())
def test_any_bit_flipped_is_refused(
    key: Ed25519PrivateKey, message: bytes, part: str, data: st.DataObject
) -> None:
    fields = {"key": _raw(key), "signature": key.sign(message), "message": message}
    if part == "message" and not message:
        fields["message"] = b"\x00"  # the only change to an empty message: one byte more
    else:
        value = fields[part]
        bit = data.draw(st.integers(0, len(value) * 8 - 1), label="bit")
        changed = bytearray(value)
        changed[bit // 8] ^= 1 << bit % 8
        fields[part] = bytes(changed)
    assert not ed25519.verify(fields["key"], fields["signature"], fields["message"])


@settings(max_examples=200)
@given(private_keys, messages, st.integers(0, 63))
def test_a_truncated_or_extended_message_or_signature_is_refused(
    key: Ed25519PrivateKey, message: bytes, cut: int
) -> None:
    signature = key.sign(message)
    assert not ed25519.verify(_raw(key), signature, message + b"\x00")
    if message:
        assert not ed25519.verify(_raw(key), signature, message[:-1])
    assert not ed25519.verify(_raw(key), signature[:cut], message)
    assert not ed25519.verify(_raw(key), signature + b"\x00", message)


@settings(max_examples=1500)
@given(points, points, scalars, st.binary(max_size=40))
def test_verdict_equals_cryptographys_on_arbitrary_keys_and_signatures(
    public: bytes, r: bytes, s: bytes, message: bytes
) -> None:
    """Small-order and non-canonical points, S at and beyond the group order: both are OpenSSL
    (different versions), so the verdicts must be the same; some of these do verify."""
    assert ed25519.verify(public, r + s, message) == _theirs(public, r + s, message)


def test_the_edge_cases_include_signatures_that_verify() -> None:
    """The differential test above is not all refusals: identity key, identity R and S = 0
    satisfy the cofactorless equation for every message, and both libraries accept it."""
    signature = _enc(1) + bytes(32)
    assert ed25519.verify(_enc(1), signature, b"any message")
    assert _theirs(_enc(1), signature, b"any message")


def test_a_key_of_the_wrong_length_is_a_callers_error() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519.verify(_raw(key)[:31], key.sign(b"m"), b"m")


def test_concurrent_verification_from_many_threads() -> None:
    """No shared OpenSSL context: verdicts stay right when threads verify at once."""
    keys = [Ed25519PrivateKey.generate() for _ in range(4)]
    cases = [(_raw(k), k.sign(bytes([i]) * 50), bytes([i]) * 50) for i, k in enumerate(keys)]
    wrong: list[int] = []

    def work(n: int) -> None:
        for j in range(300):
            public, signature, message = cases[(n + j) % len(cases)]
            good = j % 2 == 0
            if ed25519.verify(public, signature if good else signature[::-1], message) != good:
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_the_openssl_error_queue_is_left_empty() -> None:
    """Whatever a libcrypto call queued on this thread, a verification leaves nothing behind
    for ``_ssl`` or ``_hashlib`` to report as theirs."""
    lib = ctypes.CDLL(_hashlib.__file__)
    lib.EVP_PKEY_new_raw_public_key.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.EVP_PKEY_new_raw_public_key.restype = ctypes.c_void_p
    lib.ERR_peek_error.restype = ctypes.c_ulong
    assert lib.EVP_PKEY_new_raw_public_key(1087, None, b"short", 5) is None
    assert lib.ERR_peek_error() != 0
    key = Ed25519PrivateKey.generate()
    assert not ed25519.verify(_raw(key), bytes(64), b"m")
    assert lib.ERR_peek_error() == 0


def test_libcrypto_is_the_one_hashlib_already_mapped() -> None:
    assert ed25519._candidates()[0][0] == "_hashlib"


def test_the_system_libcrypto_is_a_working_fallback() -> None:
    path = ctypes.util.find_library("crypto")
    if path is None:
        pytest.skip("no system libcrypto to find")
    key = Ed25519PrivateKey.generate()
    assert ed25519._load([("system", path)]).verify(_raw(key), key.sign(b"m"), b"m")


def test_no_library_with_ed25519_is_a_clear_config_error() -> None:
    libc = ctypes.util.find_library("c")
    assert libc is not None
    with pytest.raises(ConfigError, match=r"no OpenSSL libcrypto with Ed25519 .*libc \(.*EVP_"):
        ed25519._load([("libc", libc)])
    with pytest.raises(ConfigError, match="neither _hashlib, _ssl nor find_library"):
        ed25519._load([])


@settings(max_examples=200)
@given(private_keys, st.sampled_from([b"\n", b"\r\n"]), st.integers(4, 76), st.binary(max_size=20))
def test_pem_written_by_cryptography_parses_to_the_raw_key(
    key: Ed25519PrivateKey, newline: bytes, width: int, around: bytes
) -> None:
    """Its line ending, line width and text around the block do not matter, as with cryptography."""
    pem = envelope.public_pem(key.public_key())
    assert ed25519.public_key_from_pem(pem) == _raw(key)
    body = b"".join(pem.split(b"\n")[1:-2])
    lines = [body[i : i + width] for i in range(0, len(body), width)]
    block = newline.join([b"-----BEGIN PUBLIC KEY-----", *lines, b"-----END PUBLIC KEY-----"])
    text = around.replace(b"-", b"") + newline + block + newline + around
    assert ed25519.public_key_from_pem(text) == _raw(key)
    assert serialization.load_pem_public_key(text).public_bytes_raw() == _raw(key)  # type: ignore[union-attr]


@settings(max_examples=500)
@given(private_keys, st.data())
def test_a_changed_pem_parses_only_as_cryptography_would(key: Ed25519PrivateKey, data: st.DataObject) -> None:
    """One byte changed: ours refuses with InputError, or gives exactly the key cryptography
    reads from the same text (never a different key, never another exception)."""
    pem = envelope.public_pem(key.public_key())
    i = data.draw(st.integers(0, len(pem) - 1), label="index")
    b = data.draw(st.integers(0, 255).filter(lambda v: v != pem[i]), label="byte")
    changed = pem[:i] + bytes([b]) + pem[i + 1 :]
    try:
        ours = ed25519.public_key_from_pem(changed)
    except InputError:
        return
    theirs = serialization.load_pem_public_key(changed)
    assert isinstance(theirs, Ed25519PublicKey)
    assert theirs.public_bytes_raw() == ours


def _pem(der: bytes, label: bytes = b"PUBLIC KEY") -> bytes:
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, base64.b64encode(der), label)


PREFIX = bytes.fromhex("302a300506032b6570032100")
MALFORMED = {
    "empty": b"",
    "no block": b"MCowBQYDK2VwAyEA" + b"A" * 44,
    "private key": envelope.private_pem(Ed25519PrivateKey.generate()),
    "x25519 key": X25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    "rsa key": generate_private_key(65537, 1024)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    "short key": _pem(PREFIX + bytes(31)),
    "long key": _pem(PREFIX + bytes(33)),
    "raw key": _pem(bytes(32)),
    "not base64": _pem(PREFIX + bytes(32)).replace(b"MCow", b"MC*w"),
    "unterminated": _pem(PREFIX + bytes(32)).replace(b"-----END", b"-----FIN"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_pem_is_an_input_error_as_cryptography_refuses_it(name: str) -> None:
    with pytest.raises(InputError):
        ed25519.public_key_from_pem(MALFORMED[name])
    with pytest.raises(ValueError):
        envelope.load_public_key(MALFORMED[name])  # the error type callers have always caught
    try:
        theirs = serialization.load_pem_public_key(MALFORMED[name])
    except ValueError:
        return
    assert not isinstance(theirs, Ed25519PublicKey)


CHILD = """
import json, sys
from pathlib import Path

import agent.runtime
import dropline_cli.agent
from agent.documents import load_trust
from protocols import envelope

def libcrypto_maps():
    return sorted({line.split()[-1] for line in open("/proc/self/maps") if "libcrypto" in line})

before = libcrypto_maps()
trust = load_trust(Path(sys.argv[1]), 1)
data = Path(sys.argv[2]).read_bytes()
doc = envelope.open_envelope(data, trust)
envelope.check_target(doc, vehicle="van-7", fleet=None, highest=0, now=0.0)
outer = json.loads(data)
sig = outer["signatures"][0]["sig"]
outer["signatures"][0]["sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
try:
    envelope.open_envelope(json.dumps(outer).encode(), trust)
    refused = None
except envelope.EnvelopeError as exc:
    refused = exc.reason
print(json.dumps({
    "body": doc.body.decode(),
    "refused": refused,
    "cryptography": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"),
    "maps_before": before,
    "maps_after": libcrypto_maps(),
}))
"""


def test_the_van_verifies_a_signed_envelope_without_importing_cryptography(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "fleet.pub"
    pem.write_bytes(envelope.public_pem(key.public_key()))
    signed = tmp_path / "config.envelope"
    signed.write_bytes(
        envelope.sign(b"[eta]\n", [key], kind="config", version=3, expires=4e9, vehicle="van-7")
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(pem), str(signed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["body"] == "[eta]\n"
    assert result["refused"] == "bad_signature"
    assert result["cryptography"] == []
    assert result["maps_before"] and result["maps_after"] == result["maps_before"]  # nothing new mapped
