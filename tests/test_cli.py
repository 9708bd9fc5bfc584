"""The ``dropline`` command as a user meets it: every subcommand has --help with an example, and
unusable input is an error naming the file and field, with a non-zero exit."""

from __future__ import annotations

import json
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


CONTRACT = [
    "decode gps",
    "decode can",
    "decode scan",
    "compact encode",
    "compact decode",
    "compact stats",
    "geofence",
    "resequence",
    "agent",
    "collector",
    "token create",
    "export",
    "config sign",
    "config verify",
    "pki init",
    "replay",
    "share",
    "sim",
]
"""The subcommands DESIGN.md's command-line contract promises, written out here by hand."""


def test_top_level_help_lists_the_contract_with_examples() -> None:
    out = dropline("--help")
    assert out.returncode == 0
    for command in CONTRACT:
        assert f"dropline {command} " in out.stdout, command  # its example, in the epilogue
        assert command.split()[0] in out.stdout


@pytest.mark.parametrize(
    "example",
    [
        "decode gps tests/data/nmea/gpsd/bt451.log",
        "decode scan tests/data/barcodes/scans_raw.txt",
        "compact stats examples/munich-drive.jsonl --max-error-m 5 --batch-s 60 --json",
        "resequence tests/data/tsptw/dumas/n20w20.001.txt --time-limit 0.1 --seed 1",
        "replay --config examples/replay.toml",
    ],
)
def test_file_examples_run_and_print_json_lines(example: str) -> None:
    """The examples a user would paste first: they run from a fresh clone and print JSON lines."""
    assert any(example in ex for _, _, ex in COMMANDS.values()), "the example is the one --help shows"
    out = dropline(*example.split())
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)


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
