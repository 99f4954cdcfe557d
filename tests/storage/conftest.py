"""The backends the conformance suite (``test_conformance_*.py``) runs against.

Every test that asks for ``storage`` (or ``open_backend``) runs once per entry of ``BACKENDS``.
A backend is an async factory ``(tmp_path, key, **open_storage options) -> Storage`` returning
an unopened storage on fresh, empty data; the fixtures open it and close it after the test.

Adding PostgreSQL is one line: uncomment ``"postgres": open_postgres`` below once
``tests/pg.py`` (``create_database(key) -> url``, a fresh database per call) and the backend
exist.

A test that shows a known bug of one backend is marked ``@pytest.mark.known_bug("sqlite",
reason)``: it is an xfail (strict: it must fail) on that backend only."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import pytest

from agentd.storage import open_storage
from agentd.storage.base import Storage
from tests.pg import create_database
from tests.storage.helpers import OpenBackend


class BackendFactory(Protocol):
    def __call__(self, tmp_path: Path, key: str, **options: Any) -> Awaitable[Storage]: ...


async def open_sqlite(tmp_path: Path, key: str, **options: Any) -> Storage:
    """A fresh SQLite file in a directory of its own (the file's lock is per directory)."""
    return open_storage(tmp_path / key / "agentd.sqlite", **options)


async def open_postgres(tmp_path: Path, key: str, **options: Any) -> Storage:
    """A fresh PostgreSQL database per storage, named after the test (``key``)."""
    return open_storage(create_database(key), **options)


# The one list of backends: each test of the suite runs once per entry (the entry's name is
# its pytest id).
BACKENDS: dict[str, BackendFactory] = {
    "sqlite": open_sqlite,
    "postgres": open_postgres,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "known_bug(backend, reason): a bug of that backend this test shows (strict xfail there)",
    )


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name; a ``known_bug`` marker naming it makes the test a strict xfail."""
    name: str = request.param
    for mark in request.node.iter_markers("known_bug"):
        if mark.args[0] == name:
            reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
            request.applymarker(pytest.mark.xfail(reason=f"known bug: {reason}", strict=True))
    return name


def _key(nodeid: str) -> str:
    """A short identifier unique to the test: letters, digits and underscores only."""
    name = re.sub(r"[^a-z0-9]+", "_", nodeid.rsplit("::", 1)[-1].lower()).strip("_")[:32]
    return f"{name}_{hashlib.sha1(nodeid.encode()).hexdigest()[:10]}"


@pytest.fixture
async def open_backend(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenBackend]:
    """Open a storage of the test's backend on fresh data (``open_storage`` options as
    keywords), as many as the test asks for; all are closed after it."""
    opened: list[Storage] = []
    base = _key(request.node.nodeid)

    async def open_(**options: Any) -> Storage:
        storage = await BACKENDS[backend](tmp_path, f"{base}_{len(opened)}", **options)
        await storage.open()
        opened.append(storage)
        return storage

    yield open_
    for storage in reversed(opened):
        await asyncio.wait_for(storage.close(), 10)


@pytest.fixture
async def storage(open_backend: OpenBackend) -> Storage:
    """A storage of the backend under test, opened on fresh data."""
    return await open_backend()
