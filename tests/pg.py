"""PostgreSQL for tests: per-worker databases on the shared server, and throwaway clusters.

The shared server is ``AGENTD_TEST_PG_URL`` (default: this machine's PostgreSQL on 5432); every test
database on it is created through ``create_database`` and dropped at the end of the session. Fault
tests that stop or kill PostgreSQL start a ``PgCluster`` of their own instead.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import errors, sql

from tests.server import free_port

ADMIN_URL = os.environ.get("AGENTD_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "agentd_t_"
# In every name, so two runs against one server (two worktrees, two CI jobs) never share or drop
# each other's databases. Exported so that processes a test starts derive the same names.
RUN_ID = os.environ.setdefault(
    "AGENTD_TEST_PG_RUN", os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
)
PG_OS_USER = "postgres"  # who runs a throwaway server when we are root: PostgreSQL refuses root

_created: set[str] = set()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def ensure_postgres(url: str = ADMIN_URL) -> str | None:
    """None when ``url`` accepts connections and may create databases, else one line saying why."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as e:
        return f"PostgreSQL at {_redact(url)} does not accept connections: {_first_line(e)}"
    if not (row and row[0]):
        return f"PostgreSQL at {_redact(url)}: the role may not create databases (needs CREATEDB)"
    return None


def database_name(key: str) -> str:
    """Deterministic per (run, worker, key): a restarted server on the same key finds it again."""
    worker = os.environ.get("PYTEST_XDIST_WORKER") or "main"
    digest = hashlib.sha256(f"{RUN_ID}\0{worker}\0{key}".encode()).hexdigest()[:16]
    return f"{PREFIX}{re.sub(r'[^a-z0-9]', '', worker.lower())[:12]}_{digest}"  # <= 38 chars


def database_url(name: str) -> str:
    return urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise RuntimeError(
            f"{ensure_postgres() or _first_line(e)} (run the tests through `make test`, "
            "which starts a throwaway PostgreSQL when this one is missing)"
        ) from e


def create_database(key: str) -> str:
    """A database of this worker's own for ``key`` (created unless it exists); returns its URL."""
    name = database_name(key)
    _created.add(name)  # before CREATE: dropped at exit even if the reply is lost
    with _admin() as conn:
        with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


def drop_database(url_or_name: str) -> None:
    """Drop a test database, closing any connections still open on it."""
    name = unquote(urlsplit(url_or_name).path.lstrip("/")) if "://" in url_or_name else url_or_name
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to drop {name!r}: test databases are named {PREFIX}*")
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    _created.discard(name)


def drop_created() -> None:
    """Drop every database this process created (a session fixture calls it; atexit too)."""
    for name in sorted(_created):
        drop_database(name)


def _drop_created_at_exit() -> None:
    if _created:
        try:
            drop_created()
        except Exception as e:  # the server may be gone by now; say so, don't crash the exit
            print(
                f"tests/pg.py: could not drop {sorted(_created)}: {_first_line(e)}", file=sys.stderr
            )


atexit.register(_drop_created_at_exit)


# Throwaway clusters.


class ClusterError(RuntimeError):
    pass


def _version(path: Path) -> int:
    match = re.search(r"\d+", str(path))
    return int(match.group()) if match else 0


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: $AGENTD_TEST_PG_BINDIR, else PATH,
    ``pg_config --bindir``, then the distributions' versioned directories (newest first)."""

    def complete(d: Path) -> bool:
        return all(os.access(d / name, os.X_OK) for name in ("initdb", "postgres"))

    if env := os.environ.get("AGENTD_TEST_PG_BINDIR"):
        return Path(env) if complete(Path(env)) else None
    candidates: list[Path] = []
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)  # Debian links them from /usr/local/bin
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    for pattern in ("usr/lib/postgresql/*/bin", "usr/pgsql-*/bin"):
        candidates += sorted(Path("/").glob(pattern), key=_version, reverse=True)
    return next((d for d in candidates if complete(d)), None)


def missing_binaries() -> str:
    where = (
        f"in $AGENTD_TEST_PG_BINDIR ({os.environ['AGENTD_TEST_PG_BINDIR']})"
        if os.environ.get("AGENTD_TEST_PG_BINDIR")
        else "on PATH, in pg_config --bindir or in /usr/lib/postgresql/*/bin"
    )
    return f"no PostgreSQL server binaries (initdb, postgres) {where} to start a throwaway one"


def server_user() -> pwd.struct_passwd | None:
    """The OS user to run PostgreSQL as: None means ourselves; root hands it to ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, and there is no {PG_OS_USER!r} OS user to run a throwaway "
            "PostgreSQL as (it refuses to run as root)"
        ) from None


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) from /proc, None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _running(pid: int, started: int) -> bool:
    # A zombie counts as gone: PID 1 on these machines never reaps orphans. The start time guards
    # against the PID having been reused (pid_max is 32768) by a process we must not touch.
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == started and stat[0] not in ("Z", "X")


def _children(pid: int) -> list[tuple[int, int]]:
    kids = []
    for path in Path("/proc").glob("[0-9]*"):
        stat = _proc_stat(int(path.name))
        if stat is not None and stat[1] == pid:
            kids.append((int(path.name), stat[2]))
    return kids


_SHUTDOWN = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


@dataclass
class _Files:
    """What must be cleaned up even if the PgCluster is never closed (see weakref.finalize)."""

    base_dir: Path
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(_SHUTDOWN[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ClusterError(
                f"PostgreSQL did not stop ({mode}) in {timeout}s; killed it"
            ) from None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            log = self.home / "postgres.log"
            if log.exists():  # the files go, the log stays beside the test's other files
                shutil.copyfile(log, self.base_dir / "postgres.log")
            shutil.rmtree(self.home, ignore_errors=True)
            link = self.base_dir / "pg"
            if link.is_symlink():
                link.unlink()


class PgCluster:
    """A PostgreSQL server of a test's own, to stop, kill -9 and restart at will.

    ``postgres`` runs as our child rather than through ``pg_ctl start``: pg_ctl leaves the
    postmaster to PID 1, which here never reaps it, and its zombie keeps the PID "alive", so the
    next start refuses ("lock file postmaster.pid already exists"). As root, PostgreSQL runs as the
    ``postgres`` OS user, and its files live in a directory of its own under the system temp dir
    (pytest's temp dirs are private to root); ``base_dir/pg`` points there. ``close()`` (or leaving
    the ``with`` block) stops the server and removes its files, keeping ``base_dir/postgres.log``.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        bindir: Path | None = None,
        settings: dict[str, str] | None = None,
    ):
        found = bindir or find_bindir()
        if found is None:
            raise ClusterError(missing_binaries())
        self.bindir = found
        self.settings = settings or {}
        self.base_dir = Path(base_dir)
        self._user = server_user()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "pg"
        if link.exists() or link.is_symlink():
            raise ClusterError(f"{link} exists: one PgCluster per base_dir")
        if self._user is None:
            link.mkdir()
            home = link
        else:
            home = Path(tempfile.mkdtemp(prefix="agentd-pg-"))
            os.chown(home, self._user.pw_uid, self._user.pw_gid)
            link.symlink_to(home)
        self._files = _Files(self.base_dir, home)
        # Stops the server and removes the files if the test never closes it, or at exit.
        self._finalizer = weakref.finalize(self, _Files.close, self._files)
        self.home = home
        self.data_dir = home / "data"
        self.log_path = home / "postgres.log"
        self.port = free_port()  # fixed at creation: the URL stays valid across restarts

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        proc = self._files.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _as_server(self) -> dict[str, Any]:
        """Popen arguments to run a PostgreSQL binary as the server's OS user."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGDATA etc.
        kwargs: dict[str, Any] = {"env": env, "cwd": self.home}
        if self._user is not None:
            env["HOME"] = str(self.home)
            kwargs |= {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        return kwargs

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def init(self) -> PgCluster:
        """initdb: trust auth for ``postgres``, 127.0.0.1 on our port, settings for speed."""
        args = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
                "--wal-segsize=1"]  # fmt: skip
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=120, **self._as_server()
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise ClusterError(f"initdb failed ({done.returncode}): {lines[-1]}")
        sockets = self.home / "run"
        sockets.mkdir()
        self._chown(sockets)
        # The socket path must fit sockaddr_un (108 bytes); past that, TCP only.
        socket_dir = str(sockets) if len(f"{sockets}/.s.PGSQL.{self.port}") < 100 else ""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": socket_dir,
            "max_connections": "100",
            "shared_buffers": "16MB",
            # Throwaway data: no fsync, as only an OS crash loses what is written but not synced.
            # synchronous_commit stays on: off, a kill -9 loses commits already acknowledged.
            "fsync": "off",
            "full_page_writes": "off",
            **self.settings,
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/pg.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n")
        return self

    def start(self, timeout: float = 30) -> PgCluster:
        """Start the server and wait until it accepts connections (after crash recovery, if any)."""
        if self.pid is not None:
            raise ClusterError("PostgreSQL is running already")
        if not (self.data_dir / "PG_VERSION").exists():
            raise ClusterError(f"no cluster in {self.data_dir}: call init() first")
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest must not shut it down
                **self._as_server(),
            )  # fmt: skip
        self._files.proc = proc
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ClusterError(
                    f"PostgreSQL exited at start-up ({proc.returncode}):\n{self.log()}"
                )
            if self._ready(proc.pid):
                return self
            if time.monotonic() > deadline:
                self._files.stop("immediate")
                raise ClusterError(f"PostgreSQL not ready within {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def _ready(self, pid: int) -> bool:
        # postmaster.pid names *our* postmaster and says "ready": a connection now reaches this
        # server, not another one that might have taken the port meanwhile.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0] != str(pid) or lines[7].strip() != "ready":
            return False
        with contextlib.suppress(psycopg.OperationalError):
            psycopg.connect(self.url(), connect_timeout=2).close()
            return True
        return False

    def stop(
        self, mode: Literal["smart", "fast", "immediate"] = "fast", timeout: float = 30
    ) -> None:
        """Shut down (``pg_ctl stop -m <mode>``'s signals); a no-op when not running."""
        self._files.stop(mode, timeout)

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the postmaster, as a crash would; returns once all its processes are gone."""
        proc = self._files.proc
        if proc is None or proc.poll() is not None:
            raise ClusterError("PostgreSQL is not running")
        children = _children(proc.pid)
        proc.kill()
        proc.wait()
        # Backends quit when they notice the postmaster is gone; until they have, the shared
        # memory is in use and a new postmaster would refuse to start.
        deadline = time.monotonic() + timeout
        while (left := [c for c in children if _running(*c)]) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Nothing of this cluster runs now. A stale postmaster.pid whose PID has been reused
        # meanwhile would stop the next start ("lock file already exists"), so it goes.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the server and remove its files (the log is kept as ``base_dir/postgres.log``)."""
        self._finalizer()

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
