"""The ``dropline`` command as a user meets it: every subcommand has --help with an example, and
unusable input is an error naming the file and field, with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dropline_cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def dropline(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dropline_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_top_level_help_lists_every_subcommand_with_an_example() -> None:
    out = dropline("--help")
    assert out.returncode == 0
    for path, (_, _, example) in COMMANDS.items():
        assert path[0] in out.stdout
        assert example in out.stdout


@pytest.mark.parametrize("path", list(COMMANDS))
def test_each_subcommand_has_help_with_an_example(path: tuple[str, ...]) -> None:
    out = dropline(*path, "--help")
    assert out.returncode == 0, out.stderr
    assert "example:" in out.stdout and COMMANDS[path][2] in out.stdout


def test_agent_config_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text('[vehicle]\nid = "van-1"\n[uplink]\nwindow = "eight"\n')
    out = dropline("agent", "--config", str(bad))
    assert out.returncode == 2
    assert f"{bad}.uplink.window: expected int" in out.stderr
    bad.write_text('[vehicle]\nid = "van/1"\n')
    out = dropline("agent", "--config", str(bad))
    assert out.returncode == 2 and "vehicle.id" in out.stderr
    bad.write_text('[vehicle]\nid = "van-1"\n[gps]\ndriver = "nmea-file"\npath = "/nonexistent.log"\n')
    out = dropline("agent", "--config", str(bad))
    assert out.returncode == 2 and "gps.path" in out.stderr
    bad.write_text('[vehicle]\nid = "van-1"\n[uplink]\ntransport = "mqtt"\ntarget = "mqtt://broker:99999"\n')
    out = dropline("agent", "--config", str(bad))
    assert out.returncode == 2 and f"{bad}.uplink.target: mqtt://broker:99999: bad port" in out.stderr
    bad.write_text("[vehicle\n")
    out = dropline("agent", "--config", str(bad))
    assert out.returncode == 2 and "not valid TOML" in out.stderr


def test_describe_config_documents_every_setting() -> None:
    out = dropline("agent", "--describe-config")
    assert out.returncode == 0
    for name in (
        "vehicle.id",
        "outbox.disk_budget_bytes",
        "uplink.order",
        "gps.driver",
        "can.dbc",
        "scanner.port",
    ):
        assert name in out.stdout
