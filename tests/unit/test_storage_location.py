"""Where the data lives: ``--data-dir``, ``--database-url`` / ``DATABASE_URI``, and
``agentd migrate``, through the real command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.storage import UnsupportedDatabase, sqlite_file
from tests.server import TEST_CONFIG, Server
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
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
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


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), {"DATABASE_URI": "postgresql://postgres@127.0.0.1/test"}),
        ((), {"POSTGRES_URI": "postgresql://postgres@127.0.0.1/test"}),
        (("--database-url", "postgres://postgres@127.0.0.1/test"), {}),
    ],
)
def test_a_database_not_served_stops_start_up(args: tuple[str, ...], env: dict[str, str]) -> None:
    """Never ignored: serving the SQLite file while DATABASE_URI names another database would
    split a deployment in two."""
    done = _agentd("serve", "--config", str(TEST_CONFIG), "--port", "1", *args, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "PostgreSQL" in done.stderr


def test_serve_from_a_sqlite_url(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "my.sqlite"
    server = Server(tmp_path / "data", env={"DATABASE_URI": f"sqlite:///{target}"}).start()
    try:
        assert target.exists()
        assert not (tmp_path / "data" / "agentd.sqlite").exists()
    finally:
        server.stop()
