"""The brokers the conformance suite (``test_conformance_*.py``) runs against.

Every test that asks for ``make_pair`` (or ``pair``) runs once per entry of ``KINDS``. A pair is
what two processes see: ``pub`` is where runs execute (open, publish, end, wake, cancel) and
``sub`` where clients subscribe. The memory broker is one process, so both are the same
broker (on a real SQLite storage as its EventLog, as services.py builds it); the Redis pair is
two RedisBrokers on one key prefix of the test's own, deleted afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentd.broker.base import Broker
from agentd.broker.memory import MemoryBroker
from agentd.broker.redis import RedisBroker
from agentd.storage import open_storage
from agentd.storage.base import Storage
from tests import redisd

KINDS = ["memory", "redis"]


@dataclass
class Pair:
    kind: str
    pub: Broker
    sub: Broker


MakePair = Callable[..., Awaitable[Pair]]


@pytest.fixture(params=KINDS, ids=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url() -> str:
    return redisd.shared_url()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of the test's own on the shared Redis; its keys go afterwards."""
    value = redisd.new_prefix()
    yield value
    await asyncio.to_thread(redisd.delete_prefix, redis_url, value)


@pytest.fixture
async def make_pair(kind: str, tmp_path: Path) -> AsyncIterator[MakePair]:
    """Start a pair of the test's kind (broker options as keywords); all stop after it."""
    started: list[Broker] = []
    storages: list[Storage] = []
    prefix: str | None = None
    url = ""

    async def make(**options: Any) -> Pair:
        nonlocal prefix, url
        if kind == "memory":
            storage = open_storage(tmp_path / f"db{len(storages)}" / "agentd.sqlite")
            await storage.open()
            storages.append(storage)
            broker = MemoryBroker(storage, **options)
            await broker.start()
            started.append(broker)
            return Pair(kind, broker, broker)
        url = redisd.shared_url()
        prefix = prefix or redisd.new_prefix()
        pub = RedisBroker(url, prefix=prefix, **options)
        sub = RedisBroker(url, prefix=prefix, **options)
        for broker in (pub, sub):
            await broker.start()
            started.append(broker)
        return Pair(kind, pub, sub)

    yield make
    for broker in reversed(started):
        await asyncio.wait_for(broker.stop(), 10)
    for storage in storages:
        await asyncio.wait_for(storage.close(), 10)
    if prefix is not None:
        await asyncio.to_thread(redisd.delete_prefix, url, prefix)


@pytest.fixture
async def pair(make_pair: MakePair) -> Pair:
    return await make_pair()
