"""The PostgreSQL test infrastructure itself: per-worker databases, throwaway clusters, and the
wrapper that makes ``make test`` find (or start) a PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.server import ROOT, free_port

WITH_POSTGRES = [sys.executable, str(ROOT / "tests" / "with_postgres.py")]


def _exists(name: str) -> bool:
    with psycopg.connect(pg.ADMIN_URL) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


def _refuses(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_the_shared_server_is_there() -> None:
    assert pg.ensure_postgres() is None


def test_ensure_postgres_says_what_is_missing_in_one_line() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    message = pg.ensure_postgres(dead)
    assert message is not None and "\n" not in message
    assert dead in message and "Connection refused" in message


def test_create_is_idempotent_and_drop_closes_connections() -> None:
    url = pg.create_database("infra-create")
    name = _name(url)
    assert name.startswith("agentd_t_") and len(name) <= 63 and _exists(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    # Again, as a restarted server would: the same database, data and all.
    assert pg.create_database("infra-create") == url
    held = psycopg.connect(url)
    assert held.execute("SELECT x FROM kept").fetchall() == [(7,)]
    held.commit()
    pg.drop_database(url)  # with `held` still open
    assert not _exists(name)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    pg.drop_database(name)  # gone already: no error


def test_names_differ_by_key_and_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    a, b = pg.database_name("a"), pg.database_name("b")
    assert a != b and a == pg.database_name("a") and a.startswith("agentd_t_gw0_")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert pg.database_name("a") != a
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert pg.database_name("a" * 500).startswith("agentd_t_main_")
    assert len(pg.database_name("a" * 500)) <= 63


def test_drop_refuses_what_is_not_a_test_database() -> None:
    for victim in ("postgres", "test", f"{pg.ADMIN_URL.rsplit('/', 1)[0]}/postgres"):
        with pytest.raises(ValueError, match="refusing"):
            pg.drop_database(victim)


@pytest.mark.parametrize("how", ["drop_created", "atexit"])
def test_a_process_leaves_no_database_behind(how: str) -> None:
    # A process of its own: drop_created() here would also drop this worker's other databases.
    key = f"infra-leftover-{how}"
    script = textwrap.dedent(f"""
        from tests import pg
        print(pg.create_database({key!r}), pg.create_database({key!r} + "-2"), flush=True)
        if {how == "drop_created"}:
            pg.drop_created()
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    urls = done.stdout.split()
    assert urls[0] == pg.database_url(pg.database_name(key))  # same names in a child process
    assert len(urls) == 2 and not any(_exists(_name(u)) for u in urls)


@pytest.mark.timeout(60)
def test_cluster_stops_and_starts_again_with_its_data(tmp_path: Path) -> None:
    with pg.PgCluster(tmp_path) as cluster:
        cluster.init().start()
        assert cluster.pid is not None
        uid = os.stat(f"/proc/{cluster.pid}").st_uid
        user = pg.server_user()
        assert uid == (user.pw_uid if user else os.getuid()) and uid != 0
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        url = cluster.url()
        cluster.stop()
        assert cluster.pid is None and _refuses(url)
        cluster.stop()  # stopped already: a no-op
        cluster.start()
        assert cluster.url() == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]


@pytest.mark.timeout(60)
def test_cluster_recovers_from_kill_9_without_losing_commits(tmp_path: Path) -> None:
    with pg.PgCluster(tmp_path) as cluster:
        cluster.init().start()
        held = psycopg.connect(cluster.url(), autocommit=True)
        held.execute("CREATE TABLE kept (x int)")
        held.execute("INSERT INTO kept SELECT generate_series(1, 1000)")
        cluster.kill()
        assert cluster.pid is None and _refuses(cluster.url())
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        cluster.start()
        assert "automatic recovery in progress" in cluster.log()
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1000,)


@pytest.mark.timeout(60)
def test_leaving_the_block_stops_the_cluster_and_removes_its_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), pg.PgCluster(tmp_path) as cluster:
        cluster.init().start()
        home = cluster.home
        raise RuntimeError("boom")
    assert cluster.pid is None and _refuses(cluster.url())
    assert not home.exists() and not (tmp_path / "pg").exists()
    assert "ready to accept connections" in (tmp_path / "postgres.log").read_text()


def _with_postgres(
    *args: str, script: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WITH_POSTGRES, *args, "--", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


# What the command sees: the URL it is given, which it can use (and its `test` database).
PROBE = textwrap.dedent("""
    import os, sys, psycopg
    url = os.environ["AGENTD_TEST_PG_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
    psycopg.connect(url.rsplit("/", 1)[0] + "/test").close()
    print(url)
    sys.exit(3)
""")


def test_with_postgres_uses_the_running_server() -> None:
    done = _with_postgres(script=PROBE, env={"AGENTD_TEST_PG_URL": pg.ADMIN_URL})
    assert done.returncode == 3, done.stderr  # the command's own status
    assert done.stdout.strip() == pg.ADMIN_URL and done.stderr == ""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["unreachable", "--throwaway"])
def test_with_postgres_starts_a_throwaway_cluster(how: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    url = dead if how == "unreachable" else pg.ADMIN_URL
    flags = ["--throwaway"] if how == "--throwaway" else []
    done = _with_postgres(*flags, script=PROBE, env={"AGENTD_TEST_PG_URL": url})
    assert done.returncode == 3, done.stderr
    used = done.stdout.strip()
    assert used.startswith("postgresql://postgres@127.0.0.1:") and used != url
    assert "started a throwaway PostgreSQL" in done.stderr
    assert ("does not accept connections" in done.stderr) == (how == "unreachable")
    assert _refuses(used)  # stopped once the command ended


def test_with_postgres_names_what_is_missing(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    ran = tmp_path / "ran"
    done = _with_postgres(
        script=f"open({str(ran)!r}, 'w')",
        env={"AGENTD_TEST_PG_URL": dead, "AGENTD_TEST_PG_BINDIR": str(tmp_path)},
    )
    assert done.returncode == 2 and not ran.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert dead in lines[0] and "initdb" in lines[0] and "AGENTD_TEST_PG_BINDIR" in lines[0]
