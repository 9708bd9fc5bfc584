"""Fixtures shared by every test: where the copied real data lives, and free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dropline_cli import cext

DATA = Path(__file__).parent / "data"


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def _extensions_built() -> None:
    """Under DROPLINE_REQUIRE_CEXT=1 (CI), running the hot paths as plain Python is an error."""
    cext.check()


@pytest.fixture
def data_dir() -> Path:
    return DATA
