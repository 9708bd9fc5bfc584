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
van_env = pytest.mark.skipif(
    os.environ.get("DROPLINE_ROLE") == "collector",
    reason="the van's code is not in the collector's environment",
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


VAN_MODULES = (
    "dropline_cli.agent",
    "agent.runtime",
    "agent.uplink",
    "agent.transport_mqtt",
    "agent.transport_grpc",
    "firmware_bridge.gps.gpsd_client",
    "firmware_bridge.gps.serial_nmea",
    "firmware_bridge.gps.nmea",
    "firmware_bridge.can.bus_driver",
    "firmware_bridge.can.decoder",
    "firmware_bridge.can.socketcan",
    "firmware_bridge.scanner.serial_scanner",
    "firmware_bridge.scanner.parse",
)

VAN_UPLOAD = """
import importlib, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
from agent.outbox import Stored
from agent.uplink import segments
from protocols import track_codec, wire
from protocols.convert import encode_body
from protocols.downlink import decode_downlink
from protocols.records import Fix, Scan
import tempfile
from pathlib import Path
from agent.outbox import Outbox
records = [Fix(1.7e9 + i, 3, 48.1 + i * 1e-5, 11.5, sats=9) for i in range(8)]
records[5] = Scan(1.7e9 + 5, "00340123450000000017", "sscc")
with tempfile.TemporaryDirectory() as folder:  # a real outbox: opening it must not load protobuf
    outbox = Outbox(Path(folder) / "outbox.db")
    for r in records:
        outbox.append(r)
    outbox.flush()
    tx = outbox.batch(100)
    assert tx is not None and [s.seq for s in tx.records] == list(range(1, 9))
    outbox.close()
stored = [Stored(seq, *encode_body(r)) for seq, r in enumerate(records, start=1)]
reference = (1, track_codec.columns_reference(track_codec.decode_fix(stored[0].body)))
parts = segments(stored[1:], reference)
assert [(s.kind, s.codec) for s in parts] == [("fix", wire.CODEC_TRACK_V1), ("scan", wire.CODEC_MESSAGES)]
assert wire.encode_batch("van-1", 1, compress=True, segments=parts)
ack = decode_downlink(bytes.fromhex(sys.argv[2])).ack
assert ack is not None and ack.stored[0].last == 8
heavy = ("google", "grpc", "cryptography", "cantools", "can", "statistics")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.endswith("_pb2")))
"""


@van_env
def test_the_van_process_never_loads_the_protobuf_runtime() -> None:
    """Issue 20: google.protobuf and the generated schema cost the agent 3-5 MB resident. The van
    encodes its records by hand, reads its fix bodies into the track and what comes down by hand:
    its modules and its upload path load no part of protobuf. Nor grpcio (~20 MB: the van speaks
    gRPC over h2), cryptography (~7 MB), cantools or python-can (~20 MB), statistics (0.5 MB)."""
    from protocols.dropline.v1 import dropline_pb2 as pb

    ack = pb.Downlink(ack=pb.Ack(vehicle="van-1", batch_id=1, stored=[pb.SeqRange(first=1, last=8)]))
    out = subprocess.run(
        [sys.executable, "-c", VAN_UPLOAD, ",".join(VAN_MODULES), ack.SerializeToString().hex()],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
