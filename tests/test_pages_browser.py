"""The dispatcher's and the customer's pages in a real headless Chromium (Debian ``chromium`` +
``chromium-driver``, driven by raw W3C WebDriver calls: no Selenium Manager, nothing downloaded).
A collector serves the pages while the Munich drive is fed through its ingest path; the pages
must follow it live, without a reload, and a wrong or expired link must show nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
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
from protocols.records import Alert, Eta, Record
from tests.pipeline_fixtures import free_port, load_barefoot, wait_port

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
