"""Verify-only Ed25519 over the OpenSSL libcrypto the Python process already has mapped.

The van checks signed documents but never signs, and importing ``cryptography`` for that costs
about 7 MB resident (issue 20). CPython's ``_hashlib`` and ``_ssl`` are linked against libcrypto,
which implements Ed25519 since OpenSSL 1.1.1, so verification goes through ctypes to that very
library: nothing new is mapped. Keys here are the raw 32 bytes (RFC 8032); a PEM public key is
parsed by hand (:func:`public_key_from_pem`). Signing stays with ``cryptography``
(``protocols/envelope.py``).

A caller may assume: :func:`require` raises :class:`~protocols.errors.ConfigError` unless
verification works in this process (it checks an RFC 8032 test vector); :func:`verify` is
thread-safe (each call has its own OpenSSL objects, freed before it returns), never raises for
any signature or message bytes, and leaves its thread's OpenSSL error queue empty (so ``_ssl``
and ``_hashlib`` never report a stale error of ours).
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import functools
import importlib
import re

from protocols.errors import ConfigError, InputError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_EVP_PKEY_ED25519 = 1087
"""NID_ED25519, the same number in every OpenSSL that has Ed25519."""

_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""DER SubjectPublicKeyInfo of an Ed25519 key up to the key: SEQUENCE { SEQUENCE { OID
1.3.101.112 }, BIT STRING (0 unused bits) of 32 bytes }. RFC 8410 allows no parameters, so
this is the one DER encoding; the 32 key bytes follow."""

_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.DOTALL)
_WHITESPACE = re.compile(rb"\s+")

_SELF_TEST = (
    bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
    bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    ),
    b"",
)
"""RFC 8032 section 7.1, test 1: public key, signature, message."""


class _Libcrypto:
    """The few libcrypto functions verification needs, with their C types declared."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        self.new_raw_public_key = lib.EVP_PKEY_new_raw_public_key
        self.new_raw_public_key.argtypes = [ctypes.c_int, vp, ctypes.c_char_p, size]
        self.new_raw_public_key.restype = vp
        self.pkey_free = lib.EVP_PKEY_free
        self.pkey_free.argtypes = [vp]
        self.pkey_free.restype = None
        self.ctx_new = lib.EVP_MD_CTX_new
        self.ctx_new.argtypes = []
        self.ctx_new.restype = vp
        self.ctx_free = lib.EVP_MD_CTX_free
        self.ctx_free.argtypes = [vp]
        self.ctx_free.restype = None
        self.verify_init = lib.EVP_DigestVerifyInit
        self.verify_init.argtypes = [vp, vp, vp, vp, vp]
        self.verify_init.restype = ctypes.c_int
        self.digest_verify = lib.EVP_DigestVerify
        self.digest_verify.argtypes = [vp, ctypes.c_char_p, size, ctypes.c_char_p, size]
        self.digest_verify.restype = ctypes.c_int
        self.clear_error = lib.ERR_clear_error
        self.clear_error.argtypes = []
        self.clear_error.restype = None

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        pkey = self.new_raw_public_key(_EVP_PKEY_ED25519, None, public, len(public))
        ctx = self.ctx_new() if pkey else None
        try:
            return (
                ctx is not None
                and self.verify_init(ctx, None, None, None, pkey) == 1
                and self.digest_verify(ctx, signature, len(signature), message, len(message)) == 1
            )
        finally:
            if ctx is not None:
                self.ctx_free(ctx)
            if pkey:
                self.pkey_free(pkey)
            self.clear_error()  # a refusal queues errors; leave none for _ssl or _hashlib to find


def _candidates() -> list[tuple[str, str]]:
    """Where libcrypto may be, best first: the extension modules linked against the one already
    mapped (dlsym on their handle searches their dependencies), then the system's."""
    out: list[tuple[str, str]] = []
    for name in ("_hashlib", "_ssl"):
        try:
            path = importlib.import_module(name).__file__
        except ImportError:
            continue
        if path:
            out.append((name, path))
    system = ctypes.util.find_library("crypto")
    if system:
        out.append(("find_library('crypto')", system))
    return out


def _load(candidates: list[tuple[str, str]]) -> _Libcrypto:
    """The first of ``candidates`` (name, path) whose libcrypto passes the self-test."""
    tried: list[str] = []
    for name, path in candidates:
        try:
            lib = _Libcrypto(ctypes.CDLL(path))
        except (OSError, AttributeError) as exc:
            tried.append(f"{name} ({path}): {exc}")
            continue
        if lib.verify(*_SELF_TEST):
            return lib
        tried.append(f"{name} ({path}): Ed25519 self-test failed")
    raise ConfigError(
        "no OpenSSL libcrypto with Ed25519 (1.1.1 or later) found: "
        + ("; ".join(tried) or "neither _hashlib, _ssl nor find_library('crypto') gave one")
    )


@functools.cache
def _libcrypto() -> _Libcrypto:
    """The process's libcrypto, bound once. Two threads racing the first call at worst bind the
    same library twice, which is harmless."""
    return _load(_candidates())


def require() -> None:
    """Raise :class:`ConfigError` unless Ed25519 verification works in this process."""
    _libcrypto()


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by the raw 32-byte
    ``public`` key, as OpenSSL judges it (S must be below the group order). A signature of the
    wrong length is False; a key of the wrong length is a ValueError (a caller's mistake)."""
    if len(public) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(public)}")
    if len(signature) != SIGNATURE_BYTES:
        return False
    return _libcrypto().verify(bytes(public), bytes(signature), bytes(message))


def public_key_from_pem(pem: bytes) -> bytes:
    """The raw 32 bytes of the first ``PUBLIC KEY`` PEM block in ``pem`` (text around it is
    ignored, as ``cryptography`` does), which must be an Ed25519 SubjectPublicKeyInfo.
    :class:`~protocols.errors.InputError` (a ValueError) for anything else."""
    match = _PEM.search(pem)
    if match is None:
        raise InputError("no PEM PUBLIC KEY block")
    text = _WHITESPACE.sub(b"", match.group(1))
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("PEM PUBLIC KEY block is not base64") from None
    if base64.b64encode(der) != text:  # unused bits set: cryptography refuses it too
        raise InputError("PEM PUBLIC KEY block is not canonical base64")
    if len(der) != len(_SPKI_PREFIX) + PUBLIC_KEY_BYTES or not der.startswith(_SPKI_PREFIX):
        raise InputError("not an ed25519 public key")
    return der[len(_SPKI_PREFIX) :]
