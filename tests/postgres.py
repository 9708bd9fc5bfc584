"""A real PostgreSQL for tests and benchmarks: Debian's server binaries (``initdb``, ``pg_ctl``) on a
free loopback port with its data in a fresh temporary directory, stopped and deleted on exit.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user the
Debian package creates (``nobody`` if it is missing) through ``runuser``, and the directory is
handed to that user. ``run_postgres()`` yields a ``Postgres``; ``new_store_url()`` gives each test an
empty schema of its own. ``fsync=False`` (the default
for tests) trades power-loss safety, which no test here exercises, for speed; benchmarks keep it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs each major version's server binaries (15 on Debian 12)."""


def bin_dir() -> Path:
    """The newest installed server's bin directory; a clear error when PostgreSQL is missing."""
    found = sorted(
        (int(p.name), p / "bin")
        for p in PG_ROOT.glob("*")
        if p.name.isdigit() and (p / "bin/initdb").exists()
    )
    if found:
        return found[-1][1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: run `bash scripts/install-system-deps.sh test` "
        "(installs Debian's postgresql package)"
    )


def _server_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither user 'postgres' nor 'nobody' exists")


class Postgres:
    """One server: ``start`` (returns once it accepts connections), ``stop``, ``url(dbname)``."""

    def __init__(self, *, fsync: bool = False, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = _server_user()
        self.bin = bin_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="dropline-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.fsync = fsync
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N"
        )

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.workdir)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-3000:]}\n{log}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        options = [
            f"-c port={self.port}",
            f"-c listen_addresses={self.host}",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if not self.fsync:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            " ".join(options),
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))

    def new_store_url(self, prefix: str = "t") -> str:
        """A URL whose tables land in an empty schema of their own (``search_path``): as isolated
        as a new database for a store, and instant (CREATE DATABASE copies a template)."""
        import psycopg

        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{name}"'.encode())
        return f"{self.url()}?options=-csearch_path%3D{name}"

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def run_postgres(*, fsync: bool = False) -> Iterator[Postgres]:
    """A started server in a fresh directory, stopped and deleted on exit."""
    server = Postgres(fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
