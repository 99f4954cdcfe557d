"""The storage backends behind one door: ``open_storage`` picks one from where the data lives.
Nothing outside this package imports a backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd.storage.base import Row, Storage, StorageStartupError


class UnsupportedDatabase(StorageStartupError):
    """A database URL agentd cannot serve from."""


def postgres_url(where: str | Path) -> str | None:
    """The PostgreSQL URL ``where`` is (``postgresql://`` or ``postgres://``), else None."""
    text = str(where)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return text if scheme in ("postgres", "postgresql") else None


def sqlite_file(where: str | Path) -> Path:
    """The SQLite file ``where`` names (a path or ``sqlite:///path``); UnsupportedDatabase
    for a URL of a database agentd does not serve (a PostgreSQL URL is not a file either)."""
    text = str(where)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "sqlite":
        return Path(text.split("://", 1)[1])
    if scheme:
        raise UnsupportedDatabase(
            f"unknown database URL scheme {scheme!r}: give postgresql://..., a SQLite file "
            "path or sqlite:///path"
        )
    return Path(text)


def check_location(where: str | Path, *, shared: bool = False) -> None:
    """StorageStartupError (one line) unless ``where`` is a database agentd serves and, for a
    database server, one that answers and, unless ``shared`` (many processes with Redis),
    that no other agentd serves."""
    if url := postgres_url(where):
        from agentd.storage.postgres import probe

        probe(url, shared=shared)
    else:
        sqlite_file(where)


def open_storage(
    where: str | Path,
    *,
    store_index: Row | None = None,
    store_ttl: Row | None = None,
    default_thread_ttl: tuple[str, float] | None = None,
    shared: bool = False,
) -> Storage:
    """The backend for ``where``: a SQLite file (the embedded default) or a PostgreSQL URL,
    served by this process alone or, ``shared``, by many (API servers and workers with
    Redis). Not opened yet: ``await storage.open()`` connects and applies pending
    migrations."""
    options: dict[str, Any] = {
        "store_index": store_index,
        "store_ttl": store_ttl,
        "default_thread_ttl": default_thread_ttl,
    }
    if url := postgres_url(where):
        from agentd.storage.postgres import PostgresStorage

        return PostgresStorage(url, shared=shared, **options)
    path = sqlite_file(where)
    from agentd.storage.sqlite import SqliteStorage

    return SqliteStorage(path, **options)
