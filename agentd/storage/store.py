"""LangGraph's SQLite store, with its SQL scheduled like the rest of agentd's.

It is LangGraph's ``AsyncSqliteStore``: same tables and migrations, same queries (built by
LangGraph's own code), same TTL sweeper and vector index. What changes is where the SQL runs:

- Writes (puts, deletes, the TTL refresh of items read, the TTL sweep) join agentd's group
  commit (``SqliteStorage._write``), like the checkpointer's inserts. LangGraph runs each batch
  on a connection of its own in a deferred transaction that reads, then writes; when agentd
  commits in between, SQLite refuses that upgrade at once with "database is locked" (the busy
  timeout cannot help a reader whose snapshot is stale), and the store call failed.
- Reads run on a read connection of the store's own, on a thread of their own: in WAL mode a
  read never waits for the writer, and the writer's thread never runs the store's reads.

A batch's reads see the database as it was before its writes, as in LangGraph (which runs
gets, searches and listings before puts). The writer connection enforces foreign keys, so
deleting or replacing an item also deletes its vectors (``ON DELETE CASCADE``, as LangGraph's
Postgres store does); LangGraph's own connection left them behind.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import aiosqlite
import sqlite_vec  # type: ignore[import-untyped]
from langgraph.store.base import GetOp, ListNamespacesOp, Op, PutOp, Result, SearchOp, TTLConfig
from langgraph.store.sqlite.aio import AsyncSqliteStore
from langgraph.store.sqlite.base import (
    _PLACEHOLDER,
    NS_MATCH_FUNCTION,
    SqliteIndexConfig,
    _decode_ns_text,
    _group_ops,
    _namespace_match,
    _row_to_item,
    _row_to_search_item,
)

from agentd.storage.checkpointer import Write

Query = tuple[str, Sequence[Any]]
_REFRESH = (
    "UPDATE store SET expires_at = DATETIME(CURRENT_TIMESTAMP, '+' || ttl_minutes || ' minutes')"
    " WHERE prefix = ? AND key IN ({}) AND ttl_minutes IS NOT NULL"
)
_SWEEP = "DELETE FROM store WHERE expires_at IS NOT NULL AND expires_at < CURRENT_TIMESTAMP"


class SqliteStore(AsyncSqliteStore):
    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        path: Path,
        write: Write,
        index: SqliteIndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ):
        """``conn`` serves LangGraph's ``setup()`` (its migrations) only; reads open their own
        connection to ``path`` and writes go through ``write``."""
        super().__init__(conn, index=index, ttl=ttl)
        self._path = path
        self._write = write
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="agentd-store")
        self._reader: sqlite3.Connection | None = None

    def close(self) -> None:
        self._reads.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def sweep_ttl(self) -> int:
        return await self._write(lambda conn: conn.execute(_SWEEP).rowcount)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        grouped, count = _group_ops(ops)
        results: list[Result] = [None] * count
        gets = cast(Sequence[tuple[int, GetOp]], grouped.get(GetOp, []))
        searches = cast(Sequence[tuple[int, SearchOp]], grouped.get(SearchOp, []))
        listings = cast(Sequence[tuple[int, ListNamespacesOp]], grouped.get(ListNamespacesOp, []))
        puts = cast(Sequence[tuple[int, PutOp]], grouped.get(PutOp, []))
        # Embeddings may call a provider over the network: before any SQL, on the loop.
        search_queries = await self._search_queries(searches)
        writes = await self._put_queries(puts)
        if gets or searches or listings:
            get_queries = self._get_batch_GET_ops_queries(gets)
            list_queries = self._get_batch_list_namespaces_queries(listings)
            refreshes = await asyncio.get_running_loop().run_in_executor(
                self._reads, self._read, get_queries, search_queries, list_queries,
                gets, searches, listings, results,
            )  # fmt: skip
            writes = refreshes + writes  # LangGraph refreshes what it read before it puts
        if writes:
            await self._write(lambda conn: _execute_all(conn, writes))
        return results

    async def _put_queries(self, puts: Sequence[tuple[int, PutOp]]) -> list[Query]:
        """LangGraph's statements for ``puts``, with the vectors of the fields it indexes."""
        if not puts:
            return []
        queries, embedding_request = self._prepare_batch_PUT_queries(puts)
        if embedding_request:
            assert self.embeddings is not None  # LangGraph asks for vectors only when it has one
            query, texts = embedding_request
            vectors = await self.embeddings.aembed_documents([t[-1] for t in texts])
            params: list[Any] = []
            for (ns, key, path, _), vector in zip(texts, vectors, strict=False):
                params += [ns, key, path, sqlite_vec.serialize_float32(vector)]
            queries.append((query, params))
        return queries

    async def _search_queries(
        self, searches: Sequence[tuple[int, SearchOp]]
    ) -> list[tuple[str, list[Any], bool]]:
        """LangGraph's queries for ``searches``, with the query vector of semantic ones."""
        if not searches:
            return []
        queries, embedding_requests = self._prepare_batch_search_queries(searches)
        if embedding_requests and self.embeddings:
            vectors = await self.embeddings.aembed_documents([q for _, q in embedding_requests])
            for (i, _), vector in zip(embedding_requests, vectors, strict=False):
                params = queries[i][1]
                for j, param in enumerate(params):
                    if param is _PLACEHOLDER:
                        params[j] = sqlite_vec.serialize_float32(vector)
        return queries

    def _read(
        self,
        get_queries: Sequence[Any],
        search_queries: Sequence[tuple[str, list[Any], bool]],
        list_queries: Sequence[Query],
        gets: Sequence[tuple[int, GetOp]],
        searches: Sequence[tuple[int, SearchOp]],
        listings: Sequence[tuple[int, ListNamespacesOp]],
        results: list[Result],
    ) -> list[Query]:
        """On the store's thread: run the reads in one snapshot and fill ``results``; return
        the TTL refreshes the items read call for (only where an item has a TTL)."""
        conn = self._connection()
        refreshes: list[Query] = []
        conn.execute("BEGIN")  # one snapshot for the batch, as LangGraph's transaction gave
        try:
            ttl_namespaces = set()
            for q in get_queries:
                if q.kind != "get":
                    continue
                rows = conn.execute(q.query, q.params).fetchall()
                if any(row[5] is not None for row in rows):  # ttl_minutes
                    ttl_namespaces.add(q.namespace)
                by_key = {
                    row[0]: {"key": row[0], "value": row[1], "created_at": row[2],
                             "updated_at": row[3]}
                    for row in rows
                }  # fmt: skip
                for idx, key in q.items:
                    row = by_key.get(key)
                    results[idx] = (
                        _row_to_item(q.namespace, row, loader=self._deserializer) if row else None
                    )
            # LangGraph's own refresh of a namespace's keys read, if any of them has a TTL.
            refreshes += [
                (q.query, q.params)
                for q in get_queries
                if q.kind == "refresh" and q.namespace in ttl_namespaces
            ]
            for (idx, _), (query, params, needs_refresh) in zip(
                searches, search_queries, strict=True
            ):
                rows = conn.execute(query, params).fetchall()
                if needs_refresh and self.ttl_config:
                    refreshes += _refresh(rows)
                results[idx] = [
                    _row_to_search_item(
                        _decode_ns_text(row[0]),
                        {"key": row[1], "value": row[2], "created_at": row[3],
                         "updated_at": row[4], "score": row[7] if len(row) > 7 else None},
                        loader=self._deserializer,
                    )
                    for row in rows
                ]  # fmt: skip
            for (idx, _), (query, params) in zip(listings, list_queries, strict=True):
                results[idx] = [_decode_ns_text(row[0]) for row in conn.execute(query, params)]
        finally:
            conn.execute("COMMIT")
        return refreshes

    def _connection(self) -> sqlite3.Connection:
        if self._reader is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.create_function(NS_MATCH_FUNCTION, 2, _namespace_match, deterministic=True)
            if self.index_config:
                conn.enable_load_extension(True)
                sqlite_vec.load(conn)
                conn.enable_load_extension(False)
            self._reader = conn
        return self._reader


def _refresh(rows: Sequence[Sequence[Any]]) -> list[Query]:
    """The refresh of the items a search found that have a TTL (row: prefix, key, ...,
    ttl_minutes at 6), one statement per namespace as LangGraph writes it."""
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row[6] is not None:
            by_prefix[row[0]].append(row[1])
    return [
        (_REFRESH.format(",".join("?" * len(keys))), (p, *keys)) for p, keys in by_prefix.items()
    ]


def _execute_all(conn: sqlite3.Connection, queries: Sequence[Query]) -> None:
    for query, params in queries:
        conn.execute(query, params)
