"""Run a command with PostgreSQL available to the tests: never a silent skip.

    python tests/with_postgres.py [--throwaway] -- pytest -n auto -q

When the server at ``AGENTD_TEST_PG_URL`` (default 127.0.0.1:5432) accepts connections, the command
runs as is. Otherwise (or with ``--throwaway``) a throwaway cluster is started from the installed
binaries for the length of the command, and ``AGENTD_TEST_PG_URL`` points the command at it. With
no binaries either, one line says what is missing and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: import tests.*

from tests.pg import (
    ADMIN_URL,
    ClusterError,
    PgCluster,
    ensure_postgres,
    find_bindir,
    missing_binaries,
)


def say(message: str) -> None:
    print(f"with_postgres: {message}", file=sys.stderr, flush=True)


def run(command: list[str], env: dict[str, str]) -> int:
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        say(f"cannot run {command[0]}: {e.strerror}")
        return 127
    # Ctrl-C reaches the command too (same process group): wait for it to finish, then clean up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    code = proc.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--throwaway", action="store_true", help="start a throwaway cluster even if one is up"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")

    problem = None if args.throwaway else ensure_postgres(ADMIN_URL)
    if not args.throwaway and problem is None:
        return run(command, dict(os.environ))

    bindir = find_bindir()
    if bindir is None:
        say(f"{problem}, and {missing_binaries()}" if problem else missing_binaries())
        return 2
    base = Path(tempfile.mkdtemp(prefix="agentd-with-pg-"))
    try:
        with PgCluster(base, bindir=bindir) as cluster:
            cluster.init().start()
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE test")  # like the machine's: postgres and test
            say(
                (f"{problem}; " if problem else "")
                + f"started a throwaway PostgreSQL at {cluster.url()} ({bindir}) for this run"
            )
            return run(command, {**os.environ, "AGENTD_TEST_PG_URL": cluster.url()})
    except ClusterError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)  # what, then why
        say((f"{problem}, and " if problem else "") + f"a throwaway PostgreSQL failed: {detail}")
        return 2
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
