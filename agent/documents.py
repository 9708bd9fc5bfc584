"""Fleet documents on the van's disk (the shell's side of ``agent/stages/documents.py``).

Accepted documents live in a directory next to the outbox: ``<kind>.envelope`` is the signed
envelope in force for each kind (config, manifest), and ``versions.json`` the highest version
accepted per kind. Both are written whole to a temporary file, fsync'd, renamed over the old one
and the directory fsync'd, so a power cut leaves either the old or the new file, never a torn
one, and a failed write leaves the old document in force. The envelope is written before the
version file, and on start the highest version is the larger of the two places, so a crash
between them neither loses the new document nor lets an older one back in: a restart cannot be
tricked into accepting a replay.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path

from agent.stages.base import Effect
from protocols import envelope
from protocols.errors import ConfigError

log = logging.getLogger("dropline.documents")

VERSIONS = "versions.json"
APPLY = "apply_document"
"""The effect a document stage asks for; args ``kind``, ``version``, ``envelope`` (base64)."""

_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def load_trust(path: Path, threshold: int) -> envelope.Trust:
    """The public keys in a PEM bundle (one block per key: two during a key rotation)."""
    try:
        blocks = _PEM.findall(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    keys: list[bytes] = []
    for i, block in enumerate(blocks):
        try:
            keys.append(envelope.load_public_key(block))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: key {i + 1}: {exc}") from None
    if not keys:
        raise ConfigError(f"{path}: no PEM public key in it")
    try:
        return envelope.Trust(keys, threshold)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class DocumentStore:
    """The accepted documents of one van. ``highest`` is read once, at start; ``apply`` is
    called from the effect worker only (one thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def highest(self) -> dict[str, int]:
        """Per kind, the highest version ever accepted (0 for none). A damaged versions file is
        not a reason to accept old documents: the envelopes in force still count."""
        out = dict.fromkeys(envelope.KINDS, 0)
        try:
            saved = json.loads((self.directory / VERSIONS).read_bytes())
            for kind in envelope.KINDS:
                if isinstance(saved.get(kind), int):
                    out[kind] = saved[kind]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.error("%s unreadable (%s): using the documents in force", self.directory / VERSIONS, exc)
        for kind in envelope.KINDS:
            version = self._version_in_force(kind)
            out[kind] = max(out[kind], version)
        return out

    def _version_in_force(self, kind: str) -> int:
        """The version inside ``<kind>.envelope``, read without checking signatures (it was
        checked when accepted; here it only raises the bar)."""
        try:
            outer = json.loads((self.directory / f"{kind}.envelope").read_bytes())
            payload = json.loads(base64.b64decode(outer["signed"]))
            version = payload["version"]
            return version if isinstance(version, int) else 0
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s.envelope unreadable (%s)", kind, exc)
            return 0

    def in_force(self, kind: str) -> bytes | None:
        """The envelope of ``kind`` in force, or None."""
        try:
            return (self.directory / f"{kind}.envelope").read_bytes()
        except FileNotFoundError:
            return None

    def apply(self, kind: str, version: int, data: bytes) -> None:
        """Put ``data`` (a checked envelope) in force for ``kind``; OSError leaves the old one."""
        if kind not in envelope.KINDS:
            raise ValueError(f"unknown document kind {kind!r}")
        _write_atomically(self.directory / f"{kind}.envelope", data)
        versions = self.highest()
        versions[kind] = max(versions[kind], version)
        _write_atomically(self.directory / VERSIONS, json.dumps(versions, sort_keys=True).encode())
        log.info("document %s version %d in force", kind, version)

    def handle_effect(self, effect: Effect) -> dict[str, str]:
        """The ``apply_document`` effect handler: applied, or the error, never an exception."""
        try:
            self.apply(
                effect.args["kind"], int(effect.args["version"]), base64.b64decode(effect.args["envelope"])
            )
        except (OSError, ValueError, KeyError) as exc:
            log.error("document %s could not be applied: %s", effect.args.get("kind"), exc)
            return {"applied": "false", "error": f"{type(exc).__name__}: {exc}"}
        return {"applied": "true"}
