"""The compiled decode table against cantools itself: for every message of every DBC in
tests/data/can (multiplexed Tesla and Leaf messages included), random payloads decode to exactly
the raw values cantools' ``decode_simple(data, False, False)`` gives (same names, same types,
same numbers, or both refuse), and every conversion scales as cantools' ``raw_to_scaled``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.can.compile_dbc import compile_database, load_dbc
from firmware_bridge.can.decoder import CanDecoder
from firmware_bridge.can.table_decoder import DecodeFailed, DecodeTable, load_table
from protocols.errors import DbcError
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parent.parent
DBCS = sorted((DATA / "can").glob("*/*.dbc"))
KONA_DBC = DATA / "can" / "kona_ev" / "pcan.dbc"


@cache
def pair(path: Path) -> tuple[Any, DecodeTable]:
    """cantools' database and our table of it, through JSON as the child process hands it over."""
    db = load_dbc(path)
    return db, DecodeTable(json.loads(json.dumps(compile_database(db))))


def same(a: Any, b: Any) -> bool:
    """Equal value and type; NaN equals NaN (a float signal may decode to one)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def cases() -> list[tuple[str, str]]:
    return [(path.name, m.name) for path in DBCS for m in pair(path)[0].messages]


def test_every_dbc_has_multiplexed_messages_covered() -> None:
    """The property below covers the multiplexed messages (Tesla's and the Leaf's)."""
    multiplexed = {path.name for path in DBCS for m in pair(path)[0].messages if m.is_multiplexed()}
    assert "Model3CAN.dbc" in multiplexed
    assert any(name.startswith("EV-can_") for name in multiplexed)
    assert len(DBCS) >= 3


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_raw_values_and_scaling_match_cantools(data: st.DataObject) -> None:
    name, message_name = data.draw(st.sampled_from(cases()))
    db, table = pair(next(p for p in DBCS if p.name == name))
    theirs_message = db.get_message_by_name(message_name)
    ours_message = table.get_message_by_name(message_name)
    payload = data.draw(
        st.one_of(
            st.binary(min_size=theirs_message.length, max_size=theirs_message.length),
            st.sampled_from([b"\x00" * theirs_message.length, b"\xff" * theirs_message.length]),
        )
    )
    try:
        theirs = theirs_message.decode_simple(payload, False, False)
    except Exception:
        with pytest.raises(DecodeFailed):
            ours_message.decode_simple(payload)
        return
    ours = ours_message.decode_simple(payload)
    assert list(ours) == list(theirs)
    assert all(same(ours[k], theirs[k]) for k in theirs), (ours, theirs)
    signals = {s.name: s for s in theirs_message.signals}
    for signal in ours_message.signals:
        if signal.name in theirs:
            raw = theirs[signal.name]
            assert same(signal.scaled(raw), signals[signal.name].conversion.raw_to_scaled(raw, False))


def test_table_decoder_equals_cantools_decoder_on_the_kona_log() -> None:
    """The whole CanDecoder over a table built in a child process, against cantools' full decode
    (choices as numbers, scaled) of every frame of a real capture."""
    from firmware_bridge.can.log_reader import read_frames
    from protocols.rejects import Rejects

    db = load_dbc(KONA_DBC)
    decoder = CanDecoder(load_table(KONA_DBC))
    log = next((DATA / "can" / "kona_ev" / "logs").glob("*.candump.log"))
    compared = 0
    for frame in read_frames(log, Rejects("test")):
        if frame.is_error_frame or frame.is_remote_frame:
            continue
        ours = {s.name: s.value for s in decoder.decode(frame.arbitration_id, frame.data, 1.0)}
        try:
            message = db.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            assert not ours
            continue
        if len(frame.data) != message.length:  # ours rejects; cantools would cut a longer payload
            assert not ours
            continue
        theirs = message.decode(frame.data, decode_choices=False)
        assert ours == {f"{message.name}.{k}": v for k, v in theirs.items()}
        compared += 1
    assert compared > 1000


def test_child_process_compile_and_cache(tmp_path: Path) -> None:
    """The table comes from the child, lands in the cache under the DBC's sha256, and is read back
    from there (a marker in the cached file shows it was not compiled again)."""
    import hashlib

    table = load_table(KONA_DBC, tmp_path)
    cached = tmp_path / f"dbc-{hashlib.sha256(KONA_DBC.read_bytes()).hexdigest()}.json"
    doc = json.loads(cached.read_text())
    assert [m.name for m in table.messages] == [m["name"] for m in doc["messages"]]
    doc["messages"] = doc["messages"][:1]
    cached.write_text(json.dumps(doc))
    assert len(load_table(KONA_DBC, tmp_path).messages) == 1


def test_bad_dbc_is_a_dbc_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dbc"
    bad.write_text('VERSION ""\nBO_ notanumber Foo: 8 X\n SG_ ???\n')
    with pytest.raises(DbcError, match=r"bad\.dbc"):
        load_table(bad)
    with pytest.raises(DbcError, match=r"missing\.dbc"):
        load_table(tmp_path / "missing.dbc")


def test_live_decoder_imports_neither_cantools_nor_python_can() -> None:
    """In a fresh interpreter: the decoder the live path builds, decoding a real frame."""
    code = (
        "import sys\n"
        "from firmware_bridge.can.decoder import CanDecoder\n"
        f"d = CanDecoder.from_table({str(KONA_DBC)!r}, 'kona_ev')\n"
        "out = d.decode(0x594, bytes.fromhex('34213421a0620120'), 1.0)\n"
        "assert out, d.stats()\n"
        "sys.exit(sorted(m for m in ('cantools', 'can', 'asyncio', 'ssl') if m in sys.modules) or 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
