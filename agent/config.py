"""The agent's configuration: one TOML file, every setting declared once (name, type, default,
unit, description). The declarations drive validation, its error messages and ``describe()``.

Unknown keys are errors (a typo must not silently fall back to a default), and every error
names the file and the dotted field.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from protocols.errors import ConfigError, DbcError, MappingError
from protocols.mqtt_url import parse_mqtt_url
from protocols.topics import valid_vehicle


def setting(
    default: Any = MISSING,
    doc: str = "",
    unit: str = "",
    choices: tuple[str, ...] = (),
    *,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A declared setting. Every number has a finite ``min``..``max`` (inclusive): the loader
    refuses anything outside it (NaN and infinities included) and ``describe()`` prints it."""
    return field(
        default=default, metadata={"doc": doc, "unit": unit, "choices": choices, "min": min, "max": max}
    )


KIB, MIB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class VehicleConfig:
    id: str = setting(doc="vehicle id, unique in the fleet: 1-64 of A-Z a-z 0-9 _ . -")


@dataclass(frozen=True)
class OutboxConfig:
    path: Path = setting(Path("/var/lib/dropline/outbox.db"), "SQLite outbox file")
    disk_budget_bytes: int = setting(
        256 * MIB,
        "space the outbox may use before evicting telemetry",
        "bytes",
        min=64 * KIB,
        max=1 << 40,
    )
    group_commit_s: float = setting(
        1.0, "telemetry commit interval: the most lost on power loss", "s", min=0.0, max=60.0
    )
    retain_acked: int = setting(
        100_000, "acknowledged records kept as local history", "records", min=0, max=100_000_000
    )


@dataclass(frozen=True)
class UplinkConfig:
    transport: str = setting("grpc", "how records leave the van", choices=("grpc", "mqtt", "none"))
    target: str = setting("127.0.0.1:50051", "collector host:port (grpc) or mqtt://host:port (mqtt)")
    order: str = setting(
        "oldest-first",
        "backlog order: strict history or live view first",
        choices=("oldest-first", "newest-first"),
    )
    window: int = setting(8, "unacknowledged batches in flight", "batches", min=1, max=1024)
    # A collector refuses batches of more than 20000 records or 4 MiB (cloud/ingest.py).
    batch_records: int = setting(2000, "records per batch at most", "records", min=1, max=20_000)
    batch_bytes: int = setting(
        1 * MIB, "encoded records per batch at most", "bytes", min=1 * KIB, max=4 * MIB
    )
    compress: bool = setting(True, "zlib-compress batches")
    ack_timeout_s: float = setting(
        10.0, "resend unacknowledged records after this long", "s", min=0.5, max=3600.0
    )
    # MQTT keep-alives are whole seconds (at least 1).
    keepalive_s: float = setting(
        5.0, "transport keep-alive: how fast a dead link is noticed", "s", min=1.0, max=3600.0
    )
    # Below the first reconnect delay (0.2 s) the cap would mean nothing.
    backoff_max_s: float = setting(2.0, "longest wait between reconnect attempts", "s", min=0.2, max=600.0)
    # Mutual TLS (dropline pki). Files are checked when the agent starts; without all three,
    # plaintext is refused unless insecure_local_test.
    tls_ca: str = setting("", "CA certificate file (PEM) the collector's or broker's must chain to")
    tls_cert: str = setting("", "this van's certificate file (PEM, its vehicle id in CN and SAN)")
    tls_key: str = setting("", "this van's private key file (PEM)")
    insecure_local_test: bool = setting(False, "allow plaintext to the collector: only for a local test")


@dataclass(frozen=True)
class DocumentsConfig:
    trusted_keys: str = setting(
        "", "PEM bundle of the fleet's ed25519 document keys (two during a rotation); empty = none"
    )
    fleet: str = setting("", "fleet whose fleet-wide documents this van accepts; empty = none")


@dataclass(frozen=True)
class GpsConfig:
    driver: str = setting("gpsd", "GNSS source", choices=("gpsd", "nmea-serial", "nmea-file", "trace-file"))
    host: str = setting("127.0.0.1", "gpsd host")
    gpsd_port: int = setting(2947, "gpsd port", min=1, max=65535)
    gpsd_device: str = setting("", "watch only this gpsd device (e.g. /dev/ttyACM0); empty = all")
    port: str = setting("/dev/ttyACM0", "serial device of an NMEA receiver")
    baudrate: int = setting(9600, "serial speed", "baud", min=50, max=4_000_000)
    path: Path = setting(Path(""), "recorded file to replay (nmea-file, trace-file)")
    replay_interval_s: float = setting(
        0.0, "pause between replayed fixes; 0 = as fast as possible", "s", min=0.0, max=3600.0
    )
    replay_repeat: int = setting(
        1, "times to replay the file, each shifted in time after the last", "times", min=1, max=10_000
    )


@dataclass(frozen=True)
class CanConfig:
    driver: str = setting("python-can", "CAN source", choices=("python-can", "can-log"))
    interface: str = setting("socketcan", "python-can interface (socketcan, virtual, pcan, ...)")
    channel: str = setting("can0", "python-can channel; for can-log, the log channel to keep (empty = all)")
    bitrate: int = setting(500_000, "bus speed (classical CAN)", "bit/s", min=10_000, max=1_000_000)
    dbc: Path = setting(Path(""), "DBC file of the vehicle model")
    mapping: str = setting("", "DBC -> VSS mapping: a shipped name (kona_ev, ...) or a TOML path")
    path: Path = setting(Path(""), "recorded log to replay (can-log)")
    replay_interval_s: float = setting(0.0, "pause between replayed frames", "s", min=0.0, max=3600.0)


@dataclass(frozen=True)
class ScannerConfig:
    driver: str = setting("serial", "scanner source", choices=("serial", "scan-file"))
    port: str = setting("/dev/ttyUSB0", "serial device of the scanner")
    baudrate: int = setting(9600, "serial speed", "baud", min=50, max=4_000_000)
    path: Path = setting(Path(""), "file of scanner lines to replay (scan-file)")
    replay_interval_s: float = setting(0.0, "pause between replayed scans", "s", min=0.0, max=3600.0)


@dataclass(frozen=True)
class RouteConfig:
    manifest: Path = setting(
        Path(""), "delivery manifest (JSON, protocols/manifest.schema.json); empty = none"
    )
    band_m: float = setting(
        20.0,
        "geofence hysteresis band: enter this far inside, exit this far outside",
        "m",
        min=0.0,
        max=1000.0,
    )
    confirm_fixes: int = setting(
        3, "consecutive good fixes that confirm an enter or exit", "fixes", min=1, max=100
    )
    confirm_s: float = setting(
        2.0, "time a run of fixes must span to confirm an enter or exit", "s", min=0.0, max=600.0
    )
    arrive_s: float = setting(
        30.0,
        "time inside a stop's fence before it counts as an arrival (pass-by suppression)",
        "s",
        min=0.0,
        max=3600.0,
    )
    max_gap_s: float = setting(
        10.0, "a longer gap between good fixes restarts a confirmation run", "s", min=0.0, max=3600.0
    )
    max_hdop: float = setting(5.0, "fixes with a higher HDOP are ignored by the geofence", min=0.5, max=99.0)
    require_3d: bool = setting(False, "ignore 2D fixes in the geofence")
    dwell_factor: float = setting(
        2.0, "extended_dwell when time at a stop exceeds service_s times this", min=1.0, max=100.0
    )
    idle_s: float = setting(
        300.0, "idling alert: ignition on and stationary longer than this", "s", min=10.0, max=86400.0
    )
    idle_speed_kmh: float = setting(
        2.0, "at or below this CAN speed the van is stationary", "km/h", min=0.0, max=20.0
    )
    gps_lost_s: float = setting(
        10.0, "gps_lost alert after this long without a fix", "s", min=1.0, max=86400.0
    )


@dataclass(frozen=True)
class EtaConfig:
    margin_s: float = setting(
        60.0, "commit new ETAs when one moves by more than this", "s", min=0.0, max=86400.0
    )
    late_margin_s: float = setting(
        0.0, "eta_erosion when an ETA passes its window end by more than this", "s", min=0.0, max=86400.0
    )
    clear_margin_s: float = setting(
        60.0, "clear eta_erosion once the ETA is back this far inside the window", "s", min=0.0, max=86400.0
    )
    confirm_s: float = setting(
        60.0,
        "an ETA must stay late (or recovered) this long before raising (or clearing)",
        "s",
        min=0.0,
        max=3600.0,
    )
    resequence_every_s: float = setting(
        300.0, "at most one resequence request per this long", "s", min=1.0, max=86400.0
    )
    resequence_budget_s: float = setting(
        0.5, "wall-clock budget of one resequencing (off the event thread)", "s", min=0.01, max=60.0
    )


@dataclass(frozen=True)
class SignalConfig:
    deadband: float = setting(
        0.0,
        "report when the value moved more than this from the last reported; 0 = any change",
        "signal unit",
        min=0.0,
        max=1e12,
    )
    heartbeat_s: float = setting(
        60.0, "report at least this often even when the value holds", "s", min=0.0, max=86400.0
    )


@dataclass(frozen=True)
class CompactionConfig:
    max_error_m: float = setting(
        0.0,
        "a fix is committed only where the committed track misses it by more (time-synchronised"
        " distance); 0 = every fix, lossless",
        "m",
        min=0.0,
        max=1000.0,
    )
    max_hold_s: float = setting(
        60.0, "a fix is committed or dropped at most this long after it arrives", "s", min=0.0, max=3600.0
    )
    live_error_m: float = setting(
        0.0,
        "commit a fix at once when the collector's dead reckoning would miss it by more; 0 = off",
        "m",
        min=0.0,
        max=100_000.0,
    )
    signals: Mapping[str, SignalConfig] = field(
        default_factory=dict,
        metadata={
            "doc": "report by exception, one table per VSS name; signals not listed: every value",
            # a table's "choices" are examples of valid tables (tests draw them), not a limit
            "choices": ({}, {"Vehicle.Speed": {"deadband": 1.0, "heartbeat_s": 60}}),
        },
    )


@dataclass(frozen=True)
class PhotosConfig:
    inbox: Path = setting(
        Path(""), "folder the handheld drops photos/signatures into (STOP__PARCEL.jpg); empty = off"
    )
    listen: str = setting("", "loopback host:port of the photo upload endpoint (POST /photos); empty = off")
    chunk_bytes: int = setting(
        32 * KIB, "photo bytes per blob_chunk record", "bytes", min=1 * KIB, max=1 * MIB
    )
    max_bytes: int = setting(
        16 * MIB, "largest photo or signature accepted", "bytes", min=1 * KIB, max=256 * MIB
    )
    poll_s: float = setting(1.0, "how often the inbox folder is looked at", "s", min=0.05, max=3600.0)


@dataclass(frozen=True)
class AgentConfig:
    vehicle: VehicleConfig = setting(doc="the van")
    outbox: OutboxConfig = setting(OutboxConfig(), "store-and-forward buffer")
    uplink: UplinkConfig = setting(UplinkConfig(), "connection to the collector")
    documents: DocumentsConfig = setting(DocumentsConfig(), "signed configuration and manifests")
    gps: GpsConfig | None = setting(None, "GNSS receiver; absent = none")
    can: CanConfig | None = setting(None, "CAN bus; absent = none")
    scanner: ScannerConfig | None = setting(None, "barcode scanner; absent = none")
    route: RouteConfig = setting(RouteConfig(), "manifest, geofence and delivery exception thresholds")
    eta: EtaConfig = setting(EtaConfig(), "ETAs, ETA erosion and resequencing")
    compaction: CompactionConfig = setting(CompactionConfig(), "track simplification and signal deadbands")
    photos: PhotosConfig = setting(PhotosConfig(), "proof-of-delivery photos and signatures")


T = TypeVar("T")


def _section_type(tp: Any) -> type | None:
    """The dataclass inside ``X`` or ``X | None``, if ``tp`` is a config section."""
    if get_origin(tp) in (types.UnionType,):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__") else None


def _table_type(tp: Any) -> type | None:
    """The section dataclass of a ``Mapping[str, Section]`` setting: a table of sections keyed by
    a free name (``[compaction.signals."Vehicle.Speed"]``)."""
    args = get_args(tp)
    if get_origin(tp) is Mapping and len(args) == 2 and args[0] is str:
        return _section_type(args[1])
    return None


def _convert(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond any float: left exact for the range check to refuse
                return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path and isinstance(value, str):
        return Path(value)
    raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")


def build(cls: type[T], raw: Any, where: str) -> T:
    """Validate ``raw`` (parsed TOML) against the declarations of ``cls``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    declared = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(declared)})")
    values: dict[str, Any] = {}
    for name, f in declared.items():
        path = f"{where}.{name}"
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{path}: required")
            continue
        section, table = _section_type(hints[name]), _table_type(hints[name])
        if table:
            if not isinstance(raw[name], dict):
                raise ConfigError(f"{path}: expected a table, got {type(raw[name]).__name__}")
            try:  # an error inside names the table setting, then the entry: `signals: "X".deadband`
                values[name] = {key: build(table, v, f'"{key}"') for key, v in raw[name].items()}
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            continue
        if section:
            value: Any = build(section, raw[name], path)
        else:
            value = _convert(raw[name], hints[name], path)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and high is not None and not low <= value <= high:  # NaN fails too
            raise ConfigError(f"{path}: {value!r} is outside the allowed range {_range(f)}")
        values[name] = value
    return cls(**values)


def load(path: Path) -> AgentConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    config = build(AgentConfig, raw, str(path))
    if not valid_vehicle(config.vehicle.id):
        raise ConfigError(f"{path}.vehicle.id: {config.vehicle.id!r} is not a valid vehicle id")
    _check_files(config, str(path))
    if config.uplink.transport == "mqtt":
        try:
            parse_mqtt_url(config.uplink.target)
        except ValueError as exc:
            raise ConfigError(f"{path}.uplink.target: {exc}") from None
    return config


def _readable(file: Path, where: str) -> None:
    if file == Path(""):
        raise ConfigError(f"{where}: required by this driver (a file to read)")
    try:
        with file.open("rb"):
            pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{where}: {str(file)!r}: cannot read ({reason})") from None


def _check_files(config: AgentConfig, where: str) -> None:
    """Files the drivers will need, checked now so a typo is a usage error naming the field, not
    a traceback or a driver that never starts."""
    if config.gps and config.gps.driver in ("nmea-file", "trace-file"):
        _readable(config.gps.path, f"{where}.gps.path")
    if config.can:
        _readable(config.can.dbc, f"{where}.can.dbc")
        if config.can.driver == "can-log":
            _readable(config.can.path, f"{where}.can.path")
        # Drivers build their decoder in their own thread, where a bad DBC or mapping would only
        # be retried forever: check both now, through the decode table the driver will use (the
        # DBC parsed by cantools in a child process, so the agent never loads cantools itself).
        from firmware_bridge.can.mapping import load_mapping
        from firmware_bridge.can.table_decoder import load_table

        try:
            db = load_table(config.can.dbc)
        except DbcError as exc:
            raise ConfigError(f"{where}.can.dbc: {exc}") from None
        if config.can.mapping:
            try:
                load_mapping(config.can.mapping, db)
            except MappingError as exc:
                raise ConfigError(f"{where}.can.mapping: {exc}") from None
    if config.scanner and config.scanner.driver == "scan-file":
        _readable(config.scanner.path, f"{where}.scanner.path")
    if config.route.manifest != Path(""):
        _readable(config.route.manifest, f"{where}.route.manifest")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range(f: Any) -> str:
    """``1..1024 batches``: a field's declared range, for errors and ``describe()``."""
    unit = f" {f.metadata['unit']}" if f.metadata.get("unit") else ""
    return f"{_number(f.metadata['min'])}..{_number(f.metadata['max'])}{unit}"


def describe(cls: type = AgentConfig, prefix: str = "") -> list[str]:
    """One line per setting, for README and ``--help``: the declarations are the documentation."""
    lines: list[str] = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        section, table = _section_type(hints[f.name]), _table_type(hints[f.name])
        name = f"{prefix}{f.name}"
        if table:
            lines.append(f'[{name}."<name>"]  {f.metadata.get("doc", "")}')
            lines += describe(table, f'{name}."<name>".')
            continue
        if section:
            lines.append(f"[{name}]  {f.metadata.get('doc', '')}")
            lines += describe(section, name + ".")
            continue
        default = (
            "required"
            if f.default is MISSING
            else repr(str(f.default) if isinstance(f.default, Path) else f.default)
        )
        unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
        choices = f" ({' | '.join(f.metadata['choices'])})" if f.metadata.get("choices") else ""
        bounds = f" (range {_range(f)})" if f.metadata.get("min") is not None else ""
        lines.append(f"  {name} = {default}{unit}: {f.metadata.get('doc', '')}{choices}{bounds}")
    return lines
