"""Each role installs only what it needs: in the collector's environment (``DROPLINE_ROLE=
collector``, made by ``make test-collector-only``) none of the van's device libraries is present,
and the collector and the CLI's collector commands still import."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

VAN_ONLY = ("serial", "can", "cantools", "pynmea2", "biip")

collector_env = pytest.mark.skipif(
    os.environ.get("DROPLINE_ROLE") != "collector", reason="runs in the collector-only environment"
)


@collector_env
def test_the_collector_environment_has_no_device_library() -> None:
    present = [name for name in VAN_ONLY if importlib.util.find_spec(name) is not None]
    assert present == []


@collector_env
def test_the_collector_and_its_commands_run_without_them() -> None:
    for module in (
        "cloud.collector",
        "cloud.store",
        "cloud.ingest",
        "dropline_cli.collector",
        "dropline_cli.export",
    ):
        importlib.import_module(module)
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", "collector", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--db" in out.stdout


def test_cloud_imports_nothing_from_the_van() -> None:
    """The layering rule, checked on what importing the collector actually loads."""
    van = sorted({"agent", "firmware_bridge", *VAN_ONLY})
    code = (
        "import sys, cloud.collector, cloud.store, cloud.ingest, cloud.grpc_server, cloud.mqtt_ingest\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({van!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_export_offers_every_kind_the_store_exports() -> None:
    """The CLI's choices are written out (so --help imports nothing heavy); they must not drift."""
    from cloud.store import EXPORT_KINDS
    from dropline_cli.export import KINDS

    assert set(KINDS) == {*EXPORT_KINDS, "vehicles", "quarantine"}
