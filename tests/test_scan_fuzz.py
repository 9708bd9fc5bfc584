"""Property tests: nothing a scanner sends makes the scan path raise. Every line is a Scan or one
counted rejection, and the good lines around bad ones still come through unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.scanner import couriers, gs1_checks
from firmware_bridge.scanner.lines import LineAssembler, Overlong
from firmware_bridge.scanner.parse import parse_scan
from firmware_bridge.scanner.serial_scanner import scans_from_lines
from protocols.records import Scan
from protocols.rejects import Rejects
from tests.conftest import DATA

KINDS = {"sscc", "gtin", "gs1", "tracking", "unknown"}
RAW = (DATA / "barcodes" / "scans_raw.txt").read_bytes()
GOOD = [line.decode("utf-8") for line in RAW.split(b"\r\n")[:-1]]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

aim_prefix = st.builds(
    lambda code, mod: f"]{code}{mod}",
    st.sampled_from([*"ACEFGHIJKLMNOPQRSTUXYZcdeopsz", "", "]", "1"]),
    st.text(alphabet="0123456789ABCabc]", max_size=3),
)
digits = st.text(alphabet="0123456789", min_size=1, max_size=48)
gs1_ish = st.lists(
    st.one_of(digits, st.sampled_from(["\x1d", "|", "^", "(", ")", "]e0", "-", " "]), st.text(max_size=4)),
    max_size=12,
).map("".join)
url = st.builds(
    lambda scheme, path, query: f"{scheme}://id.gs1.org/{path}{query}",
    st.sampled_from(["http", "https", "HtTpS", "ftp"]),
    st.lists(st.one_of(digits, st.sampled_from(["01", "00", "10", "21", "17", "%2F", ""])), max_size=6).map(
        "/".join
    ),
    st.sampled_from(["", "?", "?10=A", "?17=999999", "?01=1&01=2", "?%zz"]),
)
scan_text = st.one_of(
    st.text(max_size=80),
    digits,
    st.builds(str.__add__, aim_prefix, st.one_of(gs1_ish, digits, url, st.text(max_size=30))),
    url,
    gs1_ish,
)


def _check(scan: Scan, raw: str) -> None:
    assert isinstance(scan, Scan)
    assert scan.kind in KINDS
    assert scan.raw == raw
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in scan.fields.items())
    if scan.kind == "unknown":  # nothing read, or only why a GS1 reading was refused
        assert set(scan.fields) <= {"error", "error_detail", "error_ai"}
        assert not scan.fields or scan.fields["error"] in gs1_checks.REASONS
    else:
        assert "error" not in scan.fields


@FAST
@given(scan_text)
def test_parse_never_raises(raw: str) -> None:
    _check(parse_scan(raw, 0.0), raw)


@FAST
@given(digits, st.integers(min_value=0, max_value=47))
def test_wrong_check_digits_never_verify(number: str, at: int) -> None:
    """Every recognised checked number still verifies by its own definition; changing its check
    digit makes that format refuse it."""
    for m in couriers.recognise_all(number):
        fmt = next(f for f in couriers.FORMATS if f.format_id == m.format_id)
        match = fmt.pattern.fullmatch(m.tracking_number)
        assert match is not None
        if fmt.checksum is None or not match.group("CheckDigit").isdigit():
            continue
        pos = match.start("CheckDigit")
        bad = m.tracking_number[:pos] + str((int(m.tracking_number[pos]) + 1 + at % 9) % 10)
        bad += m.tracking_number[pos + 1 :]
        assert all(other.format_id != m.format_id for other in couriers.recognise_all(bad))


junk_line = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=16).map(lambda b: b + b"\x00" + b),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]).map(lambda b: b"abc" + b),
    st.integers(min_value=257, max_value=2000).map(lambda n: b"7" * n),
    st.binary(min_size=1, max_size=8).map(lambda b: b * 100),
    st.builds(lambda p, d: (p + d).encode(), aim_prefix, st.one_of(digits, gs1_ish)),
)
terminator = st.sampled_from([b"\r", b"\n", b"\r\n"])


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(GOOD), junk_line, terminator), min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=50),
)
def test_good_lines_survive_junk_in_any_chunking(
    items: list[tuple[str, bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(good.encode() + end + junk + end for good, junk, end in items)
    assembler, rejects = LineAssembler(max_line=256), Rejects("fuzz")
    lines: list[bytes | Overlong] = []
    scans: list[Scan] = []
    pos, i = 0, 0
    while pos < len(stream):
        chunk = stream[pos : pos + cuts[i % len(cuts)]]
        pos += len(chunk)
        i += 1
        got = assembler.feed(chunk)
        lines += got
        scans += scans_from_lines(got, float(i), rejects)
    rest = assembler.finish()
    assert rest is None  # the stream ends with a terminator
    # every non-empty line is exactly one scan or one counted rejection
    assert len(scans) + rejects.total == sum(1 for line in lines if line != b"")
    for scan in scans:
        _check(scan, scan.raw)
    # the good lines come through, in order, as the pure parser reads them
    raws = iter(s.raw for s in scans)
    for good, _, _ in items:
        assert any(raw == good for raw in raws), good


@FAST
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_raise(blob: bytes, cut: int) -> None:
    assembler, rejects = LineAssembler(max_line=512), Rejects("fuzz")
    total = 0
    for pos in range(0, len(blob), cut):
        total += len(scans_from_lines(assembler.feed(blob[pos : pos + cut]), 0.0, rejects))
    good = b"]C100106141412345678908\r\n"
    after = scans_from_lines(assembler.feed(b"\n" + good), 1.0, rejects)
    assert after[-1].kind == "sscc" and after[-1].raw == good.decode().strip()
