from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests import pg
from tests.server import BACKENDS, Server, default_backend


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases this worker created (tests/pg.py), failed tests or not."""
    yield
    pg.drop_created()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a test runs on: the API and reliability tests run on each (their conftest
    requests it). Session-scoped, so pytest groups the tests by backend and starts each shared
    server once per backend; servers a module or session shares must pass it to Server."""
    return request.param


@pytest.fixture
def on_backend(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Servers the test creates without naming a backend run on ``backend`` (per test, so that a
    unit test later in the same worker gets SQLite again). ``known_bug(backend, reason)`` makes
    the test a strict xfail on that backend, as in tests/storage."""
    for mark in request.node.iter_markers("known_bug"):
        if mark.args[0] == backend:
            reason = mark.kwargs.get("reason") or mark.args[1]
            request.applymarker(pytest.mark.xfail(reason=f"known bug: {reason}", strict=True))
    with default_backend(backend):
        yield backend


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "sqlite_only(reason): runs on SQLite only (what only SQLite has: its file, its lock)",
        "postgres_only(reason): runs on PostgreSQL only",
        "known_bug(backend, reason): a bug of that backend this test shows (strict xfail there)",
    ):
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``sqlite_only`` or ``postgres_only`` test is not collected for the other backend (a
    test of a feature both backends have is never one of these)."""
    dropped = []
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        for only, name in (("sqlite_only", "sqlite"), ("postgres_only", "postgres")):
            mark = item.get_closest_marker(only)
            if mark is not None:
                assert mark.args, f"{item.nodeid}: @pytest.mark.{only} needs a reason"
                if backend is not None and backend != name:
                    dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in gone]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """One agentd per test session (per xdist worker) and backend, on the test graphs."""
    srv = Server(tmp_path_factory.mktemp(f"agentd-{backend}"), backend=backend).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def url(server: Server) -> str:
    return server.url


@pytest.fixture
async def client(url: str) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=url, api_key=None)
    yield c
    await c.http.client.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
