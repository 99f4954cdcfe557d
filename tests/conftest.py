from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests import pg
from tests.server import Server


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases this worker created (tests/pg.py), failed tests or not."""
    yield
    pg.drop_created()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One agentd per test session (per xdist worker), on the test graphs."""
    srv = Server(tmp_path_factory.mktemp("agentd")).start()
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
