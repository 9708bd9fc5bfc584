"""What only the PostgreSQL store has (the shared contract is in test_store_contract.py): schema
migrations on start, collectors starting together, a newer schema refused, a server restart under
an open store, ``dropline export`` and ``dropline collector`` with a ``postgresql://`` URL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest

from cloud.store_postgres import MIGRATIONS, PostgresStore, SchemaError, redact
from protocols.dropline.v1 import dropline_pb2 as pb
from tests.pipeline_fixtures import ROOT
from tests.postgres import Postgres, run_postgres

T0 = 1_700_000_000_000


def fix(seq: int) -> pb.Record:
    return pb.Record(seq=seq, fix=pb.Fix(time_ms=T0 + seq * 1000, mode=3, lat_e7=481_000_000, lon_e7=seq))


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {row[0] for row in rows}


def test_collectors_starting_together_migrate_once(postgres: Postgres) -> None:
    url = postgres.new_store_url("migrate")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            PostgresStore(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert versions(url) == list(range(1, len(MIGRATIONS) + 1))
    assert tables(url) == {"schema_version", "records", "spans", "vehicles", "quarantine"}
    PostgresStore(url).close()  # and again, on a store already current: nothing to do
    assert versions(url) == list(range(1, len(MIGRATIONS) + 1))


def test_a_newer_schema_is_refused_and_readonly_creates_nothing(postgres: Postgres) -> None:
    empty = postgres.new_store_url("empty")
    with pytest.raises(SchemaError):
        PostgresStore(empty, readonly=True)
    assert tables(empty) == set()

    url = postgres.new_store_url("newer")
    PostgresStore(url).close()
    with psycopg.connect(url) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaError, match="newer"):
        PostgresStore(url)
    with pytest.raises(SchemaError):
        PostgresStore(url, readonly=True)


def test_a_server_restart_costs_at_most_one_failed_write(postgres: Postgres) -> None:
    """A pooled connection the server dropped is discarded, not reused forever: the ingest answers
    the failed write with store_unavailable and the van resends."""
    url = postgres.new_store_url("restart")
    store = PostgresStore(url)
    try:
        store.write("van-1", [fix(s) for s in range(1, 11)])
        postgres.stop()
        postgres.start()
        failures = 0
        while True:
            try:
                result = store.write("van-1", [fix(s) for s in range(11, 21)])
                break
            except psycopg.OperationalError:
                failures += 1
                assert failures == 1, "the same broken connection was used again"
        assert result.contiguous == 20 and result.inserted == 10
    finally:
        store.close()


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:s3cret@db.example:5432/x?sslmode=require") == (
        "postgresql://u:***@db.example:5432/x?sslmode=require"
    )
    assert redact("postgresql://u@h/x") == "postgresql://u@h/x"


def dropline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropline_cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_export_and_collector_commands_take_a_postgres_url(postgres: Postgres) -> None:
    url = postgres.new_store_url("cli")
    store = PostgresStore(url)
    store.write("van-2", [fix(2), fix(1)])
    store.write("van-1", [fix(1)])
    store.close()
    out = dropline("export", "--db", url, "--kind", "fixes")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["vehicle"], r["seq"], r["lon"]) for r in rows] == [
        ("van-1", 1, 1e-7),
        ("van-2", 1, 1e-7),
        ("van-2", 2, 2e-7),
    ]
    out = dropline("export", "--db", url, "--kind", "vehicles", "--vehicle", "van-2")
    assert json.loads(out.stdout)["contiguous"] == 2

    out = dropline("export", "--db", postgres.new_store_url("nothing"), "--kind", "fixes")
    assert out.returncode == 2 and "no collector store" in out.stderr and out.stdout == ""
    unreachable = "postgresql://u:s3cret@127.0.0.1:1/x"
    for command in (["export", "--kind", "fixes"], ["collector", "--grpc", "127.0.0.1:0"]):
        out = dropline(*command, "--db", unreachable)
        assert out.returncode == 2 and "u:***@127.0.0.1:1/x" in out.stderr, out.stderr
        assert "s3cret" not in out.stderr + out.stdout
