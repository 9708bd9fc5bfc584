"""The dispatcher's and the customer's pages in a real headless Chromium (Debian ``chromium`` +
``chromium-driver``, driven by raw W3C WebDriver calls: no Selenium Manager, nothing downloaded).
A collector serves the pages while the Munich drive is fed through its ingest path; the pages
must follow it live, without a reload, and a wrong or expired link must show nothing. The second
test does it end to end: ``dropline collector`` and ``dropline agent`` subprocesses, the agent
driving the route-day case (Munich drive, its manifest) over gRPC into the collector."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.collector import Collector
from cloud.ingest import Ingest
from cloud.store import SqliteStore
from cloud.tokens import Tokens
from protocols import convert, wire
from protocols.records import Alert, Eta, Record, StopUpdate, parse_iso_time
from tests.pipeline_fixtures import (
    ROOT,
    Proc,
    agent_config,
    export,
    free_port,
    load_barefoot,
    wait_port,
)

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian chromium and chromium-driver (scripts/install-system-deps.sh test)",
)
VAN = "van-7"


class Browser:
    """One WebDriver session on a headless Chromium with a fresh profile."""

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [str(DRIVER), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port)
        self.url = f"http://127.0.0.1:{port}"
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script: str) -> Any:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def wait(self, script: str, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script)
            if value:
                return value
            assert time.monotonic() < deadline, (
                f"{what}; page: {self.js('return document.body.innerText')[:500]}"
            )
            time.sleep(0.1)

    def close(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_pages_follow_the_drive_live(tmp_path: Path, browser: Browser) -> None:
    db = tmp_path / "collector.db"
    collector = Collector(db, ingest=Ingest(SqliteStore(db)), http_addr="127.0.0.1:0")
    collector.start()
    try:
        base = f"http://127.0.0.1:{collector.http.bound_port}"
        tokens = Tokens(db)
        read = tokens.create("read")
        fixes = load_barefoot()
        seq = 0

        def send(*records: Record) -> None:
            nonlocal seq
            bodies = []
            for r in records:
                seq += 1
                bodies.append(convert.encode(seq, r))
            ack = collector.ingest.handle(wire.encode_batch(VAN, seq, bodies), VAN)
            assert not ack.rejected and not ack.quarantined

        t = fixes[0].time
        send(*fixes[:30], Eta(fixes[29].time, "m1", ("S1", "S2", "S3"), (t + 600, t + 900, t + 1200)))
        browser.open(f"{base}/#token={read}")
        first = browser.wait(
            f"const c = document.getElementById('van-{VAN}'); return c && c.dataset.lat", "the van on the map"
        )
        assert float(first) == pytest.approx(fixes[29].lat, abs=1e-7)
        browser.js("window.__sameDocument = 42; return 1")
        assert "restricted_zone" not in browser.js("return document.getElementById('exceptions').innerText")

        # once the stream is open and the page has caught up with it, only events can move the van
        browser.wait("return document.getElementById('live').dataset.synced", "the live stream connected")
        send(*fixes[30:200])
        browser.wait(
            f"return Number(document.getElementById('van-{VAN}').dataset.lat) === {round(fixes[199].lat, 7)}",
            "the van moved on the map without a reload",
        )
        send(
            Alert(
                fixes[199].time, "restricted_zone", "warning", "entered restricted zone z1", {"fence": "z1"}
            )
        )
        browser.wait(
            "return document.getElementById('exceptions').innerText.includes('restricted_zone')"
            " && document.getElementById('vans').innerText.includes('restricted_zone')",
            "the raised exception in the list and the vans table",
        )
        assert browser.js("return window.__sameDocument") == 42  # no reload happened

        # the van's day follows its stops live: S1 completed and then departed is done
        browser.js(f"document.querySelector('#vans tr[data-vehicle=\"{VAN}\"]').click(); return 1")
        browser.wait(
            "return document.getElementById('day-progress').innerText === '0 of 3 stops done'", "the day"
        )
        at = fixes[200].time
        send(
            StopUpdate(at, "m1", "S1", "arrived"),
            StopUpdate(at + 20, "m1", "S1", "completed"),
            StopUpdate(at + 30, "m1", "S1", "departed"),
        )
        browser.wait(
            "return document.getElementById('day-progress').innerText === '1 of 3 stops done'"
            " && document.querySelector('#stops tr[data-stop=\"S1\"]').className === 'status-completed'",
            "S1 done in the day view without a reload",
        )
        assert browser.js("return window.__sameDocument") == 42

        link, _ = tokens.share(VAN, "S2", 3600)
        browser.open(f"{base}/t/{link}")
        browser.wait(
            "return document.getElementById('countdown').innerText.includes('min')", "an ETA countdown"
        )
        assert browser.js("return document.getElementById('status').innerText") == "planned"
        browser.js("window.__sameDocument = 43; return 1")
        # The van is shown only with the stop's place from a manifest; without one the page still
        # follows the ETA live: a new ETA moves the countdown.
        before = browser.js("return document.getElementById('eta').innerText")
        send(Eta(fixes[200].time, "m1", ("S2", "S3"), (t + 3000, t + 3300)))
        browser.wait(
            f"return document.getElementById('eta').innerText !== {json.dumps(before)}", "the new ETA"
        )
        assert browser.js("return window.__sameDocument") == 43
        assert "S1" not in browser.js("return document.body.innerText")

        expired, _ = Tokens(db, clock=lambda: t).share(VAN, "S2", 60)
        for wrong in (expired, link[:-2] + "xx"):
            browser.open(f"{base}/t/{wrong}")
            text = browser.wait(
                "return document.readyState === 'complete' && document.body.innerText", "a page"
            )
            assert text.strip() == "This link is not valid."
            assert VAN not in browser.js("return document.documentElement.outerHTML")
    finally:
        collector.stop()


ROUTE_DAY = ROOT / "tests" / "cases" / "route-day"
DRIVE = ROOT / "examples" / "munich-drive.jsonl"


def dropline(*args: str) -> Any:
    """A ``dropline`` subcommand's one JSON line of output."""
    out = subprocess.run(
        [sys.executable, "-m", "dropline_cli", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_dispatcher_follows_a_real_agent(tmp_path: Path, browser: Browser) -> None:
    """Truth from the inputs: the drive's last fix is where the van ends; the case's expected
    records (route-day) raise ``extended_dwell`` at S1 and ``restricted_zone`` at fix 700 from GPS
    alone. The agent replays the 1,194 fixes at 5 ms each (about 200 times real time)."""
    van = "van-live"
    plans = tmp_path / "manifests"
    plans.mkdir()
    manifest = json.loads((ROUTE_DAY / "manifest.json").read_text()) | {"vehicle": van}
    (plans / "route.json").write_text(json.dumps(manifest))
    db = tmp_path / "collector.db"
    grpc_port, http_port = free_port(), free_port()
    collector = Proc(
        [
            "collector",
            "--db",
            str(db),
            "--insecure",
            "--grpc",
            f"127.0.0.1:{grpc_port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--manifests",
            str(plans),
        ],
        tmp_path / "collector.log",
    ).start()
    config = agent_config(
        tmp_path,
        van,
        "grpc",
        f"127.0.0.1:{grpc_port}",
        sources=f"""
[gps]
driver = "trace-file"
path = "{DRIVE}"
replay_interval_s = 0.005

[route]
manifest = "{plans / "route.json"}"
""",
    )
    agent = Proc(["agent", "--config", str(config)], tmp_path / "agent.log")
    try:
        wait_port(http_port, 30)
        wait_port(grpc_port, 30)
        base = f"http://127.0.0.1:{http_port}"
        read = dropline("token", "create", "--db", str(db), "--role", "read")["token"]
        share = ["share", "--db", str(db), "--manifests", str(plans), "--vehicle", van, "--base", base]
        expired = dropline(*share, "--ttl-h", "0.0001", "S2")  # 0.36 s
        valid = dropline(*share, "S2")

        browser.open(f"{base}/#token={read}")
        browser.wait("return document.getElementById('live').dataset.synced", "the live stream connected")
        browser.js("window.__sameDocument = 42; return 1")
        assert browser.js(f"return document.getElementById('van-{van}')") is None
        # the manifest's stops and fences are on the map before the van has sent anything
        for stop in manifest["stops"]:
            status = browser.wait(
                f"const c = document.getElementById('stop-{van}-{stop['id']}'); return c && c.dataset.status",
                f"stop {stop['id']} on the map",
            )
            assert status == "planned"
        drawn = browser.js(
            "return [...document.querySelectorAll('#map [data-fence]')].map((f) => f.dataset.fence)"
        )
        fence_ids = {f["properties"]["id"] for f in manifest["fences"]["features"]}
        assert sorted(drawn) == sorted(fence_ids | {manifest["depot"]["id"]})
        agent.start()
        seen = browser.wait(
            f"const c = document.getElementById('van-{van}'); return c && c.dataset.lat",
            "the van on the map",
        )
        last = json.loads(DRIVE.read_text().splitlines()[-1])
        browser.wait(
            f"return Number(document.getElementById('van-{van}').dataset.lat) === {round(last['lat'], 7)}",
            "the van at the drive's last fix without a reload",
            timeout=60,
        )
        assert float(seen) != pytest.approx(last["lat"], abs=1e-7), "it moved: first seen elsewhere"
        browser.wait(
            "const codes = [...document.querySelectorAll('#exceptions li')].map((li) => li.dataset.code);"
            " return codes.includes('extended_dwell') && codes.includes('restricted_zone')",
            "the route stage's exceptions in the list",
            timeout=60,
        )
        # the van's day: its stops' progress, on the map and in the table, as the store has it
        updates = [r for r in export(db, "all") if r["kind"] == "stop_update"]
        done = {s["id"] for s in manifest["stops"]} & {
            r["stop"] for r in updates if r["status"] in ("completed", "skipped")
        }
        assert done, "the route-day drive completes or skips stops"
        browser.js(f"document.querySelector('#vans tr[data-vehicle=\"{van}\"]').click(); return 1")
        browser.wait(
            f"return document.getElementById('day-progress').innerText === "
            f"'{len(done)} of {len(manifest['stops'])} stops done'",
            "the day's progress",
        )
        for stop in manifest["stops"]:
            statuses = [r["status"] for r in updates if r["stop"] == stop["id"]]
            want = "completed" if "completed" in statuses else statuses[-1] if statuses else "planned"
            got = browser.js(f"return document.getElementById('stop-{van}-{stop['id']}').dataset.status")
            assert got == want, stop["id"]
        assert browser.js("return window.__sameDocument") == 42  # no reload happened

        browser.open(base + valid["path"])
        browser.wait("return document.getElementById('window').innerText.includes(' - ')", "S2's window")
        s2 = [r["status"] for r in export(db, "all") if r["kind"] == "stop_update" and r["stop"] == "S2"]
        assert s2 and browser.js("return document.getElementById('status').innerText") == s2[-1]
        assert "S1" not in browser.js("return document.body.innerText")
        while time.time() < parse_iso_time(expired["expires"]):
            time.sleep(0.1)
        forged = valid["path"][:-2] + ("yy" if valid["path"].endswith("xx") else "xx")
        for wrong in (expired["path"], forged):
            browser.open(base + wrong)
            text = browser.wait(
                "return document.readyState === 'complete' && document.body.innerText", "a page"
            )
            assert text.strip() == "This link is not valid."
            assert van not in browser.js("return document.documentElement.outerHTML")
    except BaseException:
        print("collector:", collector.tail(), "agent:", agent.tail(), sep="\n")
        raise
    finally:
        agent.stop()
        collector.stop()
