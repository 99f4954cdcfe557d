"""Conformance: JSON filters (thread metadata and values, assistant and assistant version
metadata, cron metadata) with hostile keys and values. A filter matches a row iff every one of
its keys is present with an equal JSON value (objects and arrays compared whole); search and
count agree, and no key or value makes either raise.

Filters reach storage as the API validated them: keys hold no NUL (422 before storage)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agentd.storage.base import Row, Storage
from tests.storage.helpers import ensure_assistant, matches, new_cron, new_id, now_iso

KEYS = [
    "plain",
    "apo'strophe",
    "dot.ted",
    "a.b[0].c",
    "$",
    "$.x",
    "$dollar",
    "br[0]acket",
    "[0]",
    "[*]",
    "with space",
    " lead",
    "trail ",
    "ünï©ødé ✓ 🚀",
    "k" * 300,
    "",
    "*",
    "%",
    "_",
    "?",
    "->",
    "->>",
    "#>",
    "@>",
    "'; DROP TABLE threads; --",
    ") OR (1=1",
    "{}",
    "null",
]
VALUES: list[Any] = [
    {"nested": {"deep": [1, {"x": None}], "t": True}},
    {"a": "b"},
    {},
    [1, "two", None, True],
    [[]],
    [],
    True,
    False,
    None,
    -7,
    42,
    2**53 + 1,
    1.5,
    -0.25,
    "",
    "plain",
    "true",
    "false",
    "null",
    "1",
    '{"a": 1}',
    "[1, 2]",
    "' OR 1=1 --",
    '" OR ""="',
    "\\",
    '\\"',
    "ünï ✓",
    "x" * 5000,
    "%",
    "_",
    "$.a",
]


@dataclass
class Target:
    """A place a filter searches: how to store documents there, search and count them."""

    name: str
    make: Callable[[Storage, list[Row]], Awaitable[list[str]]]
    search: Callable[[Storage, Row], Awaitable[tuple[set[str], int]]]
    count: Callable[[Storage, Row], Awaitable[int]] | None


async def _thread_docs(storage: Storage, docs: list[Row]) -> list[str]:
    ids = [new_id() for _ in docs]
    for tid, doc in zip(ids, docs, strict=True):
        await storage.create_thread(tid, doc, "raise")
    return ids


async def _thread_search(storage: Storage, flt: Row) -> tuple[set[str], int]:
    rows, total = await storage.search_threads(
        ids=None,
        metadata=flt,
        values=None,
        status=None,
        limit=1000,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    )
    return {r["thread_id"] for r in rows}, total


async def _thread_count(storage: Storage, flt: Row) -> int:
    return await storage.count_threads(metadata=flt, values=None, status=None)


async def _values_docs(storage: Storage, docs: list[Row]) -> list[str]:
    ids = [new_id() for _ in docs]
    for tid, doc in zip(ids, docs, strict=True):
        await storage.create_thread(tid, {}, "raise")
        await storage.set_thread_state(tid, doc, {}, "idle")
    return ids


async def _values_search(storage: Storage, flt: Row) -> tuple[set[str], int]:
    rows, total = await storage.search_threads(
        ids=None,
        metadata=None,
        values=flt,
        status=None,
        limit=1000,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    )
    return {r["thread_id"] for r in rows}, total


async def _values_count(storage: Storage, flt: Row) -> int:
    return await storage.count_threads(metadata=None, values=flt, status=None)


def _assistant(metadata: Row) -> Row:
    return {
        "assistant_id": new_id(),
        "graph_id": "g",
        "config": {},
        "context": {},
        "metadata": metadata,
        "name": "n",
        "description": None,
    }


async def _assistant_docs(storage: Storage, docs: list[Row]) -> list[str]:
    return [(await storage.create_assistant(_assistant(d), "raise"))["assistant_id"] for d in docs]


async def _assistant_search(storage: Storage, flt: Row) -> tuple[set[str], int]:
    rows, total = await storage.search_assistants(
        graph_ids=["g"],
        graph_id=None,
        metadata=flt,
        name=None,
        limit=1000,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    )
    return {r["assistant_id"] for r in rows}, total


async def _assistant_count(storage: Storage, flt: Row) -> int:
    return await storage.count_assistants(graph_ids=["g"], graph_id=None, metadata=flt, name=None)


# Versions: one assistant, whose version n+1 has exactly document n as its metadata (each
# update is merged into the last: the keys it does not set are set back to a marker first).
_VERSIONED = "a0000000-0000-4000-8000-0000000000ff"


async def _version_docs(storage: Storage, docs: list[Row]) -> list[str]:
    first = {**_assistant(docs[0]), "assistant_id": _VERSIONED}
    ids = [str((await storage.create_assistant(first, "raise"))["version"])]
    for doc in docs[1:]:
        row = await storage.update_assistant(_VERSIONED, metadata=doc)
        assert row is not None
        ids.append(str(row["version"]))
    return ids


async def _version_search(storage: Storage, flt: Row) -> tuple[set[str], int]:
    rows = await storage.list_assistant_versions(_VERSIONED, metadata=flt, limit=1000, offset=0)
    return {str(r["version"]) for r in rows}, len(rows)


async def _cron_docs(storage: Storage, docs: list[Row]) -> list[str]:
    await ensure_assistant(storage)
    due = now_iso(3600)
    return [(await storage.create_cron(new_cron(due, metadata=d)))["cron_id"] for d in docs]


async def _cron_search(storage: Storage, flt: Row) -> tuple[set[str], int]:
    rows, total = await storage.search_crons(
        assistant_id=None,
        thread_id=None,
        enabled=None,
        metadata=flt,
        limit=1000,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    )
    return {r["cron_id"] for r in rows}, total


async def _cron_count(storage: Storage, flt: Row) -> int:
    return await storage.count_crons(assistant_id=None, thread_id=None, metadata=flt)


TARGETS = [
    Target("thread_metadata", _thread_docs, _thread_search, _thread_count),
    Target("thread_values", _values_docs, _values_search, _values_count),
    Target("assistant_metadata", _assistant_docs, _assistant_search, _assistant_count),
    Target("assistant_version_metadata", _version_docs, _version_search, None),
    Target("cron_metadata", _cron_docs, _cron_search, _cron_count),
]
targets = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


class Checker:
    """Stores documents in a target, then checks filters against them."""

    def __init__(self, storage: Storage, target: Target, docs: list[Row]):
        self.storage, self.target, self.docs = storage, target, docs
        self.ids: list[str] = []
        self.checked = 0

    async def store(self) -> None:
        if self.target.name == "assistant_version_metadata":
            # Each version's metadata is the last merged with the update: make every version
            # hold exactly its document by resetting the other documents' keys to a marker.
            every = sorted({k for d in self.docs for k in d})
            self.docs = [{k: d.get(k, "~unset~") for k in every} for d in self.docs]
        self.ids = await self.target.make(self.storage, self.docs)

    async def check(self, flt: Row) -> None:
        expected = {i for i, d in zip(self.ids, self.docs, strict=True) if matches(d, flt)}
        found, total = await self.target.search(self.storage, flt)
        shown = {k[:40]: (v[:40] if isinstance(v, str) else v) for k, v in flt.items()}
        assert found == expected, f"filter {shown!r}"
        assert total == len(expected), f"filter {shown!r}"
        if self.target.count is not None:
            assert await self.target.count(self.storage, flt) == len(expected), f"{shown!r}"
        self.checked += 1


def _documents(rng: random.Random, keys: list[str], values: list[Any]) -> list[Row]:
    """Documents holding every (key, value) pair at least once, a few pairs each."""
    pairs = list(itertools.product(keys, values))
    rng.shuffle(pairs)
    docs: list[Row] = []
    while pairs:
        doc: Row = {}
        for pair in list(pairs):
            if pair[0] not in doc:
                doc[pair[0]] = pair[1]
                pairs.remove(pair)
            if len(doc) == 12:
                break
        docs.append(doc)
    return docs


@targets
async def test_filters_match_iff_every_key_has_an_equal_value(
    storage: Storage, target: Target
) -> None:
    rng = random.Random(1307)
    keys = KEYS if target.name != "assistant_version_metadata" else rng.sample(KEYS, 10)
    checker = Checker(storage, target, _documents(rng, keys, VALUES))
    await checker.store()
    await checker.check({})
    for key, value in itertools.product(keys, VALUES):  # every key with every value
        await checker.check({key: value})
    await checker.check({"absent": None})
    for _ in range(60):  # several keys: all must match
        doc = rng.choice(checker.docs)
        flt = dict(rng.sample(sorted(doc.items(), key=repr), min(len(doc), rng.randint(2, 4))))
        await checker.check(flt)
        if rng.random() < 0.5:  # one value changed: most likely nothing matches
            key = rng.choice(list(flt))
            flt[key] = rng.choice(VALUES)
            await checker.check(flt)
    assert checker.checked > len(keys) * len(VALUES)


async def _bug_case(storage: Storage, target: Target, docs: list[Row], filters: list[Row]) -> None:
    checker = Checker(storage, target, docs)
    await checker.store()
    for flt in filters:
        await checker.check(flt)


QUOTED_KEYS = ['quo"te', 'ends"', '"', "back\\slash", "tab\tand\nnewline", "\x01", '\\"']


@targets
async def test_keys_json_must_escape_are_matched_and_never_raise(
    storage: Storage, target: Target
) -> None:
    docs = [{key: i, "other": "x"} for i, key in enumerate(QUOTED_KEYS)]
    await _bug_case(storage, target, docs, [{key: i} for i, key in enumerate(QUOTED_KEYS)])


@targets
async def test_a_number_never_matches_a_boolean(storage: Storage, target: Target) -> None:
    docs = [{"k": True}, {"k": False}, {"k": 1}, {"k": 0}]
    await _bug_case(storage, target, docs, [{"k": 1}, {"k": 0}, {"k": True}, {"k": False}])


@targets
async def test_a_string_never_matches_the_object_or_array_it_spells(
    storage: Storage, target: Target
) -> None:
    docs = [{"k": {"a": 1}}, {"k": [1, 2]}, {"k": '{"a":1}'}, {"k": "[1,2]"}]
    filters = [{"k": '{"a":1}'}, {"k": "[1,2]"}, {"k": {"a": 1}}, {"k": [1, 2]}]
    await _bug_case(storage, target, docs, filters)


@targets
async def test_objects_are_equal_whatever_their_key_order(storage: Storage, target: Target) -> None:
    docs = [{"k": {"a": 1, "b": {"c": 2, "d": 3}}}, {"k": {"b": {"d": 3, "c": 2}, "a": 1}}]
    filters = [{"k": {"a": 1, "b": {"c": 2, "d": 3}}}, {"k": {"b": {"d": 3, "c": 2}, "a": 1}}]
    await _bug_case(storage, target, docs, filters)
