"""Where the data lives: ``--data-dir``, ``--database-url`` / ``DATABASE_URI``, and
``agentd migrate``, through the real command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from agentd.storage import UnsupportedDatabase, sqlite_file
from tests import pg
from tests.server import TEST_CONFIG, Server, free_port
from tests.unit.test_run_storage import _SCHEMA_1


def _agentd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_locations() -> None:
    assert sqlite_file("/a/b.sqlite") == Path("/a/b.sqlite")
    assert sqlite_file("sqlite:///a/b.sqlite") == Path("/a/b.sqlite")
    for url in ("postgresql://h/db", "postgres://h/db", "mysql://h/db"):
        with pytest.raises(UnsupportedDatabase):
            sqlite_file(url)


def test_migrate_upgrades_a_schema_1_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "agentd.sqlite") as conn:
        conn.executescript(_SCHEMA_1)
    done = _agentd("migrate", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "schema" in done.stdout
    with sqlite3.connect(data / "agentd.sqlite") as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        assert conn.execute("SELECT rest_status FROM threads WHERE thread_id = 't-paused'")\
            .fetchone() == ("interrupted",)  # fmt: skip


def test_migrate_refuses_a_data_dir_a_server_holds(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        done = _agentd("migrate", "--data-dir", str(tmp_path / "data"))
    finally:
        server.stop()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert "in use by another agentd process" in done.stderr


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # A free port: were the database accepted, the server would run until the timeout.
    port = str(free_port())
    return _agentd("serve", "--config", str(TEST_CONFIG), "--port", port, *args, env=env)


@pytest.mark.parametrize(
    ("how", "where"),
    [("DATABASE_URI", "nobody listens"), ("POSTGRES_URI", "nobody listens"),
     ("--database-url", "nobody listens"), ("--database-url", "no such database")],
)  # fmt: skip
def test_postgres_that_cannot_be_reached_stops_start_up(
    tmp_path: Path, how: str, where: str
) -> None:
    """One line and exit 2 before the server binds; never the SQLite file instead, which would
    split a deployment in two."""
    if where == "nobody listens":
        url = f"postgres://postgres@127.0.0.1:{free_port()}/agentd"
    else:
        url = pg.database_url(f"{pg.PREFIX}missing_{uuid.uuid4().hex[:12]}")
    flags = ("--database-url", url) if how == "--database-url" else ()
    done = _serve("--data-dir", str(tmp_path / "data"), *flags, env={} if flags else {how: url})
    assert _one_line(done).startswith("agentd: cannot connect to PostgreSQL"), done.stderr
    assert not (tmp_path / "data" / "agentd.sqlite").exists()


def test_a_database_another_agentd_serves_stops_start_up(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", backend="postgres").start()
    try:
        assert server.database_url is not None
        done = _serve("--data-dir", str(tmp_path / "other"), "--database-url", server.database_url)
    finally:
        server.stop()
    assert "in use by another agentd process" in _one_line(done)


def test_an_unknown_database_scheme_stops_start_up() -> None:
    done = _serve("--database-url", "mysql://root@127.0.0.1/agentd")
    assert _one_line(done).startswith("agentd: unknown database URL scheme 'mysql'")


def test_migrate_a_postgres_database(tmp_path: Path) -> None:
    url = pg.create_database(str(tmp_path))
    done = _agentd("migrate", "--database-url", url)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('threads') IS NOT NULL").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM threads").fetchone() == (0,)


def test_serve_from_a_sqlite_url(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "my.sqlite"
    server = Server(tmp_path / "data", env={"DATABASE_URI": f"sqlite:///{target}"}).start()
    try:
        assert target.exists()
        assert not (tmp_path / "data" / "agentd.sqlite").exists()
    finally:
        server.stop()
