"""The agent's configuration refuses unusable values at load time, naming file, field and range.

Each value below once got through and broke the agent later (reliability issue, item 11): NaN
and infinite durations, a keep-alive of ``inf`` (OverflowError in the uplink, forever), a batch
of 0 bytes, a window of 2^63-1, an infinite replay pause (the scanner thread died), and a
missing DBC or mapping (a traceback instead of a usage error).
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, _section_type, load
from protocols.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
KONA = DATA / "can" / "kona_ev"
DBC = KONA / "pcan.dbc"
CAN_LOG = KONA / "logs" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.candump.log"
SCANS = DATA / "barcodes" / "scans_raw.txt"
NMEA = DATA / "nmea" / "gpsd" / "bt451.log"
TRACE = ROOT / "examples" / "munich-drive.jsonl"

# Ranges written out by hand from the brief and the collector's limits (cloud/ingest.py), so a
# declaration that drifts is caught here rather than trusted.
EXPECTED_RANGES = {
    "outbox.disk_budget_bytes": (64 << 10, 1 << 40),
    "outbox.group_commit_s": (0, 60),
    "outbox.retain_acked": (0, 100_000_000),
    "uplink.window": (1, 1024),
    "uplink.batch_records": (1, 20_000),
    "uplink.batch_bytes": (1024, 4 << 20),
    "uplink.ack_timeout_s": (0.5, 3600),
    "uplink.keepalive_s": (1, 3600),
    "uplink.backoff_max_s": (0.2, 600),
    "gps.gpsd_port": (1, 65535),
    "gps.baudrate": (50, 4_000_000),
    "gps.replay_interval_s": (0, 3600),
    "gps.replay_repeat": (1, 10_000),
    "can.bitrate": (10_000, 1_000_000),
    "can.replay_interval_s": (0, 3600),
    "scanner.baudrate": (50, 4_000_000),
    "scanner.replay_interval_s": (0, 3600),
}


def declared() -> dict[str, tuple[type, Any]]:
    """Every leaf setting by dotted name: (type, dataclass field)."""
    out: dict[str, tuple[type, Any]] = {}
    for section in fields(AgentConfig):
        cls = _section_type(get_type_hints(AgentConfig)[section.name])
        assert cls is not None
        hints = get_type_hints(cls)
        for f in fields(cls):
            out[f"{section.name}.{f.name}"] = (hints[f.name], f)
    return out


NUMERIC = {name: f for name, (tp, f) in declared().items() if tp in (int, float)}

# A section per leaf field that makes the section loadable apart from that field.
SECTION_BASE = {
    "vehicle": 'id = "van-1"',
    "outbox": "",
    "uplink": "",
    "gps": 'driver = "gpsd"',
    "can": f'driver = "can-log"\ndbc = "{DBC}"\npath = "{CAN_LOG}"',
    "scanner": f'driver = "scan-file"\npath = "{SCANS}"',
}


def toml_value(value: Any) -> str:
    """A TOML literal for ``value``; written here so the test needs no TOML writer library."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            "\\\\"
            if c == "\\"
            else '\\"'
            if c == '"'
            else f"\\u{ord(c):04x}"
            if ord(c) < 0x20 or c == "\x7f"
            else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write(folder: Path, sections: dict[str, dict[str, Any]], raw_extra: str = "") -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in values.items()]
    path = folder / "agent.toml"
    path.write_text("\n".join(lines) + "\n" + raw_extra, encoding="utf-8")
    return path


def config_with(tmp: Path, dotted: str, literal: str) -> Path:
    """A valid file, except ``dotted`` = ``literal`` (a TOML literal, so nan and inf can be written)."""
    section, key = dotted.split(".")
    lines = SECTION_BASE.get(section, "").splitlines()
    base = "\n".join(line for line in lines if not line.startswith(f"{key} ="))
    bodies = {"vehicle": SECTION_BASE["vehicle"], section: base}
    text = "".join(
        f"[{s}]\n{b}\n" + (f"{key} = {literal}\n" if s == section else "") for s, b in bodies.items()
    )
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


def refused(path: Path, field: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}.{field}:"), message
    return message


# -- item 11, each a value today's code accepted ----------------------------------------------


@pytest.mark.parametrize("field", ["outbox.group_commit_s", "uplink.ack_timeout_s", "uplink.backoff_max_s"])
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf", "+nan"])
def test_durations_must_be_finite(tmp_path: Path, field: str, literal: str) -> None:
    low, high = EXPECTED_RANGES[field]
    message = refused(config_with(tmp_path, field, literal), field)
    assert f"{low}..{high} s" in message


def test_keepalive_inf_is_refused(tmp_path: Path) -> None:
    assert "1..3600 s" in refused(config_with(tmp_path, "uplink.keepalive_s", "inf"), "uplink.keepalive_s")


def test_batch_bytes_zero_and_huge_window_are_refused(tmp_path: Path) -> None:
    message = refused(config_with(tmp_path, "uplink.batch_bytes", "0"), "uplink.batch_bytes")
    assert "1024..4194304 bytes" in message
    message = refused(config_with(tmp_path, "uplink.window", str(2**63 - 1)), "uplink.window")
    assert "1..1024 batches" in message


@pytest.mark.parametrize("section", ["gps", "can", "scanner"])
def test_infinite_replay_interval_is_refused(tmp_path: Path, section: str) -> None:
    refused(config_with(tmp_path, f"{section}.replay_interval_s", "inf"), f"{section}.replay_interval_s")


def test_an_int_beyond_any_float_is_a_range_error(tmp_path: Path) -> None:
    refused(config_with(tmp_path, "outbox.group_commit_s", str(10**400)), "outbox.group_commit_s")


def test_missing_dbc_and_unknown_mapping_are_config_errors(tmp_path: Path) -> None:
    path = config_with(tmp_path, "can.mapping", '"kona_ev"')
    assert load(path).can is not None  # the baseline is loadable
    path.write_text(path.read_text().replace(str(DBC), str(tmp_path / "nope.dbc")))
    assert "nope.dbc" in refused(path, "can.dbc")
    refused(config_with(tmp_path, "can.mapping", '"no_such_car"'), "can.mapping")
    refused(config_with(tmp_path, "can.mapping", f'"{tmp_path / "missing.toml"}"'), "can.mapping")
    (tmp_path / "bad.toml").write_text("signals = 3\n")
    refused(config_with(tmp_path, "can.mapping", f'"{tmp_path / "bad.toml"}"'), "can.mapping")
    # a shipped mapping written for another DBC: its messages are not in this one
    assert "ID292BMS_SOC" in refused(config_with(tmp_path, "can.mapping", '"tesla_model3"'), "can.mapping")
    refused(config_with(tmp_path, "can.dbc", f'"{SCANS}"'), "can.dbc")  # a file, but not a DBC
    refused(config_with(tmp_path, "scanner.path", f'"{tmp_path}"'), "scanner.path")  # a directory
    refused(config_with(tmp_path, "can.path", '""'), "can.path")


def dropline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropline_cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda text, tmp: text.replace(str(DBC), str(tmp / "nope.dbc")), "can.dbc"),
        (lambda text, tmp: text + 'mapping = "no_such_car"\n', "can.mapping"),
        # exists, but is not a DBC: found only when cantools reads it, still a usage error
        (lambda text, tmp: text.replace(str(DBC), str(SCANS)), "can.dbc"),
    ],
)
def test_agent_cli_turns_can_file_problems_into_usage_errors(tmp_path: Path, edit: Any, field: str) -> None:
    config = tmp_path / "agent.toml"
    text = (
        f'[vehicle]\nid = "van-1"\n[outbox]\npath = "{tmp_path / "outbox.db"}"\n'
        '[uplink]\ntransport = "none"\n'
        f"[can]\n{SECTION_BASE['can']}\n"
    )
    config.write_text(edit(text, tmp_path))
    out = dropline("agent", "--config", str(config))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{config}.{field}:" in out.stderr


# -- every numeric setting has one finite declared range --------------------------------------


def test_every_numeric_setting_declares_a_finite_range_holding_its_default() -> None:
    """Every section's numbers, the capabilities' too; the ranges the reliability issue named are
    pinned by EXPECTED_RANGES, the others only have to exist, be finite and hold the default."""
    assert set(EXPECTED_RANGES) <= set(NUMERIC)
    for name, f in NUMERIC.items():
        low, high = f.metadata["min"], f.metadata["max"]
        if name in EXPECTED_RANGES:
            assert (low, high) == EXPECTED_RANGES[name], name
        assert math.isfinite(low) and math.isfinite(high) and low <= f.default <= high, name


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_bounds_are_inclusive_and_just_outside_is_refused(tmp_path: Path, name: str) -> None:
    low, high = NUMERIC[name].metadata["min"], NUMERIC[name].metadata["max"]
    is_float = declared()[name][0] is float
    section, key = name.split(".")
    for ok in (low, high):
        loaded = load(config_with(tmp_path, name, repr(float(ok)) if is_float else str(ok)))
        assert getattr(getattr(loaded, section), key) == ok
    step = 1e-9 * max(1.0, abs(high)) if is_float else 1
    for bad in (low - step, high + step):
        literal = repr(float(bad)) if is_float else str(int(bad))
        message = refused(config_with(tmp_path, name, literal), name)
        assert "outside the allowed range" in message


def test_describe_config_prints_each_range() -> None:
    out = dropline("agent", "--describe-config")
    assert out.returncode == 0
    lines = {line.split(" = ")[0].strip(): line for line in out.stdout.splitlines() if " = " in line}
    assert "(range 1..1024 batches)" in lines["uplink.window"]
    assert "(range 0.5..3600 s)" in lines["uplink.ack_timeout_s"]
    assert "(range 1..65535)" in lines["gps.gpsd_port"]
    for name in EXPECTED_RANGES:
        assert "(range " in lines[name], name


# -- property: any TOML-able values give a config within range or a ConfigError naming the field


scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
GOOD_FILES = {
    "gps.path": [str(NMEA), str(TRACE)],
    "can.dbc": [str(DBC)],
    "can.path": [str(CAN_LOG)],
    "scanner.path": [str(SCANS)],
    "outbox.path": ["/tmp/dropline-test/outbox.db"],
}


def good(name: str, tp: type, f: Any) -> st.SearchStrategy[Any]:
    """A value the loader must accept for ``name`` (given the rest of the file is good)."""
    if f.metadata.get("choices"):
        return st.sampled_from(f.metadata["choices"])
    if name in NUMERIC:
        low, high = f.metadata["min"], f.metadata["max"]
        return (
            st.integers(low, high)
            if tp is int
            else st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))
        )
    if tp is Path:  # a capability's file setting this test has no sample for: its default
        return st.sampled_from(GOOD_FILES[name]) if name in GOOD_FILES else st.just("")
    if name == "can.mapping":
        return st.sampled_from(["kona_ev", "", str(ROOT / "firmware_bridge/can/mappings/kona_ev.toml")])
    if name == "vehicle.id":
        return st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
    if name == "uplink.target":
        return st.sampled_from(["127.0.0.1:1883", "mqtt://u:p@broker:1883", "mqtt://[::1]:1884", "broker"])
    if tp is bool:
        return st.booleans()
    return st.text(max_size=20)


def bad(name: str, tp: type, f: Any) -> st.SearchStrategy[Any]:
    """A value that may well be refused: just outside a range, not finite, the wrong type, a
    missing file, an unknown name, or anything TOML can hold."""
    if name in NUMERIC:
        low, high = f.metadata["min"], f.metadata["max"]
        near = st.sampled_from(
            [low - 1, high + 1, 2**63 - 1, -(2**63), 10**400, math.nan, math.inf, -math.inf]
        )
        return near | st.floats(low - 10, high + 10) | toml_values
    if tp is Path:
        return st.sampled_from(["", "/nonexistent", "/", "a\x00b", str(DATA)]) | toml_values
    if name == "can.mapping":
        return st.sampled_from(["nope", "../x.toml", str(SCANS), "/", "tesla_model3"]) | toml_values
    if name == "uplink.target":
        return st.sampled_from(["mqtt://h:0", "http://h", "mqtt://", "mqtt://h:99999"]) | toml_values
    return toml_values


@st.composite
def configurations(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """About half the files are entirely good; the others have one or two bad fields."""
    names = list(declared())
    wrong = draw(st.just(set()) | st.sets(st.sampled_from([*names, "unknown"]), min_size=1, max_size=2))
    sections: dict[str, dict[str, Any]] = {}
    present = {s for s in ("gps", "can", "scanner") if draw(st.booleans())}
    for name, (tp, f) in declared().items():
        section, key = name.split(".")
        if section in ("gps", "can", "scanner") and section not in present:
            continue
        table = sections.setdefault(section, {})
        if name in wrong:
            table[key] = draw(bad(name, tp, f))
        elif name == "vehicle.id" or name in GOOD_FILES or draw(st.booleans()):
            table[key] = draw(good(name, tp, f))
    if "unknown" in wrong:
        key = draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True))
        sections.setdefault("uplink", {})[key] = 1
        wrong.add(f"uplink.{key}")
    return sections, wrong


LEAVES = set(declared())
PATHS = LEAVES | {f.name for f in fields(AgentConfig)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations())
def test_any_values_load_within_range_or_fail_naming_the_field(
    drawn: tuple[dict[str, dict[str, Any]], set[str]],
) -> None:
    sections, wrong = drawn
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), sections)
        try:
            config = load(path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(f"{path}."), message
            named = message[len(f"{path}.") :].split(":")[0]
            assert named in wrong, message  # the field that was given a bad value, not another
            event(f"refused at {named}")
            return
    event("loaded")
    for name, f in NUMERIC.items():
        section, key = name.split(".")
        part = getattr(config, section)
        if part is None:
            continue
        value: float = getattr(part, key)
        assert isinstance(value, declared()[name][0]) and not isinstance(value, bool), name
        assert math.isfinite(value) and f.metadata["min"] <= value <= f.metadata["max"], (name, value)
