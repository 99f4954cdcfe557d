"""The storage backends behind one door: ``open_storage`` picks one from where the data lives.
Nothing outside this package imports a backend."""

from __future__ import annotations

from pathlib import Path

from agentd.storage.base import Row, Storage, StorageStartupError


class UnsupportedDatabase(StorageStartupError):
    """A database URL agentd cannot serve from."""


def sqlite_file(where: str | Path) -> Path:
    """The SQLite file ``where`` names (a path or ``sqlite:///path``); UnsupportedDatabase
    for any other URL."""
    text = str(where)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgres", "postgresql"):
        # Refused, not ignored: DATABASE_URI is the official server's setting, and serving a
        # SQLite file instead of the database it names would split a deployment in two.
        raise UnsupportedDatabase(
            "PostgreSQL (--database-url / DATABASE_URI) is not served by this version of "
            "agentd yet; leave it unset to serve from the embedded SQLite file in --data-dir"
        )
    if scheme == "sqlite":
        return Path(text.split("://", 1)[1])
    if scheme:
        raise UnsupportedDatabase(
            f"unknown database URL scheme {scheme!r}: give a SQLite file path or sqlite:///path"
        )
    return Path(text)


def open_storage(
    where: str | Path,
    *,
    store_index: Row | None = None,
    store_ttl: Row | None = None,
    default_thread_ttl: tuple[str, float] | None = None,
) -> Storage:
    """The backend for ``where``: a SQLite file (the embedded default) or a database URL.
    Not opened yet: ``await storage.open()`` connects and applies pending migrations."""
    path = sqlite_file(where)
    from agentd.storage.sqlite import SqliteStorage  # the one backend so far

    return SqliteStorage(
        path,
        store_index=store_index,
        store_ttl=store_ttl,
        default_thread_ttl=default_thread_ttl,
    )
